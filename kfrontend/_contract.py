"""What every public module shares to keep the PyTorch module contract (docs/FRONTEND.md, "Module
contract"): dtype moves that keep complex tensors complex, the configuration in the state_dict,
and a clear refusal of TorchScript."""
from __future__ import annotations

import json

import torch

from kfrontend.reference import COMPLEX_OF as _REAL_TO_COMPLEX

HALF = (torch.float16, torch.bfloat16)


def upcast(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 if it is half precision (the arithmetic of a ``.half()`` / ``.bfloat16()``
    module: no complex half kernels, and power spectra overflow float16), else ``t`` itself."""
    return t.float() if t.dtype in HALF else t


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in HALF else dtype


def in_functorch() -> bool:
    """Inside a torch.func transform (vmap, grad, jacrev, ...): custom autograd Functions without
    setup_context / vmap rules cannot run there, plain torch ops can."""
    return torch._C._functorch.peek_interpreter_stack() is not None


def keep_complex(fn):
    """Wrap an ``nn.Module._apply`` function so that complex tensors stay complex.

    ``Module.to(torch.float64)`` casts every floating *and complex* tensor to float64, dropping the
    imaginary parts (one UserWarning, then silently wrong results), while ``.double()`` leaves
    complex tensors at complex64.  Here a complex tensor follows what ``fn`` does to its real pairs
    (``view_as_real``): float32 -> complex64, float64 -> complex128, any device move as asked.
    float16 / bfloat16 have no usable complex type, so complex tensors stay complex64 there (the
    arithmetic of such modules is float32 anyway, see :func:`upcast`).  An explicit complex target
    (``.to(torch.complex128)``) is passed through to ``fn``."""
    if getattr(fn, "_keeps_complex", False):
        return fn

    def apply(t: torch.Tensor) -> torch.Tensor:
        if not t.is_complex():
            return fn(t)
        pairs = torch.view_as_real(t)
        r = fn(pairs)
        if r is pairs:
            return t
        if r.is_complex():
            return fn(t)
        target = _REAL_TO_COMPLEX.get(r.dtype, torch.complex64)
        if r.dtype in _REAL_TO_COMPLEX:
            return torch.view_as_complex(r.contiguous())
        return t.to(device=r.device, dtype=target)

    apply._keeps_complex = True
    return apply


class ModuleContract:
    """Mixin for nn.Modules: ``_apply`` keeps complex tensors complex (:func:`keep_complex`); the
    state_dict carries ``_config_state()`` under ``_extra_state`` and a load with another
    configuration raises, naming the keys; TorchScript is refused with the supported route.

    The configuration is stored as a uint8 tensor of JSON text, so every state_dict value stays a
    tensor (``torch.equal`` loops, ``.to(device)`` loops, ``weights_only`` loading, safetensors).
    State dicts saved before it existed (no ``_extra_state``) load without the check."""

    def _config_state(self) -> dict:  # pragma: no cover - every user overrides it
        raise NotImplementedError

    def _apply(self, fn, recurse=True):
        return super()._apply(keep_complex(fn), recurse)

    def get_extra_state(self) -> torch.Tensor:
        text = json.dumps({"kfrontend_config": self._config_state()}, sort_keys=True)
        return torch.tensor(list(text.encode()), dtype=torch.uint8)

    def set_extra_state(self, state) -> None:
        if state is None:  # a state_dict from before the configuration was saved
            return
        if isinstance(state, torch.Tensor):
            state = json.loads(bytes(state.tolist()).decode())
        if not isinstance(state, dict) or "kfrontend_config" not in state:
            raise ValueError(f"{type(self).__name__}: the state_dict's _extra_state is not a kfrontend "
                             f"configuration: {state!r:.200}")
        saved, here = state["kfrontend_config"], json.loads(json.dumps(self._config_state()))
        diff = sorted(k for k in set(saved) | set(here) if saved.get(k, "<absent>") != here.get(k, "<absent>"))
        if diff:
            raise ValueError(
                f"{type(self).__name__}: the state_dict was saved with another configuration ("
                + ", ".join(f"{k}: {saved.get(k, '<absent>')!r} there, {here.get(k, '<absent>')!r} here" for k in diff)
                + "); build the module with the saved configuration")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.setdefault(prefix + "_extra_state", None)  # old checkpoints: nothing to check
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __prepare_scriptable__(self):
        # torch.jit.script calls this first.  torch.jit is in maintenance upstream; the butterfly
        # products use Python control flow, custom autograd and custom ops that it cannot compile.
        raise RuntimeError(
            f"{type(self).__name__} does not support TorchScript (torch.jit.script / torch.jit.trace). "
            "Supported routes: torch.compile(module) for speed, and for deployment "
            "KaleidoscopeFrontend.to_fixed() exported with torch.export.export or torch.onnx.export(..., "
            "dynamo=True); see docs/FRONTEND.md, 'Module contract'")


def refuse_tracing(module) -> None:
    """torch.jit.trace runs forward under tracing: refuse with the same message as script."""
    if torch.jit.is_tracing():
        ModuleContract.__prepare_scriptable__(module)
