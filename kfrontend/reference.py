"""The conventions every backend shares: argument checks, stride order, dtype rules and the
stage-by-stage reference product.  The bottom of the package: it imports only torch, so
``kfrontend.functional`` (which dispatches), ``kfrontend.cpu`` and ``kfrontend.kernels`` (which
implement) all import from here and never from each other.

Conventions (shared by every backend, the Triton kernel included):

* ``x`` is ``(..., N)`` with N a power of two, real or complex.
* ``twiddle`` is ``(nblocks, log2 N, N/2, 2, 2)``, real or complex.
* Block ``b`` applies its ``log2 N`` factors in increasing stride order (1, 2, ..., N/2) when
  ``increasing_stride`` is true for ``b = 0``; the order alternates after each block, so two blocks
  are a butterfly followed by a transposed-shape butterfly (``B B*``).
* ``twiddle[b, i]`` is the i-th factor block ``b`` applies: stride ``2**i`` in increasing order,
  ``N / 2**(i+1)`` in decreasing order.
* In a factor of stride ``s`` the pairs ``(p, p+s)`` (bit ``log2 s`` of ``p`` is 0) are counted in
  increasing ``p``; pair ``j`` maps ``y_p = t00 x_p + t01 x_{p+s}``, ``y_{p+s} = t10 x_p + t11 x_{p+s}``
  with ``t = twiddle[b, i, j]``.  For ``p = g * 2s + r`` (``0 <= r < s``) the pair index is
  ``j = g * s + r``.
"""
from __future__ import annotations

import torch

__all__ = [
    "is_power_of_two",
    "next_power_of_two",
    "stride_of",
    "block_is_increasing",
    "check_butterfly_args",
    "compute_dtype",
    "output_dtype",
    "butterfly_multiply_reference",
    "transposed_twiddle",
    "COMPLEX_OF",
    "REAL_OF",
]

# The complex dtype that pairs with each real one, and back (twiddles, DFT stages, dtype moves).
COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128}
REAL_OF = {c: r for r, c in COMPLEX_OF.items()}

_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_COMPLEX = (torch.complex64, torch.complex128)


def is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def next_power_of_two(n: int) -> int:
    if n < 1:
        raise ValueError(f"size must be >= 1, got {n}")
    return 1 << (n - 1).bit_length()


def stride_of(factor: int, n: int, increasing: bool) -> int:
    """Stride of the ``factor``-th factor of a butterfly of size ``n`` in the given order."""
    return 1 << factor if increasing else n >> (factor + 1)


def block_is_increasing(block: int, increasing_stride: bool) -> bool:
    return increasing_stride if block % 2 == 0 else not increasing_stride


def check_butterfly_args(x: torch.Tensor, twiddle: torch.Tensor) -> tuple[int, int, int]:
    """Validate ``x`` / ``twiddle``; return ``(N, log2 N, nblocks)``.  Errors name the argument."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(twiddle, torch.Tensor):
        raise TypeError(f"twiddle must be a torch.Tensor, got {type(twiddle).__name__}")
    if x.dtype not in _FLOATING + _COMPLEX:
        raise TypeError(f"x must be a floating point or complex tensor, got dtype {x.dtype}")
    if twiddle.dtype not in (torch.float32, torch.float64) + _COMPLEX:
        raise TypeError(
            f"twiddle must be float32, float64, complex64 or complex128, got dtype {twiddle.dtype}"
        )
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension (..., N)")
    n = x.shape[-1]
    if n < 2 or not is_power_of_two(n):
        raise ValueError(
            f"x.shape[-1] must be a power of two >= 2 (zero-pad first, or use Butterfly/Kaleidoscope "
            f"which pad for you); got x of shape {tuple(x.shape)}"
        )
    log_n = n.bit_length() - 1
    if twiddle.dim() != 5 or tuple(twiddle.shape[1:]) != (log_n, n // 2, 2, 2) or twiddle.shape[0] < 1:
        raise ValueError(
            f"twiddle must have shape (nblocks, log2 N, N/2, 2, 2) = (nblocks, {log_n}, {n // 2}, 2, 2) "
            f"for x of last dimension N = {n}; got {tuple(twiddle.shape)}"
        )
    if x.device != twiddle.device:
        raise ValueError(f"x is on {x.device} but twiddle is on {twiddle.device}")
    return n, log_n, twiddle.shape[0]


def compute_dtype(x: torch.Tensor, twiddle: torch.Tensor) -> torch.dtype:
    """Arithmetic dtype: half-precision inputs are computed in float32 (complex64 for complex)."""
    xd = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    return torch.promote_types(xd, twiddle.dtype)


def output_dtype(x: torch.Tensor, twiddle: torch.Tensor) -> torch.dtype:
    """bf16/fp16 real inputs with real twiddles return their own dtype (fp32 arithmetic inside)."""
    if x.dtype in (torch.float16, torch.bfloat16) and not twiddle.is_complex():
        return x.dtype
    return compute_dtype(x, twiddle)


def butterfly_multiply_reference(
    x: torch.Tensor, twiddle: torch.Tensor, increasing_stride: bool = True
) -> torch.Tensor:
    """Stage-by-stage PyTorch implementation: the reference every other backend is tested against."""
    n, log_n, nblocks = check_butterfly_args(x, twiddle)
    batch_shape = x.shape[:-1]
    dtype = compute_dtype(x, twiddle)
    y = x.reshape(-1, n).to(dtype)
    tw = twiddle.to(dtype)
    for b in range(nblocks):
        inc = block_is_increasing(b, increasing_stride)
        for i in range(log_n):
            s = stride_of(i, n, inc)
            t = tw[b, i].reshape(n // (2 * s), s, 2, 2)
            yv = y.reshape(-1, n // (2 * s), 2, s)
            x0, x1 = yv[:, :, 0], yv[:, :, 1]
            y0 = t[..., 0, 0] * x0 + t[..., 0, 1] * x1
            y1 = t[..., 1, 0] * x0 + t[..., 1, 1] * x1
            y = torch.stack((y0, y1), dim=2).reshape(-1, n)
    return y.reshape(*batch_shape, n).to(output_dtype(x, twiddle))


def transposed_twiddle(
    twiddle: torch.Tensor, increasing_stride: bool, transpose: bool = True, conjugate: bool = False
) -> tuple[torch.Tensor, bool]:
    """``(twiddle', increasing_stride')`` of the transposed and/or conjugated butterfly product.

    ``twiddle`` is ``(..., nblocks, log2 N, N/2, 2, 2)``.  The transpose of ``F_last ... F_first``
    is ``F_first^T ... F_last^T``: the same factors in reverse order (blocks reversed, and each
    block's stride order with them), each 2x2 block transposed; a factor keeps its stride, so its
    pair layout is unchanged.  The new first block is the old last one, run the other way.  This
    is O(parameters), differentiable, and every backend (the Triton kernel included) multiplies by
    the result like any other twiddle, so no backend needs a transposed code path.
    """
    nblocks = twiddle.shape[-5]
    if conjugate and twiddle.is_complex():
        twiddle = twiddle.conj_physical()  # a materialised conjugate: the kernels view it as real
    if not transpose:
        return twiddle, increasing_stride
    last_increasing = block_is_increasing(nblocks - 1, increasing_stride)
    return twiddle.flip((-5, -4)).transpose(-1, -2), not last_increasing
