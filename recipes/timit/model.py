"""Front end -> feature normalisation -> BiLSTM -> CTC over the 48 TIMIT phones + blank.

Front ends (``frontend`` in the config):

- ``mfsc``: fixed log-mel, ``torchaudio.transforms.MelSpectrogram`` then ``log(x + 1e-6)``;
- ``mfcc``: fixed ``torchaudio.transforms.MFCC`` (``log_mels=True``: the default dB scaling clamps
  with a top_db that depends on the whole batch);
- ``kaleidoscope``: ``kfrontend.KaleidoscopeFrontend.from_melspectrogram(init="exact")``, equal to
  ``mfsc`` at initialisation, learnable;
- ``kaleidoscope_random``: the same structure with random K-matrix stages;
- ``dense``: the same stages as plain trainable dense matrices, exact init (nnAudio-style);
- ``kaleidoscope_mfcc``: ``KaleidoscopeFrontend.from_mfcc``, equal to ``mfcc`` at initialisation.

Every front end runs with ``center=False`` on a waveform that the model has reflection-padded by
``n_fft // 2`` per utterance (each at its own length): the features of an utterance are then
exactly torchaudio's ``center=True`` features of that utterance alone, whatever it is batched with
(this makes a DDP run equal to a single-process run with the same global batch).
"""
from __future__ import annotations

import torch
from torch import nn

from kfrontend._optional import require
from recipes.timit.phones import PHONES48

torchaudio = require("torchaudio")  # one clear error if it is missing or does not load beside this torch

FRONTENDS = ("mfsc", "mfcc", "kaleidoscope", "kaleidoscope_random", "dense", "kaleidoscope_mfcc")
LEARNABLE = ("kaleidoscope", "kaleidoscope_random", "dense", "kaleidoscope_mfcc")
BLANK = 0
N_CLASSES = len(PHONES48) + 1


class LogMel(nn.Module):
    """Fixed MFSC: torchaudio MelSpectrogram, then log(x + offset)."""

    def __init__(self, offset: float = 1e-6, **kw):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(**kw)
        self.offset = offset

    def forward(self, x):
        return torch.log(self.mel(x) + self.offset)


def build_frontend(cfg: dict) -> tuple[nn.Module, int]:
    """(module mapping (B, samples) -> (B, features, frames), number of features)."""
    kind = cfg["frontend"]
    mel = dict(sample_rate=cfg["sample_rate"], n_fft=cfg["n_fft"], win_length=cfg["win_length"],
               hop_length=cfg["hop_length"], n_mels=cfg["n_mels"], center=False)
    if kind == "mfsc":
        return LogMel(cfg["log_offset"], **mel), cfg["n_mels"]
    if kind == "mfcc":
        melkw = {k: v for k, v in mel.items() if k != "sample_rate"}
        return torchaudio.transforms.MFCC(sample_rate=cfg["sample_rate"], n_mfcc=cfg["n_mfcc"],
                                          log_mels=True, melkwargs=melkw), cfg["n_mfcc"]
    if kind not in LEARNABLE:
        raise ValueError(f"frontend must be one of {FRONTENDS}, got {kind!r}")
    from kfrontend import KaleidoscopeFrontend
    ours = dict(init="random" if kind == "kaleidoscope_random" else "exact",
                structure="dense" if kind == "dense" else "kaleidoscope")
    if kind == "kaleidoscope_mfcc":
        melkw = {k: v for k, v in mel.items() if k != "sample_rate"}
        fe = KaleidoscopeFrontend.from_mfcc(sample_rate=cfg["sample_rate"], n_mfcc=cfg["n_mfcc"],
                                            log_mels=True, melkwargs=melkw, **ours)
        return fe, cfg["n_mfcc"]
    fe = KaleidoscopeFrontend.from_melspectrogram(**mel, log="log", log_offset=cfg["log_offset"], **ours)
    return fe, cfg["n_mels"]


