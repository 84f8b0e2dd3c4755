"""Noise and reverberation in the synthetic corpus: the SNR of every file against the clean corpus is
the one recorded (within 0.5 dB), labels and timing are those of the clean corpus, the same seed gives
identical files, and bad arguments are refused naming the argument."""
import csv
import math

import numpy as np
import pytest

pytest.importorskip("espeakng_loader", reason="the synthetic corpus needs espeakng-loader")

from recipes.timit.degrade import Degradation, degrade  # noqa: E402
from recipes.timit.sphere import read_audio  # noqa: E402
from recipes.timit.synth import synth_corpus  # noqa: E402

SMALL = dict(speakers=3, utts_per_speaker=2, seed=3, jobs=2, progress=False)


def _files(root, ext):
    return {p.relative_to(root): p for p in sorted(root.rglob(f"*{ext}"))}


def _conditions(root):
    with open(root / "SYNTH_CONDITIONS.tsv") as f:
        return {(r["speaker"], r["utt"]): r for r in csv.DictReader(f, delimiter="\t")}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    base = tmp_path_factory.mktemp("degrade")
    clean = synth_corpus(base / "clean", **SMALL)
    noisy = synth_corpus(base / "noisy", snr="5,12,20", noise="white,pink,brown,babble", **SMALL)
    return clean, noisy, base


def test_snr_against_the_clean_corpus_and_labels_kept(corpora):
    clean, noisy, _ = corpora
    cond = _conditions(noisy)
    wavs = _files(clean, ".WAV")
    assert len(wavs) == 6 and len(cond) == 6
    for rel, path in wavs.items():
        x = read_audio(path)[0].astype(np.float64)
        y = read_audio(noisy / rel)[0].astype(np.float64)
        c = cond[(rel.parent.name, rel.stem)]
        assert len(y) == len(x)
        n = y / float(c["gain"]) - x
        snr = 10 * math.log10(np.sum(x ** 2) / np.sum(n ** 2))
        assert abs(snr - float(c["snr_db"])) < 0.5, (rel, snr, c)
        for ext in (".PHN", ".WRD", ".TXT"):  # labels are the clean corpus's, unmoved
            assert (noisy / rel.with_suffix(ext)).read_bytes() == path.with_suffix(ext).read_bytes()
    assert {c["noise"] for c in cond.values()} <= {"white", "pink", "brown", "babble"}
    assert all(int(c["talkers"]) >= 3 for c in cond.values() if c["noise"] == "babble")
    assert (noisy / "SYNTH_BABBLE.npy").exists()


def test_same_seed_identical_files_including_reverb(tmp_path):
    pytest.importorskip("pyroomacoustics")
    kw = dict(snr="10", noise="pink,babble", reverb=1.0, rt60="0.2,0.4", **SMALL)
    a, b = synth_corpus(tmp_path / "a", **kw), synth_corpus(tmp_path / "b", **kw)
    fa, fb = _files(a, ""), _files(b, "")
    assert fa.keys() == fb.keys()
    for rel in fa:
        if fa[rel].is_file():
            assert fa[rel].read_bytes() == fb[rel].read_bytes(), rel
    cond = _conditions(a)
    assert all(c["reverb"] == "True" and 0.2 <= float(c["rt60"]) <= 0.4 and float(c["rt60_measured"]) > 0
               for c in cond.values())
    # another seed: other noise
    c = synth_corpus(tmp_path / "c", **dict(kw, seed=4))
    assert next(iter(_files(c, ".WAV").values())).read_bytes() != next(iter(_files(a, ".WAV").values())).read_bytes()


def test_reverb_does_not_delay_the_speech():
    pytest.importorskip("pyroomacoustics")
    x = np.zeros(16000, dtype=np.int16)
    x[5000] = 20000  # an impulse: the output is the room response, which must start at the impulse
    y, rec = degrade(x, Degradation(reverb=1.0, rt60=(0.5, 0.5)), np.random.default_rng(0))
    assert rec["reverb"] and rec["rt60"] == 0.5
    assert int(np.argmax(np.abs(y))) == 5000 and np.all(y[:5000] == 0) and np.any(y[5100:] != 0)


@pytest.mark.parametrize("kw, name", [
    (dict(snr="abc"), "--snr"), (dict(snr="nan"), "--snr"), (dict(snr=",,"), "--snr"),
    (dict(noise="purple"), "--noise"), (dict(noise=""), "--noise"),
    (dict(reverb="1.5"), "--reverb"), (dict(reverb="0.2,0.3"), "--reverb"),
    (dict(rt60="0.8,0.2"), "--rt60"), (dict(rt60="0.05,0.3"), "--rt60"), (dict(rt60="0.2,0.3,0.4"), "--rt60"),
])
def test_bad_arguments_name_the_argument(kw, name):
    with pytest.raises(ValueError, match=name):
        Degradation(**kw)


def test_cli_refuses_bad_arguments(tmp_path, capsys):
    from recipes.timit.__main__ import main
    assert main(["synth", "--out", str(tmp_path / "c"), "--snr", "10,x"]) == 2
    assert "--snr" in capsys.readouterr().err and not (tmp_path / "c").exists()
    with pytest.raises(ValueError, match="--voices"):
        synth_corpus(tmp_path / "d", voices="robots", **SMALL)
