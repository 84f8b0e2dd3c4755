"""Fast CPU paths for butterfly products (see ``butterfly_multiply``'s backends)."""
from __future__ import annotations

import torch

from kfrontend.functional import butterfly_multiply_reference, _compute_dtype, _output_dtype


def butterfly_product_matrix(twiddle: torch.Tensor, increasing_stride: bool = True) -> torch.Tensor:
    """The N x N matrix M of the butterfly product, so that ``butterfly_multiply(x) == x @ M.T``."""
    n = twiddle.shape[-3] * 2
    eye = torch.eye(n, dtype=twiddle.dtype, device=twiddle.device)
    # Row i of the result is B e_i, i.e. column i of B.
    return butterfly_multiply_reference(eye, twiddle, increasing_stride).transpose(0, 1)


def butterfly_multiply_dense(x, twiddle, increasing_stride=True):
    dtype = _compute_dtype(x, twiddle)
    m = butterfly_product_matrix(twiddle.to(dtype), increasing_stride)
    return (x.to(dtype) @ m.transpose(0, 1)).to(_output_dtype(x, twiddle))


def butterfly_multiply_blocked(x, twiddle, increasing_stride=True):
    return butterfly_multiply_reference(x, twiddle, increasing_stride)


def choose_backend(x, twiddle) -> str:
    return "torch"
