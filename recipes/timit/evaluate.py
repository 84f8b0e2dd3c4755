"""Decoding, phone error rate on the 39-phone set, and a table comparing experiments."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from recipes.timit.data import Utterances, collate, decode
from recipes.timit.model import Recognizer, greedy_decode, prefix_beam_decode
from recipes.timit.phones import fold48to39, per
from recipes.timit.prepare import load_manifest


@torch.no_grad()
def decode_rows(model: Recognizer, rows: list[dict], device, *, batch_size: int = 16, beam: int = 1,
                autocast_dtype=None) -> tuple[list[dict], float]:
    """Hypotheses for ``rows`` and the mean per-phone CTC loss (NaN-free utterances only)."""
    was_training = model.training
    model.eval()
    ds = Utterances(rows)
    order = sorted(range(len(rows)), key=lambda i: ds.lengths[i])
    out, loss_sum, loss_n = [None] * len(rows), 0.0, 0
    for s in range(0, len(order), batch_size):
        batch = collate([ds[i] for i in order[s:s + batch_size]])
        model.check_lengths(batch["lengths"])  # on the host: no device sync per batch
        lp, n = model(batch["wave"].to(device), batch["lengths"].to(device), autocast_dtype)
        losses = F.ctc_loss(lp.transpose(0, 1), batch["targets"].to(device), n,
                            batch["target_lengths"].to(device), blank=0, reduction="none",
                            zero_infinity=False) / batch["target_lengths"].to(device)
        finite = torch.isfinite(losses)
        loss_sum += float(losses[finite].sum())
        loss_n += int(finite.sum())
        hyps = prefix_beam_decode(lp, n, beam) if beam > 1 else greedy_decode(lp, n)
        for i, h in zip(batch["index"], hyps):
            h48 = decode(h)
            out[i] = {"utt": rows[i]["utt"], "ref39": rows[i]["phones39"], "hyp48": h48,
                      "hyp39": fold48to39(h48)}
    model.train(was_training)
    return out, (loss_sum / loss_n if loss_n else float("nan"))


def score(decoded: list[dict]) -> dict:
    """PER (39 phones) with substitution / deletion / insertion counts."""
    return per([d["ref39"] for d in decoded], [d["hyp39"] for d in decoded])


def load_checkpoint(path) -> dict:
    """``torch.load(path, weights_only=True)``: tensors, containers and plain Python values only,
    so a checkpoint cannot run code when it is loaded.  Checkpoints written before the numpy RNG
    state was stored as a plain list hold numpy arrays: exactly those types are allowed for them."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        core = getattr(np, "_core", None) or np.core
        allowed = [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)


def load_experiment(exp, which: str = "best", device="cpu") -> tuple[Recognizer, dict, dict]:
    """(model, config, checkpoint metadata) from ``exp/best.pt`` or ``exp/last.pt``."""
    exp = Path(exp)
    path = exp / f"{which}.pt"
    if not path.exists() and which == "best":
        path = exp / "last.pt"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint in {exp} (expected best.pt or last.pt): train first")
    ckpt = load_checkpoint(path)
    cfg = ckpt["config"]
    model = Recognizer(cfg)
    model.load_state_dict(ckpt["model"])
    model.to(device)
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "rng", "schedule")}
    meta["checkpoint"] = str(path)
    return model, cfg, meta


def evaluate(exp, split: str = "test", *, which: str = "best", beam: int = 1, device=None,
             batch_size: int = 16, data=None) -> dict:
    """Decode ``split`` with the experiment's checkpoint; write hypotheses and scores under
    ``exp/decode_<split>/``; return the result row. ``data``: the manifests' directory when it is
    not where training read them."""
    if split not in ("dev", "test"):
        raise ValueError(f"split must be 'dev' or 'test', got {split!r}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    exp = Path(exp)
    model, cfg, meta = load_experiment(exp, which, device)
    rows = load_manifest(data or cfg["data"], split)
    decoded, loss = decode_rows(model, rows, device, batch_size=batch_size, beam=beam)
    result = score(decoded)
    summary_path = exp / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    row = {"exp": exp.name, "frontend": cfg["frontend"], "split": split, "beam": beam,
           "checkpoint": Path(meta["checkpoint"]).name, "step": meta.get("step"),
           "params": model.parameter_counts(), "train_wall_s": summary.get("wall_s"),
           "loss": loss, **result}
    out = exp / (f"decode_{split}" if beam <= 1 else f"decode_{split}_beam{beam}")
    out.mkdir(exist_ok=True)
    with open(out / "hyp.txt.tmp", "w") as f:
        for d in decoded:
            f.write(f"{d['utt']}\tREF {' '.join(d['ref39'])}\n{d['utt']}\tHYP {' '.join(d['hyp39'])}\n")
    os.replace(out / "hyp.txt.tmp", out / "hyp.txt")
    (out / "per.json").write_text(json.dumps(row, indent=1))
    return row


def table(rows: list[dict], markdown: bool = False) -> str:
    head = ["experiment", "front end", "split", "PER %", "sub", "del", "ins", "ref phones",
            "params (front end)", "ckpt step", "train wall s"]
    lines = []
    for r in rows:
        p = r["params"]
        wall = r.get("train_wall_s")
        lines.append([r["exp"], r["frontend"], r["split"], f"{r['per']:.2f}", str(r["sub"]),
                      str(r["del"]), str(r["ins"]), str(r["ref_phones"]),
                      f"{p['total']:,} ({p['frontend']:,})", str(r.get("step")),
                      "-" if wall is None else f"{wall:.0f}"])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*line) for line in lines])
