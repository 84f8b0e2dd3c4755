"""Other libraries' configurations as :class:`~kfrontend.frontend.KaleidoscopeFrontend`'s arguments.

Each ``*_config`` function takes the keyword arguments (or, for :func:`transform_config`, the
instance) of a counterpart -- torchaudio's ``MelSpectrogram`` and ``MFCC``, Kaldi's fbank as
``torchaudio.compliance.kaldi.fbank`` takes it, librosa's ``feature.melspectrogram`` -- with that
library's defaults, checks them as the counterpart does, and returns the keyword arguments of the
generic constructor ``KaleidoscopeFrontend(...)``: framing, window, filterbank and DCT matrices.
:func:`validate_config` checks the generic constructor's own configuration.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from kfrontend import features as Fe
from kfrontend._optional import require
from kfrontend.filterbanks import create_dct, kaldi_mel_banks, melscale_fbanks
from kfrontend.stages import STAGES

LOGS = (None, "log", "db")

CONFIG_KEYS = (
    "framing", "sample_rate", "n_fft", "win_length", "hop_length", "center", "pad_mode", "pad",
    "snip_edges", "remove_dc_offset", "preemphasis", "power", "normalized", "log", "log_offset",
    "log_floor", "top_db", "amin", "multiplier", "layout", "use_energy", "energy_floor", "raw_energy",
    "htk_compat", "subtract_mean", "frames_op",
)


_OUR_DEFAULTS = dict(log=None, log_offset=1e-6, top_db=None, init="exact", structure="kaleidoscope",
                     trainable=True, width=0, dtype=torch.float32, path="auto", backend="auto", frames_op="auto",
                     step_scale="default")

_MELSPEC_DEFAULTS = dict(sample_rate=16000, n_fft=400, win_length=None, hop_length=None, f_min=0.0, f_max=None,
                         pad=0, n_mels=128, window_fn=torch.hann_window, power=2.0, normalized=False,
                         wkwargs=None, center=True, pad_mode="reflect", onesided=None, norm=None, mel_scale="htk")

_MFCC_DEFAULTS = dict(sample_rate=16000, n_mfcc=40, dct_type=2, norm="ortho", log_mels=False, melkwargs=None)

_KALDI_DEFAULTS = dict(blackman_coeff=0.42, channel=-1, dither=0.0, energy_floor=1.0, frame_length=25.0,
                       frame_shift=10.0, high_freq=0.0, htk_compat=False, low_freq=20.0, min_duration=0.0,
                       num_mel_bins=23, preemphasis_coefficient=0.97, raw_energy=True, remove_dc_offset=True,
                       round_to_power_of_two=True, sample_frequency=16000.0, snip_edges=True,
                       subtract_mean=False, use_energy=False, use_log_fbank=True, use_power=True,
                       vtln_high=-500.0, vtln_low=100.0, vtln_warp=1.0, window_type="povey")

_LIBROSA_DEFAULTS = dict(sr=22050, n_fft=2048, hop_length=512, win_length=None, window="hann", center=True,
                         pad_mode="constant", power=2.0, n_mels=128, fmin=0.0, fmax=None, htk=False,
                         norm="slaney", mel_dtype="float32")


def _split_kwargs(kw: dict, defaults: dict, who: str, allow_log: bool = True) -> tuple[dict, dict]:
    ours_keys = set(_OUR_DEFAULTS) if allow_log else set(_OUR_DEFAULTS) - {"log", "log_offset", "top_db"}
    unknown = set(kw) - set(defaults) - ours_keys
    if unknown:
        raise TypeError(f"unsupported keyword arguments {sorted(unknown)}: neither {who}'s nor ours "
                        f"({sorted(ours_keys)})")
    theirs = {k: kw.get(k, v) for k, v in defaults.items()}
    ours = {k: kw.get(k, v) for k, v in _OUR_DEFAULTS.items() if k in ours_keys or k not in ("log", "log_offset", "top_db")}
    return theirs, ours


def _check_int(v, name: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return v


def _check_real(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return float(v)


def as_tensor(v, name: str) -> torch.Tensor:
    """A copy of ``v``: the module never shares storage with the caller's tensors (a torchaudio
    module's window / fb / dct_mat), so training cannot change them."""
    t = torch.as_tensor(v)
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a real floating point tensor, got dtype {t.dtype}")
    return t.detach().clone()


