"""Training-step time and memory of the recipe's model with each front end, side by side.

A user fine-tuning the front end pays in every step: this prints, for the recipe's model and one
batch of 8 utterances, the median time of forward + backward + optimizer step with the fixed
torchaudio log-mel (`mfsc`, the baseline), the learnable K-matrix front end (`kaleidoscope`) and the
learnable dense one (`dense`), with ratios to `mfsc`. The front ends are interleaved round by round
so that load changes hit them alike; besides wall time the table gives the process's CPU time per
step (less sensitive to other jobs on a shared machine; with 2 threads it counts both).

`--memory` adds the peak memory of a training step: each front end runs alone in a fresh process,
and the peak resident size over 3 steps is compared with the resident size before the first step.

The C allocator is tuned as the recipe tunes it for CPU training (`kfrontend.cpu.keep_freed_memory`);
`--malloc default` keeps glibc's defaults (freed memory returned to the OS and faulted back in).

    python benchmarks/bench_train_step.py --data DIR        # manifests written by `recipes.timit prepare`
    python benchmarks/bench_train_step.py                   # a small synthetic corpus made on the fly
    python benchmarks/bench_train_step.py --n-fft 400 512 --threads 1 2 --rounds 12 --memory
    python benchmarks/bench_train_step.py --config paper --n-fft 400 --threads 1 --rounds 3
    python benchmarks/bench_train_step.py --decompose        # + the front end with frozen K-matrix stages
    python benchmarks/bench_train_step.py --device cuda --random-batch --n-fft 400 512 --threads 1
                                   # GPU (torchaudio's MFSC on cuFFT as the baseline); no audio files needed
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kfrontend.cpu import keep_freed_memory  # noqa: E402
from recipes.timit.data import Utterances, collate  # noqa: E402
from recipes.timit.model import N_CLASSES, Recognizer  # noqa: E402
from recipes.timit.prepare import load_manifest, prepare  # noqa: E402
from recipes.timit.train import _optimizer, load_config  # noqa: E402

KINDS = ("mfsc", "kaleidoscope", "dense")
# --decompose: the K-matrix front end with its K-matrix stages frozen and the window learnable: the
# stages' products are cached (no build, no twiddle gradients) while the pipeline's backward runs
# as in training (the window's gradient needs the DFT GEMM's), the floor a cheaper build can reach
FROZEN = "kaleidoscope, K-matrix stages frozen"


def _batch(data: Path, n: int = 8):
    rows = load_manifest(data, "train")[:n]
    ds = Utterances(rows)
    return collate([ds[i] for i in range(len(rows))])


def _random_batch(n: int = 8, seed: int = 0):
    """A batch like the synthetic corpus's (2-4.3 s utterances, about 12 phones a second) made in
    memory: the step's cost does not depend on what the audio says, and no audio library is needed."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(32000, 69000, (n,), generator=g)
    wave = 0.1 * torch.randn(n, int(lengths.max()), generator=g)
    wave *= torch.arange(wave.shape[1]) < lengths[:, None]
    target_lengths = lengths * 12 // 16000
    targets = torch.randint(1, N_CLASSES, (int(target_lengths.sum()),), generator=g)
    return {"wave": wave, "lengths": lengths, "targets": targets, "target_lengths": target_lengths}


def _to(batch, device: str):
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _model(kind: str, n_fft: int, config: str, device: str = "cpu"):
    frozen = kind == FROZEN
    cfg = load_config(config, {"frontend": "kaleidoscope" if frozen else kind, "dropout": 0.0, "n_fft": n_fft,
                               "win_length": 400, "frontend_freeze_epochs": 0})
    torch.manual_seed(0)
    model = Recognizer(cfg).to(device)
    if frozen:
        for m in model.modules():
            if hasattr(m, "set_trainable") and hasattr(m, "trainable_stages"):
                m.set_trainable({"dft": False, "mel": False, "dct": False})
    return model, _optimizer(model, cfg)


def _step(model, opt, batch) -> None:
    # as the recipe trains: bf16 autocast on CUDA (its configs' "bf16": true), none on the CPU
    autocast = torch.bfloat16 if batch["wave"].is_cuda else None
    lp, n = model(batch["wave"], batch["lengths"], autocast)
    F.ctc_loss(lp.transpose(0, 1), batch["targets"], n, batch["target_lengths"]).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def measure(batch, n_fft: int, threads: int, rounds: int, config: str, kinds=KINDS,
            device: str = "cpu") -> dict[str, tuple[float, float]]:
    """(median wall seconds, median CPU seconds) per training step for each front end (the first 2
    rounds are warm-up)."""
    torch.set_num_threads(threads)
    models = {k: _model(k, n_fft, config, device) for k in kinds}
    wall = {k: [] for k in kinds}
    cpu = {k: [] for k in kinds}
    for r in range(rounds + 2):
        for k in kinds:
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            _step(*models[k], batch)
            _sync(device)
            if r >= 2:
                wall[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in kinds}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _memory_child(data: Path, kind: str, n_fft: int, threads: int, config: str) -> None:
    """Runs in its own process: prints {"before": resident bytes before the first step, "peak": peak
    resident bytes over 3 steps}."""
    torch.set_num_threads(threads)
    batch = _batch(data)
    model, opt = _model(kind, n_fft, config)
    before = _rss_bytes()
    for _ in range(3):
        _step(model, opt, batch)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"before": before, "peak": peak}))


