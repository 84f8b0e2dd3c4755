"""kfrontend: learnable speech front ends whose DFT, mel and DCT stages are kaleidoscope matrices,
exact at initialisation (torchaudio MelSpectrogram / MFCC, Kaldi fbank, librosa)."""
from __future__ import annotations

from kfrontend.functional import butterfly_multiply, kmatrix_multiply
from kfrontend.layers import Butterfly, ButterflyUnitary, Kaleidoscope
from kfrontend.frontend import FixedFrontend, KaleidoscopeFrontend
from kfrontend.shuffle import ChannelShuffle

__all__ = ["butterfly_multiply", "kmatrix_multiply", "Butterfly", "ButterflyUnitary", "Kaleidoscope",
           "KaleidoscopeFrontend", "FixedFrontend", "ChannelShuffle"]
__version__ = "0.1.0"
