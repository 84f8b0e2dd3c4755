"""KaleidoscopeFrontend: a learnable drop-in for torchaudio MelSpectrogram / MFCC, Kaldi fbank and
librosa's melspectrogram.

Pipeline (the functional pieces live in :mod:`kfrontend.features`)::

    waveform (..., time)
      -> frames under the window (..., frames, win_length)      torch.stft or Kaldi framing
      -> [Kaldi: DC removal, pre-emphasis]
      -> window                                                  learnable vector
      -> DFT stage   n_fft real -> n_fft // 2 + 1 complex        learnable K-matrix
      -> |X| ** power                                            no NaN gradient at 0
      -> mel stage   n_freqs -> n_mels                           learnable K-matrix
      -> [log(x + offset) floored | dB with top_db]
      -> [DCT stage  n_mels -> n_mfcc]                           learnable K-matrix
      -> (..., n_mels, frames) like torchaudio / (..., frames, bins) like Kaldi

The DFT, mel and DCT stages are built by the exact constructions of :mod:`kfrontend.constructions`,
so at initialisation the module computes the transform it replaces (to rounding).
``structure="dense"`` makes them plain trainable matrices with the same exact initialisation (the
nnAudio-style baseline).

Two ways to evaluate the stages (``path``):

* ``"matrix"``: every forward multiplies each stage out into its (small) dense matrix, differentiably
  (the K-matrix applied to identity rows), folds the window into the DFT columns under the window's
  support and runs dense matmuls.  The twiddles stay the parameters; gradients reach them through
  the product.  This is the fast path on CPU and for large batches.
* ``"kernel"``: the K-matrices are applied to the activations (``butterfly_multiply``; on CUDA the
  fused Triton kernel only with ``backend="triton"`` until it is verified on a GPU, see
  ``kfrontend.functional.auto_backend``).
* ``"auto"`` (default): ``"matrix"``.

Usage::

    fe = KaleidoscopeFrontend.from_melspectrogram(n_fft=400, hop_length=160, n_mels=40, log="log")
    feats = fe(waveform)                                  # (..., 40, frames), as torchaudio
    feats, n_frames = fe(padded_batch, lengths=lengths)   # per-item padding / reflection
    opt = torch.optim.Adam(fe.param_groups(lr=1e-3, lr_mel=1e-2) + recognizer_groups)
    fixed = fe.to_fixed()                                 # dense buffers, real arithmetic (ONNX)

Precision: the stages compute in the module's dtype (float32, or float64 when built with
``dtype=torch.float64``; ``.double()`` / ``.to(torch.float64)`` of a float32 module keeps the float32
rounding of its twiddles, and complex twiddles stay complex: complex128), with autocast disabled
inside.  A ``.half()`` / ``.bfloat16()`` module stores its parameters in half precision (complex
ones stay complex64), computes in float32 and returns its own dtype.  The matrix path's products
are cached while no gradient is wanted (no_grad, frozen stages) and the tensors they come from hold
the same values (compared, so ``p.data`` writes are seen).  Under torch.compile each stage's product
is a single custom op (``kfrontend::kmatrix_dense``), so compilation stays quick.

Module contract (docs/FRONTEND.md): deepcopy and pickle work (the TwiddleOffset parametrization is
pickled as its tensors); the state_dict carries the configuration and refuses another one;
second-order gradients are exact on the CPU paths; torch.func.vmap, torch.compile and
torch.export of ``to_fixed()`` work; TorchScript is refused (use ``to_fixed()`` with torch.export /
ONNX).

Pre-cut frames: ``fe(frames, framed=True)`` takes frames of shape (..., n_frames, win_length), the
samples under the window (for torch.stft-style front ends, padded frame ``t`` sample
``window_offset + j`` with ``window_offset = (n_fft - win_length) // 2``; for Kaldi, the raw
``window_size`` samples before DC removal and pre-emphasis).  They skip the framing; the output
layout is the same.

NaN in the waveform propagates as in torchaudio: every frame whose window covers a NaN sample is NaN
in all its bins (the DFT mixes all samples of the frame), other frames stay finite; with
``log="db"`` and ``top_db`` the clamp uses the maximum over the tensor, so, as in torchaudio, one NaN
makes the whole tensor NaN.  One difference: with ``win_length < n_fft`` torch.stft multiplies the
zero-padded margins of the frame too (0 * NaN = NaN), so torchaudio also poisons the frames whose
margin, outside the window, holds the NaN; this front end reads only the window's support.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from typing import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from kfrontend import features as Fe
from kfrontend._contract import ModuleContract, compute_dtype, in_functorch, refuse_tracing, upcast
from kfrontend._optional import require
from kfrontend.cpu import kmatrix_rows
from kfrontend.filterbanks import create_dct, kaldi_mel_banks, melscale_fbanks

__all__ = ["KaleidoscopeFrontend", "FixedFrontend", "STAGES"]

STAGES = ("window", "dft", "mel", "dct")
STRUCTURES = ("kaleidoscope", "dense")
INITS = ("exact", "random")
PATHS = ("auto", "matrix", "kernel")
# K-matrix stages learn an offset from their exact start whose steps move the stage's matrix about
# as much as a step on a dense matrix (TwiddleOffset); this factor scales that step.  Measured by
# benchmarks/bench_drift.py (docs/BENCHMARKS.md, "Drift").
DEFAULT_STEP_SCALE = 0.3
LOGS = (None, "log", "db")


# ------------------------------------------------------------------------------------------------
# Stages
# ------------------------------------------------------------------------------------------------
def _complex_of(dtype: torch.dtype) -> torch.dtype:
    return {torch.float32: torch.complex64, torch.float64: torch.complex128}[dtype]


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
            w = target_t.to(_complex_of(dtype) if self.is_complex else dtype)
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


# ------------------------------------------------------------------------------------------------
# The shared pipeline (learnable module and fixed module alike)
# ------------------------------------------------------------------------------------------------
def _signal(fe, x: torch.Tensor, lengths, framed: bool):
    """(padded signal (..., span) or pre-cut frames (..., T, win), n_frames or None)."""
    if framed:
        if x.dim() < 2 or x.shape[-1] != fe.win_length:
            raise ValueError(f"framed input must have shape (..., n_frames, win_length={fe.win_length}), "
                             f"got {tuple(x.shape)}")
        n = None
        if lengths is not None:
            n = Fe.check_lengths(lengths, x[..., 0], name="lengths")
        return x, n
    shortest = None
    if lengths is not None:
        given = lengths if isinstance(lengths, torch.Tensor) else torch.as_tensor(lengths)
        lengths = Fe.check_lengths(lengths, x, name="lengths")  # on the host when they are there
        if given.device.type == "cpu" and given.numel() and not torch.compiler.is_compiling():
            shortest = int(given.min())  # lengths on the CPU: no device sync per forward
    if fe.framing == "kaldi":
        xp = Fe.kaldi_padded(x, window_size=fe.win_length, window_shift=fe.hop_length,
                             snip_edges=fe.snip_edges, lengths=lengths, shortest=shortest)
    else:
        xp = Fe.stft_padded(x, n_fft=fe.n_fft, hop_length=fe.hop_length, win_length=fe.win_length,
                            center=fe.center, pad_mode=fe.pad_mode, pad=fe.pad, lengths=lengths,
                            shortest=shortest)
    return xp, (None if lengths is None else fe.num_frames(lengths))


def _frames_of(fe, sig: torch.Tensor, framed: bool) -> torch.Tensor:
    return sig if framed else sig.unfold(-1, fe.win_length, fe.hop_length)


def _kaldi_energy(fe, frames: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Kaldi's log frame energy: after DC removal and before pre-emphasis (raw_energy), or of the
    preprocessed, windowed frame."""
    frames = Fe.kaldi_preprocess(frames, fe.remove_dc_offset, 0.0)
    if not fe.raw_energy:
        frames = Fe.kaldi_preprocess(frames, False, fe.preemphasis) * window
    return Fe.frame_log_energy(frames, fe.energy_floor)


