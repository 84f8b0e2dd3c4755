"""KaleidoscopeFrontend at initialisation equals the transform it replaces.

References: torchaudio.transforms.MelSpectrogram / MFCC, torchaudio.compliance.kaldi.fbank,
librosa.feature.melspectrogram, on real TIMIT speech (skipped cleanly without the sample) and noise.

Tolerances (issue 4), per utterance, relative to the utterance's largest reference value:
* float64 (both sides in float64, their buffers built in float64): <= 1e-9 -- the proof that the
  K-matrix stages are the exact transforms;
* float32: MelSpectrogram <= 1e-5 relative; log-mel log(x + 1e-6) <= 5e-3 absolute; MFCC (dB and
  log-mel) <= 2e-2 absolute; Kaldi fbank (dither 0) <= 5e-3 absolute.  The float32 reference is the
  counterpart's float64 run *with its own float32 buffers* (``copy.deepcopy(transform).double()``,
  librosa's default float32 filters, Kaldi's float32 mel banks), so that only arithmetic is compared:
  building the filterbank itself in float32 moves narrow filters by up to 1.1e-5 of the max on noise
  (torchaudio's defaults, 128 mels over 201 bins), more than the arithmetic error being measured.
"""
from __future__ import annotations

import copy
import functools
import warnings

import numpy as np
import pytest
import torch
import torchaudio
import torchaudio.compliance.kaldi as kaldi

from helpers import default_dtype
from kfrontend.frontend import KaleidoscopeFrontend as KF

F64_TOL = 1e-9
MEL_F32_TOL = 1e-5
LOGMEL_F32_TOL = 5e-3
MFCC_F32_TOL = 2e-2
KALDI_F32_TOL = 5e-3

UTTERANCES = ("dr1-fvmh0/sa1", "dr3-madc0/sx107", "dr7-fblv0/si1058")
CROP = 14000  # samples per signal: 0.875 s of speech keeps the grid cheap


pytestmark = pytest.mark.usefixtures("one_thread")


def _load(path) -> torch.Tensor:
    import soundfile as sf

    data, sr = sf.read(str(path), dtype="float64")
    assert sr == 16000
    return torch.from_numpy(np.ascontiguousarray(data))


@functools.lru_cache(maxsize=None)
def _batch(root: str | None) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    noise = 0.1 * torch.randn(CROP, dtype=torch.float64, generator=g)
    if root is not None:
        from pathlib import Path

        start = 4000  # past the leading silence, yet keeping quiet stretches
        rows = [_load(Path(root) / f"{u}.wav")[start: start + CROP] for u in UTTERANCES] + [noise]
    else:  # without the real sample: a chirp over a noise floor (a recording's dynamic range), noises
        t = torch.arange(CROP, dtype=torch.float64) / 16000
        chirp = torch.sin(2 * torch.pi * (200 + 3000 * t) * t) + 0.1 * noise.flip(0)
        rows = [chirp, noise, 0.5 * noise + 0.3 * chirp, noise.flip(0)]
    return torch.stack(rows)


@pytest.fixture
def signals(request) -> torch.Tensor:
    """(4, CROP) float64: three real utterances (a stretch of each, skipping the leading silence)
    and white noise; where the TIMIT sample is absent (``timit_sample`` skips), a chirp and noise."""
    try:
        root = str(request.getfixturevalue("timit_sample"))
    except pytest.skip.Exception:
        root = None
    return _batch(root).clone()


@pytest.fixture(autouse=True)
def _no_grad():
    """Equality only: no autograd graphs (and the stage products are cached between calls)."""
    with torch.no_grad():
        yield


def per_utt_rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max over utterances of max|got - ref| / max|ref| of that utterance (leading axis)."""
    got, ref = got.double(), ref.double()
    errs = [((g - r).abs().max() / r.abs().max()).item() for g, r in zip(got, ref)]
    return max(errs)


def per_utt_abs(got: torch.Tensor, ref: torch.Tensor) -> float:
    return (got.double() - ref.double()).abs().max().item()


def _built(reference_cls, ours, kw):
    """(reference float64, ours float64, reference float32, ours float32) for the same arguments;
    warnings silenced (torchaudio and we both warn about empty mel filters)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with default_dtype(torch.float64):
            ref64, fe64 = reference_cls(**kw), ours(dtype=torch.float64, **kw)
        return ref64, fe64, reference_cls(**kw), ours(**kw)


