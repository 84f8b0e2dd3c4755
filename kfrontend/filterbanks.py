"""The fixed matrices the front ends start from: mel filterbanks (torchaudio / HTK / Slaney, and
Kaldi's) and the DCT-II of MFCCs, in the layout ``features @ matrix``.

These are torchaudio's own formulas (``torchaudio.functional.melscale_fbanks`` and ``create_dct``,
``torchaudio.compliance.kaldi.get_mel_banks``; BSD-2-Clause), ported operation for operation in the
same order and dtype, so the matrices are bit-identical to torchaudio's (``tests/test_filterbanks.py``
checks that, and the front-end equality tests check the features against torchaudio, librosa and
Kaldi).  Why a copy rather than an import: torchaudio ships a compiled extension that loads only
beside the torch build it was made for (torchaudio 2.11.1 fails to load beside torch 2.11.0, and
2.11 is its last release), and these few dozen lines of arithmetic are all the constructors need.
With them, ``import kfrontend`` and every ``from_*`` constructor except ``from_transform`` (which
receives a torchaudio module) and ``from_librosa_melspectrogram`` work with torch alone.
"""
from __future__ import annotations

import math

import torch

__all__ = ["melscale_fbanks", "create_dct", "kaldi_mel_banks"]


# ------------------------------------------------------------------------------------------------
# torchaudio.functional: HTK / Slaney mel scales
# ------------------------------------------------------------------------------------------------
def _hz_to_mel(freq: float, mel_scale: str) -> float:
    if mel_scale == "htk":
        return 2595.0 * math.log10(1.0 + (freq / 700.0))
    # Slaney: linear below 1 kHz, logarithmic above.
    f_sp = 200.0 / 3
    mels = freq / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    if freq >= min_log_hz:
        mels = min_log_mel + math.log(freq / min_log_hz) / logstep
    return mels


def _mel_to_hz(mels: torch.Tensor, mel_scale: str) -> torch.Tensor:
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    freqs = 0.0 + f_sp * mels  # "0.0 +" as torchaudio writes it: same rounding
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    log_t = mels >= min_log_mel
    freqs[log_t] = min_log_hz * torch.exp(logstep * (mels[log_t] - min_log_mel))
    return freqs


def melscale_fbanks(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: float,
                    norm: str | None = None, mel_scale: str = "htk") -> torch.Tensor:
    """``torchaudio.functional.melscale_fbanks``: triangular filters (n_freqs, n_mels) in the default
    dtype, ``spectrum @ fb``.  Empty filters are left to the caller to report."""
    if norm not in (None, "slaney"):
        raise ValueError(f"norm must be None or 'slaney', got {norm!r}")
    if mel_scale not in ("htk", "slaney"):
        raise ValueError(f"mel_scale must be 'htk' or 'slaney', got {mel_scale!r}")
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_min = _hz_to_mel(f_min, mel_scale)
    m_max = _hz_to_mel(f_max, mel_scale)
    m_pts = torch.linspace(m_min, m_max, n_mels + 2)
    f_pts = _mel_to_hz(m_pts, mel_scale)
    # Triangles: the distance of each bin to each filter's edges, over the edge spacing (as librosa).
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down_slopes = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up_slopes = slopes[:, 2:] / f_diff[1:]
    fb = torch.max(torch.zeros(1), torch.min(down_slopes, up_slopes))
    if norm == "slaney":  # area normalisation: about constant energy per channel
        fb *= (2.0 / (f_pts[2: n_mels + 2] - f_pts[:n_mels])).unsqueeze(0)
    return fb


