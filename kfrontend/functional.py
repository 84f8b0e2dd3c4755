"""Functional core: butterfly products and K-matrix application.

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

import math

import torch

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


def _compute_dtype(x: torch.Tensor, twiddle: torch.Tensor) -> torch.dtype:
    """Arithmetic dtype: half-precision inputs are computed in float32 (complex64 for complex)."""
    xd = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    return torch.promote_types(xd, twiddle.dtype)


def _output_dtype(x: torch.Tensor, twiddle: torch.Tensor) -> torch.dtype:
    """bf16/fp16 real inputs with real twiddles return their own dtype (fp32 arithmetic inside)."""
    if x.dtype in (torch.float16, torch.bfloat16) and not twiddle.is_complex():
        return x.dtype
    return _compute_dtype(x, twiddle)


def butterfly_multiply_reference(
    x: torch.Tensor, twiddle: torch.Tensor, increasing_stride: bool = True
) -> torch.Tensor:
    """Stage-by-stage PyTorch implementation: the reference every other backend is tested against."""
    n, log_n, nblocks = check_butterfly_args(x, twiddle)
    batch_shape = x.shape[:-1]
    dtype = _compute_dtype(x, twiddle)
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
    return y.reshape(*batch_shape, n).to(_output_dtype(x, twiddle))


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
    from kfrontend import cpu

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
    from kfrontend import cpu

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
        from kfrontend import cpu

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
