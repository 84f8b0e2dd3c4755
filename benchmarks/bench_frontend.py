"""Speed of the learnable front end against torchaudio and a dense learnable front end (issue 4).

For 16 kHz speech (TIMIT sample utterances, noise where the sample is absent), n_fft 400 and 512
(25 ms window, 10 ms hop) with 40 and 80 mels, forward and forward+backward, in seconds of audio per
second, with the parameters per stage:

* ``torchaudio``: torchaudio.transforms.MelSpectrogram (pocketfft / cuFFT); backward = gradient for
  the waveform (it has no parameters).
* ``kaleidoscope``: KaleidoscopeFrontend, the training path (``path="auto"``: every K-matrix stage
  multiplied out per call, differentiably, then matmuls), parameters requiring grad; backward =
  gradients for every stage's twiddles and the window.
* ``kaleidoscope-kernel`` (CUDA, or ``--kernel-path``): the K-matrices applied to the activations
  (``path="kernel"``: the fused Triton kernel on CUDA).
* ``fixed``: ``.to_fixed()``, stages multiplied out once into dense buffers (inference); backward =
  gradient for the waveform.
* ``dense``: the nnAudio-style learnable front end: trainable dense DFT (cos / sin) and mel matrices
  with the same exact initialisation (``structure="dense"``), same pipeline otherwise.

Methods are interleaved within each repeat (a burst of load from other processes hits all of them)
and the median is reported; ratios are against torchaudio (forward) and against dense
(forward+backward).

    .venv/bin/python benchmarks/bench_frontend.py                      # CPU, 16 x 8 s
    .venv/bin/python benchmarks/bench_frontend.py --device cuda --batch 64 --seconds 8
"""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch
import torchaudio

from kfrontend.frontend import KaleidoscopeFrontend

