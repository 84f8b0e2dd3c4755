"""CPU speed of a K-matrix DFT stage against torch.fft.rfft and dense matmuls (issue 2).

The K-matrix stage is ``kfrontend.constructions.dft(n, onesided=True)`` (complex64: 3 butterflies
of size n for powers of two) applied to ``--rows`` real frames, through each CPU method of
``kmatrix_multiply``: ``blocked`` (groups of factors as small dense blocks, batched matmuls) and
``dense`` (the (n x n/2+1) matrix multiplied out once per call, then one matmul); ``auto`` is the one
the cost model picks.  Baselines, same frames: ``torch.fft.rfft``; a dense real matmul by an
(n x 2(n/2+1)) matrix (what a real-valued learnable DFT layer costs); a dense complex matmul by an
(n x n/2+1) complex64 matrix.  Forward, and forward+backward (gradients for the input and for the
weights / twiddles).  Times are medians over repeats with the methods interleaved, so a burst of
load from other processes hits all of them; ratios are method / dense real.

    .venv/bin/python benchmarks/bench_cpu.py                # N = 256..4096, 48k frames, 2 threads
    .venv/bin/python benchmarks/bench_cpu.py --sizes 512 1024 --rows 8000 --repeats 3
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import torch

from kfrontend import cpu
from kfrontend.constructions import dft
from kfrontend.functional import kmatrix_multiply


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _methods(n: int, rows: int, backward: bool):
    """name -> zero-argument callable running forward (and backward) once."""
    g = torch.Generator().manual_seed(n)
    x = torch.randn(rows, n, generator=g, requires_grad=backward)
    stage = dft(n, onesided=True)
    tw = stage.twiddle.detach().clone().requires_grad_(backward)
    n_out = stage.out_features
    w_real = torch.randn(n, 2 * n_out, generator=g).div_(n**0.5).requires_grad_(backward)
    w_cplx = torch.randn(n, n_out, dtype=torch.complex64, generator=g).div_(n**0.5).requires_grad_(backward)
    gy_c = torch.randn(rows, n_out, dtype=torch.complex64, generator=g) if backward else None
    gy_r = torch.view_as_real(gy_c).reshape(rows, 2 * n_out) if backward else None

    def run(f, gy):
        def go():
            y = f()
            if backward:
                y.backward(gy)
            return y

        return go

    def kmat(method):
        return lambda: kmatrix_multiply(x, tw, n_out, stage.increasing_stride, backend=method)

    return {
        "kmatrix blocked": run(kmat("blocked"), gy_c),
        "kmatrix dense": run(kmat("dense"), gy_c),
        "rfft": run(lambda: torch.fft.rfft(x), gy_c),
        "dense real": run(lambda: x @ w_real, gy_r),
        "dense complex": run(lambda: x.to(torch.complex64) @ w_cplx, gy_c),
    }, cpu.kmatrix_backend(x, tw, n_out, stage.increasing_stride)


def bench(n: int, rows: int, backward: bool, repeats: int, budget_s: float):
    """Median seconds per method; warm-up (lazy init, first-call allocations) on a small batch,
    then up to ``repeats`` interleaved rounds at full size, stopping once ``budget_s`` is spent."""
    small, _ = _methods(n, min(rows, 1000), backward)
    for f in small.values():
        f()
    del small
    methods, auto = _methods(n, rows, backward)
    times = {k: [] for k in methods}
    t0 = time.perf_counter()
    for _ in range(repeats):
        for k, f in methods.items():
            times[k].append(_timed(f))
        if time.perf_counter() - t0 > budget_s:
            break
    return {k: statistics.median(v) for k, v in times.items()}, auto, len(times["rfft"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    p.add_argument("--rows", type=int, default=48_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--budget", type=float, default=60.0, help="seconds of rounds per size and pass (at least 1 round)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"# {datetime.date.today()}  torch {torch.__version__}  {platform.machine()}"
          f"  threads {torch.get_num_threads()}  rows {a.rows}  load average {os.getloadavg()[0]:.1f}")
    names = ["kmatrix blocked", "kmatrix dense", "rfft", "dense real", "dense complex"]
    print("| N | pass | auto picks | reps | " + " | ".join(f"{k} ms" for k in names)
          + " | auto / dense real | blocked / dense real | rfft / dense real |")
    print("|" + "---|" * (4 + len(names) + 3))
    for n in a.sizes:
        for backward in (False, True):
            t, auto, reps = bench(n, a.rows, backward, a.repeats, a.budget)
            ms = {k: v * 1e3 for k, v in t.items()}
            auto_t = ms["kmatrix " + auto] if auto in ("blocked", "dense") else float("nan")
            print(f"| {n} | {'fwd+bwd' if backward else 'fwd'} | {auto} | {reps} | "
                  + " | ".join(f"{ms[k]:.0f}" for k in names)
                  + f" | {auto_t / ms['dense real']:.2f} | {ms['kmatrix blocked'] / ms['dense real']:.2f}"
                  + f" | {ms['rfft'] / ms['dense real']:.2f} |", flush=True)
    print(f"# load average at the end {os.getloadavg()[0]:.1f} (other processes share the cores)")


if __name__ == "__main__":
    main()
