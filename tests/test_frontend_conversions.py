"""The front end's conversions (from_melspectrogram, from_mfcc, from_kaldi_fbank,
from_librosa_melspectrogram, from_transform): the configuration, window, filterbank and DCT they
produce, against the counterpart's own objects (a torchaudio transform's attributes and buffers,
torchaudio.compliance.kaldi's framing constants and mel banks, librosa's filters), and every
refusal with its exact message at the edge of what is accepted.

No forward passes, small sizes: the whole file runs in seconds, so mutation testing of the
conversions (tools/mutation.sh frontend) can use it.  Buffers are compared in float64 (dtype=
torch.float64): the counterparts build them in float32 and ours copies them, so they are equal.
"""
from __future__ import annotations

import inspect
import re
import warnings

import numpy as np
import pytest
import torch
import torchaudio
import torchaudio.compliance.kaldi as kaldi

from kfrontend.frontend import KaleidoscopeFrontend as KF

D = torch.float64
pytestmark = pytest.mark.filterwarnings("ignore:At least one mel filterbank has all zero values")


def _exact(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


# ------------------------------------------------------------------------------------------------
# torchaudio MelSpectrogram
# ------------------------------------------------------------------------------------------------
MEL_KW = [
    dict(n_fft=64, n_mels=8),  # hop = win // 2, f_max = sample_rate // 2
    dict(n_fft=64, win_length=50, hop_length=7, n_mels=10, f_min=100.0, f_max=7000.0, norm="slaney",
         mel_scale="slaney", pad=3, pad_mode="constant", center=False, power=1.0, normalized=True,
         window_fn=torch.hamming_window, wkwargs={"periodic": False}),
    dict(sample_rate=22050, n_fft=64, win_length=33, n_mels=8, normalized="frame_length"),  # odd hop 16
    dict(n_fft=64, win_length=64, n_mels=8, f_min=0.0, f_max=8000.0, pad_mode="circular"),  # f_max = Nyquist
]


@pytest.mark.parametrize("kw", MEL_KW)
def test_melspectrogram_configuration_is_torchaudios(kw):
    t = torchaudio.transforms.MelSpectrogram(**kw)
    fe = KF.from_melspectrogram(dtype=D, **kw)
    c = fe.config()
    spec = t.spectrogram
    want_norm = {False: False, True: "window", "window": "window", "frame_length": "frame_length"}[spec.normalized]
    assert (c["framing"], c["layout"], c["log"], c["top_db"]) == ("stft", "channels_first", None, None)
    assert (c["n_fft"], c["win_length"], c["hop_length"]) == (t.n_fft, t.win_length, t.hop_length)
    assert (c["center"], c["pad_mode"], c["pad"], c["power"], c["normalized"]) == (
        spec.center, spec.pad_mode, spec.pad, spec.power, want_norm)
    assert c["sample_rate"] == t.sample_rate and fe.n_mels == t.n_mels and fe.n_out == t.n_mels
    assert torch.equal(fe.ref_window, spec.window.to(D))
    assert torch.equal(fe.ref_fb, t.mel_scale.fb.to(D))
    assert fe.ref_dct is None


def test_melspectrogram_log_options():
    """dB is of the power spectrum whatever the power (AmplitudeToDB's 10 for power 2, 20 for
    magnitude); log-mel keeps its offset; top_db and amin are passed on."""
    kw = dict(n_fft=64, n_mels=8)
    assert KF.from_melspectrogram(log="db", **kw).multiplier == 10.0
    db1 = KF.from_melspectrogram(log="db", power=1.0, top_db=60.0, **kw)
    assert (db1.log, db1.multiplier, db1.top_db) == ("db", 20.0, 60.0)
    assert KF.from_melspectrogram(log="db", power=0.5, **kw).multiplier == 40.0
    lg = KF.from_melspectrogram(log="log", log_offset=1e-3, **kw)
    assert (lg.log, lg.log_offset, lg.log_floor, lg.multiplier) == ("log", 1e-3, 1e-3, 10.0)
    assert KF.from_melspectrogram(**kw).log is None


MEL_BAD = [
    (dict(win_length=500), ValueError, "win_length (500) must be <= n_fft (400)"),
    (dict(hop_length=0), ValueError, "hop_length must be an integer >= 1, got 0"),
    (dict(n_fft=1), ValueError, "n_fft must be an integer >= 2, got 1"),
    (dict(n_mels=0), ValueError, "n_mels must be an integer >= 1, got 0"),
    (dict(sample_rate=0), ValueError, "sample_rate must be > 0, got 0"),
    (dict(f_max=8000.5), ValueError, "f_max (8000.5) must be <= the Nyquist frequency sample_rate / 2 = 8000.0"),
    (dict(f_min=-1.0), ValueError, "f_min (-1.0) must satisfy 0 <= f_min < f_max (8000.0)"),
    (dict(f_min=3000.0, f_max=3000.0), ValueError, "f_min (3000.0) must satisfy 0 <= f_min < f_max (3000.0)"),
    (dict(onesided=False), ValueError,
     "onesided=False is not supported (MelSpectrogram always uses the one-sided spectrum)"),
    (dict(norm="htk"), ValueError, "norm must be None or 'slaney', got 'htk'"),
    (dict(mel_scale="bark"), ValueError, "mel_scale must be 'htk' or 'slaney', got 'bark'"),
    (dict(pad_mode="symmetric"), ValueError,
     "pad_mode must be one of ('constant', 'reflect', 'replicate', 'circular') (torch.stft's), got 'symmetric'"),
    (dict(window_fn="hann"), TypeError, "window_fn must be callable (e.g. torch.hann_window), got 'hann'"),
    (dict(wkwargs=[1]), TypeError, "wkwargs must be a dict or None, got list"),
    (dict(window_fn=lambda n: torch.ones(n + 1)), ValueError,
     "window_fn(win_length=400) must return a tensor of shape (400,)"),
    (dict(window_fn=lambda n: [1.0] * n), ValueError, "window_fn(win_length=400) must return a tensor of shape (400,)"),
    (dict(n_fft=64, n_mels=40), ValueError,
     "n_mels (40) is too large for n_fft: more filters than the 33 frequency bins; lower n_mels or raise n_fft"),
]


@pytest.mark.parametrize("kw,exc,msg", MEL_BAD, ids=[str(k) for k, _, _ in MEL_BAD])
def test_melspectrogram_refusals(kw, exc, msg):
    with pytest.raises(exc, match=_exact(msg)):
        KF.from_melspectrogram(**kw)


def test_unknown_keywords_are_named():
    with pytest.raises(TypeError, match=r"^unsupported keyword arguments \['bogus', 'n_mfcc'\]: neither "
                                        r"torchaudio.transforms.MelSpectrogram's nor ours \(\['backend', "):
        KF.from_melspectrogram(bogus=1, n_mfcc=3)
    # Kaldi and MFCC decide the log themselves: log, log_offset and top_db are not ours to give there
    for maker, who in ((KF.from_kaldi_fbank, "torchaudio.compliance.kaldi.fbank"), (KF.from_mfcc, "torchaudio.transforms.MFCC")):
        for key in ("log", "log_offset", "top_db"):
            with pytest.raises(TypeError, match=rf"^unsupported keyword arguments \['{key}'\]: neither {re.escape(who)}'s"):
                maker(**{key: None})
    ours = KF.from_melspectrogram(n_fft=64, n_mels=8, structure="dense", trainable=False, width=0, init="random",
                                  path="matrix", backend="torch", frames_op="unfold", dtype=D)
    assert (ours.structure, ours.init, ours.path, ours.backend, ours.frames_op) == (
        "dense", "random", "matrix", "torch", "unfold")
    assert not any(p.requires_grad for p in ours.parameters())


# ------------------------------------------------------------------------------------------------
# torchaudio MFCC
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    dict(n_mfcc=8, melkwargs=dict(n_fft=64, n_mels=8)),  # n_mfcc == n_mels
    dict(n_mfcc=5, norm=None, melkwargs=dict(n_fft=64, n_mels=12, power=1.0)),
    dict(sample_rate=8000, n_mfcc=6, log_mels=True, melkwargs=dict(n_fft=64, win_length=48, hop_length=10, n_mels=9)),
])
def test_mfcc_configuration_is_torchaudios(kw):
    t = torchaudio.transforms.MFCC(**kw)
    fe = KF.from_mfcc(dtype=D, **kw)
    m = t.MelSpectrogram
    c = fe.config()
    assert (c["n_fft"], c["win_length"], c["hop_length"], c["sample_rate"], c["power"]) == (
        m.n_fft, m.win_length, m.hop_length, t.sample_rate, m.spectrogram.power)
    assert torch.equal(fe.ref_window, m.spectrogram.window.to(D))
    assert torch.equal(fe.ref_fb, m.mel_scale.fb.to(D))
    assert torch.equal(fe.ref_dct, t.dct_mat.to(D)) and fe.n_out == t.n_mfcc
    if t.log_mels:
        assert (c["log"], c["log_offset"], c["top_db"]) == ("log", 1e-6, None)
    else:
        a = t.amplitude_to_DB
        assert (c["log"], c["top_db"], c["amin"], c["multiplier"]) == ("db", a.top_db, a.amin, a.multiplier)