def _spectrum(fe, sig: torch.Tensor, framed: bool, dft_w: torch.Tensor) -> torch.Tensor:
    """Power spectrum (..., T, n_freqs) from the signal and the windowed DFT columns (win, 2F) (Kaldi's
    preprocessing folded in)."""
    if fe.framing == "kaldi":
        dft_w = Fe.kaldi_fold(dft_w, fe.remove_dc_offset, fe.preemphasis)
    y = sig @ dft_w if framed else Fe.frames_matmul(sig, dft_w, fe.hop_length, fe.frames_op)
    return Fe.power_spectrum_packed(y, fe.n_freqs, fe.power)


def _post_spectrum(fe, spec: torch.Tensor, mel, dct, energy, n_frames):
    """Power spectrum (..., T, F) -> features in the output layout; ``mel`` and ``dct`` are (in, out)
    matrices or modules applied to the last dim (``dct`` may be None)."""

    def apply(stage, x):
        return Fe.matmul_last(x, stage) if isinstance(stage, torch.Tensor) else stage(x)

    mel = apply(mel, spec)
    if fe.log == "log":
        mel = Fe.safe_log(mel, fe.log_offset, fe.log_floor)
    elif fe.log == "db":
        # top_db acts on the (..., n_mels, time) layout, as torchaudio's AmplitudeToDB.
        mel = Fe.amplitude_to_db(mel.transpose(-1, -2), fe.multiplier, fe.amin, 0.0, fe.top_db).transpose(-1, -2)
    out = mel if dct is None else apply(dct, mel)
    if energy is not None:
        energy = energy.unsqueeze(-1).to(out.dtype)
        out = torch.cat((out, energy) if fe.htk_compat else (energy, out), dim=-1)
    if fe.subtract_mean:
        if n_frames is None:
            out = out - out.mean(dim=-2, keepdim=True)
        else:
            mask = Fe.frame_mask(n_frames, out.shape[-2]).unsqueeze(-1).to(out.dtype)
            mean = (out * mask).sum(-2, keepdim=True) / n_frames.clamp(min=1).unsqueeze(-1).unsqueeze(-1)
            out = out - mean
    if fe.layout == "channels_first":
        out = out.transpose(-1, -2)
    return out


def _window_scale(fe, window: torch.Tensor) -> torch.Tensor | float:
    if fe.normalized == "window":
        return window.pow(2).sum().rsqrt()
    if fe.normalized == "frame_length":
        return 1.0 / math.sqrt(fe.n_fft)
    return 1.0


def _signal_and_energy(fe, waveform: torch.Tensor, lengths, framed: bool):
    """Checked input in the compute dtype -> (padded signal or frames, n_frames or None, Kaldi log
    energy per frame or None): everything before the DFT stage."""
    Fe.check_waveform(waveform, "frames" if framed else "waveform")
    sig, n_frames = _signal(fe, waveform.to(fe.compute_dtype), lengths, framed)
    energy = _kaldi_energy(fe, _frames_of(fe, sig, framed), upcast(fe.window)) if fe.use_energy else None
    return sig, n_frames, energy


# ------------------------------------------------------------------------------------------------
# Configuration shared by both modules
# ------------------------------------------------------------------------------------------------
_CONFIG_KEYS = (
    "framing", "sample_rate", "n_fft", "win_length", "hop_length", "center", "pad_mode", "pad",
    "snip_edges", "remove_dc_offset", "preemphasis", "power", "normalized", "log", "log_offset",
    "log_floor", "top_db", "amin", "multiplier", "layout", "use_energy", "energy_floor", "raw_energy",
    "htk_compat", "subtract_mean", "frames_op",
)


class _FrontendBase(ModuleContract, nn.Module):
    def _set_config(self, cfg: dict) -> None:
        for k in _CONFIG_KEYS:
            setattr(self, k, cfg[k])

    def config(self) -> dict:
        return {k: getattr(self, k) for k in _CONFIG_KEYS}

    def _config_state(self) -> dict:
        # What the features depend on beyond the tensors' shapes (frames_op only picks a kernel).
        cfg = {k: v for k, v in self.config().items() if k != "frames_op"}
        return dict(cfg, n_mels=self.n_mels, n_out=self.n_out)

    @property
    def compute_dtype(self) -> torch.dtype:
        """float32 or float64: the arithmetic's dtype (float32 for a ``.half()`` module)."""
        return compute_dtype(self.param_dtype)

    def _output(self, out: torch.Tensor) -> torch.Tensor:
        """Features in the module's dtype: a ``.half()`` / ``.bfloat16()`` module computes in float32
        (power spectra overflow float16) and hands half precision to the next half layer."""
        return out if out.dtype == self.param_dtype else out.to(self.param_dtype)

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def window_offset(self) -> int:
        return Fe.window_offset(self.n_fft, self.win_length) if self.framing == "stft" else 0

    def num_frames(self, lengths):
        """Frames produced for ``lengths`` samples (int or int tensor)."""
        if self.framing == "kaldi":
            return Fe.kaldi_num_frames(lengths, self.win_length, self.hop_length, self.snip_edges)
        return Fe.stft_num_frames(lengths, self.n_fft, self.hop_length, self.center, self.pad)


