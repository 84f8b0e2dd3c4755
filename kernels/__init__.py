"""Triton kernels for kfrontend, installed as ``kfrontend.kernels``.

Importing this package is cheap: Triton and the kernels (``kfrontend.kernels.butterfly``) load on
the first call of :func:`butterfly_multiply_triton`.  Under ``TRITON_INTERPRET=1`` (set before that
first import) the kernels run on CPU tensors in Triton's interpreter.
"""
from __future__ import annotations

import torch

__all__ = ["butterfly_multiply_triton", "supports", "supports_dtypes", "CUDA_VERIFIED"]

# The fused kernel has run in Triton's interpreter and been compiled for sm_90, never executed on a
# GPU.  backend="auto" picks it on CUDA (kfrontend.functional.auto_backend) only once
# tests/test_cuda.py has passed on a real GPU and docs/BENCHMARKS.md records that run; set this to
# True in the same commit.  backend="triton" uses the kernel whatever this says.
CUDA_VERIFIED = False


def supports_dtypes(x_dtype: torch.dtype, twiddle_dtype: torch.dtype) -> bool:
    """Whether the kernel handles these dtypes (it computes in float32): real float32, bfloat16 or
    float16 x with float32 twiddles, or complex64 (real or complex64 x, complex64 twiddles)."""
    if twiddle_dtype not in (torch.float32, torch.complex64):
        return False
    return x_dtype in (torch.float32, torch.bfloat16, torch.float16, torch.complex64)


def supports(x: torch.Tensor, twiddle: torch.Tensor) -> bool:
    """:func:`supports_dtypes` of the tensors' dtypes."""
    return supports_dtypes(x.dtype, twiddle.dtype)


def butterfly_multiply_triton(
    x: torch.Tensor, twiddle: torch.Tensor, increasing_stride: bool = True, *,
    transpose: bool = False, conjugate: bool = False,
):
    """The fused Triton butterfly product (see ``kfrontend.functional.butterfly_multiply``).

    ``transpose`` / ``conjugate`` run the same kernels on the transformed twiddle
    (``kfrontend.functional.transposed_twiddle``): a transposed product is a butterfly product of
    the opposite first stride order, so no new kernel specialisation is needed.
    """
    from kfrontend.kernels.butterfly import butterfly_multiply_triton as impl

    if transpose or conjugate:
        from kfrontend.reference import transposed_twiddle

        twiddle, increasing_stride = transposed_twiddle(twiddle, increasing_stride, transpose, conjugate)
    return impl(x, twiddle, increasing_stride)