# ------------------------------------------------------------------------------------------------
# MelSpectrogram
# ------------------------------------------------------------------------------------------------
HANN = torch.hann_window
MEL_CASES = [
    dict(),  # torchaudio's defaults: n_fft 400, 128 mels (4 empty filters), hop 200
    dict(n_fft=400, hop_length=160, n_mels=40),
    dict(n_fft=400, hop_length=160, n_mels=80, f_min=20.0, f_max=7600.0),
    dict(n_fft=512, win_length=400, hop_length=160, n_mels=40),
    dict(n_fft=512, win_length=400, hop_length=160, n_mels=80, mel_scale="slaney", norm="slaney"),
    dict(n_fft=512, hop_length=128, n_mels=64, power=1.0),
    dict(n_fft=256, hop_length=80, n_mels=23),
    dict(n_fft=256, win_length=200, hop_length=100, n_mels=40, f_min=100.0, f_max=6000.0, norm="slaney"),
    dict(n_fft=1024, win_length=400, hop_length=160, n_mels=128),
    dict(n_fft=1024, hop_length=256, n_mels=96, mel_scale="slaney", power=1.0, center=False),
    dict(n_fft=400, hop_length=160, n_mels=40, center=False),
    dict(n_fft=400, hop_length=160, n_mels=40, pad_mode="constant"),
    dict(n_fft=512, win_length=300, hop_length=150, n_mels=40, pad_mode="replicate"),
    dict(n_fft=512, hop_length=160, n_mels=40, pad_mode="circular", normalized=True),
    dict(n_fft=400, hop_length=160, n_mels=40, normalized="window", power=1.0),
    dict(n_fft=400, hop_length=160, n_mels=40, normalized="frame_length"),
    dict(n_fft=400, hop_length=160, n_mels=40, window_fn=torch.hamming_window),
    dict(n_fft=512, win_length=480, hop_length=160, n_mels=40, window_fn=torch.kaiser_window,
         wkwargs=dict(periodic=True, beta=8.0)),
    dict(n_fft=400, hop_length=160, n_mels=40, pad=37),
    dict(n_fft=320, win_length=320, hop_length=160, n_mels=40, sample_rate=8000, f_max=3800.0),
    dict(n_fft=600, win_length=550, hop_length=220, n_mels=50, sample_rate=22050, mel_scale="slaney"),
]


def _mel_id(kw):
    return ",".join(f"{k}={getattr(v, '__name__', v)}" for k, v in kw.items()) or "defaults"


@pytest.mark.parametrize("kw", MEL_CASES, ids=[_mel_id(k) for k in MEL_CASES])
def test_melspectrogram_equals_torchaudio(kw, signals):
    ref64, fe64, ref32, fe32 = _built(torchaudio.transforms.MelSpectrogram, KF.from_melspectrogram, kw)
    r64 = ref64(signals)
    y64 = fe64(signals)
    assert y64.shape == r64.shape and y64.dtype == torch.float64
    assert y64.stride() == r64.stride()  # the same (transposed) memory layout as torchaudio
    assert per_utt_rel(y64, r64) <= F64_TOL

    x32 = signals.float()
    r32 = ref32(x32)
    exact = copy.deepcopy(ref32).double()(signals)
    y32 = fe32(x32)
    assert y32.dtype == torch.float32 and y32.shape == r32.shape and y32.stride() == r32.stride()
    assert per_utt_rel(y32, exact) <= MEL_F32_TOL
    fe32.log = "log"  # the log-mel variant (log(x + log_offset)), reusing the cached stage products
    assert per_utt_abs(fe32(x32), torch.log(exact + 1e-6)) <= LOGMEL_F32_TOL


def test_melspectrogram_unbatched_and_nd(signals):
    kw = dict(n_fft=400, hop_length=160, n_mels=40)
    ref, fe = torchaudio.transforms.MelSpectrogram(**kw), KF.from_melspectrogram(**kw)
    x = signals.float()
    for inp in (x[0], x.reshape(2, 2, -1)):
        r, y = ref(inp), fe(inp)
        assert y.shape == r.shape
        assert ((y - r).abs().max() / r.abs().max()).item() <= MEL_F32_TOL


