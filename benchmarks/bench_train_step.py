"""Training-step time of the recipe's model with each front end, side by side in one process.

A user fine-tuning the front end pays in every step: this prints, for the recipe's `small` model
and one batch of 8 utterances, the median time of forward + backward + optimizer step with the fixed
torchaudio log-mel (`mfsc`, the baseline), the learnable K-matrix front end (`kaleidoscope`) and the
learnable dense one (`dense`), with ratios to `mfsc`. The front ends are interleaved round by round
so that load changes hit them alike.

    python benchmarks/bench_train_step.py --data DIR        # manifests written by `recipes.timit prepare`
    python benchmarks/bench_train_step.py                   # a small synthetic corpus made on the fly
    python benchmarks/bench_train_step.py --n-fft 400 512 --threads 1 2 --rounds 12
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from recipes.timit.data import Utterances, collate  # noqa: E402
from recipes.timit.model import Recognizer  # noqa: E402
from recipes.timit.prepare import load_manifest, prepare  # noqa: E402
from recipes.timit.train import _optimizer, load_config  # noqa: E402

KINDS = ("mfsc", "kaleidoscope", "dense")


def _batch(data: Path, n: int = 8):
    rows = load_manifest(data, "train")[:n]
    ds = Utterances(rows)
    return collate([ds[i] for i in range(len(rows))])


def measure(batch, n_fft: int, threads: int, rounds: int) -> dict[str, float]:
    """Median seconds per training step for each front end (the first 2 rounds are warm-up)."""
    torch.set_num_threads(threads)
    models, opts = {}, {}
    for k in KINDS:
        cfg = load_config("small", {"frontend": k, "dropout": 0.0, "n_fft": n_fft, "win_length": 400,
                                    "frontend_freeze_epochs": 0})
        torch.manual_seed(0)
        models[k] = Recognizer(cfg)
        opts[k] = _optimizer(models[k], cfg)
    times = {k: [] for k in KINDS}
    for r in range(rounds + 2):
        for k in KINDS:
            m, o = models[k], opts[k]
            t0 = time.perf_counter()
            lp, n = m(batch["wave"], batch["lengths"])
            F.ctc_loss(lp.transpose(0, 1), batch["targets"], n, batch["target_lengths"]).backward()
            o.step()
            o.zero_grad(set_to_none=True)
            if r >= 2:
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="prepared manifests (default: synthesise a small corpus)")
    ap.add_argument("--n-fft", nargs="+", type=int, default=[400, 512])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(a.data) if a.data else None
        if data is None:
            from recipes.timit.synth import synth_corpus
            corpus = synth_corpus(Path(tmp) / "corpus", speakers=4, utts_per_speaker=10, seed=0, progress=False)
            data = Path(tmp) / "data"
            prepare(corpus, data, progress=False)
        batch = _batch(data)
    audio_s = float(batch["lengths"].sum()) / 16000
    print(f"recipe `small` model, batch of {batch['wave'].shape[0]} utterances ({audio_s:.1f} s of audio), "
          f"forward + backward + AdamW step, median of {a.rounds} interleaved rounds; torch {torch.__version__}")
    print("| n_fft | threads | front end | ms / step | vs mfsc |")
    print("|---|---|---|---|---|")
    for n_fft in a.n_fft:
        for th in a.threads:
            med = measure(batch, n_fft, th, a.rounds)
            for k in KINDS:
                print(f"| {n_fft} | {th} | {k} | {1000 * med[k]:.0f} | {med[k] / med['mfsc']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
