"""How far one optimizer step moves each learnable stage: K-matrix front end vs the dense baseline.

The promise of the front end is "start exactly as MFSC, then learn": a stage whose matrix jumps by
tens of percent in the first steps has lost its start before the recognizer has learned anything.
For each configuration this trains the front end alone on a fixed, simple objective (the mean
log-mel energy of white noise, a fresh batch of 4 x 1 s per step; MFCC: the mean coefficient) and
prints the relative Frobenius change of each stage's matrix, ||W_t - W_0|| / ||W_0||, after 1, 10
and 100 steps, for ``structure="kaleidoscope"`` and ``structure="dense"`` side by side, with their
ratio, and the relative change of the features on a held-out batch.

    python benchmarks/bench_drift.py                       # the table in docs/BENCHMARKS.md
    python benchmarks/bench_drift.py --step-scale 1 0.3    # compare K-matrix step scales
    python benchmarks/bench_drift.py --step-scale none     # the twiddles learned directly
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kfrontend import KaleidoscopeFrontend  # noqa: E402

CONFIGS = {
    "256": lambda **k: KaleidoscopeFrontend.from_melspectrogram(n_fft=256, hop_length=160, n_mels=40, **k),
    "400": lambda **k: KaleidoscopeFrontend.from_melspectrogram(n_fft=400, hop_length=160, n_mels=40, **k),
    "512": lambda **k: KaleidoscopeFrontend.from_melspectrogram(n_fft=512, hop_length=160, n_mels=40, **k),
    "1024": lambda **k: KaleidoscopeFrontend.from_melspectrogram(n_fft=1024, hop_length=160, n_mels=40, **k),
    "kaldi512": lambda **k: KaleidoscopeFrontend.from_kaldi_fbank(num_mel_bins=40, **k),
    "mfcc400": lambda **k: KaleidoscopeFrontend.from_mfcc(
        n_mfcc=13, log_mels=True, melkwargs=dict(n_fft=400, hop_length=160, n_mels=40), **k),
}


def _objective(fe, x):
    y = fe(x)
    if fe.log is None:
        y = torch.log(y + 1e-6)
    return y.mean()


def _stage_mats(fe):
    out = {"dft": fe.dft.dense(), "mel": fe.mel.dense()}
    if fe.dct is not None:
        out["dct"] = fe.dct.dense()
    return out


def drift(config: str, structure: str, optim: str, lr: float, steps: list[int], step_scale, seed: int = 0):
    """{stage or "features": [relative change after each of ``steps``]}."""
    torch.manual_seed(seed)
    kw = {"structure": structure}
    if structure == "kaleidoscope":
        kw["step_scale"] = step_scale
    fe = CONFIGS[config](**kw)
    params = fe.param_groups(lr=lr)
    opt = torch.optim.Adam(params) if optim == "adam" else torch.optim.SGD(params)
    gen = torch.Generator().manual_seed(seed)
    probe = torch.randn(2, 16000, generator=gen)
    with torch.no_grad():
        mats0, feat0 = _stage_mats(fe), fe(probe)
    out = {k: [] for k in list(mats0) + ["features"]}
    for step in range(1, max(steps) + 1):
        x = torch.randn(4, 16000, generator=gen)
        opt.zero_grad(set_to_none=True)
        _objective(fe, x).backward()
        opt.step()
        if step in steps:
            with torch.no_grad():
                for k, w in _stage_mats(fe).items():
                    out[k].append(((w - mats0[k]).norm() / mats0[k].norm()).item())
                f = fe(probe)
                out["features"].append(((f - feat0).norm() / feat0.norm()).item())
    return out


def _pct(v: float) -> str:
    return f"{100 * v:.3g}%" if math.isfinite(v) else "nan"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--optims", nargs="+", default=["adam", "sgd"], choices=["adam", "sgd"])
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", nargs="+", type=int, default=[1, 10, 100])
    ap.add_argument("--step-scale", nargs="+", default=["default"],
                    help="K-matrix step scales to compare ('default', a number, or 'none': plain twiddles)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bound", type=float, default=3.0, help="the allowed ratio K-matrix / dense")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    scales = [s if s == "default" else (None if s == "none" else float(s)) for s in a.step_scale]
    steps = sorted(a.steps)
    head = " / ".join(f"step {s}" for s in steps)
    print(f"lr {a.lr}; relative change ||W_t - W_0|| / ||W_0|| ({head}); ratio = K-matrix / dense; "
          f"bound {a.bound}x")
    print(f"| config | optimizer | step scale | stage | K-matrix | dense | ratio | within {a.bound}x |")
    print("|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for cfg in a.configs:
        for optim in a.optims:
            dense = drift(cfg, "dense", optim, a.lr, steps, None)
            for sc in scales:
                kal = drift(cfg, "kaleidoscope", optim, a.lr, steps, sc)
                for stage in kal:
                    ratios = [k / d if d > 0 else float("inf") for k, d in zip(kal[stage], dense[stage])]
                    ok = all(r <= a.bound for r in ratios)
                    if stage != "features":
                        worst = max(worst, *ratios)
                    print(f"| {cfg} | {optim} | {sc} | {stage} | {' / '.join(map(_pct, kal[stage]))} | "
                          f"{' / '.join(map(_pct, dense[stage]))} | {' / '.join(f'{r:.2g}' for r in ratios)} | "
                          f"{'yes' if ok else 'NO'} |", flush=True)
    print(f"\nlargest stage ratio K-matrix / dense: {worst:.3g} (bound {a.bound})")


if __name__ == "__main__":
    main()
