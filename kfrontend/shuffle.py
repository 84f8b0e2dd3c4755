"""The learnable channel shuffle: ShuffleNet's fixed channel permutation as a K-matrix that starts
exactly at the permutation and learns from there."""
from __future__ import annotations

import torch
from torch import nn

from kfrontend import constructions
from kfrontend._contract import ModuleContract, refuse_tracing
from kfrontend.functional import BACKENDS

__all__ = ["ChannelShuffle", "shuffle_permutation"]


def shuffle_permutation(groups: int, channels: int) -> list[int]:
    """``perm`` with ``y[:, i] = x[:, perm[i]]`` equal to the fixed shuffle
    ``x.view(N, g, c // g, ...).transpose(1, 2).reshape(N, c, ...)``: output channel
    ``i = a g + b`` (a < c/g, b < g) is input channel ``b (c/g) + a``."""
    per = channels // groups
    return [(i % groups) * per + i // groups for i in range(channels)]


class ChannelShuffle(ModuleContract, nn.Module):
    """Drop-in for a channel shuffle (``torch.nn.ChannelShuffle(groups)``) that learns: the channel
    map is a K-matrix (an increasing then a decreasing butterfly over the channels, Benes-routed
    to the shuffle's permutation, ``constructions.permutation``), so at init it equals the fixed
    shuffle exactly and training can move it to any mixing of channels across groups.

    Input (N, C, *) with C = ``channels`` (e.g. (N, C, H, W) in a CNN, or (N, C)).  ``extra_pairs``
    adds identity-initialised B B* pairs for capacity (``constructions.widen``).  The twiddles are
    kept out of weight decay by ``kfrontend.layers.param_groups_for_weight_decay``.
    """

    def __init__(self, groups: int, channels: int, *, extra_pairs: int = 0, backend: str = "auto",
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        for name, v in (("groups", groups), ("channels", channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if channels % groups:
            raise ValueError(f"channels ({channels}) must be divisible by groups ({groups})")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.groups, self.channels = groups, channels
        mix = constructions.permutation(shuffle_permutation(groups, channels), dtype=dtype)
        if extra_pairs:
            mix = constructions.widen(mix, extra_pairs)
        mix.backend = backend
        self.mix = mix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        refuse_tracing(self)  # here, or the inner Butterfly's refusal would name Butterfly
        if x.dim() < 2 or x.shape[1] != self.channels:
            raise ValueError(
                f"expected input of shape (N, {self.channels}, *) (channels), got {tuple(x.shape)}"
            )
        if x.dim() == 2:
            return self.mix(x)
        # The K-matrix acts on the last axis: channels last, then back (a view each way).
        return self.mix(x.movedim(1, -1)).movedim(-1, 1)

    def _config_state(self) -> dict:
        return dict(groups=self.groups, channels=self.channels)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, channels={self.channels}"
