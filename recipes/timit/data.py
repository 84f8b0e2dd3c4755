"""Utterance loading, CTC targets, length-bucketed batches and their sharding across ranks.

Batches are made for the *global* batch (all ranks together) from ``(seed, epoch)`` alone, so the
order is reproducible and a resumed run skips exactly the batches already consumed; each rank takes
the items ``rank::world`` of every global batch.
"""
from __future__ import annotations

import numpy as np
import torch

from recipes.timit.phones import PHONES48
from recipes.timit.sphere import read_audio

PHONE_INDEX = {p: i + 1 for i, p in enumerate(PHONES48)}  # 0 is the CTC blank


def encode(phones48: list[str]) -> list[int]:
    return [PHONE_INDEX[p] for p in phones48]


def decode(ids: list[int]) -> list[str]:
    return [PHONES48[i - 1] for i in ids]


def ctc_min_frames(targets: list[int]) -> int:
    """Fewest frames CTC needs for ``targets``: one per label plus a blank between repeats."""
    return len(targets) + sum(a == b for a, b in zip(targets, targets[1:]))


class Utterances(torch.utils.data.Dataset):
    """Rows of a manifest; item -> (waveform float32 in [-1, 1], target ids, index)."""

    def __init__(self, rows: list[dict]):
        self.rows = rows
        self.targets = [encode(r["phones48"]) for r in rows]
        self.lengths = [int(r["num_samples"]) for r in rows]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        x, _ = read_audio(self.rows[i]["audio"])
        if len(x) != self.lengths[i]:
            raise ValueError(f"{self.rows[i]['audio']}: {len(x)} samples, the manifest says {self.lengths[i]}")
        return torch.from_numpy(x.astype(np.float32) / 32768.0), self.targets[i], i


def feasible(rows: list[dict], num_frames) -> tuple[list[dict], list[dict]]:
    """Split rows into those CTC can align (enough output frames) and those it cannot."""
    ok, bad = [], []
    for r in rows:
        (ok if int(num_frames(int(r["num_samples"]))) >= ctc_min_frames(encode(r["phones48"])) else bad).append(r)
    return ok, bad


def collate(items):
    waves, targets, idx = zip(*items)
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    return {"wave": batch, "lengths": lengths,
            "targets": torch.tensor([t for ts in targets for t in ts], dtype=torch.long),
            "target_lengths": torch.tensor([len(t) for t in targets]), "index": list(idx)}


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, *, bucket: bool = True,
                  world: int = 1) -> list[list[int]]:
    """The global batches of one epoch (lists of dataset indices), deterministic in (seed, epoch).

    Bucketing: shuffle, sort by length inside windows of 50 batches, cut into batches, shuffle the
    batch order (similar lengths per batch, little padding, random order). Batches with fewer
    items than ``world`` are dropped so every rank gets at least one item.
    """
    if batch_size < world:
        raise ValueError(f"batch_size ({batch_size}) must be >= the number of processes ({world})")
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if bucket:
        win = 50 * batch_size
        order = np.concatenate([sorted(order[i:i + win], key=lambda j: lengths[j])
                                for i in range(0, len(order), win)]) if len(order) else order
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if bucket:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return [b for b in batches if len(b) >= world]


def shard(batch: list[int], rank: int, world: int) -> list[int]:
    return batch[rank::world]