def create_dct(n_mfcc: int, n_mels: int, norm: str | None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torchaudio.functional.create_dct``: the DCT-II matrix (n_mels, n_mfcc), ``mels @ dct``.
    ``dtype``: as torchaudio computes it under that default dtype (None: the default dtype)."""
    if norm not in (None, "ortho"):
        raise ValueError(f"norm must be 'ortho' or None, got {norm!r}")
    n = torch.arange(float(n_mels), dtype=dtype)
    k = torch.arange(float(n_mfcc), dtype=dtype).unsqueeze(1)
    dct = torch.cos(math.pi / float(n_mels) * (n + 0.5) * k)  # (n_mfcc, n_mels)
    if norm is None:
        dct *= 2.0
    else:
        dct[0] *= 1.0 / math.sqrt(2.0)
        dct *= math.sqrt(2.0 / float(n_mels))
    return dct.t()


# ------------------------------------------------------------------------------------------------
# torchaudio.compliance.kaldi: Kaldi's mel banks (mel = 1127 ln(1 + f / 700)), with VTLN warping
# ------------------------------------------------------------------------------------------------
def _kaldi_mel(freq):
    return 1127.0 * math.log(1.0 + freq / 700.0) if isinstance(freq, float) else 1127.0 * (1.0 + freq / 700.0).log()


def _kaldi_inverse_mel(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * ((mel / 1127.0).exp() - 1.0)


def _vtln_warp_freq(vtln_low: float, vtln_high: float, low_freq: float, high_freq: float, warp: float,
                    freq: torch.Tensor) -> torch.Tensor:
    """Kaldi's piecewise-linear VTLN warp: identity at low_freq and high_freq, ``f / warp`` between
    the two inflection points (callers have checked low < vtln_low < vtln_high < high)."""
    lo = vtln_low * max(1.0, warp)
    hi = vtln_high * min(1.0, warp)
    scale = 1.0 / warp
    scale_left = (scale * lo - low_freq) / (lo - low_freq)
    scale_right = (high_freq - scale * hi) / (high_freq - hi)
    res = torch.empty_like(freq)
    outside = torch.lt(freq, low_freq) | torch.gt(freq, high_freq)
    before_l, before_h, after_h = torch.lt(freq, lo), torch.lt(freq, hi), torch.ge(freq, hi)
    # The regions overlap: the order of the assignments is Kaldi's.
    res[after_h] = high_freq + scale_right * (freq[after_h] - high_freq)
    res[before_h] = scale * freq[before_h]
    res[before_l] = low_freq + scale_left * (freq[before_l] - low_freq)
    res[outside] = freq[outside]
    return res


def kaldi_mel_banks(num_bins: int, window_length_padded: int, sample_freq: float, low_freq: float,
                    high_freq: float, vtln_low: float, vtln_high: float, vtln_warp_factor: float) -> torch.Tensor:
    """``torchaudio.compliance.kaldi.get_mel_banks(...)[0]``: (num_bins, window_length_padded // 2)
    triangles on Kaldi's mel scale (no Nyquist column).  ``high_freq`` / ``vtln_high`` <= 0 count
    down from the Nyquist frequency; the caller validates the ranges."""
    nyquist = 0.5 * sample_freq
    if high_freq <= 0.0:
        high_freq += nyquist
    if vtln_high < 0.0:
        vtln_high += nyquist
    fft_bin_width = sample_freq / window_length_padded
    mel_low, mel_high = _kaldi_mel(float(low_freq)), _kaldi_mel(float(high_freq))
    delta = (mel_high - mel_low) / (num_bins + 1)  # num_bins + 1: the outer filters spread to the sides
    b = torch.arange(num_bins).unsqueeze(1)
    left, center, right = (mel_low + (b + k) * delta for k in (0, 1.0, 2.0))
    if vtln_warp_factor != 1.0:
        def warp(m):
            return _kaldi_mel(_vtln_warp_freq(vtln_low, vtln_high, low_freq, high_freq, vtln_warp_factor,
                                              _kaldi_inverse_mel(m)))
        left, center, right = warp(left), warp(center), warp(right)
    mel = _kaldi_mel(fft_bin_width * torch.arange(window_length_padded / 2)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    if vtln_warp_factor == 1.0:
        return torch.max(torch.zeros(1), torch.min(up, down))
    # Warping may reorder left / centre / right: take each side only where it applies.
    bins = torch.zeros_like(up)
    up_idx = torch.gt(mel, left) & torch.le(mel, center)
    down_idx = torch.gt(mel, center) & torch.lt(mel, right)
    bins[up_idx] = up[up_idx]
    bins[down_idx] = down[down_idx]
    return bins