MFCC_BAD = [
    (dict(melkwargs=[1]), TypeError, "melkwargs must be a dict or None, got list"),
    (dict(melkwargs=dict(sample_rate=8000)), TypeError,
     "melkwargs must not contain sample_rate (pass sample_rate to from_mfcc), as in torchaudio"),
    (dict(melkwargs=dict(n_mfcc=3, top_db=2)), TypeError,
     "melkwargs has arguments torchaudio.transforms.MelSpectrogram does not take: ['n_mfcc', 'top_db']"),
    (dict(dct_type=3), ValueError, "dct_type must be 2 (the only type torchaudio's MFCC supports), got 3"),
    (dict(norm="slaney"), ValueError, "norm must be 'ortho' or None, got 'slaney'"),
    (dict(n_mfcc=41, melkwargs=dict(n_mels=40)), ValueError,
     "n_mfcc (41) must be <= n_mels (40): cannot select more MFCC coefficients than mel bins"),
    (dict(n_mfcc=0), ValueError, "n_mfcc must be an integer >= 1, got 0"),
]


@pytest.mark.parametrize("kw,exc,msg", MFCC_BAD, ids=[str(k) for k, _, _ in MFCC_BAD])
def test_mfcc_refusals(kw, exc, msg):
    with pytest.raises(exc, match=_exact(msg)):
        KF.from_mfcc(**kw)


# ------------------------------------------------------------------------------------------------
# torchaudio.compliance.kaldi.fbank
# ------------------------------------------------------------------------------------------------
KALDI_KW = [
    dict(),
    dict(frame_length=25.0, frame_shift=10.0, round_to_power_of_two=False, num_mel_bins=40, window_type="hamming"),
    dict(sample_frequency=8000.0, num_mel_bins=23, low_freq=0.0, high_freq=4000.0, window_type="blackman",
         blackman_coeff=0.3, preemphasis_coefficient=0.0, remove_dc_offset=False, snip_edges=False),
    dict(num_mel_bins=30, high_freq=-200.0, vtln_warp=0.9, vtln_low=100.0, vtln_high=-500.0, use_power=False,
         use_log_fbank=False, use_energy=True, energy_floor=0.0, raw_energy=False, htk_compat=True,
         subtract_mean=True, preemphasis_coefficient=1.0, window_type="rectangular"),
    dict(num_mel_bins=4, low_freq=300.0, high_freq=0.0, vtln_warp=1.1, vtln_low=400.0, vtln_high=7000.0,
         use_energy=True, energy_floor=2.0, window_type="hanning"),
]