# ------------------------------------------------------------------------------------------------
# KaleidoscopeFrontend
# ------------------------------------------------------------------------------------------------
class KaleidoscopeFrontend(_FrontendBase):
    """Learnable front end, exact at initialisation.  Build it with a ``from_*`` constructor; the
    generic constructor takes the window, filterbank and DCT matrices directly.

    Args (keyword only; the ``from_*`` constructors fill the first group from the counterpart):
        n_fft, win_length, hop_length, window (win_length,), fb (n_freqs, n_mels), dct (n_mels, n_out)
        or None, framing ("stft" | "kaldi"), center, pad_mode, pad, snip_edges, remove_dc_offset,
        preemphasis, power, normalized (False | "window" | "frame_length"), log (None | "log" | "db"),
        log_offset, log_floor, top_db, amin, multiplier, layout ("channels_first": (..., feat,
        frames) | "channels_last": (..., frames, feat)), use_energy, energy_floor, raw_energy,
        htk_compat, subtract_mean.
        init: "exact" | "random" (K-matrix stages with random twiddles, same shapes).
        structure: "kaleidoscope" | "dense" (plain trainable matrices, exact init).
        trainable: bool or {"window", "dft", "mel", "dct"} -> bool.
        width: int or dict per stage: extra identity BB* pairs appended to the K-matrix stages.
        dtype: float32 | float64 (of the parameters and the arithmetic; build in float64 for a float64
        front end: ``.double()`` of a float32 one keeps the float32 rounding of its twiddles).
        path: "auto" | "matrix" | "kernel" (see the module docstring); backend: butterfly backend
        (``kmatrix_multiply``'s; "torch" keeps the matrix path on plain torch ops on every device);
        frames_op: "auto" | "conv" | "unfold" (``features.frames_matmul``).
        dct_construction: "auto" (the chirp-z DCT when ``dct`` is ``create_dct``'s, as torchaudio
        makes it in float32 or float64; any other matrix by ``constructions.matrix``) | "matrix"
        (``dct``'s values themselves, exactly: what ``from_transform(..., dtype=torch.float64)``
        of a float32 MFCC uses, so that it equals ``module.double()``).
    """

    def __init__(self, *, n_fft: int, win_length: int, hop_length: int, window: torch.Tensor,
                 fb: torch.Tensor, dct: torch.Tensor | None = None, framing: str = "stft",
                 sample_rate: float = 16000, center: bool = True, pad_mode: str = "reflect", pad: int = 0,
                 snip_edges: bool = True, remove_dc_offset: bool = False, preemphasis: float = 0.0,
                 power: float = 2.0, normalized: bool | str = False, log: str | None = None,
                 log_offset: float = 1e-6, log_floor: float | None = None, top_db: float | None = None,
                 amin: float = 1e-10, multiplier: float = 10.0, layout: str = "channels_first",
                 use_energy: bool = False, energy_floor: float = 1.0, raw_energy: bool = True,
                 htk_compat: bool = False, subtract_mean: bool = False, frames_op: str = "auto",
                 init: str = "exact", structure: str = "kaleidoscope", trainable: bool | dict = True,
                 width: int | dict = 0, dtype: torch.dtype = torch.float32, path: str = "auto",
                 backend: str = "auto", step_scale: float | None = "default", dct_construction: str = "auto"):
        super().__init__()
        cfg = _validate_config(locals())
        self._set_config(cfg)
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {path!r}")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.init, self.structure, self.path, self.backend = init, structure, path, backend
        if step_scale == "default":
            step_scale = DEFAULT_STEP_SCALE
        self.step_scale = None if structure == "dense" else step_scale
        widths = _per_stage(width, "width", int, default=0, stages=("dft", "mel", "dct"))
        for k, v in widths.items():
            if v < 0:
                raise ValueError(f"width[{k!r}] must be >= 0, got {v}")

        window = _as_tensor(window, "window")
        fb = _as_tensor(fb, "fb")
        if window.shape != (win_length,):
            raise ValueError(f"window must have shape (win_length,) = ({win_length},), got {tuple(window.shape)}")
        if fb.dim() != 2 or fb.shape[0] != n_fft // 2 + 1:
            raise ValueError(f"fb must have shape (n_fft // 2 + 1, n_mels) = ({n_fft // 2 + 1}, n_mels), "
                             f"got {tuple(fb.shape)}")
        if dct is not None:
            dct = _as_tensor(dct, "dct")
            if dct.dim() != 2 or dct.shape[0] != fb.shape[1]:
                raise ValueError(f"dct must have shape (n_mels, n_out) = ({fb.shape[1]}, n_out), got {tuple(dct.shape)}")
        self.n_mels = fb.shape[1]
        self.n_out = self.n_mels if dct is None else dct.shape[1]

        # Exact targets, kept (not saved) for the pictures and drift measurements.
        # (Copies: a dense stage's weight must not be the buffer it is compared against.)
        self.register_buffer("ref_window", window.to(dtype, copy=True), persistent=False)
        self.register_buffer("ref_fb", fb.to(dtype, copy=True), persistent=False)
        self.register_buffer("ref_dct", None if dct is None else dct.to(dtype, copy=True), persistent=False)

        self.window = nn.Parameter(window.to(dtype).clone())
        cdtype = _complex_of(dtype)
        n = torch.arange(n_fft, dtype=torch.float64)
        k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
        dft_t = torch.polar(torch.ones(n_fft, k.numel(), dtype=torch.float64),
                            -2 * math.pi * torch.outer(n, k).remainder(n_fft) / n_fft).to(cdtype)

        def build_dft():
            from kfrontend import constructions as C
            return C.dft(n_fft, onesided=True, dtype=cdtype)

        def build_mel():
            from kfrontend import constructions as C
            return C.mel(fb.to(dtype), dtype=dtype)

        self.dft = LinearStage("dft", dft_t, structure=structure, init=init, width=widths["dft"],
                               build=build_dft, dtype=dtype, backend=backend, step_scale=self.step_scale)
        self.mel = LinearStage("mel", fb.to(dtype), structure=structure, init=init, width=widths["mel"],
                               build=build_mel, dtype=dtype, backend=backend, step_scale=self.step_scale)
        if dct is not None:
            if dct_construction not in ("auto", "matrix"):
                raise ValueError(f"dct_construction must be 'auto' or 'matrix', got {dct_construction!r}")
            norm = _dct_norm(dct) if dct_construction == "auto" else _NOT_A_DCT

            def build_dct():
                from kfrontend import constructions as C
                if norm is _NOT_A_DCT:  # reproduce the given values themselves
                    return C.matrix(dct.to(dtype), dtype=dtype)
                return C.dct(dct.shape[0], dct.shape[1], norm=norm, dtype=dtype)

            self.dct = LinearStage("dct", dct.to(dtype), structure=structure, init=init, width=widths["dct"],
                                   build=build_dct, dtype=dtype, backend=backend,
                                   step_scale=self.step_scale)
        else:
            self.dct = None
        self._check_stage_shapes()
        self.set_trainable(trainable)

    def _check_stage_shapes(self) -> None:
        for st, (i, o) in ((self.dft, (self.n_fft, self.n_freqs)), (self.mel, (self.n_freqs, self.n_mels))):
            if (st.in_features, st.out_features) != (i, o):  # pragma: no cover - construction bug guard
                raise RuntimeError(f"{st.name} stage is {st.in_features} -> {st.out_features}, expected {i} -> {o}")

    # ---- training knobs -----------------------------------------------------------------------
    def stage_parameters(self) -> dict[str, list[nn.Parameter]]:
        out = {"window": [self.window], "dft": list(self.dft.parameters()), "mel": list(self.mel.parameters())}
        out["dct"] = [] if self.dct is None else list(self.dct.parameters())
        return out

    def set_trainable(self, trainable: bool | dict = True) -> "KaleidoscopeFrontend":
        """Freeze / unfreeze stages: a bool for all, or a dict {stage: bool} (others unchanged)."""
        if isinstance(trainable, bool):
            flags = {s: trainable for s in STAGES}
        elif isinstance(trainable, dict):
            bad = set(trainable) - set(STAGES)
            if bad:
                raise ValueError(f"trainable keys must be among {STAGES}, got {sorted(bad)}")
            flags = dict(trainable)
        else:
            raise TypeError(f"trainable must be a bool or a dict {{stage: bool}}, got {type(trainable).__name__}")
        params = self.stage_parameters()
        for s, flag in flags.items():
            if not isinstance(flag, bool):
                raise TypeError(f"trainable[{s!r}] must be a bool, got {flag!r}")
            for p in params[s]:
                p.requires_grad_(flag)
        return self

    def trainable_stages(self) -> dict[str, bool]:
        return {s: any(p.requires_grad for p in ps) for s, ps in self.stage_parameters().items() if ps}

    def param_groups(self, lr: float = 1e-3, lr_window: float | None = None, lr_dft: float | None = None,
                     lr_mel: float | None = None, lr_dct: float | None = None,
                     weight_decay: float | None = None) -> list[dict]:
        """Optimizer parameter groups, one per stage that is trainable now, each with its own
        learning rate (``None``: ``lr``).  Build the optimizer before freezing stages with
        ``set_trainable(False)`` (frozen parameters get no gradient and are skipped).

        ``weight_decay`` (for AdamW's decoupled decay): applied to the K-matrix stages' offsets
        from their exact start (``TwiddleOffset``), i.e. a pull toward the exact transform; never
        to the window, dense weights or plain twiddles (decay would pull those toward zero, away
        from the transform: :meth:`no_weight_decay_parameters`).  ``None`` leaves the optimizer's
        own setting."""
        lrs = {"window": lr_window, "dft": lr_dft, "mel": lr_mel, "dct": lr_dct}
        keep = {id(self.get_parameter(n)) for n in self.no_weight_decay_parameters()}
        groups = []
        for s, ps in self.stage_parameters().items():
            ps = [p for p in ps if p.requires_grad]
            for decays in (True, False):
                sel = [p for p in ps if (id(p) not in keep) == decays]
                if not sel:
                    continue
                g = {"params": sel, "lr": lr if lrs[s] is None else lrs[s], "name": f"frontend.{s}"}
                if weight_decay is not None:
                    g["weight_decay"] = float(weight_decay) if decays else 0.0
                groups.append(g)
        return groups

    def no_weight_decay_parameters(self) -> set[str]:
        """Parameters that weight decay must not touch: the window, dense stage weights and plain
        twiddles (``step_scale=None``) -- decay pulls them toward zero, away from the transform.
        The offsets of ``TwiddleOffset`` are not listed: decaying them pulls toward the exact
        start.  ``kfrontend.layers.param_groups_for_weight_decay`` reads this."""
        names = {"window"}
        for s in ("dft", "mel", "dct"):
            st = getattr(self, s)
            if st is None:
                continue
            if st.k is None:
                names.add(f"{s}.weight")
            elif "twiddle" not in getattr(st.k, "parametrizations", {}):
                names.add(f"{s}.k.twiddle")
        return names

    def parameter_counts(self) -> dict[str, int]:
        """Real parameters per stage (complex counts 2)."""
        out = {"window": self.window.numel(), "dft": self.dft.parameter_count(), "mel": self.mel.parameter_count()}
        if self.dct is not None:
            out["dct"] = self.dct.parameter_count()
        return out

    @property
    def param_dtype(self) -> torch.dtype:
        return self.window.dtype

    # ---- forward --------------------------------------------------------------------------------
    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None, framed: bool = False):
        """Features of ``waveform`` (..., time) (or of pre-cut frames with ``framed=True``).

        Returns the counterpart's layout, (..., n_mels or n_mfcc, frames) (Kaldi: (..., frames,
        bins)); with ``lengths`` (valid samples per signal, shape ``waveform.shape[:-1]``) returns
        ``(features, n_frames)``.  Frames of item i beyond n_frames[i] are computed from zeros
        and carry no meaning.
        """
        refuse_tracing(self)
        with _no_autocast(waveform):
            sig, n_frames, energy = _signal_and_energy(self, waveform, lengths, framed)
            window = upcast(self.window)
            window = window * _window_scale(self, window)
            path = "matrix" if (self.path == "auto" or self.structure == "dense") else self.path
            if path == "matrix":
                dft_w, mel_w, dct_w = self._stage_matrices(window)
                spec = _spectrum(self, sig, framed, dft_w)
                out = _post_spectrum(self, spec, mel_w, dct_w, energy, n_frames)
            else:
                spec = self._spectrum_kernel(_frames_of(self, sig, framed), window)
                out = _post_spectrum(self, spec, self.mel, self.dct, energy, n_frames)
        out = self._output(out)
        return out if lengths is None else (out, n_frames)

    def _spectrum_kernel(self, frames, window):
        """The K-matrices applied to the activations (the fused kernel on CUDA)."""
        if self.framing == "kaldi":
            frames = Fe.kaldi_preprocess(frames, self.remove_dc_offset, self.preemphasis)
        left = self.window_offset
        xw = torch.nn.functional.pad(frames * window, (left, self.n_fft - self.win_length - left))
        X = self.dft(xw)
        return Fe.power_spectrum(X.real, X.imag, self.power)

    # ---- deployment ---------------------------------------------------------------------------
    @torch.no_grad()
    def to_fixed(self) -> "FixedFrontend":
        """A plain module (no parameters) with the current stages multiplied out into dense buffers:
        the window (and its normalisation) folded into the DFT columns under the window's support,
        the DFT as real cos / sin columns (no complex arithmetic: ONNX-friendly)."""
        window = upcast(self.window)
        dft_w, mel_w, dct_w = self._stage_matrices(window * _window_scale(self, window))
        fixed = FixedFrontend(self.config(), dft_w, mel_w, dct_w, window.detach())
        return fixed.to(self.param_dtype)

    def _stage_matrices(self, window: torch.Tensor):
        """The stages multiplied out: the DFT columns under the window's support with the (scaled)
        window folded in, (win, 2F) real [Re | Im]; the mel (F, n_mels) and DCT (n_mels, n_out) or
        None matrices."""
        left = self.window_offset
        dft_w = self.dft.weight_t(left, left + self.win_length) * window.unsqueeze(-1)
        mel_w = self.mel.weight_t()
        dct_w = None if self.dct is None else self.dct.weight_t()
        return dft_w, mel_w, dct_w

    def extra_repr(self) -> str:
        kind = "Kaldi fbank" if self.framing == "kaldi" else "STFT"
        return (f"{kind}: n_fft={self.n_fft}, win_length={self.win_length}, hop_length={self.hop_length}, "
                f"n_mels={self.n_mels}, n_out={self.n_out}, power={self.power}, log={self.log!r}, "
                f"structure={self.structure!r}, init={self.init!r}, path={self.path!r}")

    # ---- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_melspectrogram(cls, **kw) -> "KaleidoscopeFrontend":
        """torchaudio.transforms.MelSpectrogram's keyword arguments and defaults, plus ours
        (``log``, ``log_offset``, ``top_db``, ``init``, ``structure``, ``trainable``, ``width``,
        ``dtype``, ``path``, ``backend``)."""
        ta, ours = _split_kwargs(kw, _MELSPEC_DEFAULTS, "torchaudio.transforms.MelSpectrogram")
        return cls(**_melspec_config(ta, ours))

    @classmethod
    def from_mfcc(cls, **kw) -> "KaleidoscopeFrontend":
        """torchaudio.transforms.MFCC's keyword arguments (``melkwargs`` and ``log_mels`` included)."""
        ta, ours = _split_kwargs(kw, _MFCC_DEFAULTS, "torchaudio.transforms.MFCC", allow_log=False)
        melkw = ta["melkwargs"] or {}
        if not isinstance(melkw, dict):
            raise TypeError(f"melkwargs must be a dict or None, got {type(melkw).__name__}")
        if "sample_rate" in melkw:
            raise TypeError("melkwargs must not contain sample_rate (pass sample_rate to from_mfcc), as in torchaudio")
        bad = set(melkw) - set(_MELSPEC_DEFAULTS)
        if bad:
            raise TypeError(f"melkwargs has arguments torchaudio.transforms.MelSpectrogram does not take: {sorted(bad)}")
        if ta["dct_type"] != 2:
            raise ValueError(f"dct_type must be 2 (the only type torchaudio's MFCC supports), got {ta['dct_type']!r}")
        if ta["norm"] not in ("ortho", None):
            raise ValueError(f"norm must be 'ortho' or None, got {ta['norm']!r}")
        mel = dict(_MELSPEC_DEFAULTS, **melkw)
        mel["sample_rate"] = ta["sample_rate"]
        n_mfcc = _check_int(ta["n_mfcc"], "n_mfcc")
        if n_mfcc > mel["n_mels"]:
            raise ValueError(f"n_mfcc ({n_mfcc}) must be <= n_mels ({mel['n_mels']}): cannot select more MFCC "
                             f"coefficients than mel bins")
        if ta["log_mels"]:
            ours.update(log="log", log_offset=1e-6)
        else:
            ours.update(log="db", top_db=80.0, amin=1e-10, multiplier=10.0)
        cfg = _melspec_config(mel, ours)
        cfg["dct"] = create_dct(n_mfcc, mel["n_mels"], ta["norm"])
        return cls(**cfg)

    @classmethod
    def from_kaldi_fbank(cls, **kw) -> "KaleidoscopeFrontend":
        """torchaudio.compliance.kaldi.fbank's keyword arguments (minus the waveform).  Ours takes a
        batch (..., time) and returns (..., frames, bins)."""
        ka, ours = _split_kwargs(kw, _KALDI_DEFAULTS, "torchaudio.compliance.kaldi.fbank", allow_log=False)
        return cls(**_kaldi_config(ka, ours))

    @classmethod
    def from_librosa_melspectrogram(cls, **kw) -> "KaleidoscopeFrontend":
        """librosa.feature.melspectrogram's keyword arguments (and its mel filter's: n_mels, fmin,
        fmax, htk, norm, dtype), minus y and S.  ``dtype`` is librosa's filterbank dtype when it is a
        numpy dtype (default float32: the filters are rounded to it, as librosa does), ours when it
        is a torch.dtype (librosa's may also be passed as ``mel_dtype``, to give both)."""
        kw = dict(kw)
        if "dtype" in kw and not isinstance(kw["dtype"], torch.dtype):
            kw["mel_dtype"] = kw.pop("dtype")
        lr, ours = _split_kwargs(kw, _LIBROSA_DEFAULTS, "librosa.feature.melspectrogram")
        return cls(**_librosa_config(lr, ours))

    @classmethod
    def from_transform(cls, module: nn.Module, **ours) -> "KaleidoscopeFrontend":
        """Copy the configuration (and the window, filterbank and DCT buffers themselves) of an
        existing torchaudio MelSpectrogram or MFCC instance."""
        T = require("torchaudio.transforms")

        bad = set(ours) - set(_OUR_DEFAULTS)
        if bad:
            raise TypeError(f"from_transform got unexpected keyword arguments {sorted(bad)}")
        if isinstance(module, T.MFCC):
            mfcc = module
            melspec = module.MelSpectrogram
        elif isinstance(module, T.MelSpectrogram):
            mfcc, melspec = None, module
        else:
            raise TypeError(f"module must be a torchaudio.transforms.MelSpectrogram or MFCC, got {type(module).__name__}")
        spec, mel = melspec.spectrogram, melspec.mel_scale
        if mfcc is not None:
            if "log" in ours:
                raise TypeError("log is decided by the MFCC instance (log_mels), do not pass it")
            if mfcc.log_mels:
                ours.update(log="log", log_offset=1e-6)
            else:
                a2db = mfcc.amplitude_to_DB
                ours.update(log="db", top_db=a2db.top_db, amin=a2db.amin, multiplier=a2db.multiplier)
                if a2db.db_multiplier != 0.0:
                    raise ValueError(f"AmplitudeToDB with ref != 1 (db_multiplier {a2db.db_multiplier}) is not supported")
        ta = dict(sample_rate=melspec.sample_rate, n_fft=melspec.n_fft, win_length=melspec.win_length,
                  hop_length=melspec.hop_length, f_min=mel.f_min, f_max=mel.f_max, pad=melspec.pad,
                  n_mels=melspec.n_mels, window_fn=None, power=spec.power, normalized=spec.normalized,
                  wkwargs=None, center=spec.center, pad_mode=spec.pad_mode, onesided=None, norm=mel.norm,
                  mel_scale=mel.mel_scale)
        ours = dict(_OUR_DEFAULTS, **ours)
        cfg = _melspec_config(ta, ours, window=spec.window.detach().cpu(), fb=mel.fb.detach().cpu())
        if mfcc is not None:
            dct = cfg["dct"] = mfcc.dct_mat.detach().cpu()
            if cfg["dtype"] == torch.float64 and not any(
                    torch.allclose(dct.double(), create_dct(dct.shape[1], dct.shape[0], norm, dtype=torch.float64),
                                   rtol=0.0, atol=1e-14) for norm in ("ortho", None)):
                # A float64 front end equals ``module.double()``, whose DCT holds dct_mat's values
                # (float32 ones, for an MFCC made under the float32 default): the chirp-z DCT would
                # be the float64 DCT, 1e-7 off.  So the stage reproduces the values themselves.
                cfg["dct_construction"] = "matrix"
        return cls(**cfg)