def per_stage(value, name: str, typ, default, stages=STAGES) -> dict:
    if isinstance(value, dict):
        bad = set(value) - set(stages)
        if bad:
            raise ValueError(f"{name} keys must be among {stages}, got {sorted(bad)}")
        out = {s: value.get(s, default) for s in stages}
    else:
        out = {s: value for s in stages}
    for s, v in out.items():
        if isinstance(v, bool) or not isinstance(v, typ):
            raise TypeError(f"{name}[{s!r}] must be {typ.__name__}, got {v!r}")
    return out


NOT_A_DCT = "not a DCT"


def dct_norm(dct: torch.Tensor) -> str | None:
    """torchaudio.functional.create_dct's norm of a given (n_mels, n_mfcc) DCT-II matrix, as
    torchaudio computes it in float32 or in float64 (an MFCC made under a float64 default dtype;
    at 128 mels the float32 one is 7e-6 off the float64 one), or ``NOT_A_DCT``."""
    n_mels, n_out = dct.shape
    for norm in ("ortho", None):
        for dtype in (torch.float32, torch.float64):
            ref = create_dct(n_out, n_mels, norm, dtype=dtype).to(torch.float64)
            if torch.allclose(dct.to(torch.float64), ref, rtol=1e-6, atol=1e-6):
                return norm
    return NOT_A_DCT


def validate_config(a: dict) -> dict:
    cfg = {k: a[k] for k in CONFIG_KEYS}
    n_fft = _check_int(cfg["n_fft"], "n_fft", 2)
    win = _check_int(cfg["win_length"], "win_length", 1)
    _check_int(cfg["hop_length"], "hop_length", 1)
    if win > n_fft:
        raise ValueError(f"win_length ({win}) must be <= n_fft ({n_fft})")
    if cfg["framing"] not in ("stft", "kaldi"):
        raise ValueError(f"framing must be 'stft' or 'kaldi', got {cfg['framing']!r}")
    if cfg["pad_mode"] not in Fe.PAD_MODES:
        raise ValueError(f"pad_mode must be one of {Fe.PAD_MODES}, got {cfg['pad_mode']!r}")
    _check_int(cfg["pad"], "pad", 0)
    p = cfg["power"]
    if p is None:
        raise ValueError("power=None (complex spectrogram) is not supported by a mel front end: use 1.0 or 2.0")
    if _check_real(p, "power") <= 0:
        raise ValueError(f"power must be > 0, got {p!r}")
    cfg["power"] = float(p)
    nz = cfg["normalized"]
    if nz is True:
        nz = "window"
    if nz not in (False, "window", "frame_length"):
        raise ValueError(f"normalized must be a bool, 'window' or 'frame_length', got {nz!r}")
    cfg["normalized"] = nz
    if cfg["log"] not in LOGS:
        raise ValueError(f"log must be one of {LOGS}, got {cfg['log']!r}")
    cfg["log_offset"] = _check_real(cfg["log_offset"], "log_offset")
    if cfg["log_offset"] < 0:
        raise ValueError(f"log_offset must be >= 0, got {cfg['log_offset']}")
    if cfg["log_floor"] is None:
        # log(x + offset) never sees x + offset < offset at init; the floor only guards a learned
        # mel stage that goes negative.  Without an offset, Kaldi's float32 epsilon.
        cfg["log_floor"] = cfg["log_offset"] if cfg["log_offset"] > 0 else Fe.FLOAT32_EPS
    cfg["log_floor"] = _check_real(cfg["log_floor"], "log_floor")
    if cfg["log_floor"] <= 0:
        raise ValueError(f"log_floor must be > 0 (log of 0 is -inf), got {cfg['log_floor']}")
    if cfg["top_db"] is not None:
        cfg["top_db"] = _check_real(cfg["top_db"], "top_db")
        if cfg["top_db"] < 0:
            raise ValueError(f"top_db must be >= 0, got {cfg['top_db']}")
    if cfg["layout"] not in ("channels_first", "channels_last"):
        raise ValueError(f"layout must be 'channels_first' or 'channels_last', got {cfg['layout']!r}")
    cfg["preemphasis"] = _check_real(cfg["preemphasis"], "preemphasis")
    if cfg["frames_op"] not in ("auto", "conv", "unfold"):
        raise ValueError(f"frames_op must be 'auto', 'conv' or 'unfold', got {cfg['frames_op']!r}")
    if cfg["framing"] == "kaldi" and cfg["layout"] != "channels_last":
        raise ValueError("Kaldi framing returns (..., frames, bins): layout must be 'channels_last'")
    return cfg


