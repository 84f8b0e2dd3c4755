"""Optional dependencies, imported where they are used.

The core (``import kfrontend``, the layers, the constructions and every front-end constructor but
``from_transform`` / ``from_librosa_melspectrogram``) needs torch and numpy only.  torchaudio,
librosa and matplotlib are loaded on first use through :func:`require`, which turns a missing or
broken package into one error that names the package, the versions found and the fix.
"""
from __future__ import annotations

import importlib
import importlib.metadata

import torch

# What each optional package is for, and the pip extra that brings it.
_EXTRAS = {
    "torchaudio": ("torchaudio", "from_transform, the recipe's fixed MFSC front end and the tests"),
    "librosa": ("librosa", "from_librosa_melspectrogram"),
    "matplotlib": ("plot", "the PNG plots"),
    "soundfile": ("recipes", "reading audio in the TIMIT recipe"),
}


def _installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def require(name: str):
    """Import and return the optional module ``name`` (e.g. ``"torchaudio.transforms"``), or raise
    ImportError naming the package, what needs it, the versions found and how to fix it."""
    top = name.split(".")[0]
    try:
        return importlib.import_module(name)
    except (ImportError, OSError) as e:  # OSError: a compiled extension that does not load
        extra, purpose = _EXTRAS.get(top, (top, "this feature"))
        found = _installed_version(top)
        if found is None:
            raise ImportError(f"{top} is not installed; kfrontend needs it for {purpose}. "
                              f"Install it with: pip install 'kfrontend[{extra}]' (or pip install {top})") from e
        hint = f" Reinstall it to match this environment: pip install --force-reinstall '{top}'."
        if top == "torchaudio":
            # The one incompatibility seen in practice: torchaudio's compiled extension is built for
            # one torch ABI (docs: README, "Supported versions").
            hint = (" torchaudio loads only beside the torch it was built for: torch 2.11.0 needs "
                    "torchaudio 2.11.0; torchaudio 2.11.1 needs torch >= 2.13; the CPU-only torch wheel "
                    "cannot load the PyPI torchaudio. Install a matching pair, e.g. "
                    "pip install 'torch==2.14.1' 'torchaudio==2.11.1'.")
        raise ImportError(f"{top} {found} is installed but failed to import beside torch {torch.__version__} "
                          f"({type(e).__name__}: {e}); kfrontend needs it for {purpose}.{hint}") from e