# ------------------------------------------------------------------------------------------------
# MFCC (dB with torchaudio's batch-wide top_db, and log-mel)
# ------------------------------------------------------------------------------------------------
MFCC_CASES = [
    dict(),  # n_mfcc 40 over 128 mels, dB, top_db 80 over the whole batch
    dict(n_mfcc=13, melkwargs=dict(n_fft=400, hop_length=160, n_mels=23, center=False)),
    dict(n_mfcc=40, melkwargs=dict(n_fft=512, win_length=400, hop_length=160, n_mels=40)),
    dict(n_mfcc=20, log_mels=True, melkwargs=dict(n_fft=400, hop_length=160, n_mels=80)),
    dict(n_mfcc=30, norm=None, melkwargs=dict(n_fft=256, hop_length=128, n_mels=40, mel_scale="slaney")),
    dict(n_mfcc=24, log_mels=True, norm=None, melkwargs=dict(n_fft=1024, win_length=640, hop_length=160,
                                                             n_mels=64, power=1.0)),
    dict(sample_rate=8000, n_mfcc=13, melkwargs=dict(n_fft=256, hop_length=80, n_mels=26, f_min=50.0)),
]


@pytest.mark.parametrize("kw", MFCC_CASES, ids=[_mel_id(k) for k in MFCC_CASES])
def test_mfcc_equals_torchaudio(kw, signals):
    ref64, fe64, ref32, fe32 = _built(torchaudio.transforms.MFCC, KF.from_mfcc, kw)
    r64, y64 = ref64(signals), fe64(signals)
    assert y64.shape == r64.shape
    assert per_utt_rel(y64, r64) <= F64_TOL
    x32 = signals.float()
    r32, y32 = ref32(x32), fe32(x32)
    assert y32.shape == r32.shape and y32.dtype == torch.float32
    assert per_utt_abs(y32, copy.deepcopy(ref32).double()(signals)) <= MFCC_F32_TOL


def test_mfcc_top_db_is_batch_wide_like_torchaudio(signals):
    """torchaudio's AmplitudeToDB clamps at (max - top_db) over a whole (batch, mels, time) tensor:
    an utterance's MFCC depends on what it is batched with.  Ours does the same; per-item
    (4-d input (batch, 1, mels, time)) clamps per item, as torchaudio."""
    kw = dict(n_mfcc=13, melkwargs=dict(n_fft=400, hop_length=160, n_mels=40))
    with default_dtype(torch.float64):
        ref, fe = torchaudio.transforms.MFCC(**kw), KF.from_mfcc(dtype=torch.float64, **kw)
    quiet = signals.clone()
    quiet[1] *= 1e-4  # 80 dB below the others: the batch clamp bites on this one
    batch, alone = fe(quiet), fe(quiet[1])
    assert per_utt_rel(batch, ref(quiet)) <= F64_TOL
    assert per_utt_rel(alone[None], ref(quiet[1])[None]) <= F64_TOL
    assert (batch[1] - alone).abs().max() > 1.0  # the clamp really depends on the batch
    four = quiet[:, None]
    assert per_utt_rel(fe(four), ref(four)) <= F64_TOL


# ------------------------------------------------------------------------------------------------
# Kaldi fbank
# ------------------------------------------------------------------------------------------------
KALDI_CASES = [
    dict(),
    dict(num_mel_bins=40),
    dict(num_mel_bins=40, snip_edges=False),
    dict(num_mel_bins=80, low_freq=0.0, high_freq=-200.0, window_type="hamming"),
    dict(num_mel_bins=23, round_to_power_of_two=False, window_type="hanning", preemphasis_coefficient=0.0),
    dict(num_mel_bins=40, frame_length=20.0, frame_shift=8.0, window_type="blackman", remove_dc_offset=False),
    dict(num_mel_bins=40, use_power=False, window_type="rectangular", snip_edges=False),
    dict(num_mel_bins=40, use_energy=True, subtract_mean=True),
    dict(num_mel_bins=40, use_energy=True, raw_energy=False, htk_compat=True, energy_floor=0.0),
    dict(num_mel_bins=40, use_energy=True, raw_energy=False, remove_dc_offset=False),
    dict(num_mel_bins=30, vtln_warp=0.9, vtln_low=200.0, vtln_high=-800.0),
    dict(num_mel_bins=24, sample_frequency=8000.0, low_freq=60.0, high_freq=3700.0),
    dict(num_mel_bins=40, use_log_fbank=False),
]