@pytest.mark.parametrize("kw", KALDI_KW)
def test_kaldi_configuration_is_torchaudios(kw):
    full = {k: v.default for k, v in inspect.signature(kaldi.fbank).parameters.items() if k != "waveform"}
    full.update(kw)  # torchaudio's defaults, then the case's arguments
    fe = KF.from_kaldi_fbank(dtype=D, **kw)
    c = fe.config()
    _, shift, size, padded = kaldi._get_waveform_and_window_properties(
        torch.zeros(1, 1000), full["channel"], full["sample_frequency"], full["frame_shift"],
        full["frame_length"], full["round_to_power_of_two"], full["preemphasis_coefficient"])
    assert (c["n_fft"], c["win_length"], c["hop_length"]) == (padded, size, shift)
    assert (c["framing"], c["layout"], c["sample_rate"]) == ("kaldi", "channels_last", full["sample_frequency"])
    assert (c["snip_edges"], c["remove_dc_offset"], c["preemphasis"]) == (
        full["snip_edges"], full["remove_dc_offset"], full["preemphasis_coefficient"])
    assert c["power"] == (2.0 if full["use_power"] else 1.0)
    assert c["log"] == ("log" if full["use_log_fbank"] else None)
    assert (c["log_offset"], c["log_floor"]) == (0.0, float(torch.finfo(torch.float32).eps))
    assert (c["use_energy"], c["energy_floor"], c["raw_energy"], c["htk_compat"], c["subtract_mean"]) == (
        full["use_energy"], full["energy_floor"], full["raw_energy"], full["htk_compat"], full["subtract_mean"])
    window = kaldi._feature_window_function(full["window_type"], size, full["blackman_coeff"], torch.device("cpu"), D)
    assert torch.equal(fe.ref_window, window)
    banks, _ = kaldi.get_mel_banks(full["num_mel_bins"], padded, full["sample_frequency"], full["low_freq"],
                                   full["high_freq"], full["vtln_low"], full["vtln_high"], full["vtln_warp"])
    assert torch.equal(fe.ref_fb, torch.nn.functional.pad(banks, (0, 1)).T.to(D))  # Nyquist bin: zero


KALDI_BAD = [
    (dict(dither=1.0), ValueError, "dither must be 0.0 (got 1.0): random dither makes features non-deterministic "
                                   "and cannot be exact; add noise to the waveform yourself"),
    (dict(channel=0), ValueError, "channel must be -1 (got 0): this front end maps every signal of a (..., time) "
                                  "batch; select the channel by indexing the input"),
    (dict(min_duration=1.0), ValueError, "min_duration must be 0.0 (got 1.0): an empty result for short signals "
                                         "does not batch; filter short signals before the front end"),
    (dict(sample_frequency=0.0), ValueError, "sample_frequency must be > 0, got 0.0"),
    (dict(frame_shift=0.06), ValueError, "frame_shift (0.06 ms) gives 0 samples; must be >= 1"),
    (dict(frame_length=0.1), ValueError, "frame_length (0.1 ms) gives 1 samples; must be >= 2"),
    (dict(frame_length=20.0, round_to_power_of_two=False, sample_frequency=16050.0), ValueError,
     "the padded window size (321) must be even: use round_to_power_of_two=True or change frame_length"),
    (dict(preemphasis_coefficient=1.5), ValueError, "preemphasis_coefficient must lie in [0, 1], got 1.5"),
    (dict(preemphasis_coefficient=-0.1), ValueError, "preemphasis_coefficient must lie in [0, 1], got -0.1"),
    (dict(window_type="kaiser"), ValueError,
     "window_type must be one of ('povey', 'hamming', 'hanning', 'rectangular', 'blackman'), got 'kaiser'"),
    (dict(low_freq=8000.0), ValueError, "low_freq (8000.0) must lie in [0, Nyquist = 8000.0)"),
    (dict(low_freq=-1.0), ValueError, "low_freq (-1.0) must lie in [0, Nyquist = 8000.0)"),
    (dict(high_freq=8000.5), ValueError,
     "high_freq (8000.5, i.e. 8000.5 Hz) must lie in (0, Nyquist = 8000.0] (values <= 0 count from the Nyquist frequency)"),
    (dict(high_freq=-8000.0), ValueError,
     "high_freq (-8000.0, i.e. 0.0 Hz) must lie in (0, Nyquist = 8000.0] (values <= 0 count from the Nyquist frequency)"),
    (dict(low_freq=3000.0, high_freq=3000.0), ValueError, "low_freq (3000.0) must be below high_freq (3000.0)"),
    (dict(num_mel_bins=3), ValueError, "num_mel_bins must be > 3 (as Kaldi), got 3"),
    (dict(num_mel_bins=0), ValueError, "num_mel_bins must be an integer >= 1, got 0"),
    (dict(vtln_warp=0.9, vtln_low=20.0), ValueError,
     "vtln_low (20.0) and vtln_high (-500.0) must satisfy low_freq < vtln_low < vtln_high < high_freq (20.0, 8000.0)"),
    (dict(vtln_warp=0.9, vtln_high=0.0), ValueError,
     "vtln_low (100.0) and vtln_high (0.0) must satisfy low_freq < vtln_low < vtln_high < high_freq (20.0, 8000.0)"),
    (dict(vtln_warp=0.9, vtln_high=8000.0), ValueError,
     "vtln_low (100.0) and vtln_high (8000.0) must satisfy low_freq < vtln_low < vtln_high < high_freq (20.0, 8000.0)"),
    (dict(vtln_warp=0.9, vtln_low=7000.0, vtln_high=-1500.0), ValueError,
     "vtln_low (7000.0) and vtln_high (-1500.0) must satisfy low_freq < vtln_low < vtln_high < high_freq (20.0, 8000.0)"),
    (dict(vtln_warp=0.9, vtln_low=8000.0, vtln_high=-1.0), ValueError,
     "vtln_low (8000.0) and vtln_high (-1.0) must satisfy low_freq < vtln_low < vtln_high < high_freq (20.0, 8000.0)"),
    (dict(use_energy=True, energy_floor=-1.0), ValueError, "energy_floor must be >= 0, got -1.0"),
    (dict(dtype=torch.float16), TypeError, "dtype must be torch.float32 or torch.float64, got torch.float16"),
    (dict(sample_frequency=float("inf")), ValueError, "sample_frequency must be a finite number, got inf"),
]


