"""Functional core of the feature front end: framing, windows, power, log and dB, Kaldi specifics.

Everything here is plain tensor code (no parameters), shared by the learnable
``KaleidoscopeFrontend`` and its ``to_fixed()`` form.  The conventions follow the counterparts
exactly, so that the front end equals them at initialisation:

* torch.stft framing: with ``center`` the signal is padded by ``n_fft // 2`` on both sides
  (``pad_mode``), frame ``t`` covers padded samples ``[t * hop, t * hop + n_fft)`` and a window of
  ``win_length < n_fft`` sits in the middle of the frame, at offset ``(n_fft - win_length) // 2``
  (``window_offset``).  Only the samples under the window matter, so frames are cut to the
  window's support: ``(..., frames, win_length)``.
* Kaldi framing (torchaudio.compliance.kaldi): ``snip_edges`` drops partial frames, otherwise the
  signal is mirrored at both ends (the edge sample repeated) and there are ``(L + shift // 2) // shift``
  frames.

With ``lengths`` (valid samples per item of a zero-padded batch) the padding is computed per item by
an index map, so the first ``n_frames[i]`` frames of item ``i`` equal the frames of that item alone
(reflection happens at the item's own end, not at the batch's).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kfrontend._contract import in_functorch

__all__ = [
    "PAD_MODES",
    "KALDI_WINDOWS",
    "FLOAT32_EPS",
    "check_waveform",
    "check_lengths",
    "window_offset",
    "stft_num_frames",
    "stft_frames",
    "kaldi_num_frames",
    "kaldi_frames",
    "kaldi_padded",
    "stft_padded",
    "kaldi_fold",
    "frames_matmul",
    "kaldi_window",
    "kaldi_preprocess",
    "frame_log_energy",
    "power_spectrum",
    "power_spectrum_packed",
    "power_mel",
    "safe_log",
    "amplitude_to_db",
    "frame_mask",
]

PAD_MODES = ("constant", "reflect", "replicate", "circular")
KALDI_WINDOWS = ("povey", "hamming", "hanning", "rectangular", "blackman")
# Kaldi (and torchaudio.compliance.kaldi) floor logs at float32 epsilon whatever the dtype.
FLOAT32_EPS = float(torch.finfo(torch.float32).eps)


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------
def check_waveform(x, name: str = "waveform") -> None:
    """Real floating point tensor with a time axis; integer / bool / complex inputs are refused."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (..., time), got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"{name} must be real (..., time) audio, got complex dtype {x.dtype}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating point tensor (..., time), got dtype {x.dtype}; "
            f"convert integer PCM first, e.g. x.float() / 32768"
        )
    if x.dim() < 1:
        raise ValueError(f"{name} must have shape (..., time), got a 0-d tensor")


def check_lengths(lengths, x: torch.Tensor, name: str = "lengths") -> torch.Tensor:
    """``lengths`` holds the valid samples (or frames) per item: shape ``x.shape[:-1]`` (one per
    signal), integers in ``[1, x.shape[-1]]``.  Returned as int64 on x's device."""
    if not isinstance(lengths, torch.Tensor):
        lengths = torch.as_tensor(lengths)
        if lengths.numel() == 0:  # an empty batch's [] reads as float32: no float value was given
            lengths = lengths.long()
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {lengths.dtype}")
    if tuple(lengths.shape) != tuple(x.shape[:-1]):
        raise ValueError(
            f"{name} must have shape {tuple(x.shape[:-1])} (one length per signal of the input of "
            f"shape {tuple(x.shape)}), got {tuple(lengths.shape)}"
        )
    if not torch.compiler.is_compiling() and lengths.numel():
        # Checked where the lengths are, before the move: CPU lengths (a DataLoader's) cost no
        # device synchronisation; lengths already on a GPU do (pass them on the CPU to avoid it).
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 1 or hi > x.shape[-1]:
            raise ValueError(
                f"{name} must lie in [1, {x.shape[-1]}] (the time axis of the input), got values in [{lo}, {hi}]"
            )
    return lengths.to(device=x.device, dtype=torch.long)