@pytest.mark.parametrize("kw", KALDI_CASES, ids=[_mel_id(k) for k in KALDI_CASES])
def test_kaldi_fbank_equals_torchaudio(kw, signals):
    with default_dtype(torch.float64):
        fe64 = KF.from_kaldi_fbank(dtype=torch.float64, **kw)
        r64 = torch.stack([kaldi.fbank(s[None], **kw) for s in signals])
    fe32 = KF.from_kaldi_fbank(**kw)
    y64 = fe64(signals)
    assert y64.shape == r64.shape
    assert per_utt_rel(y64, r64) <= F64_TOL
    y32 = fe32(signals.float())
    assert y32.dtype == torch.float32
    # Kaldi's float64 run with its float32-built mel banks (the default dtype).
    exact = torch.stack([kaldi.fbank(s[None], **kw) for s in signals])
    if kw.get("use_log_fbank", True):
        assert per_utt_abs(y32, exact) <= KALDI_F32_TOL
    else:
        assert per_utt_rel(y32, exact) <= MEL_F32_TOL


def test_kaldi_fbank_int16_scale(signals):
    """Kaldi users feed int16-scaled floats; the log features shift by 2 log(32768) and stay exact."""
    x = signals[:2] * 32768
    r = torch.stack([kaldi.fbank(s[None].float()) for s in x])
    assert per_utt_abs(KF.from_kaldi_fbank()(x.float()), r) <= KALDI_F32_TOL


# ------------------------------------------------------------------------------------------------
# librosa
# ------------------------------------------------------------------------------------------------
LIBROSA_CASES = [
    dict(sr=16000),  # librosa's defaults: n_fft 2048, hop 512, Slaney scale and norm, constant padding
    dict(sr=16000, n_fft=512, hop_length=160, win_length=400, n_mels=40),
    dict(sr=16000, n_fft=400, hop_length=160, n_mels=80, htk=True, norm=None, fmin=20.0, fmax=7600.0),
    dict(sr=16000, n_fft=1024, hop_length=256, n_mels=64, pad_mode="reflect", power=1.0, window="hamming"),
    dict(sr=16000, n_fft=512, hop_length=128, n_mels=40, center=False, window=("kaiser", 6.0)),
    dict(sr=16000, n_fft=256, hop_length=64, n_mels=32, pad_mode="edge", norm=1.0),
]


@pytest.mark.parametrize("kw", LIBROSA_CASES, ids=[_mel_id(k) for k in LIBROSA_CASES])
def test_librosa_melspectrogram(kw, signals):
    import librosa

    x64 = signals.numpy()
    r64 = torch.from_numpy(librosa.feature.melspectrogram(y=x64, dtype=np.float64, **kw))
    # librosa's own ``dtype`` (its filterbank's) goes in as a numpy dtype or as ``mel_dtype``; ours is
    # a torch.dtype.
    fe64 = KF.from_librosa_melspectrogram(dtype=torch.float64, mel_dtype=np.float64, **kw)
    y64 = fe64(signals)
    assert y64.shape == r64.shape
    assert per_utt_rel(y64, r64) <= F64_TOL
    r32 = torch.from_numpy(librosa.feature.melspectrogram(y=x64.astype(np.float32), **kw))
    exact = torch.from_numpy(librosa.feature.melspectrogram(y=x64, **kw))  # float32 filters, float64 math
    fe32 = KF.from_librosa_melspectrogram(**kw)
    y32 = fe32(signals.float())
    assert y32.shape == r32.shape and y32.dtype == torch.float32
    assert per_utt_rel(y32, exact) <= MEL_F32_TOL
    # librosa's numpy ``dtype`` keyword is accepted as such (float32 filters, as librosa's default).
    fe_np = KF.from_librosa_melspectrogram(dtype=np.float32, **kw)
    assert torch.equal(fe_np.ref_fb, fe32.ref_fb)