@pytest.mark.parametrize("kw,exc,msg", KALDI_BAD, ids=[str(k) for k, _, _ in KALDI_BAD])
def test_kaldi_refusals(kw, exc, msg):
    with pytest.raises(exc, match=_exact(msg)):
        KF.from_kaldi_fbank(**kw)


def test_kaldi_empty_filters_are_refused_by_name():
    """Kaldi refuses filters that cover no bin (its MelBanks asserts); the message lists the first
    eight, which are read here from torchaudio's own banks."""
    banks, _ = kaldi.get_mel_banks(200, 512, 16000.0, 20.0, 0.0, 100.0, -500.0, 1.0)
    empty = (banks.max(dim=1).values <= 0).nonzero().flatten().tolist()
    assert len(empty) > 8
    with pytest.raises(ValueError, match=_exact(
            f"num_mel_bins (200) is too large for n_fft (n_freqs = 257 bins) and the frequency range: filters "
            f"{empty[:8]}... cover no frequency bin; lower num_mel_bins or raise the window size")):
        KF.from_kaldi_fbank(num_mel_bins=200)
    banks, _ = kaldi.get_mel_banks(140, 512, 16000.0, 20.0, 0.0, 100.0, -500.0, 1.0)
    few = (banks.max(dim=1).values <= 0).nonzero().flatten().tolist()
    assert 0 < len(few) <= 8  # eight or fewer: listed without the ellipsis
    with pytest.raises(ValueError, match=re.escape(f"filters {few} cover no frequency bin; lower")):
        KF.from_kaldi_fbank(num_mel_bins=140)


def test_kaldi_edges_that_are_accepted():
    """The inclusive ends of each accepted range (each refusal above sits just past one)."""
    for kw in (dict(preemphasis_coefficient=0.0), dict(preemphasis_coefficient=1.0), dict(low_freq=0.0),
               dict(high_freq=8000.0), dict(high_freq=0.0), dict(num_mel_bins=4), dict(energy_floor=-1.0),
               dict(vtln_warp=0.9, vtln_low=21.0, vtln_high=7999.0), dict(frame_shift=0.0625),
               dict(frame_length=1.0, num_mel_bins=4, low_freq=0.0, round_to_power_of_two=True)):
        fe = KF.from_kaldi_fbank(**kw)
        assert fe.framing == "kaldi"
    assert KF.from_kaldi_fbank(frame_shift=0.0625).hop_length == 1


# ------------------------------------------------------------------------------------------------
# librosa.feature.melspectrogram
# ------------------------------------------------------------------------------------------------
LIBROSA_KW = [
    dict(sr=16000, n_fft=256, n_mels=20),
    dict(sr=16000, n_fft=256, win_length=200, hop_length=80, n_mels=24, fmin=50.0, fmax=8000.0, htk=True, norm=None,
         window="hamming", center=False, pad_mode="edge", power=1.0),
    dict(sr=22050, n_fft=128, n_mels=10, pad_mode="wrap", dtype=np.float64),
    dict(sr=8000, n_fft=128, hop_length=33, n_mels=10, pad_mode="reflect", window=torch.hann_window(128).numpy()),
]


@pytest.mark.parametrize("kw", LIBROSA_KW)
def test_librosa_configuration_is_librosas(kw):
    librosa = pytest.importorskip("librosa")
    full = dict(sr=22050, n_fft=2048, hop_length=512, win_length=None, window="hann", center=True, pad_mode="constant",
                power=2.0, n_mels=128, fmin=0.0, fmax=None, htk=False, norm="slaney", dtype=np.float32)
    full.update(kw)
    fe = KF.from_librosa_melspectrogram(**kw)  # a numpy dtype is librosa's filterbank dtype
    c = fe.config()
    win = full["win_length"] or full["n_fft"]
    pad = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}[full["pad_mode"]]
    assert (c["n_fft"], c["win_length"], c["hop_length"], c["center"], c["pad_mode"], c["pad"]) == (
        full["n_fft"], win, full["hop_length"], full["center"], pad, 0)
    assert (c["sample_rate"], c["power"], c["normalized"], c["layout"]) == (full["sr"], full["power"], False,
                                                                           "channels_first")
    w = librosa.filters.get_window(full["window"], win, fftbins=True)
    assert torch.equal(fe.ref_window.double(), torch.from_numpy(np.asarray(w, np.float64)).float().double())
    basis = librosa.filters.mel(sr=full["sr"], n_fft=full["n_fft"], n_mels=full["n_mels"], fmin=full["fmin"],
                                fmax=full["fmax"], htk=full["htk"], norm=full["norm"], dtype=full["dtype"])
    assert torch.equal(fe.ref_fb.double(), torch.from_numpy(basis.T.astype(np.float64)).float().double())
    fe64 = KF.from_librosa_melspectrogram(dtype=D, mel_dtype=full["dtype"], **{k: v for k, v in kw.items() if k != "dtype"})
    assert torch.equal(fe64.ref_fb, torch.from_numpy(basis.T.astype(np.float64)))
    assert torch.equal(fe64.ref_window, torch.from_numpy(np.asarray(w, np.float64)))


