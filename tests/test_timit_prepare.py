"""SPHERE I/O, the synthetic corpus, and `prepare` on the real sample and on generated corpora in
both layouts (LDC / flat), both audio formats (SPHERE / RIFF) and both cases; bad corpora."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from recipes.timit import prepare as PR
from recipes.timit.phones import PHONES61, fold61to39, fold61to48
from recipes.timit.sphere import read_audio, write_riff, write_sphere

espeak = pytest.importorskip("espeakng_loader", reason="the synthetic corpus needs espeakng-loader")
from recipes.timit.synth import CLOSURE, synth_corpus  # noqa: E402

SPK, UTT = 4, 4  # 16 recordings, 8 after SA sentences are left out


@pytest.fixture(scope="module")
def synth_ldc(tmp_path_factory):
    return synth_corpus(tmp_path_factory.mktemp("c") / "TIMIT", speakers=SPK, utts_per_speaker=UTT, seed=3,
                        progress=False)


@pytest.fixture(scope="module")
def synth_flat(tmp_path_factory):
    return synth_corpus(tmp_path_factory.mktemp("c") / "timit", speakers=SPK, utts_per_speaker=UTT, seed=3,
                        layout="flat", case="lower", audio_format="riff", progress=False)


# ---------------------------------------------------------------------------------------------
# SPHERE

def test_sphere_writer_reproduces_the_ldc_file(sphere_dir, tmp_path):
    src = sphere_dir / "SI836.WAV"
    x, sr = read_audio(src)
    ref, ref_sr = sf.read(str(src), dtype="int16")
    assert sr == ref_sr == 16000 and np.array_equal(x, ref)
    write_sphere(tmp_path / "a.wav", x, sr, utterance_id="vmh0_si836")
    assert (tmp_path / "a.wav").read_bytes() == src.read_bytes()  # header and data, byte for byte


def test_truncated_audio_is_detected(tmp_path):
    x = (np.random.default_rng(0).standard_normal(4000) * 1000).astype(np.int16)
    for name, writer in (("s.wav", write_sphere), ("r.wav", write_riff)):
        writer(tmp_path / name, x, 16000)
        assert np.array_equal(read_audio(tmp_path / name)[0], x)
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) - 1000])
        with pytest.raises(ValueError, match="truncated"):
            read_audio(tmp_path / name)
    with pytest.raises(TypeError, match="int16"):
        write_sphere(tmp_path / "f.wav", x.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# synthetic corpus

def _utterances(root):
    return sorted(p for p in Path(root).rglob("*") if p.suffix.lower() == ".phn")


def test_synth_layout_and_labels(synth_ldc):
    root = synth_ldc
    phns = _utterances(root)
    assert len(phns) == SPK * UTT
    subsets = {p.parts[-4] for p in phns}
    assert subsets == {"TRAIN", "TEST"}
    names = {p.stem for p in phns}
    assert {"SA1", "SA2"} <= names and any(n.startswith("SX") for n in names) and any(n.startswith("SI") for n in names)
    n_stops = n_closed = 0
    for phn in phns:
        assert phn.parts[-3].startswith("DR") and phn.parent.name[0] in "FM"
        wav = phn.with_suffix(".WAV")
        assert wav.read_bytes()[:7] == b"NIST_1A"
        x, sr = read_audio(wav)
        segs = PR.read_phn(phn)
        assert segs[0][0] == 0 and segs[0][2] == "h#" and segs[-1][2] == "h#" and segs[-1][1] == len(x)
        assert all(a < b for a, b, _ in segs) and all(s[1] == t[0] for s, t in zip(segs, segs[1:]))
        labels = [s[2] for s in segs]
        assert set(labels) <= set(PHONES61)
        for prev, lab in zip(labels, labels[1:]):
            if lab in CLOSURE:
                n_stops += 1
                n_closed += prev == CLOSURE[lab]
        words = [line.split() for line in phn.with_suffix(".WRD").read_text().splitlines()]
        txt = phn.with_suffix(".TXT").read_text().split()
        assert txt[:2] == ["0", str(len(x))]
        assert [w[2] for w in words] == [t.strip(".,?").lower() for t in txt[2:]]
        assert all(0 < int(a) < int(b) <= len(x) for a, b, _ in words)
    assert n_stops > 10 and n_closed >= 0.9 * n_stops  # stops get their closures
    spk = json.loads((root / "SYNTH_SPEAKERS.json").read_text())
    assert len({s["voice"] for s in spk}) > 1 and len({s["pitch"] for s in spk}) > 1


def test_synth_is_deterministic_across_layouts(synth_ldc, synth_flat):
    a, b = _utterances(synth_ldc), _utterances(synth_flat)
    assert len(a) == len(b)
    for pa in a:
        spk, dr = pa.parent.name.lower(), pa.parts[-3].lower()
        pb = synth_flat / f"{dr}-{spk}" / (pa.stem.lower() + ".phn")
        assert pb.read_text() == pa.read_text()
        assert np.array_equal(read_audio(pa.with_suffix(".WAV"))[0], read_audio(pb.with_suffix(".wav"))[0])
        assert pb.with_suffix(".wav").read_bytes()[:4] == b"RIFF"
    # finished corpus: a second call is a no-op; other settings in the same place are refused
    assert synth_corpus(synth_ldc, speakers=SPK, utts_per_speaker=UTT, seed=3, progress=False) == synth_ldc
    with pytest.raises(ValueError, match="other settings"):
        synth_corpus(synth_ldc, speakers=SPK, utts_per_speaker=UTT, seed=4, progress=False)


def test_synth_resumes_missing_utterances(synth_ldc, tmp_path):
    """An interrupted run (files missing, no completion marker) is completed identically."""
    root = tmp_path / "TIMIT"
    shutil.copytree(synth_ldc, root)
    (root / "SYNTH_COMPLETE.json").unlink()
    victim = _utterances(root)[3]
    want = victim.with_suffix(".WAV").read_bytes()
    victim.with_suffix(".WAV").unlink()
    victim.unlink()
    synth_corpus(root, speakers=SPK, utts_per_speaker=UTT, seed=3, progress=False)
    assert victim.with_suffix(".WAV").read_bytes() == want


# ---------------------------------------------------------------------------------------------
# prepare

def _manifests(out):
    return {s: PR.load_manifest(out, s) for s in ("train", "dev", "test")}


def _check_manifests(m, n_used):
    rows = [r for s in m.values() for r in s]
    assert len(rows) == n_used
    assert not any(r["utt"].split("_")[1].startswith("sa") for r in rows)
    speakers = {s: {r["speaker"] for r in m[s]} for s in m}
    assert not (speakers["train"] & speakers["dev"] or speakers["train"] & speakers["test"]
                or speakers["dev"] & speakers["test"])
    assert all(speakers[s] for s in m)
    for r in rows:
        assert r["phones48"] == fold61to48(r["phones61"]) and r["phones39"] == fold61to39(r["phones61"])
        assert "q" not in r["phones48"]


def test_prepare_synthetic_both_layouts_agree(synth_ldc, synth_flat, tmp_path):
    s1 = PR.prepare(synth_ldc, tmp_path / "a", progress=False)
    s2 = PR.prepare(synth_flat, tmp_path / "b", progress=False)
    m1, m2 = _manifests(tmp_path / "a"), _manifests(tmp_path / "b")
    _check_manifests(m1, SPK * (UTT - 2))
    _check_manifests(m2, SPK * (UTT - 2))
    assert s1["sa_excluded"] == s2["sa_excluded"] == 2 * SPK
    assert "TEST speakers" in s1["split_rule"]        # LDC layout: its TEST speakers are held out
    assert "held out" in s2["split_rule"]             # flat layout: no TRAIN/TEST information
    all1 = {r["utt"]: r for s in m1.values() for r in s}
    all2 = {r["utt"]: r for s in m2.values() for r in s}
    assert all1.keys() == all2.keys()
    for k in all1:
        assert all1[k]["phones61"] == all2[k]["phones61"] and all1[k]["num_samples"] == all2[k]["num_samples"]


def test_prepare_real_sample(timit_sample, tmp_path):
    s = PR.prepare(timit_sample, tmp_path, progress=False)
    m = _manifests(tmp_path)
    _check_manifests(m, 128)  # 16 speakers x 8 (SA1, SA2 left out)
    assert [s["splits"][k]["utterances"] for k in ("train", "dev", "test")] == [96, 16, 16]
    assert s["bad_files"] == [] and "2 x" not in s["split_rule"]
    row = next(r for r in m["train"] + m["dev"] + m["test"] if r["utt"] == "fvmh0_si1466")
    labels = [line.split()[2] for line in (timit_sample / "dr1-fvmh0" / "si1466.phn").read_text().splitlines()]
    assert row["phones61"] == labels and row["num_samples"] == 67380
    # 6185 phone tokens in all 160 recordings (README); minus the SA ones, checked from the files
    total = sum(len(r["phones61"]) for r in m["train"] + m["dev"] + m["test"])
    sa = sum(len((p).read_text().splitlines()) for p in timit_sample.glob("*/sa*.phn"))
    assert total + sa == 6185


def test_prepare_ldc_copy_of_real_sample_with_sphere(timit_sample, sphere_dir, tmp_path):
    """The sample rearranged into the LDC layout (upper case), one file the genuine SPHERE one."""
    root = tmp_path / "TIMIT"
    for d in timit_sample.iterdir():
        if not d.is_dir():
            continue
        dr, spk = d.name.split("-")
        dst = root / "TRAIN" / dr.upper() / spk.upper()
        dst.mkdir(parents=True)
        for f in d.iterdir():
            (dst / f.name.upper()).symlink_to(f)
    sph = root / "TRAIN" / "DR1" / "FVMH0" / "SI836.WAV"
    sph.unlink()
    sph.symlink_to(sphere_dir / "SI836.WAV")
    PR.prepare(root, tmp_path / "ldc", progress=False)
    PR.prepare(timit_sample, tmp_path / "flat", progress=False)
    a, b = _manifests(tmp_path / "ldc"), _manifests(tmp_path / "flat")
    for s in a:
        assert [(r["utt"], r["phones61"], r["num_samples"]) for r in a[s]] == \
               [(r["utt"], r["phones61"], r["num_samples"]) for r in b[s]]
    assert str((sphere_dir / "SI836.WAV").resolve()) in {r["audio"] for s in a.values() for r in s}


def test_standard_split_rule():
    fake = []
    for s in PR.DEV_SPEAKERS + PR.CORE_TEST_SPEAKERS + ("mabc0", "fxyz1"):
        fake.append({"speaker": s, "sex": s[0].upper(), "dialect_region": 1, "subset": "test"})
    for s in ("mtrn0", "ftrn1", "mtrn2"):
        fake.append({"speaker": s, "sex": s[0].upper(), "dialect_region": 2, "subset": "train"})
    assign, rule = PR.split_speakers(fake)
    assert rule.startswith("standard")
    assert {s for s, v in assign.items() if v == "dev"} == set(PR.DEV_SPEAKERS)
    assert {s for s, v in assign.items() if v == "test"} == set(PR.CORE_TEST_SPEAKERS)
    assert {s for s, v in assign.items() if v == "train"} == {"mtrn0", "ftrn1", "mtrn2"}
    assert assign["mabc0"] == assign["fxyz1"] == "unused"
    # one core-test speaker missing: fall back to a speaker-disjoint split
    assign, rule = PR.split_speakers([f for f in fake if f["speaker"] != "mdab0"])
    assert rule.startswith("fallback")


# ---------------------------------------------------------------------------------------------
# bad corpora

@pytest.fixture
def bad_copy(synth_ldc, tmp_path):
    root = tmp_path / "TIMIT"
    shutil.copytree(synth_ldc, root)
    return root


def _train_utt(root):
    return next(p for p in _utterances(root) if p.parts[-4] == "TRAIN" and not p.stem.startswith("SA"))


def test_missing_phn(bad_copy, tmp_path):
    phn = _train_utt(bad_copy)
    phn.unlink()
    with pytest.raises(PR.CorpusError, match="missing .PHN") as e:
        PR.prepare(bad_copy, tmp_path / "out", progress=False)
    assert f"{phn.with_suffix('.WAV')}: missing .PHN" in str(e.value)
    s = PR.prepare(bad_copy, tmp_path / "out", skip_bad=True, progress=False)
    assert len(s["bad_files"]) == 1
    utt = f"{phn.parent.name.lower()}_{phn.stem.lower()}"
    assert utt not in {r["utt"] for r in PR.load_manifest(tmp_path / "out", "train")}


def test_truncated_sphere_audio(bad_copy, tmp_path):
    wav = _train_utt(bad_copy).with_suffix(".WAV")
    data = wav.read_bytes()
    wav.write_bytes(data[: len(data) // 2])
    with pytest.raises(PR.CorpusError, match="truncated") as e:
        PR.prepare(bad_copy, tmp_path / "out", progress=False)
    assert str(wav) in str(e.value)


def test_truncated_riff_audio(synth_flat, tmp_path):
    root = tmp_path / "timit"
    shutil.copytree(synth_flat, root)
    wav = next(p for p in root.rglob("s[xi]*.wav"))
    data = wav.read_bytes()
    wav.write_bytes(data[: len(data) - 4000])
    with pytest.raises(PR.CorpusError, match="truncated RIFF") as e:
        PR.prepare(root, tmp_path / "out", progress=False)
    assert str(wav) in str(e.value)


def test_unknown_label_and_cli(bad_copy, tmp_path, capsys):
    phn = _train_utt(bad_copy)
    lines = phn.read_text().splitlines()
    a, b, _ = lines[2].split()
    lines[2] = f"{a} {b} xyz"
    phn.write_text("\n".join(lines) + "\n")
    with pytest.raises(PR.CorpusError, match="unknown phone label.*xyz"):
        PR.prepare(bad_copy, tmp_path / "out", progress=False)
    from recipes.timit.__main__ import main
    assert main(["prepare", "--timit", str(bad_copy), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert str(phn) in err and "xyz" in err and "--skip-bad" in err
    assert main(["prepare", "--timit", str(bad_copy), "--out", str(tmp_path / "out"), "--skip-bad"]) == 0
    assert json.loads((tmp_path / "out" / "prepare.json").read_text())["bad_files"][0]["path"] == str(phn)
