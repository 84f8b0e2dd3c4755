"""Pictures of a KaleidoscopeFrontend: what its learnable stages became, beside where they started.

* ``plot_dft_responses``: frequency responses of the DFT stage's filters (window included), learned
  vs. the exact initialisation, for a few bins, plus a heat map of every bin's response.
* ``plot_mel_filters``: the mel stage's filters (columns of its matrix) against the filterbank it
  was initialised with.
* ``plot_features``: a feature image (..., bins, frames) of an utterance.

Every function writes a PNG (matplotlib's Agg backend, no display needed) and returns its path.
"""
from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["dft_responses", "plot_dft_responses", "plot_mel_filters", "plot_features", "plot_all"]


def _plt():
    from kfrontend._optional import require

    require("matplotlib").use("Agg", force=False)
    return require("matplotlib.pyplot")


@torch.no_grad()
def dft_responses(fe, n_points: int = 2048, reference: bool = False) -> torch.Tensor:
    """(n_freqs, n_points // 2 + 1) magnitude responses in dB of the DFT stage's filters.

    Output bin k computes ``sum_n h_k[n] x[n]`` over the window's support, ``h_k`` the windowed DFT
    column; its response to a tone ``exp(2 pi i f n)`` is ``sum_n h_k[n] exp(2 pi i f n)``, i.e.
    the inverse DFT of ``h_k`` (times the length), sampled on ``n_points`` frequencies in [0, sr/2].
    ``reference``: the exact DFT with the initial window instead of the current stage.
    """
    left = fe.window_offset
    if reference:
        n = torch.arange(fe.win_length, dtype=torch.float64) + left
        k = torch.arange(fe.n_freqs, dtype=torch.float64)
        h = torch.polar(torch.ones(fe.win_length, fe.n_freqs, dtype=torch.float64),
                        -2 * torch.pi * torch.outer(n, k) / fe.n_fft)
        h = h * fe.ref_window.double().cpu().unsqueeze(-1)
    else:
        w = fe.dft.weight_t(left, left + fe.win_length).double().cpu()
        h = torch.complex(w[:, : fe.n_freqs], w[:, fe.n_freqs:]) * fe.window.double().cpu().unsqueeze(-1)
    # h: (win, n_freqs); the row index n is the position inside the window's support.
    resp = torch.fft.ifft(h.transpose(0, 1), n=n_points, dim=-1)[:, : n_points // 2 + 1] * n_points
    return 20 * torch.log10(resp.abs().clamp(min=1e-12))


def plot_dft_responses(fe, path, bins=None, n_points: int = 2048, sample_rate: float | None = None):
    """Learned (solid) vs. initial (dashed) responses of a few DFT bins, and the learned responses of
    every bin as an image.  ``bins``: which output bins (default: 6 spread over the range)."""
    plt = _plt()
    sr = float(sample_rate or fe.sample_rate)
    learned = dft_responses(fe, n_points)
    ref = dft_responses(fe, n_points, reference=True)
    freqs = torch.linspace(0, sr / 2, learned.shape[-1])
    if bins is None:
        bins = torch.linspace(1, fe.n_freqs - 2, 6).round().long().tolist()
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.5))
    peak = float(ref.max())
    for i, k in enumerate(bins):
        color = f"C{i % 10}"
        a.plot(freqs, ref[k] - peak, "--", color=color, lw=0.8)
        a.plot(freqs, learned[k] - peak, "-", color=color, lw=1.0, label=f"bin {k}")
    a.set_ylim(-100, 5)
    a.set_xlabel("frequency (Hz)")
    a.set_ylabel("dB (rel. peak of the exact DFT)")
    a.set_title("DFT stage: learned (solid) vs initialisation (dashed)")
    a.legend(fontsize=7, loc="lower right")
    im = b.imshow((learned - peak).clamp(min=-100).numpy(), aspect="auto", origin="lower",
                  extent=[0, sr / 2, 0, fe.n_freqs], cmap="magma")
    b.set_xlabel("frequency (Hz)")
    b.set_ylabel("output bin")
    b.set_title("every bin's response (dB)")
    fig.colorbar(im, ax=b)
    fig.tight_layout()
    return _save(fig, path, plt)


@torch.no_grad()
def plot_mel_filters(fe, path, sample_rate: float | None = None):
    """The mel stage's filters (learned, solid) over the initial filterbank (dashed)."""
    plt = _plt()
    sr = float(sample_rate or fe.sample_rate)
    learned = fe.mel.weight_t().double().cpu()
    ref = fe.ref_fb.double().cpu()
    freqs = torch.linspace(0, sr / 2, ref.shape[0])
    fig, (a, b) = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
    for j in range(ref.shape[1]):
        color = f"C{j % 10}"
        a.plot(freqs, ref[:, j], "--", color=color, lw=0.6)
        a.plot(freqs, learned[:, j], "-", color=color, lw=0.9)
    a.set_ylabel("weight")
    a.set_title("mel stage: learned filters (solid) vs initialisation (dashed)")
    b.plot(freqs, (learned - ref).abs().max(dim=1).values, color="k", lw=0.8)
    b.set_xlabel("frequency (Hz)")
    b.set_ylabel("max |learned - init|")
    fig.tight_layout()
    return _save(fig, path, plt)


@torch.no_grad()
def plot_features(fe, waveform: torch.Tensor, path, title: str | None = None):
    """The feature image of one utterance (the first of a batch)."""
    plt = _plt()
    feats = fe(waveform)
    while feats.dim() > 2:
        feats = feats[0]
    if getattr(fe, "layout", "channels_first") == "channels_last":
        feats = feats.transpose(0, 1)
    feats = feats.double().cpu()
    fig, ax = plt.subplots(figsize=(10, 4))
    im = ax.imshow(feats.numpy(), aspect="auto", origin="lower", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("frame")
    ax.set_ylabel("feature bin")
    ax.set_title(title or "features")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return _save(fig, path, plt)


def plot_all(fe, waveform: torch.Tensor, out_dir) -> list[Path]:
    """The three pictures into ``out_dir``: dft_responses.png, mel_filters.png, features.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [plot_dft_responses(fe, out / "dft_responses.png"), plot_mel_filters(fe, out / "mel_filters.png"),
            plot_features(fe, waveform, out / "features.png")]


def _save(fig, path, plt) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