# ----------------------------------------------------------------------------------------------
# Index maps for padding (per-item lengths)
# ----------------------------------------------------------------------------------------------
def _source_index(j: torch.Tensor, n: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Map positions ``j`` relative to a signal of length ``n`` (j < 0 or j >= n lie in the padding)
    to source indices and a validity mask, for the padding ``mode``.  ``symmetric`` mirrors with the
    edge sample repeated (Kaldi), ``reflect`` without (torch)."""
    if mode == "constant":
        src = j
    elif mode == "reflect":
        src = torch.where(j < 0, -j, j)
        src = torch.where(src >= n, 2 * (n - 1) - src, src)
    elif mode == "symmetric":
        src = torch.where(j < 0, -j - 1, j)
        src = torch.where(src >= n, 2 * n - 1 - src, src)
    elif mode == "replicate":
        src = torch.minimum(torch.clamp(j, min=0), n - 1)
    elif mode == "circular":
        src = torch.remainder(j, n)
    else:  # pragma: no cover - callers validate
        raise ValueError(f"unknown padding mode {mode!r}")
    valid = (src >= 0) & (src < n)
    return src, valid


def _gather_padded(x: torch.Tensor, lengths: torch.Tensor, positions: torch.Tensor, mode: str) -> torch.Tensor:
    """``out[..., k] = x[..., src(positions[k])]`` per item (zero where the map leaves the signal)."""
    n = lengths.unsqueeze(-1)
    src, valid = _source_index(positions, n, mode)
    src = torch.where(valid, src, torch.zeros_like(src))
    out = torch.gather(x, -1, src.expand(*x.shape[:-1], positions.shape[-1]))
    return torch.where(valid, out, torch.zeros_like(out))


# ----------------------------------------------------------------------------------------------
# torch.stft framing
# ----------------------------------------------------------------------------------------------
def window_offset(n_fft: int, win_length: int) -> int:
    """torch.stft / librosa centre a shorter window in the frame (zero-padded on both sides)."""
    return (n_fft - win_length) // 2


def stft_num_frames(length, n_fft: int, hop_length: int, center: bool, pad: int = 0):
    """Frames torch.stft returns for ``length`` samples (int or int tensor)."""
    padded = length + 2 * pad + (2 * (n_fft // 2) if center else 0)
    return 1 + (padded - n_fft) // hop_length


def _check_stft_length(length: int, n_fft: int, center: bool, pad_mode: str, pad: int, name: str) -> None:
    total = length + 2 * pad
    if center:
        if pad_mode == "reflect" and total <= n_fft // 2:
            raise ValueError(
                f"{name} is too short for center=True with pad_mode='reflect': {length} samples"
                f"{f' (+ 2 * pad {pad})' if pad else ''}, need more than n_fft // 2 = {n_fft // 2}"
            )
    elif total < n_fft:
        raise ValueError(
            f"{name} is too short for center=False: {length} samples"
            f"{f' (+ 2 * pad {pad})' if pad else ''}, need at least n_fft = {n_fft}"
        )


def _shortest(length: int, lengths: torch.Tensor | None, shortest: int | None) -> int:
    """The shortest item's length, which the padded signals' length checks read: ``shortest`` when
    the caller knows it on the host (no device sync), else ``lengths.min()``; the batch length
    without lengths, for an empty batch (no shortest item: empty features) and under torch.compile
    (reading the lengths would make the check data-dependent)."""
    if lengths is None or lengths.numel() == 0 or torch.compiler.is_compiling():
        return length
    return int(lengths.min()) if shortest is None else shortest


def stft_padded(
    x: torch.Tensor,
    *,
    n_fft: int,
    hop_length: int,
    win_length: int,
    center: bool = True,
    pad_mode: str = "reflect",
    pad: int = 0,
    lengths: torch.Tensor | None = None,
    name: str = "waveform",
    shortest: int | None = None,
) -> torch.Tensor:
    """The padded signal (..., span) whose ``unfold(-1, win_length, hop_length)`` are the frames
    under the window's support, as torch.stft (after torchaudio's constant ``pad``) cuts them.
    ``shortest``: ``lengths.min()`` when the caller knows it on the host (no device sync)."""
    length = x.shape[-1]
    # The shortest item decides whether reflection is possible.
    _check_stft_length(_shortest(length, lengths, shortest), n_fft, center, pad_mode, pad, name)
    half = n_fft // 2 if center else 0
    total = length + 2 * pad + 2 * half
    left = window_offset(n_fft, win_length)
    right = n_fft - win_length - left
    # Cutting ``left`` samples in front and ``right`` at the end leaves exactly the frames torch.stft
    # makes (1 + (total - n_fft) // hop of them); offsets from the ends keep the sizes symbolic for
    # torch.export (a computed span would make them data-dependent).
    span = total - left - right
    if lengths is None:
        xp = x
        if pad > 0:
            xp = F.pad(xp, (pad, pad))
        if half > 0:
            # F.pad's non-constant modes want (batch, channel, time).
            xp = _unflatten_batch(F.pad(_as_ncl(xp), (half, half), mode=pad_mode)[:, 0], xp.shape[:-1])
        if left or right:
            xp = xp[..., left : xp.shape[-1] - right]
    else:
        # Positions (in the doubly padded signal) of the samples every frame needs.
        pos = torch.arange(left, left + span, device=x.device)
        inner = pos - half  # position in the constant-padded signal of length L + 2 pad
        n_inner = lengths.unsqueeze(-1) + 2 * pad
        if half > 0:
            inner, _ = _source_index(inner, n_inner, pad_mode)
            # Positions the map leaves (constant mode) must read zero: mark them out of range.
            inner = torch.where((inner >= 0) & (inner < n_inner), inner, torch.full_like(inner, -(10**9)))
        else:
            inner = inner.expand(*lengths.shape, span)
        xp = _gather_padded(x, lengths, inner - pad, "constant")
    return xp


def stft_frames(x: torch.Tensor, *, n_fft: int, hop_length: int, win_length: int, **kw) -> torch.Tensor:
    """Frames (..., frames, win_length) under the window's support (see ``stft_padded``)."""
    xp = stft_padded(x, n_fft=n_fft, hop_length=hop_length, win_length=win_length, **kw)
    return xp.unfold(-1, win_length, hop_length)


