"""What the training loop uses but is not training: the learning-rate schedule, the processes of a
DDP run, RNG states and atomic checkpoint files for exact resume, CSV logs and the curves PNG."""
from __future__ import annotations

import csv
import math
import os
import random
from pathlib import Path

import numpy as np
import torch

__all__ = ["Schedule", "Dist", "rng_state", "set_rng_state", "atomic_save", "CsvLog", "plot_curves"]


# ----------------------------------------------------------------------------------------------
# learning-rate schedule (own class: a few lines, exact state for resume)

class Schedule:
    """lr = base_lr x warmup(step) x (cosine(step) | plateau scale | 1). ``base_lr`` lives in each
    optimiser param group, so groups (front end / recognizer) keep their own rates."""

    def __init__(self, optimizer, cfg: dict, total_steps: int):
        self.opt, self.kind, self.total = optimizer, cfg["schedule"], max(1, total_steps)
        self.warmup, self.min_ratio = cfg["warmup_steps"], cfg["min_lr_ratio"]
        self.factor, self.patience = cfg["plateau_factor"], cfg["plateau_patience"]
        self.scale, self.best, self.bad = 1.0, math.inf, 0

    def set_step(self, step: int) -> float:
        w = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
        if self.kind == "cosine":
            t = min(step, self.total) / self.total
            m = self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        else:
            m = self.scale
        for g in self.opt.param_groups:
            g["lr"] = g["base_lr"] * w * m
        return w * m

    def on_eval(self, metric: float) -> None:
        if self.kind != "plateau" or not math.isfinite(metric):
            return
        if metric < self.best - 1e-9:
            self.best, self.bad = metric, 0
        else:
            self.bad += 1
            if self.bad >= self.patience:
                self.scale *= self.factor
                self.bad = 0

    def state_dict(self):
        return {"scale": self.scale, "best": self.best, "bad": self.bad, "total": self.total}

    def load_state_dict(self, s):
        self.scale, self.best, self.bad, self.total = s["scale"], s["best"], s["bad"], s["total"]


# ----------------------------------------------------------------------------------------------
# processes

class Dist:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.on = self.world > 1

    def init(self, device_kind: str):
        if self.on and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device_kind == "cuda" else "gloo")

    def barrier(self):
        if self.on:
            torch.distributed.barrier()

    def all_min(self, flag: bool, device) -> bool:
        if not self.on:
            return flag
        t = torch.tensor([1 if flag else 0], device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        return bool(t.item())

    def all_sum(self, value: float, device) -> float:
        if not self.on:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return float(t.item())

    def gather(self, obj):
        if not self.on:
            return [obj]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        if not self.on:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    # numpy's key array as a plain list: checkpoints load with weights_only=True
    s = {"python": random.getstate(), "numpy": (name, keys.tolist(), pos, has_gauss, cached),
         "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    name, keys, pos, has_gauss, cached = s["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file in the same directory, fsync, rename over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# logs and curves

class CsvLog:
    def __init__(self, path: Path, fields: list[str], keep_until_step: int | None):
        self.path, self.fields = path, fields
        rows = []
        if path.exists() and keep_until_step is not None:
            with open(path) as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until_step]
        with open(path, "w", newline="") as f:  # a resumed run drops rows logged after its checkpoint
            w = csv.DictWriter(f, fields)
            w.writeheader()
            w.writerows(rows)

    def add(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow(row)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half a file."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (a clear error naming the extra if missing)."""
    from kfrontend._optional import require

    require("matplotlib").use("Agg")
    return require("matplotlib.pyplot")


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically (a reader never sees half a PNG) and close it."""
    tmp = path.with_name(path.stem + f".tmp{os.getpid()}" + path.suffix)
    fig.savefig(tmp, dpi=100)
    pyplot().close(fig)
    os.replace(tmp, path)
    return path


def read_log(exp: Path, name: str) -> list[dict]:
    """Rows of a run's CSV log (``train_log.csv`` / ``dev_log.csv``); none if it is not there yet."""
    p = exp / name
    if not p.exists():
        return []
    with open(p) as f:
        return list(csv.DictReader(f))


def plot_curves(exp: Path) -> Path | None:
    """curves.png: training loss (per phone) and dev PER against steps."""
    plt = pyplot()
    tr, dv = read_log(exp, "train_log.csv"), read_log(exp, "dev_log.csv")
    if not tr and not dv:
        return None
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    if tr:
        ax[0].plot([int(r["step"]) for r in tr], [float(r["loss"]) for r in tr], lw=1, label="train")
    if dv:
        ax[0].plot([int(r["step"]) for r in dv], [float(r["dev_loss"]) for r in dv], "o-", lw=1, label="dev")
        ax[1].plot([int(r["step"]) for r in dv], [float(r["dev_per"]) for r in dv], "o-", lw=1)
    ax[0].set(xlabel="step", ylabel="CTC loss per phone", title=exp.name, yscale="log")
    ax[0].legend()
    ax[1].set(xlabel="step", ylabel="dev PER % (39 phones)", title="dev PER")
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, exp / "curves.png")