# ------------------------------------------------------------------------------------------------
# FixedFrontend (to_fixed)
# ------------------------------------------------------------------------------------------------
class FixedFrontend(_FrontendBase):
    """The front end with every stage multiplied out: buffers ``dft_weight`` (win_length, 2 n_freqs),
    real ``[Re | Im]`` with the window folded in, ``mel_weight`` (n_freqs, n_mels), ``dct_weight``
    (n_mels, n_out) or None.  Same forward signature and outputs as the module it came from; real
    arithmetic only, so it exports to ONNX."""

    def __init__(self, config: dict, dft_weight: torch.Tensor, mel_weight: torch.Tensor,
                 dct_weight: torch.Tensor | None, window: torch.Tensor):
        super().__init__()
        self._set_config(config)
        self.n_mels = mel_weight.shape[1]
        self.n_out = self.n_mels if dct_weight is None else dct_weight.shape[1]
        self.register_buffer("dft_weight", dft_weight.detach().clone())
        self.register_buffer("mel_weight", mel_weight.detach().clone())
        self.register_buffer("dct_weight", None if dct_weight is None else dct_weight.detach().clone())
        self.register_buffer("window", window.detach().clone())  # for Kaldi's non-raw energy only

    @property
    def param_dtype(self) -> torch.dtype:
        return self.dft_weight.dtype

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None, framed: bool = False):
        refuse_tracing(self)
        with _no_autocast(waveform):
            sig, n_frames, energy = _signal_and_energy(self, waveform, lengths, framed)
            spec = _spectrum(self, sig, framed, upcast(self.dft_weight))
            dct_w = None if self.dct_weight is None else upcast(self.dct_weight)
            out = _post_spectrum(self, spec, upcast(self.mel_weight), dct_w, energy, n_frames)
        out = self._output(out)
        return out if lengths is None else (out, n_frames)