# ----------------------------------------------------------------------------------------------
# Kaldi framing and frame preprocessing
# ----------------------------------------------------------------------------------------------
def kaldi_num_frames(length, window_size: int, window_shift: int, snip_edges: bool):
    """Frames torchaudio.compliance.kaldi returns for ``length`` samples (int or int tensor)."""
    if snip_edges:
        if isinstance(length, torch.Tensor):
            return torch.where(length >= window_size, 1 + (length - window_size) // window_shift, 0)
        return 1 + (length - window_size) // window_shift if length >= window_size else 0
    return (length + window_shift // 2) // window_shift


def kaldi_padded(
    x: torch.Tensor,
    *,
    window_size: int,
    window_shift: int,
    snip_edges: bool = True,
    lengths: torch.Tensor | None = None,
    name: str = "waveform",
    shortest: int | None = None,
) -> torch.Tensor:
    """The signal (..., span) whose ``unfold(-1, window_size, window_shift)`` are the frames exactly
    as torchaudio.compliance.kaldi cuts them (mirrored at the ends unless ``snip_edges``)."""
    length = x.shape[-1]
    shortest = _shortest(length, lengths, shortest)
    if shortest < window_size:
        # torchaudio asserts 2 <= window_size <= len(waveform), whatever snip_edges says.
        raise ValueError(
            f"{name} is too short: {shortest} samples, Kaldi framing needs at least the window "
            f"size {window_size} (frame_length x sample_frequency)"
        )
    if snip_edges and lengths is None:
        xp = x  # unfold drops the samples after the last whole frame
    else:
        n_frames = kaldi_num_frames(length, window_size, window_shift, snip_edges)
        span = (n_frames - 1) * window_shift + window_size
        offset = 0 if snip_edges else window_size // 2 - window_shift // 2
        pos = torch.arange(span, device=x.device) - offset
        if lengths is None:
            lengths_ = torch.full(x.shape[:-1], length, dtype=torch.long, device=x.device)
        else:
            lengths_ = lengths
        xp = _gather_padded(x, lengths_, pos, "constant" if snip_edges else "symmetric")
    return xp


def kaldi_frames(x: torch.Tensor, *, window_size: int, window_shift: int, **kw) -> torch.Tensor:
    """Frames (..., frames, window_size) exactly as torchaudio.compliance.kaldi cuts them."""
    return kaldi_padded(x, window_size=window_size, window_shift=window_shift, **kw).unfold(-1, window_size, window_shift)


def kaldi_window(window_type: str, size: int, blackman_coeff: float = 0.42, dtype=torch.float64) -> torch.Tensor:
    """The window torchaudio.compliance.kaldi computes, in ``dtype`` (it uses the waveform's)."""
    if window_type == "hanning":
        return torch.hann_window(size, periodic=False, dtype=dtype)
    if window_type == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46, dtype=dtype)
    if window_type == "povey":
        return torch.hann_window(size, periodic=False, dtype=dtype).pow(0.85)
    if window_type == "rectangular":
        return torch.ones(size, dtype=dtype)
    if window_type == "blackman":
        a = 2 * math.pi / (size - 1)
        n = torch.arange(size, dtype=dtype)
        return blackman_coeff - 0.5 * torch.cos(a * n) + (0.5 - blackman_coeff) * torch.cos(2 * a * n)
    raise ValueError(f"window_type must be one of {KALDI_WINDOWS}, got {window_type!r}")


def kaldi_preprocess(frames: torch.Tensor, remove_dc_offset: bool, preemphasis_coefficient: float) -> torch.Tensor:
    """DC removal then pre-emphasis (the first sample pre-emphasised against itself), as Kaldi."""
    if remove_dc_offset:
        frames = frames - frames.mean(dim=-1, keepdim=True)
    if preemphasis_coefficient != 0.0:
        previous = torch.cat((frames[..., :1], frames[..., :-1]), dim=-1)
        frames = frames - preemphasis_coefficient * previous
    return frames


def kaldi_fold(weight: torch.Tensor, remove_dc_offset: bool, preemphasis_coefficient: float) -> torch.Tensor:
    """Fold Kaldi's frame preprocessing into a (window_size, out) weight applied as ``frames @ W``:
    ``kaldi_preprocess(f) @ W == f @ kaldi_fold(W)``.  Pre-emphasis is ``f @ P`` with P[i, i] = 1
    (P[0, 0] = 1 - a) and P[i - 1, i] = -a, DC removal ``f @ (I - 1 1^T / n)``; both are applied to
    W's rows in O(n * out) instead of forming the matrices."""
    if preemphasis_coefficient != 0.0:
        a = preemphasis_coefficient
        head = weight[:1] * (1.0 - a) - a * weight[1:2]
        body = weight[1:-1] - a * weight[2:]
        weight = torch.cat((head, body, weight[-1:]), 0) if weight.shape[0] > 1 else weight * (1.0 - a)
    if remove_dc_offset:
        weight = weight - weight.mean(dim=0, keepdim=True)
    return weight


def frames_matmul(xp: torch.Tensor, weight: torch.Tensor, hop_length: int, method: str = "auto") -> torch.Tensor:
    """``xp.unfold(-1, win, hop) @ weight`` for a padded signal xp (..., span) and weight (win, out):
    (..., frames, out).  On CPU a strided conv1d (no copy of the overlapping frames, and oneDNN's
    kernels) is about twice as fast as unfold + matmul; on CUDA unfold + matmul keeps cuBLAS and the
    global TF32 setting (cuDNN convolutions default to TF32, which would cost accuracy)."""
    win = weight.shape[0]
    if method == "auto":
        method = "conv" if xp.device.type == "cpu" else "unfold"
    if method == "unfold":
        return xp.unfold(-1, win, hop_length) @ weight
    batch = xp.shape[:-1]
    y = F.conv1d(_as_ncl(xp), weight.transpose(0, 1).unsqueeze(1), stride=hop_length)
    return _unflatten_batch(y, batch).transpose(-1, -2)


def _is_transposed_contiguous(x: torch.Tensor) -> bool:
    """(..., T, F) viewing a contiguous (..., F, T) tensor: the strided conv1d's output layout."""
    return x.dim() >= 3 and not x.is_contiguous() and x.transpose(-1, -2).is_contiguous()


def matmul_last(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w`` for x (..., T, F), w (F, M).  When x is a transposed view of a contiguous
    (..., F, T) tensor (the strided conv1d's output layout, kept by the elementwise ops after it)
    one bmm reads it in place (BLAS's transposed operand), where ``x @ w`` would first copy x to
    fold its batch dims into rows.  The result is contiguous (..., T, M) either way."""
    if _is_transposed_contiguous(x):
        b = x.flatten(0, -3)
        y = torch.bmm(b, w.unsqueeze(0).expand(b.shape[0], -1, -1))
        return y.view(*x.shape[:-1], w.shape[1])
    return x @ w


# Batch flattening without ``reshape(-1, ...)``: torch.export / ONNX export cannot infer a -1 next to
# a symbolic batch size that might be 0.
def _as_ncl(x: torch.Tensor) -> torch.Tensor:
    """(..., time) -> (prod(...), 1, time)."""
    if x.dim() == 1:
        return x[None, None]
    return (x if x.dim() == 2 else x.flatten(0, -2)).unsqueeze(1)


def _unflatten_batch(y: torch.Tensor, batch) -> torch.Tensor:
    """(prod(batch), ...) -> (*batch, ...)."""
    if len(batch) == 0:
        return y[0]
    if len(batch) == 1:
        return y
    return y.unflatten(0, tuple(batch))


def frame_log_energy(frames: torch.Tensor, energy_floor: float) -> torch.Tensor:
    """Kaldi's log frame energy: log(max(sum x^2, eps)), floored at log(energy_floor) if nonzero."""
    e = torch.clamp(frames.pow(2).sum(-1), min=FLOAT32_EPS).log()
    if energy_floor == 0.0:
        return e
    return torch.clamp(e, min=math.log(energy_floor))


# ----------------------------------------------------------------------------------------------
# Power, log, dB
# ----------------------------------------------------------------------------------------------
def power_spectrum_packed(y: torch.Tensor, n: int, power: float) -> torch.Tensor:
    """``power_spectrum`` of ``y = [Re | Im]`` (..., 2n): one square over the whole (contiguous)
    tensor, then one add, instead of products of two strided halves."""
    if _is_transposed_contiguous(y):
        # The conv's (..., 2n, T) layout: halves along its rows add 3x faster than strided columns.
        sq = y.transpose(-1, -2).square()
        return _safe_power(sq[..., :n, :] + sq[..., n:, :], power).transpose(-1, -2)
    sq = y.square()
    return _safe_power(sq[..., :n] + sq[..., n:], power)


def power_mel(y: torch.Tensor, mel: torch.Tensor, n: int, power: float) -> torch.Tensor:
    """``power_spectrum_packed(y, n, power) @ mel``: the mel energies (..., T, M) of the DFT output
    ``y = [Re | Im]`` (..., T, 2n) and a filterbank ``mel`` (n, M).

    For the power spectrum (power 2, torchaudio's default), with autograd, this is one custom op
    (``_PowerMel``): the squares are summed into one (..., n, T) tensor in the layout of the strided
    conv's output, the filterbank reads it as a transposed BLAS operand, and the backward is the
    filterbank's transposed matmul plus one product per entry of ``y`` (autograd through the packed
    power spectrum allocates, zero-fills and copies y-sized gradients several times over).
    """
    custom = (power == 2.0 and y.dim() >= 2 and y.shape[-1] == 2 * n and y.dtype == mel.dtype
              and not y.is_complex() and torch.is_grad_enabled() and (y.requires_grad or mel.requires_grad)
              and not in_functorch())
    if not custom:  # no autograd to save, another power, or a torch.func transform: plain ops
        return matmul_last(power_spectrum_packed(y, n, power), mel)
    y3 = y if y.dim() == 3 else (y.unsqueeze(0) if y.dim() == 2 else y.flatten(0, -3))
    out = _PowerMel.apply(y3.transpose(-1, -2), mel, n)  # (B, T, M)
    return out.reshape(*y.shape[:-2], *out.shape[-2:])


class _PowerMel(torch.autograd.Function):
    """``(y_re^2 + y_im^2)^T @ mel`` for y (B, 2n, T) (the strided conv's layout; any strides work),
    forward and backward by hand (see ``power_mel``)."""

    @staticmethod
    def forward(ctx, yc, mel, n):
        b, _, t = yc.shape
        re, im = yc[:, :n], yc[:, n:]
        p = torch.mul(re, re)
        p.addcmul_(im, im)  # (B, n, T)
        out = torch.bmm(p.transpose(1, 2), mel.expand(b, *mel.shape))
        ctx.save_for_backward(yc, mel, p)
        ctx.n = n
        return out

    @staticmethod
    def backward(ctx, gout):
        yc, mel, p = ctx.saved_tensors
        n = ctx.n
        b, _, t = yc.shape
        if torch.is_grad_enabled():  # create_graph: the same formulas, differentiable in yc too
            p = yc[:, :n].square() + yc[:, n:].square()
        g_y = g_mel = None
        if ctx.needs_input_grad[1]:
            g_mel = torch.bmm(p, gout).sum(0)  # (n, M)
        if ctx.needs_input_grad[0]:
            gp2 = torch.matmul(2.0 * mel, gout.transpose(1, 2))  # (B, n, T): 2 d out / d p
            g_y = (yc.reshape(b, 2, n, t) * gp2.unsqueeze(1)).view(b, 2 * n, t)
        return g_y, g_mel, None


def _safe_power(p: torch.Tensor, power: float) -> torch.Tensor:
    if power == 2.0:
        return p
    positive = p > 0
    safe = torch.where(positive, p, torch.ones_like(p))
    out = torch.sqrt(safe) if power == 1.0 else safe.pow(power / 2.0)
    return torch.where(positive, out, torch.zeros_like(out))


def power_spectrum(re: torch.Tensor, im: torch.Tensor, power: float) -> torch.Tensor:
    """``|X| ** power`` from real and imaginary parts, without NaN gradients at X = 0.

    ``re^2 + im^2`` is used directly for power 2.  Other powers go through ``p ** (power / 2)`` with
    the zero entries routed around the pow, so its infinite derivative at 0 (sqrt) never meets a
    zero upstream gradient (0 * inf = NaN); the gradient there is 0 instead.
    """
    return _safe_power(re * re + im * im, power)


def safe_log(x: torch.Tensor, offset: float = 0.0, floor: float = FLOAT32_EPS) -> torch.Tensor:
    """``log(max(x + offset, floor))``: a learnable mel stage may go slightly negative, which must not
    produce NaN.  At initialisation ``x >= 0`` and ``x + offset >= floor`` for torchaudio's
    ``log(x + 1e-6)``, so this equals it; Kaldi is ``offset = 0, floor = float32 eps``.  NaN in x
    stays NaN (clamp propagates it)."""
    if offset != 0.0:
        x = x + offset
    return torch.clamp(x, min=floor).log()


def amplitude_to_db(
    x: torch.Tensor,
    multiplier: float = 10.0,
    amin: float = 1e-10,
    db_multiplier: float = 0.0,
    top_db: float | None = None,
) -> torch.Tensor:
    """torchaudio.functional.amplitude_to_DB for x of shape (..., freq, time), same top_db semantics:
    the clamp ``max - top_db`` is taken over the last three dimensions (for 2-d and 3-d inputs:
    the whole tensor, so a batch (batch, freq, time) shares one maximum)."""
    x_db = multiplier * torch.log10(torch.clamp(x, min=amin))
    if db_multiplier != 0.0:
        x_db = x_db - multiplier * db_multiplier
    if top_db is not None and x_db.numel():  # (an empty batch has no maximum, and nothing to clamp)
        shape = x_db.shape
        packed = shape[-3] if x_db.dim() > 2 else 1
        packed_db = x_db.reshape(-1, packed, shape[-2], shape[-1])
        peak = packed_db.amax(dim=(-3, -2, -1)) - top_db
        x_db = torch.max(packed_db, peak.view(-1, 1, 1, 1)).reshape(shape)
    return x_db


def frame_mask(n_frames: torch.Tensor, total: int) -> torch.Tensor:
    """Boolean (..., total) mask of the valid frames."""
    return torch.arange(total, device=n_frames.device) < n_frames.unsqueeze(-1)
