"""Training: front end + BiLSTM-CTC on the 48 TIMIT phones, resumable exactly, single or multi process.

Multi-GPU / multi-node: launch with ``torchrun`` (``torchrun --nproc_per_node 2 -m recipes.timit
train ...``); NCCL on GPUs, gloo on CPUs. ``batch_size`` is the *global* batch: every rank takes the
items ``rank::world`` of each global batch and the loss is scaled so that DDP's gradient average
equals the single-process gradient of the whole batch.

Checkpoints (``last.pt`` every ``save_every_steps`` and at each evaluation, ``best.pt`` on the best
dev PER) are written to a temporary file and renamed. ``last.pt`` holds the model, optimiser and
schedule states, the RNG states of every rank (python, numpy, torch, CUDA) and the position (epoch,
batches consumed in it): restarting the same command after a kill continues exactly where the
checkpoint was taken, as if uninterrupted.
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kfrontend.cpu import keep_freed_memory
from recipes.timit.data import Utterances, collate, epoch_batches, feasible, shard
from recipes.timit.evaluate import decode_rows, load_checkpoint, score
from recipes.timit.model import FRONTENDS, LEARNABLE, Recognizer
from recipes.timit.prepare import load_manifest
from recipes.timit.utils import CsvLog, Dist, Schedule, atomic_save, plot_curves, rng_state, set_rng_state  # noqa: F401

CONFIG_DIR = Path(__file__).parent / "configs"
# keys that may change when a run is resumed (they do not change the computation)
RESUMABLE_CHANGES = {"max_steps", "log_every_steps", "num_workers", "tensorboard",
                     "eval_batch_size", "save_every_steps", "cpu_threads"}
# keys the recipe no longer has: ignored in config files and in the configuration of a run resumed
RETIRED_KEYS = {"kill_after_steps"}


# ----------------------------------------------------------------------------------------------
# configuration

def load_config(name_or_path: str = "small", overrides: list[str] | dict | None = None) -> dict:
    """A named config (``small``, ``paper``) or a JSON file, with ``key=value`` overrides (values
    parsed as JSON when possible: ``lr=1e-3``, ``bucket=false``, ``frontend=kaleidoscope``)."""
    path = CONFIG_DIR / f"{name_or_path}.json"
    if not path.exists():
        path = Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(f"config {name_or_path!r}: neither a named config "
                                f"({', '.join(p.stem for p in CONFIG_DIR.glob('*.json'))}) nor a file")
    cfg = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_") and k not in RETIRED_KEYS}
    base = {k: v for k, v in json.loads((CONFIG_DIR / "small.json").read_text()).items()
            if not k.startswith("_")}
    unknown = set(cfg) - set(base)
    if unknown:
        raise ValueError(f"{path}: unknown config keys {sorted(unknown)}; valid keys: {sorted(base)}")
    cfg = {**base, **cfg}
    items = overrides.items() if isinstance(overrides, dict) else (_parse_override(o) for o in overrides or [])
    for k, v in items:
        if k not in base:
            raise ValueError(f"unknown config key {k!r}; valid keys: {sorted(base)}")
        cfg[k] = v
    validate_config(cfg)
    return cfg


def _parse_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise ValueError(f"overrides must look like key=value, got {text!r}")
    k, v = text.split("=", 1)
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def validate_config(cfg: dict) -> None:
    if cfg["frontend"] not in FRONTENDS:
        raise ValueError(f"frontend must be one of {FRONTENDS}, got {cfg['frontend']!r}")
    if cfg["schedule"] not in ("cosine", "plateau", "constant"):
        raise ValueError(f"schedule must be 'cosine', 'plateau' or 'constant', got {cfg['schedule']!r}")
    for k in ("hidden", "layers", "batch_size", "epochs", "subsample", "n_mels", "n_fft", "hop_length"):
        if not isinstance(cfg[k], int) or isinstance(cfg[k], bool) or cfg[k] < 1:
            raise ValueError(f"{k} must be a positive integer, got {cfg[k]!r}")
    if cfg["max_steps"] is not None and (not isinstance(cfg["max_steps"], int) or cfg["max_steps"] < 1):
        raise ValueError(f"max_steps must be null or a positive integer, got {cfg['max_steps']!r}")
    if not (isinstance(cfg["lr"], (int, float)) and cfg["lr"] > 0):
        raise ValueError(f"lr must be > 0, got {cfg['lr']!r}")
    if cfg["frontend_lr"] is not None and not (isinstance(cfg["frontend_lr"], (int, float)) and cfg["frontend_lr"] > 0):
        raise ValueError(f"frontend_lr must be null or > 0, got {cfg['frontend_lr']!r}")
    for k in ("weight_decay", "frontend_weight_decay"):
        if not (isinstance(cfg[k], (int, float)) and cfg[k] >= 0):
            raise ValueError(f"{k} must be >= 0, got {cfg[k]!r}")


# ----------------------------------------------------------------------------------------------
# training

def _optimizer(model: Recognizer, cfg: dict):
    fe_ids = {id(p) for p in model.frontend.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in fe_ids], "lr": cfg["lr"],
               "name": "recognizer"}]
    if model.learnable_frontend:
        fe_lr = cfg["frontend_lr"] if cfg["frontend_lr"] is not None else cfg["lr"]
        # K-matrix stages learn an offset from their exact start (kfrontend TwiddleOffset): decay on
        # it pulls toward MFSC.
        # Only the offsets decay; the window, dense weights and plain twiddles never do.
        groups += model.frontend.param_groups(lr=fe_lr, weight_decay=cfg["frontend_weight_decay"])
    groups[0]["weight_decay"] = cfg["weight_decay"]
    for g in groups:
        g["base_lr"] = g["lr"]
    # AdamW: decoupled decay (per group), the same as Adam where it is 0 (the configs' default).
    return torch.optim.AdamW(groups, lr=cfg["lr"])


def _clip(params, max_norm: float) -> float | None:
    """Clip the gradients of ``params`` to ``max_norm`` together; their norm before clipping (None
    when none has a gradient: no learnable or a frozen front end)."""
    ps = [p for p in params if p.grad is not None]
    if not ps:
        return None
    return float(torch.nn.utils.clip_grad_norm_(ps, max_norm))


def _frontend_frozen(cfg: dict, epoch: int) -> bool:
    # Freezing lets the recognizer first learn on the exact MFSC / MFCC features; a randomly
    # initialised front end has no such start to keep, so it trains from the first step.
    return cfg["frontend"] in LEARNABLE and cfg["frontend"] != "kaleidoscope_random" \
        and epoch < cfg["frontend_freeze_epochs"]


def train(data, exp, cfg: dict, *, progress: bool = True) -> dict:
    """Train (or resume) the experiment in ``exp`` on the manifests in ``data``; returns the summary.
    The process's torch thread count (``cpu_threads``) is restored on return."""
    threads = torch.get_num_threads()
    try:
        return _train(data, exp, cfg, progress=progress)
    finally:
        torch.set_num_threads(threads)