LIBROSA_BAD = [
    (dict(sr=0), ValueError, "sr must be > 0, got 0"),
    (dict(n_fft=1), ValueError, "n_fft must be an integer >= 2, got 1"),
    (dict(n_fft=256, win_length=257), ValueError, "win_length (257) must be <= n_fft (256)"),
    (dict(hop_length=0), ValueError, "hop_length must be an integer >= 1, got 0"),
    (dict(pad_mode="median"), ValueError, "pad_mode must be one of ['constant', 'edge', 'reflect', 'wrap'], got 'median'"),
    (dict(n_mels=0), ValueError, "n_mels must be an integer >= 1, got 0"),
    (dict(sr=16000, fmax=8000.5), ValueError, "fmax (8000.5) must be <= the Nyquist frequency sr / 2 = 8000.0"),
    (dict(sr=16000, fmin=-1.0), ValueError, "fmin (-1.0) must satisfy 0 <= fmin < fmax (8000.0)"),
    (dict(sr=16000, fmin=100.0, fmax=100.0), ValueError, "fmin (100.0) must satisfy 0 <= fmin < fmax (100.0)"),
]


@pytest.mark.parametrize("kw,exc,msg", LIBROSA_BAD, ids=[str(k) for k, _, _ in LIBROSA_BAD])
def test_librosa_refusals(kw, exc, msg):
    pytest.importorskip("librosa")
    with pytest.raises(exc, match=_exact(msg)):
        KF.from_librosa_melspectrogram(**kw)
    with pytest.raises(ValueError, match=r"^window 'no-such-window' for win_length 2048: "):
        KF.from_librosa_melspectrogram(window="no-such-window")


def test_librosa_edges_that_are_accepted():
    pytest.importorskip("librosa")
    fe = KF.from_librosa_melspectrogram(sr=16000, n_fft=256, n_mels=10, fmin=0.0, fmax=8000.0, win_length=256)
    assert fe.win_length == 256
    assert KF.from_librosa_melspectrogram(sr=16000, n_fft=256, n_mels=10, hop_length=1).hop_length == 1


# ------------------------------------------------------------------------------------------------
# from_transform
# ------------------------------------------------------------------------------------------------
def test_from_transform_copies_each_field():
    with torch.no_grad():
        mel = torchaudio.transforms.MelSpectrogram(sample_rate=8000, n_fft=64, win_length=50, hop_length=9, n_mels=10,
                                                   f_min=40.0, f_max=3500.0, pad=2, power=1.0, normalized=True,
                                                   center=False, pad_mode="constant", norm="slaney", mel_scale="slaney")
        mel.spectrogram.window.mul_(torch.linspace(0.5, 1.0, 50))  # modified buffers are taken as they are
        mel.mel_scale.fb.mul_(1.5)
    fe = KF.from_transform(mel, dtype=D, log="log", log_offset=1e-4)
    c = fe.config()
    assert (c["sample_rate"], c["n_fft"], c["win_length"], c["hop_length"], c["pad"], c["power"], c["normalized"],
            c["center"], c["pad_mode"], c["log"], c["log_offset"]) == (8000, 64, 50, 9, 2, 1.0, "window", False,
                                                                      "constant", "log", 1e-4)
    assert torch.equal(fe.ref_window, mel.spectrogram.window.to(D))
    assert torch.equal(fe.ref_fb, mel.mel_scale.fb.to(D)) and fe.ref_dct is None

    mfcc = torchaudio.transforms.MFCC(sample_rate=8000, n_mfcc=7, norm=None, melkwargs=dict(n_fft=64, n_mels=9))
    with torch.no_grad():
        mfcc.amplitude_to_DB.top_db = 50.0
        mfcc.amplitude_to_DB.amin = 1e-8
        mfcc.amplitude_to_DB.multiplier = 20.0
    fe = KF.from_transform(mfcc, dtype=D)
    assert (fe.log, fe.top_db, fe.amin, fe.multiplier, fe.sample_rate) == ("db", 50.0, 1e-8, 20.0, 8000)
    assert torch.equal(fe.ref_dct, mfcc.dct_mat.to(D)) and torch.equal(fe.ref_fb, mfcc.MelSpectrogram.mel_scale.fb.to(D))
    mfcc.amplitude_to_DB.top_db = None
    assert KF.from_transform(mfcc).top_db is None
    logm = KF.from_transform(torchaudio.transforms.MFCC(n_mfcc=5, log_mels=True, melkwargs=dict(n_fft=64, n_mels=8)))
    assert (logm.log, logm.log_offset, logm.top_db) == ("log", 1e-6, None)
    # torchaudio's log-mel MFCC takes log(x + 1e-6) and the dB MFCC its AmplitudeToDB: the instance
    # decides, so a value given here is refused by name (it used to be ignored silently)
    for mels in (True, False):
        m = torchaudio.transforms.MFCC(n_mfcc=5, log_mels=mels, melkwargs=dict(n_fft=64, n_mels=8))
        with pytest.raises(TypeError, match=_exact("log_offset is decided by the MFCC instance (its log_mels and "
                                                   "amplitude_to_DB), do not pass it")):
            KF.from_transform(m, log_offset=1e-3)
        with pytest.raises(TypeError, match=_exact("log_offset, top_db are decided by the MFCC instance (its "
                                                   "log_mels and amplitude_to_DB), do not pass them")):
            KF.from_transform(m, top_db=80.0, log_offset=1e-5)