def _melscale_fb(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate, norm, mel_scale) -> torch.Tensor:
    fb = melscale_fbanks(n_freqs, f_min, f_max, n_mels, sample_rate, norm, mel_scale)
    _check_filters(fb, "n_mels", n_mels, n_freqs)
    return fb


def _check_filters(fb: torch.Tensor, name: str, n_mels: int, n_freqs: int, empty_is_error: bool = False) -> None:
    """More filters than frequency bins is refused.  Filters that cover no bin are what torchaudio's
    and librosa's own defaults produce (n_fft 400 with 128 mels: filters 0, 3, 6, 13 are empty), so
    there they only warn, as the counterparts do; Kaldi refuses them (its MelBanks asserts)."""
    if n_mels > n_freqs:
        raise ValueError(f"{name} ({n_mels}) is too large for n_fft: more filters than the {n_freqs} frequency "
                         f"bins; lower {name} or raise n_fft")
    empty = (fb.max(dim=0).values <= 0).nonzero().flatten().tolist()
    if empty:
        msg = (f"{name} ({n_mels}) is too large for n_fft (n_freqs = {n_freqs} bins) and the frequency range: "
               f"filters {empty[:8]}{'...' if len(empty) > 8 else ''} cover no frequency bin")
        if empty_is_error:
            raise ValueError(msg + f"; lower {name} or raise the window size")
        warnings.warn(msg + " (their outputs are 0, as in the counterpart)", stacklevel=5)


