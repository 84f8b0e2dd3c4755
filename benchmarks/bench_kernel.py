"""Benchmark the fused Triton butterfly kernel on a GPU.

For each size N and batch (frames): the Triton kernel vs the stage-by-stage PyTorch reference vs
a dense GEMM with the multiplied-out N x N matrix (fp32, and TF32 tensor cores) vs cuFFT
(torch.fft: rfft for real rows, fft for complex), forward and forward+backward.  Times are
medians of triton.testing.do_bench (L2 flushed before each run).  GB/s counts the minimum
traffic of the operation: forward reads x and writes y; forward+backward also reads x and the
output gradient and writes the input gradient (5 passes; twiddles and matrices not counted), and
is compared with the device's HBM bandwidth (the roofline; --peak-gbs to override).

    python benchmarks/bench_kernel.py --out results/  [--quick] [--sizes 512 1024] [--batches 65536]
    python benchmarks/bench_kernel.py --sizes 1024 --batches 65536 --config fwd:real:1024:4:16:256

Prints one table per (dtype, pass) and writes bench_kernel.csv / bench_kernel.json to --out.
Goals (H100, batch >= 64k): forward >= 60 % and forward+backward >= 40 % of HBM bandwidth,
>= 10x the PyTorch reference, faster than the dense GEMM from N = 1024.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kfrontend.cpu import kmatrix_rows  # noqa: E402
from kfrontend.functional import butterfly_multiply, butterfly_multiply_reference  # noqa: E402
from kfrontend.layers import twiddle_init  # noqa: E402

DEV = "cuda"

# HBM bandwidth by device name (GB/s, vendor figures).
PEAK_GBS = {"H100 80GB HBM3": 3350, "H100 SXM": 3350, "H100 PCIe": 2000, "H100 NVL": 3900, "H200": 4800,
            "A100-SXM4-80GB": 2039, "A100-SXM4-40GB": 1555, "A100-PCIE": 1555}


def peak_gbs(name: str, override: float | None) -> float:
    if override:
        return override
    for key, v in PEAK_GBS.items():
        if key in name:
            return float(v)
    return float("nan")


def bench(fn, rep_ms: int) -> float:
    """Median milliseconds (triton's do_bench: warm-up, L2 flush before each call)."""
    from triton.testing import do_bench

    return do_bench(fn, warmup=max(5, rep_ms // 4), rep=rep_ms, return_mode="median")


def fits(bytes_needed: int) -> bool:
    free, _ = torch.cuda.mem_get_info()
    return bytes_needed < 0.8 * free


def parse_config(text: str):
    """``fwd:real:1024:4:16[:256]`` -> (("fwd", False), KernelConfig(1024, 4, 16, 256))."""
    from kfrontend.kernels.butterfly import KernelConfig

    parts = text.split(":")
    if len(parts) not in (5, 6) or parts[0] not in ("fwd", "bwd") or parts[1] not in ("real", "complex"):
        raise SystemExit(f"--config {text!r}: expected PASS:DTYPE:T:BLOCK_M:WARPS[:MIN_PACKED_T] with PASS "
                         "fwd|bwd and DTYPE real|complex")
    try:
        nums = [int(v) for v in parts[2:]]
    except ValueError:
        raise SystemExit(f"--config {text!r}: T, BLOCK_M, WARPS and MIN_PACKED_T must be integers") from None
    return (parts[0], parts[1] == "complex"), KernelConfig(*nums[:3], nums[3] if len(nums) == 4 else None)


def verify(n, complex_, nblocks) -> float:
    """Relative error (to the max) of the kernel against the float64 reference, forward and
    gradients, on 512 frames: the timings below are only worth reading if this is small."""
    gen = torch.Generator().manual_seed(1)
    tw = twiddle_init((nblocks, n.bit_length() - 1, n // 2, 2, 2), "randn", complex_, generator=gen).to(DEV)
    x = torch.randn(512, n, device=DEV, dtype=torch.complex64 if complex_ else torch.float32)
    errs = []
    for fn, cast in ((lambda a, t: butterfly_multiply(a, t, True, backend="triton"), lambda t: t),
                     (lambda a, t: butterfly_multiply_reference(a, t, True),
                      lambda t: t.to(torch.complex128 if t.is_complex() else torch.float64))):
        a, t = cast(x).detach().requires_grad_(), cast(tw).detach().requires_grad_()
        y = fn(a, t)
        y.backward(cast(torch.ones_like(x)))
        errs.append((y.detach(), a.grad, t.grad))
    return max(((k.to(r.dtype) - r).abs().max() / r.abs().max()).item() for k, r in zip(*errs))


def run_case(n, batch, complex_, nblocks, passes, rep_ms, ref_max_elems):
    dev = DEV
    log_n = n.bit_length() - 1
    gen = torch.Generator().manual_seed(0)
    tw = twiddle_init((nblocks, log_n, n // 2, 2, 2), "randn", complex_, generator=gen).to(dev)
    dtype = torch.complex64 if complex_ else torch.float32
    x = torch.randn(batch, n, device=dev, dtype=dtype)
    esize = x.element_size()
    out = {}
    with torch.no_grad():
        mat = kmatrix_rows(tw, True, n, 0, n).t()  # y = x @ mat.T
        mat_t = mat.t().contiguous()
    for pas in passes:
        if pas == "fwd":
            nbytes = 2 * batch * n * esize
            fns = {
                "triton": lambda: butterfly_multiply(x, tw, True, backend="triton"),
                "torch": lambda: butterfly_multiply_reference(x, tw, True),
                "gemm_fp32": lambda: x @ mat_t,
                "gemm_tf32": lambda: x @ mat_t,
                "cufft": (lambda: torch.fft.fft(x)) if complex_ else (lambda: torch.fft.rfft(x)),
            }
        else:
            nbytes = 5 * batch * n * esize
            xg = x.clone().requires_grad_()
            twg = tw.clone().requires_grad_()
            mg = mat_t.clone().requires_grad_()
            g = torch.randn_like(x)

            def fb(f, grad=g):
                def run():
                    xg.grad = None
                    twg.grad = None
                    mg.grad = None
                    f().backward(grad)
                return run

            fns = {
                "triton": fb(lambda: butterfly_multiply(xg, twg, True, backend="triton")),
                "torch": fb(lambda: butterfly_multiply_reference(xg, twg, True)),
                "gemm_fp32": fb(lambda: xg @ mg),
                "gemm_tf32": fb(lambda: xg @ mg),
            }
            fns["cufft"] = fb(lambda: torch.fft.fft(xg)) if complex_ else \
                fb(lambda: torch.fft.rfft(xg), torch.randn(batch, n // 2 + 1, device=dev, dtype=torch.complex64))
        res = {}
        for name, fn in fns.items():
            if name == "torch" and batch * n * nblocks * log_n > ref_max_elems:
                continue  # the reference keeps every stage for autograd: memory and time
            if not fits(8 * batch * n * esize):
                continue
            torch.backends.cuda.matmul.allow_tf32 = name == "gemm_tf32"
            try:
                ms = bench(fn, rep_ms)
            except torch.cuda.OutOfMemoryError:
                continue
            finally:
                torch.backends.cuda.matmul.allow_tf32 = False
            res[name] = ms
        out[pas] = (nbytes, res)
        if dev == "cuda":
            torch.cuda.empty_cache()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="folder for bench_kernel.csv / .json")
    p.add_argument("--sizes", type=int, nargs="*", default=[256, 512, 1024, 2048, 4096])
    p.add_argument("--batches", type=int, nargs="*", default=[1024, 16384, 65536, 262144])
    p.add_argument("--nblocks", type=int, default=1)
    p.add_argument("--dtypes", nargs="*", default=["real", "complex"], choices=["real", "complex"])
    p.add_argument("--passes", nargs="*", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    p.add_argument("--rep-ms", type=int, default=60, help="do_bench time budget per measurement")
    p.add_argument("--ref-max-elems", type=float, default=2e9,
                   help="skip the PyTorch reference above batch*N*stages elements")
    p.add_argument("--quick", action="store_true", help="fewer batches and shorter timing (gpu_check.sh)")
    p.add_argument("--peak-gbs", type=float, default=None, help="HBM bandwidth for the roofline")
    p.add_argument("--config", action="append", default=[], metavar="PASS:DTYPE:T:BLOCK_M:WARPS[:MIN_PACKED_T]",
                   help="override a tile config of kernels/butterfly.py, e.g. fwd:real:1024:4:16:256 "
                        "(repeatable; PASS fwd|bwd, DTYPE real|complex)")
    a = p.parse_args(argv)
    overrides = [parse_config(c) for c in a.config]
    if not torch.cuda.is_available():
        print("bench_kernel.py needs a CUDA GPU", file=sys.stderr)
        return 2
    from kfrontend.kernels import butterfly as kb

    for key, cfg in overrides:
        kb.CONFIGS[key] = cfg
        print(f"config override: {key} -> {cfg}")
    if a.quick:
        a.batches = [b for b in a.batches if b in (1024, 65536, 262144)] or a.batches
        a.rep_ms = min(a.rep_ms, 40)
    name = torch.cuda.get_device_name()
    peak = peak_gbs(name, a.peak_gbs)
    print(f"device: {name}, HBM roofline {peak:.0f} GB/s, torch {torch.__version__}, nblocks {a.nblocks}")
    rows = []
    t0 = time.time()
    for kind in a.dtypes:
        for n in a.sizes:
            err = verify(n, kind == "complex", a.nblocks)
            print(f"  {kind} N={n}: kernel vs float64 reference, max relative error {err:.1e}", flush=True)
            if not err < 1e-3:
                print("  kernel results are wrong: not timing it", file=sys.stderr)
                return 1
            for batch in a.batches:
                res = run_case(n, batch, kind == "complex", a.nblocks, a.passes, a.rep_ms, a.ref_max_elems)
                for pas, (nbytes, times) in res.items():
                    tri = times.get("triton")
                    row = {"dtype": kind, "pass": pas, "N": n, "batch": batch, "nblocks": a.nblocks,
                           "bytes": nbytes}
                    for k, v in times.items():
                        row[f"{k}_ms"] = v
                    if tri:
                        gbs = nbytes / tri / 1e6
                        row["triton_GBps"] = gbs
                        row["pct_hbm"] = 100 * gbs / peak
                        for k, v in times.items():
                            if k != "triton":
                                row[f"x_vs_{k}"] = v / tri  # > 1: the kernel is faster
                    rows.append(row)
                print(f"  {kind} N={n} batch={batch} done ({time.time() - t0:.0f}s)", flush=True)
    print_tables(rows)
    check_goals(rows)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ROW_ORDER, ROW_ORDER.index(k)
                                                                  if k in ROW_ORDER else 0, k))
        with open(a.out / "bench_kernel.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
        (a.out / "bench_kernel.json").write_text(json.dumps({"device": name, "peak_gbs": peak, "rows": rows},
                                                            indent=1))
    return 0


ROW_ORDER = ["dtype", "pass", "N", "batch", "nblocks", "bytes", "triton_ms", "triton_GBps", "pct_hbm"]
METHODS = ["triton", "torch", "gemm_fp32", "gemm_tf32", "cufft"]


def fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) and not math.isnan(v) else "-"


def print_tables(rows):
    for kind in sorted({r["dtype"] for r in rows}):
        for pas in ("fwd", "fwd+bwd"):
            sel = [r for r in rows if r["dtype"] == kind and r["pass"] == pas]
            if not sel:
                continue
            print(f"\n{kind} {pas}: time (ms) per method, Triton GB/s and % of HBM, speed-up of Triton over each")
            head = f"{'N':>5} {'batch':>7} " + " ".join(f"{m:>10}" for m in METHODS) \
                + f" {'GB/s':>7} {'%HBM':>5} " + " ".join(f"{'x' + m:>10}" for m in METHODS[1:])
            print(head)
            for r in sel:
                print(f"{r['N']:>5} {r['batch']:>7} "
                      + " ".join(f"{fmt(r.get(m + '_ms'), '.3f'):>10}" for m in METHODS)
                      + f" {fmt(r.get('triton_GBps'), '.0f'):>7} {fmt(r.get('pct_hbm'), '.0f'):>5} "
                      + " ".join(f"{fmt(r.get('x_vs_' + m), '.2f'):>10}" for m in METHODS[1:]))


def check_goals(rows):
    """The issue's goals, evaluated on the rows measured (batch >= 64k)."""
    big = [r for r in rows if r["batch"] >= 65536 and "pct_hbm" in r]
    if not big:
        return
    print("\ngoals (batch >= 64k):")
    for pas, goal in (("fwd", 60), ("fwd+bwd", 40)):
        sel = [r for r in big if r["pass"] == pas]
        if sel:
            worst = min(sel, key=lambda r: r["pct_hbm"])
            ok = all(r["pct_hbm"] >= goal for r in sel)
            print(f"  {pas} >= {goal}% of HBM: {'met' if ok else 'NOT met'} "
                  f"(lowest {worst['pct_hbm']:.0f}% at {worst['dtype']} N={worst['N']} batch={worst['batch']})")
    sel = [r for r in big if "x_vs_torch" in r]
    if sel:
        worst = min(sel, key=lambda r: r["x_vs_torch"])
        print(f"  >= 10x the PyTorch reference: {'met' if worst['x_vs_torch'] >= 10 else 'NOT met'} "
              f"(lowest {worst['x_vs_torch']:.1f}x at {worst['dtype']} {worst['pass']} N={worst['N']})")
    sel = [r for r in big if r["N"] >= 1024 and "x_vs_gemm_tf32" in r]
    if sel:
        worst = min(sel, key=lambda r: min(r["x_vs_gemm_tf32"], r.get("x_vs_gemm_fp32", math.inf)))
        ok = all(min(r["x_vs_gemm_tf32"], r.get("x_vs_gemm_fp32", math.inf)) > 1 for r in sel)
        print(f"  faster than dense GEMM (fp32 and TF32) from N = 1024: {'met' if ok else 'NOT met'} "
              f"(lowest {min(worst['x_vs_gemm_tf32'], worst.get('x_vs_gemm_fp32', math.inf)):.2f}x at "
              f"{worst['dtype']} {worst['pass']} N={worst['N']} batch={worst['batch']})")


if __name__ == "__main__":
    sys.exit(main())