def test_from_transform_refusals():
    mfcc = torchaudio.transforms.MFCC(n_mfcc=5, melkwargs=dict(n_fft=64, n_mels=8))
    with pytest.raises(TypeError, match=_exact("log is decided by the MFCC instance (log_mels), do not pass it")):
        KF.from_transform(mfcc, log="db")
    with pytest.raises(TypeError, match=_exact("from_transform got unexpected keyword arguments ['n_fft', 'zz']")):
        KF.from_transform(mfcc, n_fft=3, zz=1)
    with pytest.raises(TypeError, match=_exact("module must be a torchaudio.transforms.MelSpectrogram or MFCC, "
                                               "got Spectrogram")):
        KF.from_transform(torchaudio.transforms.Spectrogram())
    mfcc.amplitude_to_DB.db_multiplier = 0.5
    with pytest.raises(ValueError, match=_exact("AmplitudeToDB with ref != 1 (db_multiplier 0.5) is not supported")):
        KF.from_transform(mfcc)


# ------------------------------------------------------------------------------------------------
# Every numeric argument is checked by name (found by mutation testing)
# ------------------------------------------------------------------------------------------------
NAMED = [
    (KF.from_melspectrogram, "win_length", "x", "win_length must be an integer >= 1, got 'x'"),
    (KF.from_melspectrogram, "hop_length", 1.5, "hop_length must be an integer >= 1, got 1.5"),
    (KF.from_melspectrogram, "sample_rate", float("nan"), "sample_rate must be a finite number, got nan"),
    (KF.from_melspectrogram, "f_min", "0", "f_min must be a finite number, got '0'"),
    (KF.from_melspectrogram, "f_max", float("inf"), "f_max must be a finite number, got inf"),
    (KF.from_kaldi_fbank, "sample_frequency", True, "sample_frequency must be a finite number, got True"),
    (KF.from_kaldi_fbank, "preemphasis_coefficient", None, "preemphasis_coefficient must be a finite number, got None"),
    (KF.from_kaldi_fbank, "low_freq", float("nan"), "low_freq must be a finite number, got nan"),
    (KF.from_kaldi_fbank, "high_freq", "8000", "high_freq must be a finite number, got '8000'"),
    (KF.from_kaldi_fbank, "vtln_warp", None, "vtln_warp must be a finite number, got None"),
    (KF.from_kaldi_fbank, "vtln_low", None, "vtln_low must be a finite number, got None"),
    (KF.from_kaldi_fbank, "vtln_high", None, "vtln_high must be a finite number, got None"),
    (KF.from_kaldi_fbank, "blackman_coeff", None, "blackman_coeff must be a finite number, got None"),
    (KF.from_kaldi_fbank, "num_mel_bins", 23.0, "num_mel_bins must be an integer >= 1, got 23.0"),
    (KF.from_librosa_melspectrogram, "sr", None, "sr must be a finite number, got None"),
    (KF.from_librosa_melspectrogram, "fmin", None, "fmin must be a finite number, got None"),
    (KF.from_librosa_melspectrogram, "fmax", "8000", "fmax must be a finite number, got '8000'"),
    (KF.from_librosa_melspectrogram, "win_length", 0, "win_length must be an integer >= 1, got 0"),
    (KF.from_librosa_melspectrogram, "n_fft", 2.0, "n_fft must be an integer >= 2, got 2.0"),
]


@pytest.mark.parametrize("maker,key,value,msg", NAMED, ids=[f"{m.__name__}-{k}" for m, k, _, _ in NAMED])
def test_numeric_arguments_are_checked_by_name(maker, key, value, msg):
    if maker is KF.from_librosa_melspectrogram:
        pytest.importorskip("librosa")
    with pytest.raises(ValueError, match=_exact(msg)):
        maker(**{key: value})


def test_kaldi_window_rounding_and_tiny_sizes():
    """Rounding up to a power of two at its edges (257 and 511 samples -> 512), and the smallest
    window sizes: 2 samples pass the size check and fail on the filters instead."""
    for ms, size in ((16.0625, 257), (31.9375, 511), (32.0, 512)):
        fe = KF.from_kaldi_fbank(frame_length=ms, num_mel_bins=23)
        _, _, want_size, padded = kaldi._get_waveform_and_window_properties(
            torch.zeros(1, 1000), -1, 16000.0, 10.0, ms, True, 0.97)
        assert (fe.win_length, fe.n_fft) == (want_size, padded) == (size, 512)
    with pytest.raises(ValueError, match=r"^num_mel_bins \(23\) is too large for n_fft: more filters than the 2 "):
        KF.from_kaldi_fbank(frame_length=0.125)  # 2 samples
    with pytest.raises(ValueError, match=_exact("frame_shift (10.0 ms) gives 0 samples; must be >= 1")):
        KF.from_kaldi_fbank(sample_frequency=1.0)  # a positive rate, however low, passes its own check


def test_from_transform_names_empty_filters():
    """A copied filterbank with a filter that covers no bin warns, naming n_mels and the filter."""
    t = torchaudio.transforms.MelSpectrogram(n_fft=64, n_mels=8)
    with torch.no_grad():
        t.mel_scale.fb[:, 3] = 0.0
    with pytest.warns(UserWarning, match=r"^n_mels \(8\) is too large for n_fft \(n_freqs = 33 bins\) and the "
                                         r"frequency range: filters \[3\] cover no frequency bin"):
        KF.from_transform(t)