# ------------------------------------------------------------------------------------------------
# Argument handling for the constructors
# ------------------------------------------------------------------------------------------------
def _no_autocast(x: torch.Tensor):
    """The stages run in their own dtype (fp32 / fp64) even inside a bf16 / fp16 autocast region."""
    if x.device.type in ("cpu", "cuda", "xpu", "mps"):
        return torch.autocast(device_type=x.device.type, enabled=False)
    return contextlib.nullcontext()


_OUR_DEFAULTS = dict(log=None, log_offset=1e-6, top_db=None, init="exact", structure="kaleidoscope",
                     trainable=True, width=0, dtype=torch.float32, path="auto", backend="auto", frames_op="auto",
                     step_scale="default")

_MELSPEC_DEFAULTS = dict(sample_rate=16000, n_fft=400, win_length=None, hop_length=None, f_min=0.0, f_max=None,
                         pad=0, n_mels=128, window_fn=torch.hann_window, power=2.0, normalized=False,
                         wkwargs=None, center=True, pad_mode="reflect", onesided=None, norm=None, mel_scale="htk")

_MFCC_DEFAULTS = dict(sample_rate=16000, n_mfcc=40, dct_type=2, norm="ortho", log_mels=False, melkwargs=None)

_KALDI_DEFAULTS = dict(blackman_coeff=0.42, channel=-1, dither=0.0, energy_floor=1.0, frame_length=25.0,
                       frame_shift=10.0, high_freq=0.0, htk_compat=False, low_freq=20.0, min_duration=0.0,
                       num_mel_bins=23, preemphasis_coefficient=0.97, raw_energy=True, remove_dc_offset=True,
                       round_to_power_of_two=True, sample_frequency=16000.0, snip_edges=True,
                       subtract_mean=False, use_energy=False, use_log_fbank=True, use_power=True,
                       vtln_high=-500.0, vtln_low=100.0, vtln_warp=1.0, window_type="povey")

