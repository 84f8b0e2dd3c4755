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

import torch
from torch import nn

from kfrontend import conversions
from kfrontend import features as Fe
from kfrontend._contract import ModuleContract, compute_dtype, refuse_tracing, upcast
from kfrontend.conversions import CONFIG_KEYS, NOT_A_DCT, as_tensor, dct_norm, per_stage, validate_config
from kfrontend.cpu import run_parallel
from kfrontend.stages import (  # noqa: F401  (re-exported: kfrontend.frontend keeps its public names)
    DEFAULT_STEP_SCALE,
    STAGES,
    LinearStage,
    TwiddleOffset,
    complex_of,
)

__all__ = ["KaleidoscopeFrontend", "FixedFrontend", "STAGES", "TwiddleOffset", "LinearStage", "DEFAULT_STEP_SCALE"]

STRUCTURES = ("kaleidoscope", "dense")
INITS = ("exact", "random")
PATHS = ("auto", "matrix", "kernel")


# ------------------------------------------------------------------------------------------------
# The shared pipeline (learnable module and fixed module alike)
# ------------------------------------------------------------------------------------------------
def _no_autocast(x: torch.Tensor):
    """The stages run in their own dtype (fp32 / fp64) even inside a bf16 / fp16 autocast region."""
    if x.device.type in ("cpu", "cuda", "xpu", "mps"):
        return torch.autocast(device_type=x.device.type, enabled=False)
    return contextlib.nullcontext()


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


def _mel_energies(fe, sig: torch.Tensor, framed: bool, dft_w: torch.Tensor, mel_w: torch.Tensor) -> torch.Tensor:
    """Mel energies (..., T, n_mels) from the signal, the windowed DFT columns (win, 2F) (Kaldi's
    preprocessing folded in) and the filterbank (F, n_mels)."""
    if fe.framing == "kaldi":
        dft_w = Fe.kaldi_fold(dft_w, fe.remove_dc_offset, fe.preemphasis)
    y = sig @ dft_w if framed else Fe.frames_matmul(sig, dft_w, fe.hop_length, fe.frames_op)
    return Fe.power_mel(y, mel_w, fe.n_freqs, fe.power)


def _post_mel(fe, mel: torch.Tensor, dct, energy, n_frames):
    """Mel energies (..., T, n_mels) -> features in the output layout; ``dct`` is an (in, out) matrix
    or a module applied to the last dim, or None."""

    def apply(stage, x):
        return Fe.matmul_last(x, stage) if isinstance(stage, torch.Tensor) else stage(x)

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
class _FrontendBase(ModuleContract, nn.Module):
    def _set_config(self, cfg: dict) -> None:
        for k in CONFIG_KEYS:
            setattr(self, k, cfg[k])

    def config(self) -> dict:
        return {k: getattr(self, k) for k in CONFIG_KEYS}

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
        cfg = validate_config(locals())
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
        widths = per_stage(width, "width", int, default=0, stages=("dft", "mel", "dct"))
        for k, v in widths.items():
            if v < 0:
                raise ValueError(f"width[{k!r}] must be >= 0, got {v}")

        window = as_tensor(window, "window")
        fb = as_tensor(fb, "fb")
        if window.shape != (win_length,):
            raise ValueError(f"window must have shape (win_length,) = ({win_length},), got {tuple(window.shape)}")
        if fb.dim() != 2 or fb.shape[0] != n_fft // 2 + 1:
            raise ValueError(f"fb must have shape (n_fft // 2 + 1, n_mels) = ({n_fft // 2 + 1}, n_mels), "
                             f"got {tuple(fb.shape)}")
        if dct is not None:
            dct = as_tensor(dct, "dct")
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
        cdtype = complex_of(dtype)
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
            norm = dct_norm(dct) if dct_construction == "auto" else NOT_A_DCT

            def build_dct():
                from kfrontend import constructions as C
                if norm is NOT_A_DCT:  # reproduce the given values themselves
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
                mel = _mel_energies(self, sig, framed, dft_w, mel_w)
                out = _post_mel(self, mel, dct_w, energy, n_frames)
            else:
                mel = self.mel(self._spectrum_kernel(_frames_of(self, sig, framed), window))
                out = _post_mel(self, mel, self.dct, energy, n_frames)
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
        builds = [lambda: self.dft.weight_t(left, left + self.win_length), self.mel.weight_t]
        if self.dct is not None:
            builds.append(self.dct.weight_t)
        mats = run_parallel(builds, window)  # one stage per core on a multi-threaded CPU
        dft_w = mats[0] * window.unsqueeze(-1)
        return dft_w, mats[1], (mats[2] if self.dct is not None else None)

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
        return cls(**conversions.melspectrogram_config(kw))

    @classmethod
    def from_mfcc(cls, **kw) -> "KaleidoscopeFrontend":
        """torchaudio.transforms.MFCC's keyword arguments (``melkwargs`` and ``log_mels`` included)."""
        return cls(**conversions.mfcc_config(kw))

    @classmethod
    def from_kaldi_fbank(cls, **kw) -> "KaleidoscopeFrontend":
        """torchaudio.compliance.kaldi.fbank's keyword arguments (minus the waveform).  Ours takes a
        batch (..., time) and returns (..., frames, bins)."""
        return cls(**conversions.kaldi_fbank_config(kw))

    @classmethod
    def from_librosa_melspectrogram(cls, **kw) -> "KaleidoscopeFrontend":
        """librosa.feature.melspectrogram's keyword arguments (and its mel filter's: n_mels, fmin,
        fmax, htk, norm, dtype), minus y and S.  ``dtype`` is librosa's filterbank dtype when it is a
        numpy dtype (default float32: the filters are rounded to it, as librosa does), ours when it
        is a torch.dtype (librosa's may also be passed as ``mel_dtype``, to give both)."""
        return cls(**conversions.librosa_melspectrogram_config(kw))

    @classmethod
    def from_transform(cls, module: nn.Module, **ours) -> "KaleidoscopeFrontend":
        """Copy the configuration (and the window, filterbank and DCT buffers themselves) of an
        existing torchaudio MelSpectrogram or MFCC instance.  ``ours`` takes our own keyword
        arguments (``dtype``, ``trainable``, ``width`` ...); for an MFCC, ``log``, ``log_offset`` and
        ``top_db`` are the instance's own and refused by name."""
        return cls(**conversions.transform_config(module, ours))


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
            mel = _mel_energies(self, sig, framed, upcast(self.dft_weight), upcast(self.mel_weight))
            dct_w = None if self.dct_weight is None else upcast(self.dct_weight)
            out = _post_mel(self, mel, dct_w, energy, n_frames)
        out = self._output(out)
        return out if lengths is None else (out, n_frames)