def test_conversion_details_found_by_mutation_testing():
    """librosa: our log options pass through, fmax below Nyquist reaches the filters, a tensor
    window is accepted, unknown keywords name librosa; torchaudio: the default f_max for an odd
    sample rate is sample_rate // 2; Kaldi: VTLN ranges are only checked when warping."""
    pytest.importorskip("librosa")
    import librosa

    fe = KF.from_librosa_melspectrogram(sr=16000, n_fft=256, n_mels=10, log="log", fmax=6000.0,
                                       window=torch.hann_window(256), dtype=D)
    assert fe.log == "log"
    basis = librosa.filters.mel(sr=16000, n_fft=256, n_mels=10, fmax=6000.0, dtype=np.float32)
    assert torch.equal(fe.ref_fb, torch.from_numpy(basis.T.astype(np.float64)))
    assert torch.equal(fe.ref_window, torch.hann_window(256).double())
    with pytest.raises(TypeError, match=r"^unsupported keyword arguments \['bogus'\]: neither "
                                        r"librosa\.feature\.melspectrogram's nor ours"):
        KF.from_librosa_melspectrogram(bogus=1)
    t = torchaudio.transforms.MelSpectrogram(sample_rate=22051, n_fft=64, n_mels=8)
    fe = KF.from_melspectrogram(sample_rate=22051, n_fft=64, n_mels=8, dtype=D)
    assert torch.equal(fe.ref_fb, t.mel_scale.fb.to(D))  # f_max = 11025, not 11025.5
    assert KF.from_kaldi_fbank(vtln_warp=1.0, vtln_low=10.0).framing == "kaldi"  # not warping: not checked


# ------------------------------------------------------------------------------------------------
# The generic constructor's own checks (conversions.validate_config), and edges of the from_*
# conversions that no case above sits on (found by mutation testing, issue 15)
# ------------------------------------------------------------------------------------------------
def _generic_config(**kw) -> dict:
    """KaleidoscopeFrontend's defaults for every configuration key, n_fft 64 / 64 / 16, then kw."""
    from kfrontend.conversions import CONFIG_KEYS

    sig = inspect.signature(KF.__init__).parameters
    cfg = {k: sig[k].default for k in CONFIG_KEYS if sig[k].default is not inspect.Parameter.empty}
    cfg.update(n_fft=64, win_length=64, hop_length=16)
    cfg.update(kw)
    assert set(cfg) == set(CONFIG_KEYS)
    return cfg


def test_validate_config_normalises_and_keeps_every_key():
    from kfrontend.conversions import validate_config

    eps = float(torch.finfo(torch.float32).eps)
    got = validate_config(_generic_config(power=2, normalized=True))
    want = _generic_config(power=2.0, normalized="window", log_floor=1e-6)  # the floor defaults to the offset
    assert got == want and type(got["power"]) is float
    assert validate_config(_generic_config(log_offset=0, log="log"))["log_floor"] == eps  # no offset: Kaldi's eps
    edges = validate_config(_generic_config(n_fft=2, win_length=1, hop_length=1, pad=0, power=1e-9, top_db=0,
                                            log_floor=1e-30, preemphasis=0, frames_op="conv", framing="kaldi",
                                            layout="channels_last", normalized="frame_length"))
    assert (edges["n_fft"], edges["win_length"], edges["top_db"], edges["log_floor"], edges["frames_op"],
            edges["normalized"]) == (2, 1, 0.0, 1e-30, "conv", "frame_length")
    for op in ("auto", "unfold"):
        assert validate_config(_generic_config(frames_op=op))["frames_op"] == op
    db = validate_config(_generic_config(log="db", top_db=80, log_offset=1, log_floor=2, preemphasis=1))
    assert db == _generic_config(log="db", top_db=80.0, log_offset=1.0, log_floor=2.0, preemphasis=1.0, power=2.0)
    assert all(type(db[k]) is float for k in ("top_db", "log_offset", "log_floor", "preemphasis", "power"))


VALIDATE_BAD = [
    (dict(n_fft=1), "n_fft must be an integer >= 2, got 1"),
    (dict(n_fft="64"), "n_fft must be an integer >= 2, got '64'"),
    (dict(win_length=0), "win_length must be an integer >= 1, got 0"),
    (dict(hop_length=0), "hop_length must be an integer >= 1, got 0"),
    (dict(win_length=65), "win_length (65) must be <= n_fft (64)"),
    (dict(framing="mfcc"), "framing must be 'stft' or 'kaldi', got 'mfcc'"),
    (dict(pad_mode="symmetric"), "pad_mode must be one of ('constant', 'reflect', 'replicate', 'circular'), "
                                 "got 'symmetric'"),
    (dict(pad=-1), "pad must be an integer >= 0, got -1"),
    (dict(power=None), "power=None (complex spectrogram) is not supported by a mel front end: use 1.0 or 2.0"),
    (dict(power=0.0), "power must be > 0, got 0.0"),
    (dict(power="2"), "power must be a finite number, got '2'"),
    (dict(normalized="yes"), "normalized must be a bool, 'window' or 'frame_length', got 'yes'"),
    (dict(log="ln"), "log must be one of (None, 'log', 'db'), got 'ln'"),
    (dict(log_offset=-0.5), "log_offset must be >= 0, got -0.5"),
    (dict(log_offset=None), "log_offset must be a finite number, got None"),
    (dict(log_floor=0.0), "log_floor must be > 0 (log of 0 is -inf), got 0.0"),
    (dict(log_floor="1"), "log_floor must be a finite number, got '1'"),
    (dict(top_db=-1.0), "top_db must be >= 0, got -1.0"),
    (dict(top_db="80"), "top_db must be a finite number, got '80'"),
    (dict(layout="nchw"), "layout must be 'channels_first' or 'channels_last', got 'nchw'"),
    (dict(preemphasis=None), "preemphasis must be a finite number, got None"),
    (dict(frames_op="fft"), "frames_op must be 'auto', 'conv' or 'unfold', got 'fft'"),
    (dict(framing="kaldi"), "Kaldi framing returns (..., frames, bins): layout must be 'channels_last'"),
]


@pytest.mark.parametrize("kw,msg", VALIDATE_BAD, ids=[str(k) for k, _ in VALIDATE_BAD])
def test_validate_config_refusals(kw, msg):
    from kfrontend.conversions import validate_config

    with pytest.raises(ValueError, match=_exact(msg)):
        validate_config(_generic_config(**kw))


