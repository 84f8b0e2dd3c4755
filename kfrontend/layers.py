"""Learnable butterfly and kaleidoscope (K-matrix) layers: thin nn.Modules over ``kmatrix_multiply``."""
from __future__ import annotations

import math

import torch
from torch import nn

from kfrontend.functional import (
    BACKENDS,
    kmatrix_multiply,
    next_power_of_two,
)

__all__ = ["Butterfly", "Kaleidoscope", "twiddle_init"]

INITS = ("randn", "ortho", "identity")


def twiddle_init(shape, init: str, complex: bool, dtype=torch.float32, generator=None) -> torch.Tensor:
    """Twiddles of the given shape (..., 2, 2).

    ``randn``: entries N(0, 1/2) (complex: real and imaginary parts N(0, 1/4)), so every factor
    preserves the expected squared norm; ``ortho``: each 2x2 block a random rotation (complex: a
    random unitary), so the product is orthogonal/unitary; ``identity``: every block the identity.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    cdtype = {torch.float32: torch.complex64, torch.float64: torch.complex128}[dtype]
    if init == "identity":
        t = torch.zeros(shape, dtype=dtype)
        t[..., 0, 0] = 1
        t[..., 1, 1] = 1
        return t.to(cdtype) if complex else t
    if init == "randn":
        if complex:
            re = torch.randn(shape, dtype=dtype, generator=generator)
            im = torch.randn(shape, dtype=dtype, generator=generator)
            return torch.complex(re, im) * math.sqrt(0.25)
        return torch.randn(shape, dtype=dtype, generator=generator) * math.sqrt(0.5)
    theta = torch.rand(shape[:-2], dtype=dtype, generator=generator) * (2 * math.pi)
    c, s = torch.cos(theta), torch.sin(theta)
    rot = torch.stack((torch.stack((c, -s), -1), torch.stack((s, c), -1)), -2)
    if not complex:
        return rot
    # Random unitary: diag(e^{i a}, e^{i b}) @ rotation @ diag(e^{i c}, 1).
    a, b, d = (torch.rand(shape[:-2], dtype=dtype, generator=generator) * (2 * math.pi) for _ in range(3))
    left = torch.stack((torch.exp(1j * a), torch.exp(1j * b)), -1).unsqueeze(-1)
    right = torch.stack((torch.exp(1j * d), torch.ones_like(d).to(cdtype)), -1).unsqueeze(-2)
    return left * rot.to(cdtype) * right


class Butterfly(nn.Module):
    """``y = x @ W.T + bias`` with ``W`` a (stacked) product of butterfly factors.

    x is (..., in_features).  The input is zero-padded to ``size`` (default: the next power of two
    of ``in_features``), ``nblocks`` butterflies are applied (orders alternating, starting with
    ``increasing_stride``), and the top ``out_features`` rows are kept; when ``out_features`` is
    larger than ``size``, ``ceil(out_features / size)`` independent butterflies are stacked.
    A drop-in for ``nn.Linear(in_features, out_features)`` with O(N log N) parameters and cost.

    ``twiddle`` (nstacks, nblocks, log2 N, N/2, 2, 2) is the only weight; pass ``twiddle=`` to build
    a layer from an exact construction.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        complex: bool = False,
        increasing_stride: bool = True,
        nblocks: int = 1,
        init: str = "randn",
        size: int | None = None,
        twiddle: torch.Tensor | None = None,
        backend: str = "auto",
        dtype: torch.dtype = torch.float32,
        real_output: bool = False,
    ):
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features), ("nblocks", nblocks)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        n = size if size is not None else max(2, next_power_of_two(in_features))
        if n < 2 or n & (n - 1) or n < in_features:
            raise ValueError(f"size must be a power of two >= max(2, in_features={in_features}), got {n}")
        self.in_features, self.out_features, self.size = in_features, out_features, n
        self.increasing_stride, self.backend = bool(increasing_stride), backend
        # A complex K-matrix whose real part is the map (e.g. DCT = Re(diag * DFT)); output real.
        self.real_output = bool(real_output)
        nstacks = math.ceil(out_features / n)
        shape = (nstacks, nblocks, n.bit_length() - 1, n // 2, 2, 2)
        if twiddle is None:
            twiddle = twiddle_init(shape, init, complex, dtype)
        elif tuple(twiddle.shape) != shape[:1] + tuple(twiddle.shape[1:2]) + shape[2:]:
            raise ValueError(
                f"twiddle must have shape (nstacks, nblocks, log2 N, N/2, 2, 2) = "
                f"({nstacks}, nblocks, {shape[2]}, {shape[3]}, 2, 2); got {tuple(twiddle.shape)}"
            )
        self.twiddle = nn.Parameter(twiddle.detach().clone())
        if bias:
            bdtype = self.twiddle.real.dtype if self.real_output else self.twiddle.dtype
            self.bias = nn.Parameter(torch.zeros(out_features, dtype=bdtype))
        else:
            self.register_parameter("bias", None)

    @property
    def nblocks(self) -> int:
        return self.twiddle.shape[1]

    @property
    def is_complex(self) -> bool:
        return self.twiddle.is_complex()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"expected input of shape (..., {self.in_features}) (in_features), got {tuple(x.shape)}"
            )
        y = kmatrix_multiply(x, self.twiddle, self.out_features, self.increasing_stride, self.backend)
        if self.real_output and y.is_complex():
            y = y.real
        return y if self.bias is None else y + self.bias

    @torch.no_grad()
    def to_dense(self) -> torch.Tensor:
        """The exact (out_features, in_features) matrix W: ``forward(x) == x @ W.T + bias``."""
        eye = torch.eye(self.in_features, dtype=self.twiddle.dtype, device=self.twiddle.device)
        w = kmatrix_multiply(eye, self.twiddle, self.out_features, self.increasing_stride, "torch")
        if self.real_output and w.is_complex():
            w = w.real
        return w.transpose(0, 1).contiguous()

    def parameter_count(self) -> int:
        """Real numbers stored in the twiddles (a complex entry counts 2)."""
        return self.twiddle.numel() * (2 if self.is_complex else 1)

    def flops(self) -> int:
        """Real floating-point operations of one multiply (one row of x)."""
        nstacks, nblocks, log_n, half = self.twiddle.shape[:4]
        # Per 2x2 block: 4 multiplies and 2 adds; complex multiply = 6 flops, complex add = 2.
        per_block = 28 if self.is_complex else 6
        return nstacks * nblocks * log_n * half * per_block

    def dense_parameter_count(self) -> int:
        return self.in_features * self.out_features * (2 if self.is_complex else 1)

    def dense_flops(self) -> int:
        return 2 * self.in_features * self.out_features * (4 if self.is_complex else 1)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, size={self.size}, "
            f"nblocks={self.nblocks}, increasing_stride={self.increasing_stride}, "
            f"complex={self.is_complex}, real_output={self.real_output}, bias={self.bias is not None}"
        )


class Kaleidoscope(Butterfly):
    """A kaleidoscope matrix ``(B B*)^width``: ``2 * width`` butterflies with alternating stride
    order, acting on the input zero-padded to ``expansion`` times the next power of two."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        width: int = 1,
        expansion: int = 1,
        bias: bool = False,
        complex: bool = False,
        increasing_stride: bool = True,
        init: str = "randn",
        twiddle: torch.Tensor | None = None,
        backend: str = "auto",
        dtype: torch.dtype = torch.float32,
    ):
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, got {width!r}")
        if not isinstance(expansion, int) or expansion < 1 or expansion & (expansion - 1):
            raise ValueError(f"expansion must be a power of two >= 1, got {expansion!r}")
        size = max(2, next_power_of_two(in_features)) * expansion
        if twiddle is not None:
            size = twiddle.shape[-3] * 2
        super().__init__(
            in_features, out_features, bias=bias, complex=complex, increasing_stride=increasing_stride,
            nblocks=2 * width, init=init, size=size, twiddle=twiddle, backend=backend, dtype=dtype,
        )
