"""Functional core: butterfly products and K-matrix application.

The conventions (shapes, stride order, pair layout) and the reference product every backend is
tested against are in :mod:`kfrontend.reference`; this module checks the arguments and dispatches
to a backend: :mod:`kfrontend.cpu` (``blocked`` / ``dense``), ``kfrontend.kernels`` (``triton``),
the reference (``torch``).
"""
from __future__ import annotations

import math

import torch

from kfrontend import cpu
from kfrontend.reference import (  # noqa: F401  (re-exported: the public names of the conventions)
    block_is_increasing,
    butterfly_multiply_reference,
    check_butterfly_args,
    is_power_of_two,
    next_power_of_two,
    stride_of,
    transposed_twiddle,
)

__all__ = [
    "butterfly_multiply",
    "butterfly_multiply_reference",
    "kmatrix_multiply",
    "transposed_twiddle",
    "check_butterfly_args",
    "auto_backend",
    "stride_of",
    "is_power_of_two",
    "next_power_of_two",
    "BACKENDS",
]

BACKENDS = ("auto", "torch", "blocked", "dense", "triton")
def butterfly_multiply(
    x: torch.Tensor,
    twiddle: torch.Tensor,
    increasing_stride: bool = True,
    backend: str = "auto",
    *,
    transpose: bool = False,
    conjugate: bool = False,
) -> torch.Tensor:
    """Multiply ``x`` (..., N) by the butterfly product described by ``twiddle`` (by its transpose
    with ``transpose``, its conjugate with ``conjugate``, the adjoint with both).

    backend: ``"torch"`` (stage-by-stage reference, any device), ``"blocked"`` (groups of stages
    multiplied into small dense blocks, batched matmuls: the fast CPU path), ``"dense"`` (multiply
    the product out to an N x N matrix, then one matmul), ``"triton"`` (the fused kernel; CUDA, or
    CPU under ``TRITON_INTERPRET=1``), ``"auto"`` (:func:`auto_backend`: on CUDA the product
    multiplied out and one cuBLAS matmul until the Triton kernel is verified on a GPU; on CPU the
    fastest path by a cost model).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_butterfly_args(x, twiddle)
    if transpose or conjugate:
        twiddle, increasing_stride = transposed_twiddle(twiddle, increasing_stride, transpose, conjugate)
    if backend == "auto":
        backend = _auto_backend(x, twiddle)
    if backend == "torch":
        return butterfly_multiply_reference(x, twiddle, increasing_stride)
    if backend == "triton":
        from kfrontend.kernels import butterfly_multiply_triton

        return butterfly_multiply_triton(x, twiddle, increasing_stride)
    if backend == "blocked":
        return cpu.butterfly_multiply_blocked(x, twiddle, increasing_stride)
    return cpu.butterfly_multiply_dense(x, twiddle, increasing_stride)


def auto_backend(device_type: str, x_dtype: torch.dtype, twiddle_dtype: torch.dtype,
                 kernel_verified: bool | None = None) -> str:
    """What ``backend="auto"`` means for these devices and dtypes (a pure function, tested on CPU):

    * CUDA: ``"triton"`` once the kernel is verified on a GPU (``kernel_verified``, default
      ``kfrontend.kernels.CUDA_VERIFIED``) and it supports the dtypes (float32 arithmetic);
      otherwise ``"dense"``: the product multiplied out by plain torch ops, then one cuBLAS matmul
      (the path the front end's stages have always taken on CPU).
    * elsewhere: ``"cpu"``, i.e. ``kfrontend.cpu``'s cost model picks torch / blocked / dense.
    """
    if device_type != "cuda":
        return "cpu"
    from kfrontend import kernels  # cheap: triton loads on the first kernel call

    verified = kernels.CUDA_VERIFIED if kernel_verified is None else kernel_verified
    return "triton" if verified and kernels.supports_dtypes(x_dtype, twiddle_dtype) else "dense"


def _auto_backend(x: torch.Tensor, twiddle: torch.Tensor) -> str:
    kind = auto_backend(x.device.type, x.dtype, twiddle.dtype)
    if kind != "cpu":
        return kind
    return cpu.choose_backend(x, twiddle)


def kmatrix_multiply(
    x: torch.Tensor,
    twiddle: torch.Tensor,
    out_features: int,
    increasing_stride: bool = True,
    backend: str = "auto",
    *,
    transpose: bool = False,
    conjugate: bool = False,
) -> torch.Tensor:
    """Apply a (possibly stacked) K-matrix to ``x`` (..., in_features): zero-pad to N, multiply,
    keep the top ``out_features`` rows.

    ``twiddle`` is ``(nstacks, nblocks, log2 N, N/2, 2, 2)``; stack ``k`` produces outputs
    ``k*N .. (k+1)*N - 1``.  This is the operation every K-matrix layer and construction uses.

    With ``transpose`` it applies the transpose of the stacked (nstacks N x N) matrix ``M``: ``x``
    is (..., m) with m <= nstacks * N, and the result is ``x @ M[:m, :out_features]`` (out_features
    <= N): stack k's transposed product applied to inputs ``k*N .. (k+1)*N - 1``, summed.
    ``conjugate`` conjugates the matrix (both: the adjoint).  So for ``W = M[:out, :in]``,
    ``kmatrix_multiply(y, tw, in, transpose=True)`` is ``y @ W`` and with ``conjugate`` too
    ``y @ W.conj()``, the adjoint map.
    """
    if transpose:
        return _kmatrix_multiply_transposed(x, twiddle, out_features, increasing_stride, backend, conjugate)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(twiddle, torch.Tensor):
        raise TypeError(f"twiddle must be a torch.Tensor, got {type(twiddle).__name__}")
    if twiddle.dim() != 6:
        raise ValueError(
            f"twiddle must have shape (nstacks, nblocks, log2 N, N/2, 2, 2); got {tuple(twiddle.shape)}"
        )
    n = twiddle.shape[-3] * 2
    nstacks = twiddle.shape[0]
    if x.shape[-1] > n:
        raise ValueError(f"x.shape[-1] = {x.shape[-1]} is larger than the K-matrix size N = {n}")
    if out_features > nstacks * n:
        raise ValueError(f"out_features = {out_features} exceeds nstacks * N = {nstacks * n}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if conjugate and twiddle.is_complex():
        twiddle = twiddle.conj_physical()
    if backend == "auto" and auto_backend(x.device.type, x.dtype, twiddle.dtype) == "dense":
        backend = "dense"  # CUDA before the kernel is verified: multiplied out, one cuBLAS matmul
    if backend in ("blocked", "dense") or (backend == "auto" and not x.is_cuda):
        # CPU paths skip the zero padding and the dropped rows, or multiply the (in x out) matrix
        # out once per call when that is cheaper (cost model in kfrontend.cpu).
        check_butterfly_args(x.new_zeros((1, n)), twiddle[0])
        return cpu.kmatrix_multiply_cpu(x, twiddle, out_features, increasing_stride, backend)
    if x.shape[-1] < n:
        x = torch.nn.functional.pad(x, (0, n - x.shape[-1]))
    outs = []
    for k in range(math.ceil(out_features / n)):
        outs.append(butterfly_multiply(x, twiddle[k], increasing_stride, backend))
    y = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
    return y[..., :out_features]


def _kmatrix_multiply_transposed(x, twiddle, out_features, increasing_stride, backend, conjugate):
    """``kmatrix_multiply(..., transpose=True)``: each stack's transposed product (itself a K-matrix
    of one stack, see :func:`transposed_twiddle`) on its slice of x, summed over the stacks."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(twiddle, torch.Tensor) or twiddle.dim() != 6:
        raise ValueError(
            "twiddle must be a tensor of shape (nstacks, nblocks, log2 N, N/2, 2, 2); got "
            f"{tuple(twiddle.shape) if isinstance(twiddle, torch.Tensor) else type(twiddle).__name__}"
        )
    n, nstacks = twiddle.shape[-3] * 2, twiddle.shape[0]
    if x.dim() < 1 or not 1 <= x.shape[-1] <= nstacks * n:
        raise ValueError(
            f"with transpose=True x.shape[-1] is the K-matrix's output count and must be in "
            f"[1, nstacks * N = {nstacks * n}]; got x of shape {tuple(x.shape)}"
        )
    if not 1 <= out_features <= n:
        raise ValueError(
            f"with transpose=True out_features is the K-matrix's input count and must be in [1, N = {n}]; "
            f"got {out_features}"
        )
    tw, inc = transposed_twiddle(twiddle, increasing_stride, True, conjugate)
    y = None
    for k in range(math.ceil(x.shape[-1] / n)):
        part = kmatrix_multiply(x[..., k * n:(k + 1) * n], tw[k:k + 1], out_features, inc, backend)
        y = part if y is None else y + part
    return y