def _train(data, exp, cfg: dict, *, progress: bool) -> dict:
    validate_config(cfg)
    dist = Dist()
    if cfg["device"] == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        kind = cfg["device"]
    device = torch.device(f"cuda:{dist.local_rank}" if kind == "cuda" else "cpu")
    if kind == "cpu" and cfg["cpu_threads"]:
        # small LSTMs gain little from more threads, and OpenMP threads spinning on a busy or
        # shared machine (DDP ranks, data workers, other jobs) can slow a step down tenfold
        torch.set_num_threads(cfg["cpu_threads"])
    if kind == "cpu":
        # glibc would return each step's freed temporaries to the OS and fault them back in
        # (~10k page faults per step with a learnable front end; kfrontend.cpu.keep_freed_memory)
        keep_freed_memory()
    if kind == "cuda":
        torch.cuda.set_device(device)
    dist.init(kind)
    main = dist.rank == 0
    say = print if (main and progress) else (lambda *a, **k: None)
    exp, data = Path(exp), Path(data).resolve()
    cfg = dict(cfg, data=str(data))

    ckpt = None
    if (exp / "last.pt").exists():
        ckpt = load_checkpoint(exp / "last.pt")
        old = ckpt["config"]
        diff = {k for k in set(old) | set(cfg) if old.get(k) != cfg.get(k)} - RESUMABLE_CHANGES - RETIRED_KEYS
        if diff:
            raise ValueError(f"{exp} holds a run with a different configuration ({', '.join(sorted(diff))}: "
                             + ", ".join(f"{k}={old.get(k)!r} there, {cfg.get(k)!r} now" for k in sorted(diff))
                             + "); use another --exp or the same settings")
        say(f"train: resuming {exp} at step {ckpt['step']} (epoch {ckpt['epoch']}, "
            f"batch {ckpt['batch_in_epoch']})")
    elif main:
        exp.mkdir(parents=True, exist_ok=True)
        (exp / "config.json").write_text(json.dumps(cfg, indent=1))
    dist.barrier()

    torch.manual_seed(cfg["seed"])
    random.seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    model = Recognizer(cfg).to(device)
    # after the (identical) initialisation, each rank draws its own dropout masks
    torch.manual_seed(cfg["seed"] + 1000 * dist.rank)

    rows, bad = feasible(load_manifest(data, "train"), model.num_frames)
    if bad:
        say(f"train: leaving out {len(bad)} utterance(s) too short for their phone count under CTC "
            f"(subsample={cfg['subsample']}): {', '.join(r['utt'] for r in bad[:5])}"
            + (" ..." if len(bad) > 5 else ""))
    dev_rows = load_manifest(data, "dev")
    ds = Utterances(rows)
    per_epoch = len(epoch_batches(ds.lengths, cfg["batch_size"], cfg["seed"], 0,
                                  bucket=cfg["bucket"], world=dist.world))
    if per_epoch == 0:
        raise ValueError(f"no training batches: {len(rows)} usable utterances, batch_size {cfg['batch_size']}")
    total = cfg["epochs"] * per_epoch
    if cfg["max_steps"]:
        total = min(total, cfg["max_steps"])

    opt = _optimizer(model, cfg)
    fe_ids = {id(p) for p in model.frontend.parameters()}
    rec_params = [p for p in model.parameters() if id(p) not in fe_ids]
    fe_params = list(model.frontend.parameters())
    sched = Schedule(opt, cfg, total)
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best_dev_per": math.inf, "best_step": None,
             "bad_steps_total": 0, "bad_in_a_row": 0, "wall_s": 0.0, "last_eval_step": None}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["schedule"])
        state.update({k: ckpt[k] for k in state})
        rngs = ckpt["rng"]
        if len(rngs) != dist.world:
            say(f"train: warning: checkpoint from {len(rngs)} process(es), now {dist.world}: RNG states "
                f"(dropout) are not restored exactly")
        set_rng_state(rngs[dist.rank % len(rngs)])
    max_steps = min(cfg["max_steps"] or math.inf, cfg["epochs"] * per_epoch)

    params = model.parameter_counts()
    if main:
        say(f"train: {cfg['frontend']} front end, {params['total']:,} parameters "
            f"({params['frontend']:,} in the front end), {len(rows)} utterances, {per_epoch} batches/epoch, "
            f"{dist.world} process(es) on {kind}")
    keep = state["step"] if ckpt is not None else None
    tlog = dlog = None
    if main:
        tlog = CsvLog(exp / "train_log.csv", ["step", "epoch", "loss", "grad_norm", "frontend_grad_norm", "lr",
                                              "skipped", "wall_s"], keep)
        dlog = CsvLog(exp / "dev_log.csv", ["step", "epoch", "dev_loss", "dev_per", "sub", "del", "ins",
                                            "lr", "wall_s"], keep)
    tb = None
    if main and cfg["tensorboard"]:
        try:
            from torch.utils.tensorboard import SummaryWriter
            tb = SummaryWriter(str(exp / "tensorboard"))
        except Exception as e:  # tensorboard not installed
            say(f"train: tensorboard unavailable ({e}); CSV logs only")
    autocast = torch.bfloat16 if (kind == "cuda" and cfg["bf16"]) else None

    t_start = time.time() - state["wall_s"]

    def checkpoint():
        rngs = dist.gather(rng_state())
        if main:
            state["wall_s"] = time.time() - t_start
            atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                         "schedule": sched.state_dict(), "rng": rngs, "config": cfg, **state},
                        exp / "last.pt")
        dist.barrier()

    def evaluate_dev():
        result = None
        if main:
            decoded, loss = decode_rows(model, dev_rows, device, batch_size=cfg["eval_batch_size"],
                                        autocast_dtype=autocast)
            result = dict(score(decoded), loss=loss)
        result = dist.broadcast(result)
        sched.on_eval(result["per"])
        state["last_eval_step"] = state["step"]
        if main:
            dlog.add({"step": state["step"], "epoch": state["epoch"], "dev_loss": f"{result['loss']:.5f}",
                      "dev_per": f"{result['per']:.3f}", "sub": result["sub"], "del": result["del"],
                      "ins": result["ins"], "lr": f"{opt.param_groups[0]['lr']:.3e}",
                      "wall_s": f"{time.time() - t_start:.1f}"})
            if tb:
                tb.add_scalar("dev/per", result["per"], state["step"])
            if result["per"] < state["best_dev_per"]:
                state["best_dev_per"], state["best_step"] = result["per"], state["step"]
                atomic_save({"model": model.state_dict(), "config": cfg, "step": state["step"],
                             "dev_per": result["per"]}, exp / "best.pt")
            plot_curves(exp)
        state["best_dev_per"], state["best_step"] = dist.broadcast((state["best_dev_per"], state["best_step"]))
        say(f"train: step {state['step']} epoch {state['epoch']} dev loss {result['loss']:.4f} "
            f"PER {result['per']:.2f}% (best {state['best_dev_per']:.2f}% at step {state['best_step']})")
        return result

    from tqdm import tqdm
    bar = tqdm(total=max_steps if math.isfinite(max_steps) else None, initial=state["step"],
               disable=not (main and progress), unit="step", desc=f"train {exp.name}", dynamic_ncols=True)
    wrapped, wrapped_frozen = None, None
    stage_trainable = model.frontend.trainable_stages() if model.learnable_frontend else {}
    model.train()
    while state["step"] < max_steps:
        epoch = state["epoch"]
        frozen = _frontend_frozen(cfg, epoch)
        if model.learnable_frontend:
            # Frozen for the first epochs, then back to the stages' own setting (a stage frozen
            # on purpose stays frozen).
            model.frontend.set_trainable({s: t and not frozen for s, t in stage_trainable.items()})
        if dist.on and (wrapped is None or wrapped_frozen != frozen):
            # DDP records which parameters need gradients when it is built: rebuild it when the
            # front end is frozen or unfrozen
            from torch.nn.parallel import DistributedDataParallel as DDP
            wrapped = DDP(model, device_ids=[dist.local_rank] if kind == "cuda" else None)
            wrapped_frozen = frozen
        net = wrapped if dist.on else model
        batches = epoch_batches(ds.lengths, cfg["batch_size"], cfg["seed"], epoch,
                                bucket=cfg["bucket"], world=dist.world)
        todo = batches[state["batch_in_epoch"]:]
        loader = torch.utils.data.DataLoader(
            ds, batch_sampler=[shard(b, dist.rank, dist.world) for b in todo], collate_fn=collate,
            num_workers=cfg["num_workers"], generator=torch.Generator().manual_seed(cfg["seed"] + epoch))
        for global_batch, batch in zip(todo, loader):
            if state["step"] >= max_steps:
                break
            lr_scale = sched.set_step(state["step"])
            model.check_lengths(batch["lengths"])  # on the host: no device sync per batch
            wave, lengths = batch["wave"].to(device), batch["lengths"].to(device)
            tgt, tlen = batch["targets"].to(device), batch["target_lengths"].to(device)
            lp, n = net(wave, lengths, autocast)
            per_item = F.ctc_loss(lp.transpose(0, 1), tgt, n, tlen, blank=0, reduction="none",
                                  zero_infinity=False) / tlen
            # DDP averages gradients over ranks: scale so the average is the global-batch mean
            loss = per_item.sum() * (dist.world / len(global_batch))
            finite = dist.all_min(bool(torch.isfinite(per_item).all()), device)
            grad_norm, fe_grad_norm = float("nan"), None
            if finite:
                loss.backward()
                # clipped separately: the front end's gradient norm can be 100x the recognizer's,
                # and one global clip would then shrink the recognizer's steps with it
                grad_norm = _clip(rec_params, cfg["clip_grad_norm"]) or 0.0
                fe_grad_norm = _clip(fe_params, cfg["clip_grad_norm"])
            skipped = not (finite and math.isfinite(grad_norm)
                           and (fe_grad_norm is None or math.isfinite(fe_grad_norm)))
            if skipped:
                state["bad_steps_total"] += 1
                state["bad_in_a_row"] += 1
            else:
                opt.step()
                state["bad_in_a_row"] = 0
            opt.zero_grad(set_to_none=True)
            state["step"] += 1
            state["batch_in_epoch"] += 1
            mean_loss = dist.all_sum(float(per_item.detach().sum()) if finite else 0.0, device) / len(global_batch)
            bar.update(1)
            if main and (state["step"] % cfg["log_every_steps"] == 0 or state["step"] == 1):
                lr = opt.param_groups[0]["lr"]
                tlog.add({"step": state["step"], "epoch": epoch, "loss": f"{mean_loss:.5f}" if finite else "nan",
                          "grad_norm": f"{grad_norm:.4f}",
                          "frontend_grad_norm": "" if fe_grad_norm is None else f"{fe_grad_norm:.4f}",
                          "lr": f"{lr:.3e}", "skipped": state["bad_steps_total"],
                          "wall_s": f"{time.time() - t_start:.1f}"})
                bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{lr:.2e}", skipped=state["bad_steps_total"])
                if tb:
                    tb.add_scalar("train/loss", mean_loss, state["step"])
            if state["bad_in_a_row"] > cfg["max_bad_steps"]:
                checkpoint_note = f"{exp / 'last.pt'} (step {state['step'] - state['bad_in_a_row']} or earlier)"
                bar.close()
                raise RuntimeError(
                    f"stopping: {state['bad_in_a_row']} consecutive steps with a non-finite loss or gradient "
                    f"(max_bad_steps={cfg['max_bad_steps']}, {state['bad_steps_total']} skipped in all) at step "
                    f"{state['step']}; lower lr / frontend_lr, check the data, or resume from {checkpoint_note}")
            if cfg["save_every_steps"] and state["step"] % cfg["save_every_steps"] == 0:
                checkpoint()
        if state["batch_in_epoch"] >= len(batches):
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
            if state["epoch"] % cfg["eval_every_epochs"] == 0 or state["step"] >= max_steps:
                evaluate_dev()
            checkpoint()
    bar.close()
    if state["last_eval_step"] != state["step"]:
        evaluate_dev()
        checkpoint()
    summary = {"exp": exp.name, "frontend": cfg["frontend"], "steps": state["step"], "epochs": state["epoch"],
               "wall_s": round(state["wall_s"], 1), "best_dev_per": state["best_dev_per"],
               "best_step": state["best_step"], "skipped_steps": state["bad_steps_total"], "params": params,
               "processes": dist.world, "device": kind}
    if main:
        (exp / "summary.json").write_text(json.dumps(summary, indent=1))
        plot_curves(exp)
        if tb:
            tb.close()
    return summary
