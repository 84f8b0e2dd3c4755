"""The front end's learnable linear stages.

:class:`LinearStage` is one stage ``y = x @ T`` (window -> DFT, power spectrum -> mel, log-mel -> DCT):
a K-matrix from an exact construction (:mod:`kfrontend.constructions`) or a dense matrix, exact at
initialisation.  :class:`TwiddleOffset` is the parametrization through which a K-matrix stage learns
an offset from its exact start.  :func:`stage_matrix_parts` multiplies a stage out into its dense
matrix (``cpu.kmatrix_rows``), as one custom op under torch.compile.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from kfrontend._contract import compute_dtype, in_functorch, upcast
from kfrontend.cpu import kmatrix_rows
from kfrontend.reference import COMPLEX_OF

__all__ = ["LinearStage", "TwiddleOffset", "stage_matrix_parts", "STAGES", "DEFAULT_STEP_SCALE"]

STAGES = ("window", "dft", "mel", "dct")
# K-matrix stages learn an offset from their exact start whose steps move the stage's matrix about
# as much as a step on a dense matrix (TwiddleOffset); this factor scales that step.  Measured by
# benchmarks/bench_drift.py (docs/BENCHMARKS.md, "Drift").
DEFAULT_STEP_SCALE = 0.3


def complex_of(dtype: torch.dtype) -> torch.dtype:
    return COMPLEX_OF[dtype]


class LinearStage(nn.Module):
    """One learnable linear stage ``y = x @ T`` (in_features -> out_features), ``T`` the exact
    target at initialisation (``target_t``: (in, out), torchaudio's right-multiply layout).

    ``structure="kaleidoscope"``: ``self.k`` is a K-matrix module from the exact constructions
    (``build()``), optionally widened by ``width`` identity BB* pairs; ``init="random"`` re-draws its
    twiddles.  ``structure="dense"``: ``self.weight`` is ``T`` itself (for the complex DFT stage,
    the real matrix ``[Re T | Im T]``).

    ``step_scale`` (K-matrix stages): the twiddles are learned as an offset from their initial
    values, ``twiddle = twiddle0 + step_scale * (|twiddle0| + eps) / L * delta`` with ``delta = 0`` at
    initialisation (:class:`TwiddleOffset`), so that an optimizer step of size lr on ``delta`` moves
    the stage's matrix by about ``step_scale * lr`` relative, like a step on a dense matrix, whatever
    the number of factors L and the twiddles' magnitudes (Bluestein's reach ~43).  ``None`` learns
    the twiddles themselves.  See docs/FRONTEND.md, "Fine-tuning".
    """

    def __init__(self, name: str, target_t: torch.Tensor, *, structure: str, init: str, width: int,
                 build: Callable[[], nn.Module], dtype: torch.dtype, backend: str = "auto",
                 step_scale: float | None = None):
        super().__init__()
        self.name = name
        self.in_features, self.out_features = target_t.shape
        self.is_complex = target_t.is_complex()
        self.structure = structure
        self._cache = None
        if structure == "kaleidoscope":
            k = build()
            if getattr(k, "bias", None) is not None:  # pragma: no cover - constructions have none
                raise ValueError(f"the {name} construction has a bias; stages must be linear")
            if width:
                from kfrontend.constructions import widen

                widened = widen(k, width)
                k = widened if widened is not None else k
            if init == "random":
                _randomize_twiddles(k)
            if step_scale is not None:
                parametrize.register_parametrization(k, "twiddle", TwiddleOffset(k.twiddle.detach(), step_scale))
            k.backend = backend
            self.k = k
            self.register_parameter("weight", None)
        else:
            if width:
                raise ValueError(f"width applies to structure='kaleidoscope' only; got width={width} for "
                                 f"the dense {name} stage")
            self.k = None
            w = target_t.to(complex_of(dtype) if self.is_complex else dtype)
            if self.is_complex:
                w = torch.cat((w.real, w.imag), dim=-1)
            if init == "random":
                w = torch.randn_like(w) / math.sqrt(self.in_features)
            # A copy: training must never write into the caller's matrix (a torchaudio module's
            # mel_scale.fb) nor into the front end's ref_* buffers.
            self.weight = nn.Parameter(w.clone(memory_format=torch.contiguous_format))

    @property
    def param(self) -> nn.Parameter:
        """The stage's learnable tensor: the twiddles' offset (TwiddleOffset), the twiddles
        themselves (``step_scale=None``) or the dense weight."""
        if self.k is None:
            return self.weight
        p = getattr(getattr(self.k, "parametrizations", None), "twiddle", None)
        return self.k.twiddle if p is None else p.original

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints from before TwiddleOffset (or with step_scale=None) store the twiddles as
        # ``k.twiddle``; new ones store the offset.  Either loads into either: the stored twiddles
        # are the same map, re-expressed with this stage's own exact start and scale.
        old, new = prefix + "k.twiddle", prefix + "k.parametrizations.twiddle."
        if self.k is not None:
            p = getattr(getattr(self.k, "parametrizations", None), "twiddle", None)
            if p is not None and old in state_dict:
                offset = p[0]
                tw = state_dict.pop(old).to(device=offset.twiddle0.device)
                state_dict[new + "original"] = offset.right_inverse(tw.to(offset.twiddle0.dtype))
                state_dict.setdefault(new + "0.twiddle0", offset.twiddle0)
                state_dict.setdefault(new + "0.scale", offset.scale)
            elif p is None and new + "original" in state_dict:
                delta = state_dict.pop(new + "original")
                t0, scale = state_dict.pop(new + "0.twiddle0"), state_dict.pop(new + "0.scale")
                state_dict[old] = t0 + scale * delta
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _offset(self):
        """The TwiddleOffset of ``k`` or None."""
        p = getattr(getattr(self.k, "parametrizations", None), "twiddle", None)
        return None if p is None else p[0]

    def __getstate__(self):
        # torch.nn.utils.parametrize refuses to pickle a parametrized module (its class is made on
        # the fly).  Pickle ``k`` plain, with the offset (as its twiddle parameter) and the
        # TwiddleOffset buffers beside it; __setstate__ puts the parametrization back: the same
        # tensors, bit for bit.  (copy.deepcopy goes through here too.)
        state = self.__dict__.copy()
        off = self._offset() if self.k is not None else None
        if off is not None:
            # A plain instance of k's own class over the same tensors (remove_parametrizations
            # would edit the class, which a deepcopy shares with the original).
            k = self.k
            plain = type(k).__bases__[0].__new__(type(k).__bases__[0])
            plain.__dict__.update(k.__dict__)
            plain._parameters = dict(k._parameters, twiddle=k.parametrizations.twiddle.original)  # the offset
            plain._modules = {n: m for n, m in k._modules.items() if n != "parametrizations"}
            state["_modules"] = dict(state["_modules"], k=plain)
            state["_twiddle_offset"] = (off.twiddle0, off.scale)
        state["_cache"] = None
        return state

    def __setstate__(self, state):
        off = state.pop("_twiddle_offset", None)
        super().__setstate__(state)
        if off is not None:
            k, delta = self.k, self.k.twiddle
            offset = TwiddleOffset(off[0], 1.0)
            offset.scale = off[1]
            # register_parametrization writes right_inverse(twiddle) into the tensor in place: give
            # it a stand-in, then put the offset Parameter itself (requires_grad and all) back.
            k._parameters["twiddle"] = nn.Parameter(off[0].clone(), requires_grad=delta.requires_grad)
            parametrize.register_parametrization(k, "twiddle", offset, unsafe=True)
            k.parametrizations.twiddle.original = delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to activations (complex output for the DFT stage)."""
        if self.k is not None:
            y = self.k(x)
            # A real stage may be built as a complex K-matrix whose output is real by construction.
            return y.real if (y.is_complex() and not self.is_complex) else y
        y = x @ upcast(self.weight).to(x.dtype)
        if self.is_complex:
            return torch.complex(y[..., : self.out_features], y[..., self.out_features:])
        return y

    def weight_t(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Rows ``start:stop`` of the (in, out) matrix, differentiable w.r.t. the parameters.  For the
        complex stage the real (rows, 2 * out) matrix ``[Re | Im]``."""
        stop = self.in_features if stop is None else stop
        if self.k is None:
            return upcast(self.weight[start:stop])
        # Multiplying the K-matrix out costs O(N^2) + a few matmuls, independent of the batch: when
        # no gradient is wanted (inference, or a frozen stage) the result is cached while the
        # tensors it comes from hold the same values.  The values are compared against a copy
        # (O(parameters), small beside the product): version counters miss ``p.data`` writes (EMA
        # updates, hand loading).  A product made under inference_mode is an inference tensor that
        # autograd cannot save, so it serves inference_mode only.
        state = list(self.k.parameters()) + list(self.k.buffers())  # what the twiddle is computed from
        wants_grad = torch.is_grad_enabled() and any(p.requires_grad for p in state)
        cacheable = not torch.compiler.is_compiling() and not wants_grad and not in_functorch()
        if cacheable:
            key = (start, stop, torch.is_inference_mode_enabled())
            c = self._cache
            if (c is not None and c[0] == key and len(c[1]) == len(state)
                    and all(a.dtype == b.dtype and a.device == b.device and a.shape == b.shape
                            for a, b in zip(c[1], state))
                    and not torch.stack([(a != b).any() for a, b in zip(c[1], state)]).any().item()):
                return c[2]  # (one host sync on a GPU, far cheaper than the product)
        packed = _packed_matrix(self.k, start, stop) if self.is_complex else None
        if packed is not None:
            y = packed
        else:
            re, im = stage_matrix_parts(self.k, start, stop)
            if self.is_complex:
                y = torch.cat((re, torch.zeros_like(re) if im is None else im), dim=0).transpose(0, 1)
            else:  # a real stage, possibly a complex K-matrix with a real output (DCT)
                y = re.transpose(0, 1)
        if cacheable:
            self._cache = (key, [t.detach().clone() for t in state], y.detach())
        return y

    def dense(self) -> torch.Tensor:
        """The (in, out) matrix (complex for the DFT stage), detached."""
        with torch.no_grad():
            w = self.weight_t()
            if self.is_complex:
                w = torch.complex(w[:, : self.out_features], w[:, self.out_features:])
            return w.detach().clone()

    @property
    def real_dtype(self) -> torch.dtype:
        """The real dtype the stage computes in (float32 for a ``.half()`` stage)."""
        p = next(self.parameters())
        return compute_dtype(p.real.dtype if p.is_complex() else p.dtype)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def parameter_count(self) -> int:
        return sum(p.numel() * (2 if p.is_complex() else 1) for p in self.parameters())

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, in={self.in_features}, out={self.out_features}, "
                f"structure={self.structure!r}, parameters={self.parameter_count()}")


class TwiddleOffset(nn.Module):
    """``twiddle = twiddle0 + scale * delta``, a parametrization (torch.nn.utils.parametrize) of a
    K-matrix's twiddles around their exact initial values ``twiddle0``.

    Why: a K-matrix stage is a product of L factors (L ~ 27 for the n_fft 512 DFT, more with
    Bluestein), and Adam moves every twiddle by about lr per step, so the product moves by ~L * lr,
    and Bluestein's large chirp twiddles make that worse.  Scaling each twiddle's step by its own
    magnitude over L makes every factor move by ~lr / L relative, and the product by ~lr: the step a
    dense matrix takes.  ``scale = step_scale * (|twiddle0| + eps) / L``; eps lets twiddles that
    start at 0 move (slowly).  ``delta`` starts at 0, so weight decay on it pulls toward the exact
    start.  The buffers are saved, so a state_dict restores the same map.
    """

    EPS = 1e-3

    def __init__(self, twiddle0: torch.Tensor, step_scale: float):
        super().__init__()
        if not (isinstance(step_scale, (int, float)) and not isinstance(step_scale, bool) and step_scale > 0):
            raise ValueError(f"step_scale must be a positive number or None, got {step_scale!r}")
        n_factors = twiddle0.shape[-5] * twiddle0.shape[-4]  # nblocks x log2 N (stacks are side by side)
        real = twiddle0.real.dtype if twiddle0.is_complex() else twiddle0.dtype
        self.register_buffer("twiddle0", twiddle0.clone())
        self.register_buffer("scale", ((twiddle0.abs() + self.EPS) * (float(step_scale) / n_factors)).to(real))

    def forward(self, delta: torch.Tensor) -> torch.Tensor:
        return self.twiddle0 + self.scale * delta

    def right_inverse(self, twiddle: torch.Tensor) -> torch.Tensor:
        return (twiddle - self.twiddle0) / self.scale


def _matrix_parts(tw: torch.Tensor, increasing_stride: bool, out_features: int, start: int, stop: int,
                  real_output: bool):
    """(real, imaginary or None) parts of columns ``start:stop`` of a K-matrix's (out_features,
    in_features) matrix, differentiable w.r.t. ``tw``: ``cpu.kmatrix_rows`` (the K-matrix applied to
    identity rows; broadcasts and a few small matmuls, plain torch ops on any device)."""
    y = kmatrix_rows(tw, increasing_stride, out_features, start, stop).transpose(0, 1)  # (out, cols)
    if not y.is_complex():
        return y, None
    if real_output:
        return y.real, None
    return y.real, y.imag


# torch.compile: the product above unrolls into hundreds of small ops per stage (and as many in the
# backward), which Inductor takes minutes to compile on CPU.  Under compilation the product is one
# opaque custom op instead (its backward recomputes the product eagerly and differentiates it),
# so the compiled graph holds a handful of nodes per stage.  Eager mode calls the plain function.
# The ops take real tensors: a complex twiddle travels as its ``view_as_real``.
@torch.library.custom_op("kfrontend::kmatrix_dense", mutates_args=())
def _kmatrix_dense_op(twiddle: torch.Tensor, out_features: int, start: int, stop: int,
                      increasing_stride: bool, complex_twiddle: bool, real_output: bool) -> torch.Tensor:
    return _dense_from_twiddle(twiddle, out_features, start, stop, increasing_stride, complex_twiddle,
                               real_output).clone(memory_format=torch.contiguous_format)


@_kmatrix_dense_op.register_fake
def _(twiddle, out_features, start, stop, increasing_stride, complex_twiddle, real_output):
    parts = 2 if (complex_twiddle and not real_output) else 1
    return twiddle.new_empty((parts, out_features, stop - start))


@torch.library.custom_op("kfrontend::kmatrix_dense_backward", mutates_args=())
def _kmatrix_dense_backward_op(grad: torch.Tensor, twiddle: torch.Tensor, out_features: int, start: int,
                               stop: int, increasing_stride: bool, complex_twiddle: bool,
                               real_output: bool) -> torch.Tensor:
    # Autograd's dispatch keys are excluded inside a custom op's implementation; torch.func's vjp
    # brings its own (``kmatrix_rows`` is plain torch ops, which torch.func can transform).
    _, vjp = torch.func.vjp(lambda t: _dense_from_twiddle(t, out_features, start, stop, increasing_stride,
                                                          complex_twiddle, real_output), twiddle)
    return vjp(grad)[0].clone(memory_format=torch.contiguous_format)


@_kmatrix_dense_backward_op.register_fake
def _(grad, twiddle, *args):
    return torch.empty_like(twiddle)


def _kmatrix_dense_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.args = inputs[1:]


def _kmatrix_dense_bwd(ctx, grad):
    (twiddle,) = ctx.saved_tensors
    return (_kmatrix_dense_backward_op(grad.contiguous(), twiddle, *ctx.args),) + (None,) * len(ctx.args)


_kmatrix_dense_op.register_autograd(_kmatrix_dense_bwd, setup_context=_kmatrix_dense_setup)


def _dense_from_twiddle(twiddle, out_features, start, stop, increasing_stride, complex_twiddle, real_output):
    """The custom op's body: (parts, out, cols) stacked real (and imaginary) parts."""
    tw = torch.view_as_complex(twiddle) if complex_twiddle else twiddle
    re, im = _matrix_parts(tw, increasing_stride, out_features, start, stop, real_output)
    return re.unsqueeze(0) if im is None else torch.stack((re, im))