_LIBROSA_DEFAULTS = dict(sr=22050, n_fft=2048, hop_length=512, win_length=None, window="hann", center=True,
                         pad_mode="constant", power=2.0, n_mels=128, fmin=0.0, fmax=None, htk=False,
                         norm="slaney", mel_dtype="float32")


def _split_kwargs(kw: dict, defaults: dict, who: str, allow_log: bool = True) -> tuple[dict, dict]:
    ours_keys = set(_OUR_DEFAULTS) if allow_log else set(_OUR_DEFAULTS) - {"log", "log_offset", "top_db"}
    unknown = set(kw) - set(defaults) - ours_keys
    if unknown:
        raise TypeError(f"unsupported keyword arguments {sorted(unknown)}: neither {who}'s nor ours "
                        f"({sorted(ours_keys)})")
    theirs = {k: kw.get(k, v) for k, v in defaults.items()}
    ours = {k: kw.get(k, v) for k, v in _OUR_DEFAULTS.items() if k in ours_keys or k not in ("log", "log_offset", "top_db")}
    return theirs, ours


def _check_int(v, name: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return v


def _check_real(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return float(v)


def _as_tensor(v, name: str) -> torch.Tensor:
    """A copy of ``v``: the module never shares storage with the caller's tensors (a torchaudio
    module's window / fb / dct_mat), so training cannot change them."""
    t = torch.as_tensor(v)
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a real floating point tensor, got dtype {t.dtype}")
    return t.detach().clone()


def _per_stage(value, name: str, typ, default, stages=STAGES) -> dict:
    if isinstance(value, dict):
        bad = set(value) - set(stages)
        if bad:
            raise ValueError(f"{name} keys must be among {stages}, got {sorted(bad)}")
        out = {s: value.get(s, default) for s in stages}
    else:
        out = {s: value for s in stages}
    for s, v in out.items():
        if isinstance(v, bool) or not isinstance(v, typ):
            raise TypeError(f"{name}[{s!r}] must be {typ.__name__}, got {v!r}")
    return out


_NOT_A_DCT = "not a DCT"


def _dct_norm(dct: torch.Tensor) -> str | None:
    """torchaudio.functional.create_dct's norm of a given (n_mels, n_mfcc) DCT-II matrix, as
    torchaudio computes it in float32 or in float64 (an MFCC made under a float64 default dtype;
    at 128 mels the float32 one is 7e-6 off the float64 one), or ``_NOT_A_DCT``."""
    n_mels, n_out = dct.shape
    for norm in ("ortho", None):
        for dtype in (torch.float32, torch.float64):
            ref = create_dct(n_out, n_mels, norm, dtype=dtype).to(torch.float64)
            if torch.allclose(dct.to(torch.float64), ref, rtol=1e-6, atol=1e-6):
                return norm
    return _NOT_A_DCT


def _validate_config(a: dict) -> dict:
    cfg = {k: a[k] for k in _CONFIG_KEYS}
    n_fft = _check_int(cfg["n_fft"], "n_fft", 2)
    win = _check_int(cfg["win_length"], "win_length", 1)
    _check_int(cfg["hop_length"], "hop_length", 1)
    if win > n_fft:
        raise ValueError(f"win_length ({win}) must be <= n_fft ({n_fft})")
    if cfg["framing"] not in ("stft", "kaldi"):
        raise ValueError(f"framing must be 'stft' or 'kaldi', got {cfg['framing']!r}")
    if cfg["pad_mode"] not in Fe.PAD_MODES:
        raise ValueError(f"pad_mode must be one of {Fe.PAD_MODES}, got {cfg['pad_mode']!r}")
    _check_int(cfg["pad"], "pad", 0)
    p = cfg["power"]
    if p is None:
        raise ValueError("power=None (complex spectrogram) is not supported by a mel front end: use 1.0 or 2.0")
    if _check_real(p, "power") <= 0:
        raise ValueError(f"power must be > 0, got {p!r}")
    cfg["power"] = float(p)
    nz = cfg["normalized"]
    if nz is True:
        nz = "window"
    if nz not in (False, "window", "frame_length"):
        raise ValueError(f"normalized must be a bool, 'window' or 'frame_length', got {nz!r}")
    cfg["normalized"] = nz
    if cfg["log"] not in LOGS:
        raise ValueError(f"log must be one of {LOGS}, got {cfg['log']!r}")
    cfg["log_offset"] = _check_real(cfg["log_offset"], "log_offset")
    if cfg["log_offset"] < 0:
        raise ValueError(f"log_offset must be >= 0, got {cfg['log_offset']}")
    if cfg["log_floor"] is None:
        # log(x + offset) never sees x + offset < offset at init; the floor only guards a learned
        # mel stage that goes negative.  Without an offset, Kaldi's float32 epsilon.
        cfg["log_floor"] = cfg["log_offset"] if cfg["log_offset"] > 0 else Fe.FLOAT32_EPS
    cfg["log_floor"] = _check_real(cfg["log_floor"], "log_floor")
    if cfg["log_floor"] <= 0:
        raise ValueError(f"log_floor must be > 0 (log of 0 is -inf), got {cfg['log_floor']}")
    if cfg["top_db"] is not None:
        cfg["top_db"] = _check_real(cfg["top_db"], "top_db")
        if cfg["top_db"] < 0:
            raise ValueError(f"top_db must be >= 0, got {cfg['top_db']}")
    if cfg["layout"] not in ("channels_first", "channels_last"):
        raise ValueError(f"layout must be 'channels_first' or 'channels_last', got {cfg['layout']!r}")
    cfg["preemphasis"] = _check_real(cfg["preemphasis"], "preemphasis")
    if cfg["frames_op"] not in ("auto", "conv", "unfold"):
        raise ValueError(f"frames_op must be 'auto', 'conv' or 'unfold', got {cfg['frames_op']!r}")
    if cfg["framing"] == "kaldi" and cfg["layout"] != "channels_last":
        raise ValueError("Kaldi framing returns (..., frames, bins): layout must be 'channels_last'")
    return cfg


def _melscale_fb(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate, norm, mel_scale) -> torch.Tensor:
    fb = melscale_fbanks(n_freqs, f_min, f_max, n_mels, sample_rate, norm, mel_scale)
    _check_filters(fb, "n_mels", n_mels, n_freqs)
    return fb


def _check_filters(fb: torch.Tensor, name: str, n_mels: int, n_freqs: int, empty_is_error: bool = False) -> None:
    """More filters than frequency bins is refused.  Filters that cover no bin are what torchaudio's
    and librosa's own defaults produce (n_fft 400 with 128 mels: filters 0, 3, 6, 13 are empty), so
    there they only warn, as the counterparts do; Kaldi refuses them (its MelBanks asserts)."""
    if n_mels > n_freqs:
        raise ValueError(f"{name} ({n_mels}) is too large for n_fft: more filters than the {n_freqs} frequency "
                         f"bins; lower {name} or raise n_fft")
    empty = (fb.max(dim=0).values <= 0).nonzero().flatten().tolist()
    if empty:
        msg = (f"{name} ({n_mels}) is too large for n_fft (n_freqs = {n_freqs} bins) and the frequency range: "
               f"filters {empty[:8]}{'...' if len(empty) > 8 else ''} cover no frequency bin")
        if empty_is_error:
            raise ValueError(msg + f"; lower {name} or raise the window size")
        warnings.warn(msg + " (their outputs are 0, as in the counterpart)", stacklevel=4)


def _melspec_config(ta: dict, ours: dict, window: torch.Tensor | None = None, fb: torch.Tensor | None = None) -> dict:
    """The generic constructor's arguments for a torchaudio MelSpectrogram configuration."""
    n_fft = _check_int(ta["n_fft"], "n_fft", 2)
    win = ta["win_length"] if ta["win_length"] is not None else n_fft
    win = _check_int(win, "win_length")
    if win > n_fft:
        raise ValueError(f"win_length ({win}) must be <= n_fft ({n_fft})")
    hop = ta["hop_length"] if ta["hop_length"] is not None else win // 2
    hop = _check_int(hop, "hop_length")
    sr = ta["sample_rate"]
    if _check_real(sr, "sample_rate") <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sr!r}")
    n_mels = _check_int(ta["n_mels"], "n_mels")
    f_min = _check_real(ta["f_min"], "f_min")
    f_max = float(sr // 2) if ta["f_max"] is None else _check_real(ta["f_max"], "f_max")
    if f_max > sr / 2:
        raise ValueError(f"f_max ({f_max}) must be <= the Nyquist frequency sample_rate / 2 = {sr / 2}")
    if not 0 <= f_min < f_max:
        raise ValueError(f"f_min ({f_min}) must satisfy 0 <= f_min < f_max ({f_max})")
    if ta["onesided"] not in (None, True):
        raise ValueError("onesided=False is not supported (MelSpectrogram always uses the one-sided spectrum)")
    if ta["norm"] not in (None, "slaney"):
        raise ValueError(f"norm must be None or 'slaney', got {ta['norm']!r}")
    if ta["mel_scale"] not in ("htk", "slaney"):
        raise ValueError(f"mel_scale must be 'htk' or 'slaney', got {ta['mel_scale']!r}")
    if ta["pad_mode"] not in Fe.PAD_MODES:
        raise ValueError(f"pad_mode must be one of {Fe.PAD_MODES} (torch.stft's), got {ta['pad_mode']!r}")
    if window is None:
        wfn = ta["window_fn"]
        if not callable(wfn):
            raise TypeError(f"window_fn must be callable (e.g. torch.hann_window), got {wfn!r}")
        wk = ta["wkwargs"] or {}
        if not isinstance(wk, dict):
            raise TypeError(f"wkwargs must be a dict or None, got {type(wk).__name__}")
        # Made exactly as torchaudio makes it (default dtype, float32), so a float64 run of
        # torchaudio (module.double()) and ours start from the same numbers.
        window = wfn(win, **wk)
        if not isinstance(window, torch.Tensor) or tuple(window.shape) != (win,):
            raise ValueError(f"window_fn(win_length={win}) must return a tensor of shape ({win},)")
    n_freqs = n_fft // 2 + 1
    if fb is None:
        fb = _melscale_fb(n_freqs, f_min, f_max, n_mels, sr, ta["norm"], ta["mel_scale"])
    else:
        _check_filters(fb, "n_mels", n_mels, n_freqs)
    log = ours.pop("log")
    if log == "db":
        # dB of the power spectrum whatever the power: AmplitudeToDB's 10 (power) / 20 (magnitude).
        ours.setdefault("multiplier", 20.0 / float(ta["power"]))
    return dict(ours, n_fft=n_fft, win_length=win, hop_length=hop, window=window, fb=fb, dct=None,
                framing="stft", sample_rate=sr, center=bool(ta["center"]), pad_mode=ta["pad_mode"], pad=ta["pad"],
                power=ta["power"], normalized=ta["normalized"], log=log, layout="channels_first")


def _kaldi_config(ka: dict, ours: dict) -> dict:
    if ka["dither"] != 0.0:
        raise ValueError(f"dither must be 0.0 (got {ka['dither']!r}): random dither makes features "
                         f"non-deterministic and cannot be exact; add noise to the waveform yourself")
    if ka["channel"] != -1:
        raise ValueError(f"channel must be -1 (got {ka['channel']!r}): this front end maps every signal of a "
                         f"(..., time) batch; select the channel by indexing the input")
    if ka["min_duration"] != 0.0:
        raise ValueError(f"min_duration must be 0.0 (got {ka['min_duration']!r}): an empty result for short "
                         f"signals does not batch; filter short signals before the front end")
    sf = _check_real(ka["sample_frequency"], "sample_frequency")
    if sf <= 0:
        raise ValueError(f"sample_frequency must be > 0, got {sf}")
    shift = int(sf * ka["frame_shift"] * 0.001)
    size = int(sf * ka["frame_length"] * 0.001)
    if shift < 1:
        raise ValueError(f"frame_shift ({ka['frame_shift']} ms) gives {shift} samples; must be >= 1")
    if size < 2:
        raise ValueError(f"frame_length ({ka['frame_length']} ms) gives {size} samples; must be >= 2")
    padded = 1 << (size - 1).bit_length() if ka["round_to_power_of_two"] else size
    if padded % 2:
        raise ValueError(f"the padded window size ({padded}) must be even: use round_to_power_of_two=True "
                         f"or change frame_length")
    pe = _check_real(ka["preemphasis_coefficient"], "preemphasis_coefficient")
    if not 0.0 <= pe <= 1.0:
        raise ValueError(f"preemphasis_coefficient must lie in [0, 1], got {pe}")
    if ka["window_type"] not in Fe.KALDI_WINDOWS:
        raise ValueError(f"window_type must be one of {Fe.KALDI_WINDOWS}, got {ka['window_type']!r}")
    nyq = 0.5 * sf
    low = _check_real(ka["low_freq"], "low_freq")
    high = _check_real(ka["high_freq"], "high_freq")
    high_eff = high + nyq if high <= 0 else high
    if not 0.0 <= low < nyq:
        raise ValueError(f"low_freq ({low}) must lie in [0, Nyquist = {nyq})")
    if not 0.0 < high_eff <= nyq:
        raise ValueError(f"high_freq ({high}, i.e. {high_eff} Hz) must lie in (0, Nyquist = {nyq}] "
                         f"(values <= 0 count from the Nyquist frequency)")
    if low >= high_eff:
        raise ValueError(f"low_freq ({low}) must be below high_freq ({high_eff})")
    n_bins = _check_int(ka["num_mel_bins"], "num_mel_bins")
    if n_bins <= 3:
        raise ValueError(f"num_mel_bins must be > 3 (as Kaldi), got {n_bins}")
    warp = _check_real(ka["vtln_warp"], "vtln_warp")
    vlow, vhigh = _check_real(ka["vtln_low"], "vtln_low"), _check_real(ka["vtln_high"], "vtln_high")
    if warp != 1.0:
        vh = vhigh + nyq if vhigh < 0 else vhigh
        if not (low < vlow < high_eff and 0 < vh < high_eff and vlow < vh):
            raise ValueError(f"vtln_low ({vlow}) and vtln_high ({vhigh}) must satisfy low_freq < vtln_low < "
                             f"vtln_high < high_freq ({low}, {high_eff})")
    banks = kaldi_mel_banks(n_bins, padded, sf, low, high, vlow, vhigh, warp)
    fb = torch.nn.functional.pad(banks, (0, 1)).T.contiguous()  # (n_freqs, bins), Nyquist column zero
    _check_filters(fb, "num_mel_bins", n_bins, padded // 2 + 1, empty_is_error=True)
    dtype = ours["dtype"]
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    # torchaudio computes the window in the waveform's dtype.
    window = Fe.kaldi_window(ka["window_type"], size, _check_real(ka["blackman_coeff"], "blackman_coeff"), dtype)
    if ka["use_energy"] and ka["energy_floor"] < 0:
        raise ValueError(f"energy_floor must be >= 0, got {ka['energy_floor']}")
    return dict(ours, n_fft=padded, win_length=size, hop_length=shift, window=window, fb=fb, dct=None,
                framing="kaldi", sample_rate=sf, snip_edges=bool(ka["snip_edges"]),
                remove_dc_offset=bool(ka["remove_dc_offset"]), preemphasis=pe,
                power=2.0 if ka["use_power"] else 1.0,
                log="log" if ka["use_log_fbank"] else None, log_offset=0.0, log_floor=Fe.FLOAT32_EPS,
                layout="channels_last", use_energy=bool(ka["use_energy"]), energy_floor=float(ka["energy_floor"]),
                raw_energy=bool(ka["raw_energy"]), htk_compat=bool(ka["htk_compat"]),
                subtract_mean=bool(ka["subtract_mean"]))


_LIBROSA_PAD = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _librosa_config(lr: dict, ours: dict) -> dict:
    import numpy as np

    librosa = require("librosa")
    sr = lr["sr"]
    if _check_real(sr, "sr") <= 0:
        raise ValueError(f"sr must be > 0, got {sr!r}")
    n_fft = _check_int(lr["n_fft"], "n_fft", 2)
    win = n_fft if lr["win_length"] is None else _check_int(lr["win_length"], "win_length")
    if win > n_fft:
        raise ValueError(f"win_length ({win}) must be <= n_fft ({n_fft})")
    hop = _check_int(lr["hop_length"], "hop_length")
    if lr["pad_mode"] not in _LIBROSA_PAD:
        raise ValueError(f"pad_mode must be one of {sorted(_LIBROSA_PAD)}, got {lr['pad_mode']!r}")
    n_mels = _check_int(lr["n_mels"], "n_mels")
    fmin = _check_real(lr["fmin"], "fmin")
    fmax = sr / 2.0 if lr["fmax"] is None else _check_real(lr["fmax"], "fmax")
    if fmax > sr / 2:
        raise ValueError(f"fmax ({fmax}) must be <= the Nyquist frequency sr / 2 = {sr / 2}")
    if not 0 <= fmin < fmax:
        raise ValueError(f"fmin ({fmin}) must satisfy 0 <= fmin < fmax ({fmax})")
    window = lr["window"]
    if isinstance(window, torch.Tensor):
        window = window.detach().cpu().numpy()
    try:
        w = librosa.filters.get_window(window, win, fftbins=True)
    except Exception as e:  # librosa's own message says what is wrong with the window spec
        raise ValueError(f"window {window!r} for win_length {win}: {e}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=bool(lr["htk"]),
                                    norm=lr["norm"], dtype=np.dtype(lr["mel_dtype"]))
    fb = torch.from_numpy(np.ascontiguousarray(basis.T)).to(torch.float64)
    _check_filters(fb, "n_mels", n_mels, n_fft // 2 + 1)
    log = ours.pop("log")
    return dict(ours, n_fft=n_fft, win_length=win, hop_length=hop, window=torch.from_numpy(np.asarray(w, np.float64)),
                fb=fb, dct=None, framing="stft", sample_rate=sr, center=bool(lr["center"]),
                pad_mode=_LIBROSA_PAD[lr["pad_mode"]], pad=0, power=lr["power"], normalized=False, log=log,
                layout="channels_first")
