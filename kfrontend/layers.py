"""Learnable butterfly and kaleidoscope (K-matrix) layers: thin nn.Modules over ``kmatrix_multiply``."""
from __future__ import annotations

import math

import torch
from torch import nn

from kfrontend._contract import ModuleContract, refuse_tracing, upcast
from kfrontend.cpu import kmatrix_rows
from kfrontend.reference import COMPLEX_OF
from kfrontend.functional import (
    BACKENDS,
    kmatrix_multiply,
    next_power_of_two,
)

__all__ = [
    "Butterfly",
    "ButterflyUnitary",
    "Kaleidoscope",
    "twiddle_init",
    "haar_angles",
    "orthogonal_twiddle",
    "unitary_twiddle",
    "param_groups_for_weight_decay",
]

INITS = ("randn", "ortho", "identity")


def twiddle_init(shape, init: str, complex: bool, dtype=torch.float32, generator=None) -> torch.Tensor:
    """Twiddles of the given shape (..., 2, 2).

    ``randn``: entries N(0, 1/2) (complex: real and imaginary parts N(0, 1/4)), so every factor
    preserves the expected squared norm; ``ortho``: each 2x2 block Haar-random on O(2) (a rotation
    or, with probability 1/2, a reflection: det -1) or U(2) when complex, so the product is
    orthogonal / unitary (as the reference library's ``init='ortho'``); ``identity``: every block
    the identity.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    cdtype = COMPLEX_OF[dtype]
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
    angles, det = haar_angles(tuple(shape[:-2]), complex, dtype, generator)
    return unitary_twiddle(angles) if complex else orthogonal_twiddle(angles, det)


def haar_angles(shape, complex: bool, dtype=torch.float32, generator=None):
    """Angles of Haar-random 2x2 blocks: ``(angles, det)``.  Real: ``angles`` (*shape) uniform in
    [0, 2 pi) and ``det`` (*shape) +1 or -1 with probability 1/2 each (Haar on O(2)); complex:
    ``angles`` (*shape, 4) = (phi, alpha, psi, chi) with phi = asin(sqrt(u)) (Haar on U(2), as the
    reference library's ButterflyUnitary) and ``det`` None."""
    def uniform(*s):
        return torch.rand(s, dtype=dtype, generator=generator)

    if complex:
        phi = torch.asin(torch.sqrt(uniform(*shape)))
        alpha, psi, chi = uniform(3, *shape) * (2 * math.pi)
        return torch.stack((phi, alpha, psi, chi), -1), None
    theta = uniform(*shape) * (2 * math.pi)
    det = (torch.randint(0, 2, tuple(shape), generator=generator) * 2 - 1).to(dtype)
    return theta, det


def orthogonal_twiddle(theta: torch.Tensor, det: torch.Tensor) -> torch.Tensor:
    """Real 2x2 blocks from angles: ``[[c, -s], [s, c]]`` (a rotation) where ``det`` is +1 and
    ``[[c, s], [s, -c]]`` (a reflection) where it is -1; differentiable in theta."""
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack((torch.stack((c, -det * s), -1), torch.stack((s, det * c), -1)), -2)


def unitary_twiddle(angles: torch.Tensor) -> torch.Tensor:
    """Complex 2x2 unitary blocks from angles (..., 4) = (phi, alpha, psi, chi):
    ``e^{i alpha} [[e^{i psi} cos phi, e^{i chi} sin phi], [-e^{-i chi} sin phi, e^{-i psi} cos phi]]``
    (every block of U(2)); differentiable."""
    phi, alpha, psi, chi = angles.unbind(-1)
    c, s = torch.cos(phi), torch.sin(phi)

    def e(a):
        return torch.polar(torch.ones_like(a), a)

    return torch.stack((torch.stack((e(alpha + psi) * c, e(alpha + chi) * s), -1),
                        torch.stack((-e(alpha - chi) * s, e(alpha - psi) * c), -1)), -2)


class Butterfly(ModuleContract, nn.Module):
    """``y = x @ W.T + bias`` with ``W`` a (stacked) product of butterfly factors.

    x is (..., in_features).  The input is zero-padded to ``size`` (default: the next power of two
    of ``in_features``), ``nblocks`` butterflies are applied (orders alternating, starting with
    ``increasing_stride``), and the top ``out_features`` rows are kept; when ``out_features`` is
    larger than ``size``, ``ceil(out_features / size)`` independent butterflies are stacked.
    A drop-in for ``nn.Linear(in_features, out_features)`` with O(N log N) parameters and cost.

    ``twiddle`` (nstacks, nblocks, log2 N, N/2, 2, 2) is the only weight; pass ``twiddle=`` to build
    a layer from an exact construction.  ``nblocks`` defaults to the twiddle's number of blocks (1
    without a twiddle); given with a twiddle, it must agree with it.

    Module contract (docs/FRONTEND.md): ``.double()`` / ``.to(dtype)`` keep complex twiddles complex
    (complex128 / complex64); after ``.half()`` / ``.bfloat16()`` real twiddles are stored in half
    precision and the product runs in float32 (complex twiddles stay complex64); the state_dict
    carries the configuration below (``_config_state``) and refuses another one.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        complex: bool = False,
        increasing_stride: bool = True,
        nblocks: int | None = None,
        init: str = "randn",
        size: int | None = None,
        twiddle: torch.Tensor | None = None,
        backend: str = "auto",
        dtype: torch.dtype = torch.float32,
        real_output: bool = False,
    ):
        super().__init__()
        blocks_given = twiddle.shape[1] if isinstance(twiddle, torch.Tensor) and twiddle.dim() > 1 else None
        if nblocks is None:  # the twiddle's, or 1
            nblocks = 1 if blocks_given is None else int(blocks_given)
        for name, v in (("in_features", in_features), ("out_features", out_features), ("nblocks", nblocks)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if blocks_given is not None and nblocks != blocks_given:
            raise ValueError(
                f"nblocks={nblocks} contradicts the twiddle of shape {tuple(twiddle.shape)}, which has "
                f"{blocks_given} blocks (twiddle.shape[1]); pass nblocks={blocks_given} or leave nblocks out"
            )
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
        self._init_weight(shape, twiddle, init, complex, dtype)
        if bias:
            bdtype = self.twiddle.real.dtype if self.real_output else self.twiddle.dtype
            self.bias = nn.Parameter(torch.zeros(out_features, dtype=bdtype, device=self.twiddle.device))
        else:
            self.register_parameter("bias", None)

    def _init_weight(self, shape, twiddle, init, complex, dtype) -> None:
        """Create the weight that ``self.twiddle`` reads: here the twiddle itself."""
        if twiddle is None:
            twiddle = twiddle_init(shape, init, complex, dtype)
        elif tuple(twiddle.shape) != shape[:1] + tuple(twiddle.shape[1:2]) + shape[2:]:
            raise ValueError(
                f"twiddle must have shape (nstacks, nblocks, log2 N, N/2, 2, 2) = "
                f"({shape[0]}, nblocks, {shape[2]}, {shape[3]}, 2, 2); got {tuple(twiddle.shape)}"
            )
        self.twiddle = nn.Parameter(twiddle.detach().clone())

    def _config_state(self) -> dict:
        return dict(in_features=self.in_features, out_features=self.out_features, size=self.size,
                    nblocks=self.nblocks, increasing_stride=self.increasing_stride, real_output=self.real_output,
                    complex=self.is_complex, bias=self.bias is not None)

    def _twiddle_for_compute(self) -> torch.Tensor:
        """The twiddle the product uses: float32 when stored in half precision (``.half()``)."""
        return upcast(self.twiddle)

    def no_weight_decay_parameters(self) -> set[str]:
        """Names of this module's parameters to keep out of weight decay: the structured ones
        (decaying twiddles shrinks every factor of a product towards zero, not the map towards a
        small one).  :func:`param_groups_for_weight_decay` reads this.  A twiddle learned as an
        offset from its initial value (the front end's ``TwiddleOffset`` parametrization) is left to
        decay: that pulls the map toward its start, not toward zero."""
        if "twiddle" in getattr(self, "parametrizations", {}):
            return set()
        return {"twiddle"}

    @property
    def nblocks(self) -> int:
        return self.twiddle.shape[1]

    @property
    def is_complex(self) -> bool:
        return self.twiddle.is_complex()

    def forward(self, x: torch.Tensor, transpose: bool = False, conjugate: bool = False) -> torch.Tensor:
        """``x @ W.T + bias`` for x (..., in_features); ``conjugate``: ``x @ W.conj().T + bias``;
        ``transpose``: the transposed map ``x @ W`` (``x @ W.conj()`` with ``conjugate``: the
        adjoint) for x (..., out_features), returning (..., in_features), without a bias.
        Half precision x (or a ``.half()`` layer) is computed in float32 and returned in x's dtype.

        The transposed product runs on any backend by transforming the twiddle
        (``kfrontend.functional.transposed_twiddle``); the matrix is never built.  With
        ``real_output`` the map is ``Re(W)`` for real x, and its transpose ``Re(W).T``.
        """
        refuse_tracing(self)
        tw = self._twiddle_for_compute()
        if transpose:
            if self.bias is not None:
                raise ValueError(
                    "transpose=True applies W.T alone, and this layer has a bias of shape "
                    f"({self.out_features},) (out_features) that has no place in the transposed map "
                    f"to {self.in_features} features; build the layer with bias=False"
                )
            if x.shape[-1] != self.out_features:
                raise ValueError(
                    f"with transpose=True expected input of shape (..., {self.out_features}) "
                    f"(out_features), got {tuple(x.shape)}"
                )
            y = kmatrix_multiply(x, tw, self.in_features, self.increasing_stride, self.backend,
                                 transpose=True, conjugate=conjugate)
        else:
            if x.shape[-1] != self.in_features:
                raise ValueError(
                    f"expected input of shape (..., {self.in_features}) (in_features), got {tuple(x.shape)}"
                )
            y = kmatrix_multiply(x, tw, self.out_features, self.increasing_stride, self.backend,
                                 conjugate=conjugate)
        if self.real_output and y.is_complex():
            y = y.real
        return y if self.bias is None or transpose else y + self.bias

    @torch.no_grad()
    def to_dense(self) -> torch.Tensor:
        """The exact (out_features, in_features) matrix W: ``forward(x) == x @ W.T + bias``."""
        tw = self._twiddle_for_compute()
        w = kmatrix_rows(tw, self.increasing_stride, self.out_features, 0, self.in_features)
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
    order, acting on the input zero-padded to ``expansion`` times the next power of two.

    With ``twiddle`` given, ``width`` and ``expansion`` default to what its shape says (blocks / 2,
    size / next power of two of in_features); given explicitly they must agree with it.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        width: int | None = None,
        expansion: int | None = None,
        bias: bool = False,
        complex: bool = False,
        increasing_stride: bool = True,
        init: str = "randn",
        twiddle: torch.Tensor | None = None,
        backend: str = "auto",
        dtype: torch.dtype = torch.float32,
    ):
        if width is not None and (not isinstance(width, int) or width < 1):
            raise ValueError(f"width must be a positive integer, got {width!r}")
        if expansion is not None and (not isinstance(expansion, int) or expansion < 1 or expansion & (expansion - 1)):
            raise ValueError(f"expansion must be a power of two >= 1, got {expansion!r}")
        if not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be a positive integer, got {in_features!r}")
        base = max(2, next_power_of_two(in_features))
        if twiddle is None:
            width, expansion = width or 1, expansion or 1
            size = base * expansion
        else:
            if not isinstance(twiddle, torch.Tensor) or twiddle.dim() != 6:
                raise ValueError(
                    "twiddle must be a tensor of shape (nstacks, 2 * width, log2 N, N/2, 2, 2); got "
                    f"{tuple(twiddle.shape) if isinstance(twiddle, torch.Tensor) else type(twiddle).__name__}"
                )
            nblocks, size = twiddle.shape[1], twiddle.shape[-3] * 2
            if nblocks % 2 or (width is not None and nblocks != 2 * width):
                need = ("a Kaleidoscope needs an even number of blocks (2 * width)" if width is None
                        else f"a Kaleidoscope of width={width} needs 2 * width = {2 * width} blocks")
                raise ValueError(f"twiddle of shape {tuple(twiddle.shape)} has {nblocks} blocks (twiddle.shape[1]); {need}")
            if expansion is not None and size != base * expansion:
                raise ValueError(
                    f"twiddle of shape {tuple(twiddle.shape)} has size N = {size}, but in_features={in_features} "
                    f"with expansion={expansion} needs N = {base} * {expansion} = {base * expansion}"
                )
            width = nblocks // 2
        super().__init__(
            in_features, out_features, bias=bias, complex=complex, increasing_stride=increasing_stride,
            nblocks=2 * width, init=init, size=size, twiddle=twiddle, backend=backend, dtype=dtype,
        )


class ButterflyUnitary(Butterfly):
    """A butterfly constrained to be unitary (``complex=True``) or orthogonal (real): every 2x2
    block is parameterised by angles, so the product stays unitary / orthogonal while it learns.

    Complex: ``angles`` (nstacks, nblocks, log2 N, N/2, 4) = (phi, alpha, psi, chi) per block, as
    the reference library's ``ButterflyUnitary`` (:func:`unitary_twiddle`; covers all of U(2)).
    Real: ``angles`` (nstacks, nblocks, log2 N, N/2), each block a rotation by its angle or, where the
    buffer ``det`` is -1, a reflection (:func:`orthogonal_twiddle`); ``det`` is drawn at init (Haar on
    O(2) with ``reflections=True``, all +1 otherwise) and stays fixed: a continuous angle cannot
    change a block's determinant.  Initialised Haar-random; ``self.twiddle`` is the derived twiddle.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        complex: bool = True,
        increasing_stride: bool = True,
        nblocks: int = 1,
        size: int | None = None,
        reflections: bool = True,
        backend: str = "auto",
        dtype: torch.dtype = torch.float32,
    ):
        self._reflections = bool(reflections)
        super().__init__(
            in_features, out_features, bias=bias, complex=complex, increasing_stride=increasing_stride,
            nblocks=nblocks, size=size, backend=backend, dtype=dtype,
        )

    def _init_weight(self, shape, twiddle, init, complex, dtype) -> None:
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64 (the angles' dtype), got {dtype}")
        angles, det = haar_angles(shape[:-2], complex, dtype)
        self.angles = nn.Parameter(angles)
        if not complex:
            self.register_buffer("det", det if self._reflections else torch.ones_like(det))

    @property
    def twiddle(self) -> torch.Tensor:
        angles = upcast(self.angles)  # cos / sin / polar of half-precision angles: in float32
        if angles.dim() == 5:
            return unitary_twiddle(angles)
        return orthogonal_twiddle(angles, self.det.to(angles.dtype))

    def _config_state(self) -> dict:
        return dict(super()._config_state(), reflections=self._reflections)

    @property
    def nblocks(self) -> int:
        return self.angles.shape[1]

    @property
    def is_complex(self) -> bool:
        return self.angles.dim() == 5

    def no_weight_decay_parameters(self) -> set[str]:
        return {"angles"}

    def parameter_count(self) -> int:
        return self.angles.numel()


def param_groups_for_weight_decay(model: nn.Module, weight_decay: float) -> list[dict]:
    """Optimizer parameter groups ``[{"params": decay, "weight_decay": weight_decay},
    {"params": no_decay, "weight_decay": 0.0}]`` for any model, e.g.
    ``torch.optim.AdamW(param_groups_for_weight_decay(model, 0.01), lr=...)``.

    ``no_decay`` holds the parameters that some submodule names in its
    ``no_weight_decay_parameters()`` (every Butterfly / Kaleidoscope / ButterflyUnitary: the
    twiddles or angles; any module may define the method), and any parameter flagged
    ``_no_weight_decay`` or ``_is_structured`` (the reference library's flag).  Both groups are
    always returned (possibly empty) so that the group layout does not depend on the model;
    parameters shared between modules appear once, in ``model.parameters()`` order.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    skip = set()
    for module in model.modules():
        names = getattr(module, "no_weight_decay_parameters", None)
        if callable(names):
            for name in names():
                skip.add(id(module.get_parameter(name)))
    decay, no_decay = [], []
    for p in model.parameters():
        flagged = getattr(p, "_no_weight_decay", False) or getattr(p, "_is_structured", False)
        (no_decay if id(p) in skip or flagged else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