def load_speech(batch: int, seconds: float, speech: str | None, sr: int = 16000) -> tuple[torch.Tensor, str]:
    """(batch, seconds * sr) float32: the 16 kHz .wav files under ``speech`` (recursively) laid end to
    end, or white noise without it (the timings do not depend on the signal's content)."""
    n = int(seconds * sr)
    wavs = sorted(Path(speech).rglob("*.wav")) if speech and Path(speech).is_dir() else []
    if not wavs:
        g = torch.Generator().manual_seed(0)
        return 0.1 * torch.randn(batch, n, generator=g), "white noise (no --speech folder given)"
    import soundfile as sf

    stream, need, i = [], batch * n, 0
    while need > 0:
        x, _ = sf.read(str(wavs[i % len(wavs)]), dtype="float32")
        stream.append(torch.from_numpy(x))
        need -= len(x)
        i += 1
    return torch.cat(stream)[: batch * n].reshape(batch, n).contiguous(), f"TIMIT sample speech ({i} utterances)"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timer(fn, device: str) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def build_methods(n_fft: int, n_mels: int, device: str, kernel_path: bool):
    kw = dict(sample_rate=16000, n_fft=n_fft, win_length=400, hop_length=160, n_mels=n_mels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ta = torchaudio.transforms.MelSpectrogram(**kw).to(device)
        kal = KaleidoscopeFrontend.from_melspectrogram(**kw).to(device)
        dense = KaleidoscopeFrontend.from_melspectrogram(structure="dense", **kw).to(device)
        methods = {"torchaudio": (ta, "input"), "kaleidoscope": (kal, "params")}
        if kernel_path:
            methods["kaleidoscope-kernel"] = (
                KaleidoscopeFrontend.from_melspectrogram(path="kernel", **kw).to(device), "params")
        methods["fixed"] = (kal.to_fixed(), "input")
        methods["dense"] = (dense, "params")
        methods["DFT matmul alone"] = (_DftMatmul(methods["fixed"][0]), "input")
    return methods


class _DftMatmul(torch.nn.Module):
    """Only the framing and the dense DFT matmul of a fixed front end (the same strided conv): the
    floor of any front end that learns its DFT as a matrix, against torchaudio's FFT."""

    def __init__(self, fixed):
        super().__init__()
        self.fixed = fixed

    def forward(self, x):
        from kfrontend import features as Fe

        f = self.fixed
        xp = Fe.stft_padded(x, n_fft=f.n_fft, hop_length=f.hop_length, win_length=f.win_length,
                            center=f.center, pad_mode=f.pad_mode, pad=f.pad)
        return Fe.frames_matmul(xp, f.dft_weight, f.hop_length)


def make_step(module, grad_for: str, x: torch.Tensor, backward: bool):
    params = [p for p in module.parameters() if p.requires_grad]

    def fwd():
        if grad_for == "input" and not backward:
            with torch.no_grad():
                module(x)
        else:
            module(x)  # the training path: parameters require grad, the graph is built

    def fwd_bwd():
        xi = x.detach().requires_grad_(grad_for == "input")
        for p in params:
            p.grad = None
        y = module(xi)
        y.sum().backward()

    return fwd_bwd if backward else fwd


def param_counts(module) -> str:
    if not hasattr(module, "parameter_counts"):
        return "-"
    c = module.parameter_counts()
    return " / ".join(f"{k} {v:,}" for k, v in c.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--configs", nargs="+", default=["400:40", "400:80", "512:40", "512:80"],
                    help="n_fft:n_mels pairs")
    ap.add_argument("--kernel-path", action="store_true",
                    help="also time path='kernel' (default on CUDA; slow stage-by-stage on CPU)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--speech", default=None, help="a folder of 16 kHz .wav files (e.g. TIMIT); default white noise")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    kernel_path = args.kernel_path or device.startswith("cuda")

    x_cpu, source = load_speech(args.batch, args.seconds, args.speech)
    x = x_cpu.to(device)
    audio_s = args.batch * args.seconds
    name = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or platform.machine()
    print(f"# bench_frontend  {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"# device {device} ({name}), torch {torch.__version__}, torchaudio {torchaudio.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"# input: {source}, batch {args.batch} x {args.seconds} s = {audio_s:g} s of 16 kHz audio; "
          f"win 400, hop 160; median of {args.repeats} interleaved repeats")
    verdicts = []
    for cfg in args.configs:
        n_fft, n_mels = (int(v) for v in cfg.split(":"))
        methods = build_methods(n_fft, n_mels, device, kernel_path)
        times = {(m, b): [] for m in methods for b in (False, True)}
        steps = {(m, b): make_step(mod, g, x, b) for m, (mod, g) in methods.items() for b in (False, True)}
        for _ in range(args.warmup):
            for key, fn in steps.items():
                fn()
        for _ in range(args.repeats):
            for key, fn in steps.items():
                times[key].append(_timer(fn, device))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"\n## n_fft {n_fft}, n_mels {n_mels}\n")
        print("| method | forward (audio s/s) | fwd / torchaudio | fwd+bwd (audio s/s) | fwd+bwd / dense | "
              "parameters per stage |")
        print("|---|---|---|---|---|---|")
        for m, (mod, _) in methods.items():
            f, fb = med[(m, False)], med[(m, True)]
            print(f"| {m} | {audio_s / f:,.0f} ({f * 1e3:.1f} ms) | {f / med[('torchaudio', False)]:.2f} | "
                  f"{audio_s / fb:,.0f} ({fb * 1e3:.1f} ms) | {fb / med[('dense', True)]:.2f} | {param_counts(mod)} |")
        r_fwd = med[("kaleidoscope", False)] / med[("torchaudio", False)]
        r_fb = med[("kaleidoscope", True)] / med[("dense", True)]
        if device.startswith("cuda"):
            verdicts.append(f"n_fft {n_fft}, {n_mels} mels: training-path forward {r_fwd:.2f}x torchaudio "
                            f"(goal <= 2: {'met' if r_fwd <= 2 else 'NOT met'}); fwd+bwd {r_fb:.2f}x dense "
                            f"(goal < 1: {'met' if r_fb < 1 else 'NOT met'})")
        else:
            # training-speed issue: forward <= 1.5x torchaudio at 16 s of audio per call, <= 1.2x at
            # 128 s; to_fixed() <= 1.1x
            goal = 1.5 if audio_s <= 16 else (1.2 if audio_s >= 128 else None)
            r_fix = med[("fixed", False)] / med[("torchaudio", False)]
            verdicts.append(f"n_fft {n_fft}, {n_mels} mels, {audio_s:g} s per call: training-path forward "
                            f"{r_fwd:.2f}x torchaudio"
                            + (f" (goal <= {goal}: {'met' if r_fwd <= goal else 'NOT met'})" if goal else "")
                            + f"; to_fixed() forward {r_fix:.2f}x (goal <= 1.1: {'met' if r_fix <= 1.1 else 'NOT met'})"
                            f"; fwd+bwd {r_fb:.2f}x dense")
    print("\n## Goals\n")
    for v in verdicts:
        print(f"- {v}")


if __name__ == "__main__":
    main()