def _melspec_config(ta: dict, ours: dict, window: torch.Tensor | None = None, fb: torch.Tensor | None = None) -> dict:
    """The generic constructor's arguments for a torchaudio MelSpectrogram configuration."""
    n_fft = _check_int(ta["n_fft"], "n_fft", 2)
    win = ta["win_length"] if ta["win_length"] is not None else n_fft
    win = _check_int(win, "win_length")
    if win > n_fft:
        raise ValueError(f"win_length ({win}) must be <= n_fft ({n_fft})")
    hop = ta["hop_length"] if ta["hop_length"] is not None else win // 2
    hop = _check_int(hop, "hop_length")
    sr = ta["sample_rate"]
    if _check_real(sr, "sample_rate") <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sr!r}")
    n_mels = _check_int(ta["n_mels"], "n_mels")
    f_min = _check_real(ta["f_min"], "f_min")
    f_max = float(sr // 2) if ta["f_max"] is None else _check_real(ta["f_max"], "f_max")
    if f_max > sr / 2:
        raise ValueError(f"f_max ({f_max}) must be <= the Nyquist frequency sample_rate / 2 = {sr / 2}")
    if not 0 <= f_min < f_max:
        raise ValueError(f"f_min ({f_min}) must satisfy 0 <= f_min < f_max ({f_max})")
    if ta["onesided"] not in (None, True):
        raise ValueError("onesided=False is not supported (MelSpectrogram always uses the one-sided spectrum)")
    if ta["norm"] not in (None, "slaney"):
        raise ValueError(f"norm must be None or 'slaney', got {ta['norm']!r}")
    if ta["mel_scale"] not in ("htk", "slaney"):
        raise ValueError(f"mel_scale must be 'htk' or 'slaney', got {ta['mel_scale']!r}")
    if ta["pad_mode"] not in Fe.PAD_MODES:
        raise ValueError(f"pad_mode must be one of {Fe.PAD_MODES} (torch.stft's), got {ta['pad_mode']!r}")
    if window is None:
        wfn = ta["window_fn"]
        if not callable(wfn):
            raise TypeError(f"window_fn must be callable (e.g. torch.hann_window), got {wfn!r}")
        wk = ta["wkwargs"] or {}
        if not isinstance(wk, dict):
            raise TypeError(f"wkwargs must be a dict or None, got {type(wk).__name__}")
        # Made exactly as torchaudio makes it (default dtype, float32), so a float64 run of
        # torchaudio (module.double()) and ours start from the same numbers.
        window = wfn(win, **wk)
        if not isinstance(window, torch.Tensor) or tuple(window.shape) != (win,):
            raise ValueError(f"window_fn(win_length={win}) must return a tensor of shape ({win},)")
    n_freqs = n_fft // 2 + 1
    if fb is None:
        fb = _melscale_fb(n_freqs, f_min, f_max, n_mels, sr, ta["norm"], ta["mel_scale"])
    else:
        _check_filters(fb, "n_mels", n_mels, n_freqs)
    log = ours.pop("log")
    if log == "db":
        # dB of the power spectrum whatever the power: AmplitudeToDB's 10 (power) / 20 (magnitude).
        ours.setdefault("multiplier", 20.0 / float(ta["power"]))
    return dict(ours, n_fft=n_fft, win_length=win, hop_length=hop, window=window, fb=fb, dct=None,
                framing="stft", sample_rate=sr, center=bool(ta["center"]), pad_mode=ta["pad_mode"], pad=ta["pad"],
                power=ta["power"], normalized=ta["normalized"], log=log, layout="channels_first")


def _kaldi_config(ka: dict, ours: dict) -> dict:
    if ka["dither"] != 0.0:
        raise ValueError(f"dither must be 0.0 (got {ka['dither']!r}): random dither makes features "
                         f"non-deterministic and cannot be exact; add noise to the waveform yourself")
    if ka["channel"] != -1:
        raise ValueError(f"channel must be -1 (got {ka['channel']!r}): this front end maps every signal of a "
                         f"(..., time) batch; select the channel by indexing the input")
    if ka["min_duration"] != 0.0:
        raise ValueError(f"min_duration must be 0.0 (got {ka['min_duration']!r}): an empty result for short "
                         f"signals does not batch; filter short signals before the front end")
    sf = _check_real(ka["sample_frequency"], "sample_frequency")
    if sf <= 0:
        raise ValueError(f"sample_frequency must be > 0, got {sf}")
    shift = int(sf * ka["frame_shift"] * 0.001)
    size = int(sf * ka["frame_length"] * 0.001)
    if shift < 1:
        raise ValueError(f"frame_shift ({ka['frame_shift']} ms) gives {shift} samples; must be >= 1")
    if size < 2:
        raise ValueError(f"frame_length ({ka['frame_length']} ms) gives {size} samples; must be >= 2")
    padded = 1 << (size - 1).bit_length() if ka["round_to_power_of_two"] else size
    if padded % 2:
        raise ValueError(f"the padded window size ({padded}) must be even: use round_to_power_of_two=True "
                         f"or change frame_length")
    pe = _check_real(ka["preemphasis_coefficient"], "preemphasis_coefficient")
    if not 0.0 <= pe <= 1.0:
        raise ValueError(f"preemphasis_coefficient must lie in [0, 1], got {pe}")
    if ka["window_type"] not in Fe.KALDI_WINDOWS:
        raise ValueError(f"window_type must be one of {Fe.KALDI_WINDOWS}, got {ka['window_type']!r}")
    nyq = 0.5 * sf
    low = _check_real(ka["low_freq"], "low_freq")
    high = _check_real(ka["high_freq"], "high_freq")
    high_eff = high + nyq if high <= 0 else high
    if not 0.0 <= low < nyq:
        raise ValueError(f"low_freq ({low}) must lie in [0, Nyquist = {nyq})")
    if not 0.0 < high_eff <= nyq:
        raise ValueError(f"high_freq ({high}, i.e. {high_eff} Hz) must lie in (0, Nyquist = {nyq}] "
                         f"(values <= 0 count from the Nyquist frequency)")
    if low >= high_eff:
        raise ValueError(f"low_freq ({low}) must be below high_freq ({high_eff})")
    n_bins = _check_int(ka["num_mel_bins"], "num_mel_bins")
    if n_bins <= 3:
        raise ValueError(f"num_mel_bins must be > 3 (as Kaldi), got {n_bins}")
    warp = _check_real(ka["vtln_warp"], "vtln_warp")
    vlow, vhigh = _check_real(ka["vtln_low"], "vtln_low"), _check_real(ka["vtln_high"], "vtln_high")
    if warp != 1.0:
        vh = vhigh + nyq if vhigh < 0 else vhigh
        if not (low < vlow < high_eff and 0 < vh < high_eff and vlow < vh):
            raise ValueError(f"vtln_low ({vlow}) and vtln_high ({vhigh}) must satisfy low_freq < vtln_low < "
                             f"vtln_high < high_freq ({low}, {high_eff})")
    banks = kaldi_mel_banks(n_bins, padded, sf, low, high, vlow, vhigh, warp)
    fb = torch.nn.functional.pad(banks, (0, 1)).T.contiguous()  # (n_freqs, bins), Nyquist column zero
    _check_filters(fb, "num_mel_bins", n_bins, padded // 2 + 1, empty_is_error=True)
    dtype = ours["dtype"]
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    # torchaudio computes the window in the waveform's dtype.
    window = Fe.kaldi_window(ka["window_type"], size, _check_real(ka["blackman_coeff"], "blackman_coeff"), dtype)
    if ka["use_energy"] and ka["energy_floor"] < 0:
        raise ValueError(f"energy_floor must be >= 0, got {ka['energy_floor']}")
    return dict(ours, n_fft=padded, win_length=size, hop_length=shift, window=window, fb=fb, dct=None,
                framing="kaldi", sample_rate=sf, snip_edges=bool(ka["snip_edges"]),
                remove_dc_offset=bool(ka["remove_dc_offset"]), preemphasis=pe,
                power=2.0 if ka["use_power"] else 1.0,
                log="log" if ka["use_log_fbank"] else None, log_offset=0.0, log_floor=Fe.FLOAT32_EPS,
                layout="channels_last", use_energy=bool(ka["use_energy"]), energy_floor=float(ka["energy_floor"]),
                raw_energy=bool(ka["raw_energy"]), htk_compat=bool(ka["htk_compat"]),
                subtract_mean=bool(ka["subtract_mean"]))


_LIBROSA_PAD = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _librosa_config(lr: dict, ours: dict) -> dict:
    import numpy as np

    librosa = require("librosa")
    sr = lr["sr"]
    if _check_real(sr, "sr") <= 0:
        raise ValueError(f"sr must be > 0, got {sr!r}")
    n_fft = _check_int(lr["n_fft"], "n_fft", 2)
    win = n_fft if lr["win_length"] is None else _check_int(lr["win_length"], "win_length")
    if win > n_fft:
        raise ValueError(f"win_length ({win}) must be <= n_fft ({n_fft})")
    hop = _check_int(lr["hop_length"], "hop_length")
    if lr["pad_mode"] not in _LIBROSA_PAD:
        raise ValueError(f"pad_mode must be one of {sorted(_LIBROSA_PAD)}, got {lr['pad_mode']!r}")
    n_mels = _check_int(lr["n_mels"], "n_mels")
    fmin = _check_real(lr["fmin"], "fmin")
    fmax = sr / 2.0 if lr["fmax"] is None else _check_real(lr["fmax"], "fmax")
    if fmax > sr / 2:
        raise ValueError(f"fmax ({fmax}) must be <= the Nyquist frequency sr / 2 = {sr / 2}")
    if not 0 <= fmin < fmax:
        raise ValueError(f"fmin ({fmin}) must satisfy 0 <= fmin < fmax ({fmax})")
    window = lr["window"]
    if isinstance(window, torch.Tensor):
        window = window.detach().cpu().numpy()
    try:
        w = librosa.filters.get_window(window, win, fftbins=True)
    except Exception as e:  # librosa's own message says what is wrong with the window spec
        raise ValueError(f"window {window!r} for win_length {win}: {e}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=bool(lr["htk"]),
                                    norm=lr["norm"], dtype=np.dtype(lr["mel_dtype"]))
    fb = torch.from_numpy(np.ascontiguousarray(basis.T)).to(torch.float64)
    _check_filters(fb, "n_mels", n_mels, n_fft // 2 + 1)
    log = ours.pop("log")
    return dict(ours, n_fft=n_fft, win_length=win, hop_length=hop, window=torch.from_numpy(np.asarray(w, np.float64)),
                fb=fb, dct=None, framing="stft", sample_rate=sr, center=bool(lr["center"]),
                pad_mode=_LIBROSA_PAD[lr["pad_mode"]], pad=0, power=lr["power"], normalized=False, log=log,
                layout="channels_first")


# ------------------------------------------------------------------------------------------------
# One function per counterpart: its keyword arguments (or instance) -> the generic constructor's
# ------------------------------------------------------------------------------------------------
def melspectrogram_config(kw: dict) -> dict:
    """torchaudio.transforms.MelSpectrogram's keyword arguments and defaults, plus ours."""
    ta, ours = _split_kwargs(kw, _MELSPEC_DEFAULTS, "torchaudio.transforms.MelSpectrogram")
    return _melspec_config(ta, ours)


def mfcc_config(kw: dict) -> dict:
    """torchaudio.transforms.MFCC's keyword arguments (``melkwargs`` and ``log_mels`` included)."""
    ta, ours = _split_kwargs(kw, _MFCC_DEFAULTS, "torchaudio.transforms.MFCC", allow_log=False)
    melkw = ta["melkwargs"] or {}
    if not isinstance(melkw, dict):
        raise TypeError(f"melkwargs must be a dict or None, got {type(melkw).__name__}")
    if "sample_rate" in melkw:
        raise TypeError("melkwargs must not contain sample_rate (pass sample_rate to from_mfcc), as in torchaudio")
    bad = set(melkw) - set(_MELSPEC_DEFAULTS)
    if bad:
        raise TypeError(f"melkwargs has arguments torchaudio.transforms.MelSpectrogram does not take: {sorted(bad)}")
    if ta["dct_type"] != 2:
        raise ValueError(f"dct_type must be 2 (the only type torchaudio's MFCC supports), got {ta['dct_type']!r}")
    if ta["norm"] not in ("ortho", None):
        raise ValueError(f"norm must be 'ortho' or None, got {ta['norm']!r}")
    mel = dict(_MELSPEC_DEFAULTS, **melkw)
    mel["sample_rate"] = ta["sample_rate"]
    n_mfcc = _check_int(ta["n_mfcc"], "n_mfcc")
    if n_mfcc > mel["n_mels"]:
        raise ValueError(f"n_mfcc ({n_mfcc}) must be <= n_mels ({mel['n_mels']}): cannot select more MFCC "
                         f"coefficients than mel bins")
    if ta["log_mels"]:
        ours.update(log="log", log_offset=1e-6)
    else:
        ours.update(log="db", top_db=80.0, amin=1e-10, multiplier=10.0)
    cfg = _melspec_config(mel, ours)
    cfg["dct"] = create_dct(n_mfcc, mel["n_mels"], ta["norm"])
    return cfg


def kaldi_fbank_config(kw: dict) -> dict:
    """torchaudio.compliance.kaldi.fbank's keyword arguments (minus the waveform)."""
    ka, ours = _split_kwargs(kw, _KALDI_DEFAULTS, "torchaudio.compliance.kaldi.fbank", allow_log=False)
    return _kaldi_config(ka, ours)


def librosa_melspectrogram_config(kw: dict) -> dict:
    """librosa.feature.melspectrogram's keyword arguments (see
    ``KaleidoscopeFrontend.from_librosa_melspectrogram`` for ``dtype``)."""
    kw = dict(kw)
    if "dtype" in kw and not isinstance(kw["dtype"], torch.dtype):
        kw["mel_dtype"] = kw.pop("dtype")
    lr, ours = _split_kwargs(kw, _LIBROSA_DEFAULTS, "librosa.feature.melspectrogram")
    return _librosa_config(lr, ours)


def transform_config(module: nn.Module, ours: dict) -> dict:
    """The configuration (and the window, filterbank and DCT buffers themselves) of an existing
    torchaudio MelSpectrogram or MFCC instance."""
    T = require("torchaudio.transforms")

    ours = dict(ours)
    bad = set(ours) - set(_OUR_DEFAULTS)
    if bad:
        raise TypeError(f"from_transform got unexpected keyword arguments {sorted(bad)}")
    if isinstance(module, T.MFCC):
        mfcc = module
        melspec = module.MelSpectrogram
    elif isinstance(module, T.MelSpectrogram):
        mfcc, melspec = None, module
    else:
        raise TypeError(f"module must be a torchaudio.transforms.MelSpectrogram or MFCC, got {type(module).__name__}")
    spec, mel = melspec.spectrogram, melspec.mel_scale
    if mfcc is not None:
        if "log" in ours:
            raise TypeError("log is decided by the MFCC instance (log_mels), do not pass it")
        decided = sorted(set(ours) & {"log_offset", "top_db"})
        if decided:
            # the instance's log (log(x + 1e-6)) or AmplitudeToDB fixes these: taking a value here
            # would either be ignored or stop the front end from equalling the instance
            raise TypeError(f"{', '.join(decided)} {'is' if len(decided) == 1 else 'are'} decided by the MFCC "
                            "instance (its log_mels and amplitude_to_DB), do not pass "
                            f"{'it' if len(decided) == 1 else 'them'}")
        if mfcc.log_mels:
            ours.update(log="log", log_offset=1e-6)
        else:
            a2db = mfcc.amplitude_to_DB
            ours.update(log="db", top_db=a2db.top_db, amin=a2db.amin, multiplier=a2db.multiplier)
            if a2db.db_multiplier != 0.0:
                raise ValueError(f"AmplitudeToDB with ref != 1 (db_multiplier {a2db.db_multiplier}) is not supported")
    ta = dict(sample_rate=melspec.sample_rate, n_fft=melspec.n_fft, win_length=melspec.win_length,
              hop_length=melspec.hop_length, f_min=mel.f_min, f_max=mel.f_max, pad=melspec.pad,
              n_mels=melspec.n_mels, window_fn=None, power=spec.power, normalized=spec.normalized,
              wkwargs=None, center=spec.center, pad_mode=spec.pad_mode, onesided=None, norm=mel.norm,
              mel_scale=mel.mel_scale)
    ours = dict(_OUR_DEFAULTS, **ours)
    cfg = _melspec_config(ta, ours, window=spec.window.detach().cpu(), fb=mel.fb.detach().cpu())
    if mfcc is not None:
        dct = cfg["dct"] = mfcc.dct_mat.detach().cpu()
        if cfg["dtype"] == torch.float64 and not any(
                torch.allclose(dct.double(), create_dct(dct.shape[1], dct.shape[0], norm, dtype=torch.float64),
                               rtol=0.0, atol=1e-14) for norm in ("ortho", None)):
            # A float64 front end equals ``module.double()``, whose DCT holds dct_mat's values
            # (float32 ones, for an MFCC made under the float32 default): the chirp-z DCT would
            # be the float64 DCT, 1e-7 off.  So the stage reproduces the values themselves.
            cfg["dct_construction"] = "matrix"
    return cfg