def cuda_peak_memory(batch, n_fft: int, config: str, device: str) -> dict[str, float]:
    """Peak CUDA memory of a training step above what the model holds before it (MB)."""
    out = {}
    for k in KINDS:
        model, opt = _model(k, n_fft, config, device)
        _step(model, opt, batch)  # the optimizer's state exists from here on
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(2):
            _step(model, opt, batch)
        torch.cuda.synchronize()
        out[k] = (torch.cuda.max_memory_allocated() - before) / 1e6
        del model, opt
    return out


def peak_memory(data: Path, n_fft: int, threads: int, config: str, malloc: str) -> dict[str, float]:
    """Peak resident growth of a training step (MB), each front end in a fresh process."""
    out = {}
    for k in KINDS:
        cmd = [sys.executable, os.path.abspath(__file__), "--data", str(data), "--malloc", malloc,
               "--config", config, "--memory-child", f"{k}:{n_fft}:{threads}"]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        out[k] = (res["peak"] - res["before"]) / 1e6
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="prepared manifests (default: synthesise a small corpus)")
    ap.add_argument("--config", default="small", choices=["small", "paper"], help="the recipe's model size")
    ap.add_argument("--n-fft", nargs="+", type=int, default=[400, 512])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--memory", action="store_true", help="also measure each front end's peak step memory")
    ap.add_argument("--decompose", action="store_true",
                    help=f"also time the K-matrix front end with its K-matrix stages frozen ({FROZEN!r})")
    ap.add_argument("--malloc", choices=["tuned", "default"], default="tuned",
                    help="tuned: kfrontend.cpu.keep_freed_memory(), as the recipe does (default)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--random-batch", action="store_true",
                    help="a batch of random waveforms and targets made in memory (no corpus, no audio library)")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.malloc == "tuned" and not keep_freed_memory():
        print("note: not glibc; the allocator is left as it is")
    if a.memory_child:
        kind, n_fft, threads = a.memory_child.split(":")
        _memory_child(Path(a.data), kind, int(n_fft), int(threads), a.config)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(a.data) if a.data else None
        if a.random_batch:
            if a.memory and not a.device.startswith("cuda"):
                raise SystemExit("--memory on the CPU runs each front end in a fresh process on a corpus: "
                                 "drop --random-batch or --memory")
            data = None
        elif data is None:
            from recipes.timit.synth import synth_corpus
            corpus = synth_corpus(Path(tmp) / "corpus", speakers=4, utts_per_speaker=10, seed=0, progress=False)
            data = Path(tmp) / "data"
            prepare(corpus, data, progress=False)
        batch = _to(_random_batch() if a.random_batch else _batch(data), a.device)
        audio_s = float(batch["lengths"].sum()) / 16000
        print(f"recipe `{a.config}` model, batch of {batch['wave'].shape[0]} utterances ({audio_s:.1f} s of audio), "
              f"forward + backward + AdamW step, median of {a.rounds} interleaved rounds; malloc {a.malloc}; "
              f"device {a.device}"
              + (f" ({torch.cuda.get_device_name()})" if a.device.startswith("cuda") else "")
              + f"; torch {torch.__version__}" + ("; random batch" if a.random_batch else ""))
        mem_cols = " peak step memory MB | vs mfsc |" if a.memory else ""
        print(f"| n_fft | threads | front end | ms / step | vs mfsc | CPU ms / step | vs mfsc |{mem_cols}")
        print("|---|---|---|---|---|---|---|" + ("---|---|" if a.memory else ""))
        for n_fft in a.n_fft:
            for th in a.threads:
                kinds = KINDS + ((FROZEN,) if a.decompose else ())
                med = measure(batch, n_fft, th, a.rounds, a.config, kinds, a.device)
                mem = None
                if a.memory:
                    mem = (cuda_peak_memory(batch, n_fft, a.config, a.device) if a.device.startswith("cuda")
                           else peak_memory(data, n_fft, th, a.config, a.malloc))
                for k in kinds:
                    (w, c), (w0, c0) = med[k], med["mfsc"]
                    row = f"| {n_fft} | {th} | {k} | {1000 * w:.0f} | {w / w0:.2f} | {1000 * c:.0f} | {c / c0:.2f} |"
                    if mem:
                        row += f" {mem[k]:.0f} | {mem[k] / mem['mfsc']:.2f} |" if k in mem else " - | - |"
                    print(row, flush=True)


if __name__ == "__main__":
    main()