def test_rate_and_frequency_edges():
    """A sample rate of 1 passes the rate check (and fails on the frequency range; librosa's sr 1 is
    accepted); Kaldi's
    high_freq of 1 Hz is a frequency, not an offset from Nyquist (only values <= 0 count from it);
    VTLN ranges just inside their ends are accepted and vtln_low == vtln_high is refused."""
    with pytest.raises(ValueError, match=_exact("f_min (0.0) must satisfy 0 <= f_min < f_max (0.0)")):
        KF.from_melspectrogram(sample_rate=1, n_fft=64, n_mels=8)
    with pytest.raises(ValueError, match=_exact("low_freq (20.0) must be below high_freq (1.0)")):
        KF.from_kaldi_fbank(high_freq=1.0)
    with pytest.raises(ValueError, match=_exact("low_freq (20.0) must be below high_freq (0.5)")):
        KF.from_kaldi_fbank(high_freq=-7999.5)
    with pytest.raises(ValueError, match=_exact(
            "vtln_low (4000.0) and vtln_high (4000.0) must satisfy low_freq < vtln_low < vtln_high < high_freq "
            "(20.0, 8000.0)")):
        KF.from_kaldi_fbank(vtln_warp=0.9, vtln_low=4000.0, vtln_high=4000.0)
    fe = KF.from_kaldi_fbank(num_mel_bins=4, low_freq=0.0, vtln_warp=0.9, vtln_low=0.25, vtln_high=0.5, dtype=D)
    banks, _ = kaldi.get_mel_banks(4, 512, 16000.0, 0.0, 0.0, 0.25, 0.5, 0.9)
    assert torch.equal(fe.ref_fb, torch.nn.functional.pad(banks, (0, 1)).T.to(D))
    librosa = pytest.importorskip("librosa")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa's and our empty-filter warnings: 8 filters below 0.5 Hz
        fe = KF.from_librosa_melspectrogram(sr=1, n_fft=64, n_mels=8, dtype=D)  # fmax 0.5 Hz: accepted
        basis = librosa.filters.mel(sr=1, n_fft=64, n_mels=8, dtype=np.float32)
    assert torch.equal(fe.ref_fb, torch.from_numpy(basis.T.astype(np.float64)))


def test_librosa_filter_checks_name_n_mels_and_count_the_bins():
    """librosa's path refuses more filters than bins and warns about empty ones by the same messages
    as torchaudio's, naming n_mels and counting n_fft // 2 + 1 bins (33 for n_fft 64)."""
    librosa = pytest.importorskip("librosa")
    with pytest.raises(ValueError, match=_exact(
            "n_mels (34) is too large for n_fft: more filters than the 33 frequency bins; lower n_mels or raise n_fft")):
        KF.from_librosa_melspectrogram(sr=16000, n_fft=64, n_mels=34)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        basis = librosa.filters.mel(sr=16000, n_fft=64, n_mels=33)
    empty = np.flatnonzero(basis.max(axis=1) <= 0).tolist()  # librosa's own empty filters
    assert 0 < len(empty) <= 8
    with pytest.warns(UserWarning, match=_exact(
            f"n_mels (33) is too large for n_fft (n_freqs = 33 bins) and the frequency range: filters {empty} cover "
            "no frequency bin (their outputs are 0, as in the counterpart)")):
        assert KF.from_librosa_melspectrogram(sr=16000, n_fft=64, n_mels=33).n_mels == 33


def test_kaldi_float32_window_is_torchaudios_float32_window():
    """torchaudio computes Kaldi's window in the waveform's dtype: a float32 front end holds the
    float32 window bit for bit (not the float64 one rounded), for every window type."""
    for window_type in ("povey", "hamming", "hanning", "blackman"):
        fe = KF.from_kaldi_fbank(window_type=window_type)
        want = kaldi._feature_window_function(window_type, 400, 0.42, torch.device("cpu"), torch.float32)
        assert fe.ref_window.dtype == torch.float32 and torch.equal(fe.ref_window, want), window_type


def test_from_transform_checks_the_instance_and_matches_its_dct():
    """from_transform refuses an instance whose f_max is above Nyquist (as from_melspectrogram
    does); a float64 front end of an MFCC made in float32 reproduces its float32 DCT values
    (dct_construction "matrix"), one made under a float64 default dtype (create_dct's float64
    values, ortho or None) gets the chirp-z DCT, and a float32 front end never needs the matrix."""
    from kfrontend.conversions import transform_config
    from kfrontend.filterbanks import create_dct

    high = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=64, n_mels=8, f_max=9000.0)
    with pytest.raises(ValueError, match=_exact("f_max (9000.0) must be <= the Nyquist frequency sample_rate / 2 "
                                                "= 8000.0")):
        KF.from_transform(high)
    mk = dict(n_fft=64, n_mels=12)
    f32 = torchaudio.transforms.MFCC(n_mfcc=6, melkwargs=mk)
    assert transform_config(f32, dict(dtype=D)).get("dct_construction") == "matrix"
    # One coefficient of 8 mels: every float32 value is within 1e-8 (and 1e-5 relative) of the
    # float64 one, but not equal to it: only an exact comparison (rtol 0, atol 1e-14) sees that.
    one = torchaudio.transforms.MFCC(n_mfcc=1, melkwargs=dict(n_fft=64, n_mels=8))
    assert 0 < (one.dct_mat.double() - create_dct(1, 8, "ortho", dtype=D)).abs().max() <= 1e-8
    assert transform_config(one, dict(dtype=D)).get("dct_construction") == "matrix"
    assert "dct_construction" not in transform_config(f32, dict(dtype=torch.float32))
    old = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        exact = {norm: torchaudio.transforms.MFCC(n_mfcc=6, norm=norm, melkwargs=mk) for norm in ("ortho", None)}
    finally:
        torch.set_default_dtype(old)
    for norm, m in exact.items():
        assert m.dct_mat.dtype == torch.float64
        assert "dct_construction" not in transform_config(m, dict(dtype=D)), norm