def check_reflect_lengths(lengths: torch.Tensor, pad: int) -> None:
    """Reflection padding needs every utterance longer than ``pad`` samples."""
    if pad and int(lengths.min()) <= pad:
        raise ValueError(f"every utterance must be longer than {pad} samples for reflection padding, "
                         f"got a length of {int(lengths.min())}")


def reflect_pad(wave: torch.Tensor, lengths: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reflection-pad each row of ``wave`` (B, T) by ``pad`` on both sides *at its own length*
    (torch's 'reflect' mode: the edge sample is not repeated). Positions past an item's padded
    length read its valid samples (clamped) and are masked downstream."""
    if pad == 0:
        return wave, lengths
    if lengths.device.type == "cpu":  # on an accelerator the caller checks the host copy (no sync per batch)
        check_reflect_lengths(lengths, pad)
    T = wave.shape[1]
    i = torch.arange(T + 2 * pad, device=wave.device).unsqueeze(0) - pad    # (1, T + 2 pad)
    last = (lengths - 1).unsqueeze(1)                                     # (B, 1)
    src = torch.where(i < 0, -i, i)
    src = torch.where(src > last, 2 * last - src, src).clamp(min=0)
    src = torch.minimum(src, last)
    return torch.gather(wave, 1, src), lengths + 2 * pad


def masked_cmvn(x: torch.Tensor, n: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-utterance mean/variance normalisation of x (B, T, F) over its n valid frames; padded
    frames are set to 0."""
    mask = (torch.arange(x.shape[1], device=x.device).unsqueeze(0) < n.unsqueeze(1)).unsqueeze(-1)
    mask = mask.to(x.dtype)
    cnt = n.clamp(min=1).to(x.dtype).view(-1, 1, 1)
    mean = (x * mask).sum(1, keepdim=True) / cnt
    var = (((x - mean) * mask) ** 2).sum(1, keepdim=True) / cnt
    return (x - mean) / torch.sqrt(var + eps) * mask


def reverse_valid(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of x (B, T, F) within its first n[b] steps (padding stays in place)."""
    t = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    idx = torch.where(t < n.unsqueeze(1), n.unsqueeze(1) - 1 - t, t)
    return torch.gather(x, 1, idx.unsqueeze(-1).expand_as(x))


class BiLSTM(nn.Module):
    """Bidirectional multi-layer LSTM on padded batches without packing.

    The backward direction runs a forward LSTM over each sequence reversed within its own length,
    so valid outputs never see padding (the result does not depend on how utterances are batched).
    Same parameters as ``nn.LSTM(bidirectional=True)``; avoids packed sequences, whose CPU
    backward zero-fills a full-size gradient per time step (quadratic in length).
    """

    def __init__(self, n_in: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.fwd = nn.ModuleList(nn.LSTM(n_in if i == 0 else 2 * hidden, hidden, batch_first=True)
                                 for i in range(layers))
        self.bwd = nn.ModuleList(nn.LSTM(n_in if i == 0 else 2 * hidden, hidden, batch_first=True)
                                 for i in range(layers))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        for i, (f, b) in enumerate(zip(self.fwd, self.bwd)):
            if i > 0:
                x = self.drop(x)
            hf, _ = f(x)
            hb, _ = b(reverse_valid(x, n))
            x = torch.cat([hf, reverse_valid(hb, n)], dim=-1)
        return x


class Recognizer(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = dict(cfg)
        self.frontend, n_feats = build_frontend(cfg)
        self.learnable_frontend = cfg["frontend"] in LEARNABLE
        self.pad = cfg["n_fft"] // 2
        self.hop = cfg["hop_length"]
        self.win = cfg["n_fft"]
        self.subsample = int(cfg["subsample"])
        self.lstm = BiLSTM(n_feats * self.subsample, cfg["hidden"], cfg["layers"], cfg["dropout"])
        self.drop = nn.Dropout(cfg["dropout"])
        self.out = nn.Linear(2 * cfg["hidden"], N_CLASSES)

    def num_frames(self, num_samples: torch.Tensor | int):
        """Output frames (after subsampling) for utterances of ``num_samples`` samples."""
        return (1 + (num_samples + 2 * self.pad - self.win) // self.hop) // self.subsample

    def check_lengths(self, lengths: torch.Tensor) -> None:
        """Refuse utterances too short for the front end's padding; call it on the host copy of
        the lengths before moving a batch to an accelerator."""
        check_reflect_lengths(lengths, self.pad)

    def features(self, wave: torch.Tensor, lengths: torch.Tensor):
        """Normalised features (B, T, F) and valid frame counts, before subsampling."""
        x, plen = reflect_pad(wave, lengths, self.pad)
        feats = self.frontend(x)                    # (B, F, T) for every front end here
        feats = feats.transpose(1, 2).float()
        n = 1 + (plen - self.win) // self.hop
        n = torch.minimum(n, torch.full_like(n, feats.shape[1]))
        return masked_cmvn(feats, n), n

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor, autocast_dtype=None):
        """Log-probabilities (B, T', N_CLASSES) in float32 and output lengths (B,)."""
        feats, n = self.features(wave, lengths)
        k = self.subsample
        if k > 1:
            T = feats.shape[1] // k * k
            feats = feats[:, :T].reshape(feats.shape[0], T // k, -1)
            n = n // k
        n = n.clamp(min=1)
        ctx = (torch.autocast(device_type=wave.device.type, dtype=autocast_dtype)
               if autocast_dtype is not None else torch.autocast(device_type=wave.device.type, enabled=False))
        with ctx:
            h = self.lstm(feats, n)
            logits = self.out(self.drop(h))
        return torch.log_softmax(logits.float(), dim=-1), n

    def parameter_counts(self) -> dict[str, int]:
        def count(ps):
            return sum(p.numel() * (2 if p.is_complex() else 1) for p in ps)
        fe = count(self.frontend.parameters())
        total = count(self.parameters())
        return {"frontend": fe, "recognizer": total - fe, "total": total}


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best path: argmax per frame, repeats collapsed, blanks removed -> class indices (1..48)."""
    best = log_probs.argmax(-1).cpu()
    out = []
    for b in range(best.shape[0]):
        seq = best[b, : int(lengths[b])].tolist()
        out.append([c for i, c in enumerate(seq) if c != BLANK and (i == 0 or c != seq[i - 1])])
    return out


def prefix_beam_decode(log_probs: torch.Tensor, lengths: torch.Tensor, beam: int) -> list[list[int]]:
    """CTC prefix beam search without a language model (Hannun et al. 2014), in log space."""
    import math
    lp_all = log_probs.detach().float().cpu()
    results = []
    for b in range(lp_all.shape[0]):
        lp = lp_all[b, : int(lengths[b])]
        beams = {(): (0.0, -math.inf)}  # prefix -> (log P ending in blank, log P ending in non-blank)
        for t in range(lp.shape[0]):
            row = lp[t]
            cand = torch.topk(row, min(beam, row.numel())).indices.tolist()
            if BLANK not in cand:
                cand.append(BLANK)
            nxt: dict[tuple, list[float]] = {}

            def add(prefix, pb, pnb):
                cur = nxt.setdefault(prefix, [-math.inf, -math.inf])
                cur[0] = _logaddexp(cur[0], pb)
                cur[1] = _logaddexp(cur[1], pnb)

            for prefix, (pb, pnb) in beams.items():
                total = _logaddexp(pb, pnb)
                for c in cand:
                    p = float(row[c])
                    if c == BLANK:
                        add(prefix, total + p, -math.inf)
                        continue
                    last = prefix[-1] if prefix else None
                    if c == last:
                        add(prefix, -math.inf, pnb + p)          # repeat collapses
                        add(prefix + (c,), -math.inf, pb + p)    # blank-separated repeat
                    else:
                        add(prefix + (c,), -math.inf, total + p)
            beams = dict(sorted(((k, tuple(v)) for k, v in nxt.items()),
                                key=lambda kv: -_logaddexp(*kv[1]))[:beam])
        best = max(beams.items(), key=lambda kv: _logaddexp(*kv[1]))[0]
        results.append(list(best))
    return results


def _logaddexp(a: float, b: float) -> float:
    import math
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))
