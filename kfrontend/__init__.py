"""kfrontend: learnable speech front ends whose DFT, mel and DCT stages are kaleidoscope matrices,
exact at initialisation (torchaudio MelSpectrogram / MFCC, Kaldi fbank, librosa)."""
from __future__ import annotations

import importlib.util as _ilu
import os as _os
import sys as _sys


class _SourceTreeKernelsFinder:
    """Installed wheels map ``kernels/`` to ``kfrontend.kernels``.  In a source checkout (e.g.
    ``python -m recipes.timit`` from the repo root) ``kfrontend/`` has no ``kernels`` folder, so this
    finder resolves ``kfrontend.kernels`` (lazily, on first import) to ``../kernels``.  The kernels
    are never importable as a top-level ``kernels`` module (a PyPI package has that name)."""

    _root = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "kernels")

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname != "kfrontend.kernels":
            return None
        init = _os.path.join(cls._root, "__init__.py")
        if not _os.path.isfile(init):
            return None
        return _ilu.spec_from_file_location(fullname, init, submodule_search_locations=[cls._root])


if not _os.path.isdir(_os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "kernels")):
    _sys.meta_path.append(_SourceTreeKernelsFinder)


from kfrontend.functional import butterfly_multiply, kmatrix_multiply  # noqa: E402
from kfrontend.layers import Butterfly, ButterflyUnitary, Kaleidoscope  # noqa: E402
from kfrontend.frontend import FixedFrontend, KaleidoscopeFrontend  # noqa: E402
from kfrontend.shuffle import ChannelShuffle  # noqa: E402

__all__ = ["butterfly_multiply", "kmatrix_multiply", "Butterfly", "ButterflyUnitary", "Kaleidoscope",
           "KaleidoscopeFrontend", "FixedFrontend", "ChannelShuffle"]
__version__ = "0.1.0"