def stage_matrix_parts(module: nn.Module, start: int = 0, stop: int | None = None):
    """(real, imaginary or None) parts of columns ``start:stop`` of a K-matrix module's (out_features,
    in_features) matrix, differentiable w.r.t. its twiddle; a single node under torch.compile."""
    stop = module.in_features if stop is None else stop
    tw = upcast(module.twiddle)
    real_output = bool(getattr(module, "real_output", False))
    if not torch.compiler.is_compiling():
        return _matrix_parts(tw, module.increasing_stride, module.out_features, start, stop, real_output)
    cplx = tw.is_complex()
    out = _kmatrix_dense_op(torch.view_as_real(tw) if cplx else tw, module.out_features, start, stop,
                            module.increasing_stride, cplx, real_output)
    return out[0], (out[1] if out.shape[0] == 2 else None)


def _packed_matrix(module: nn.Module, start: int, stop: int):
    """Rows ``start:stop`` of a complex K-matrix's (in_features, out_features) matrix as the real
    (rows, 2 out) ``[Re | Im]`` the DFT stage is multiplied by, in one copy (the real and imaginary
    parts side by side through ``view_as_real``; its backward is one copy too), or None where
    ``stage_matrix_parts`` is the route (torch.compile, a real product)."""
    if torch.compiler.is_compiling():
        return None
    tw = upcast(module.twiddle)
    y = kmatrix_rows(tw, module.increasing_stride, module.out_features, start, stop)  # (rows, out)
    if not y.is_complex():
        return None
    yt = y.transpose(0, 1).contiguous()  # (a no-op where it already is)
    return torch.view_as_real(yt).permute(2, 0, 1).reshape(2 * yt.shape[0], yt.shape[1]).transpose(0, 1)


def _randomize_twiddles(module: nn.Module) -> None:
    """init="random": same shapes as the exact construction, twiddles redrawn (entries N(0, 1/2),
    so every factor keeps the expected squared norm; see ``kfrontend.layers.twiddle_init``)."""
    from kfrontend.layers import twiddle_init

    with torch.no_grad():
        for name, p in module.named_parameters():
            if "twiddle" not in name:
                continue
            real = p.real.dtype if p.is_complex() else p.dtype
            p.copy_(twiddle_init(tuple(p.shape), "randn", p.is_complex(), real))
