"""A seeds study: train front ends over several seeds, report mean and spread of dev/test PER.

One run per (front end, seed) in ``<work>/<front end>/seed<k>/``, through the ordinary
:func:`recipes.timit.train.train` (which resumes from ``last.pt``, so rerunning the same command
continues or skips finished runs) and :func:`recipes.timit.evaluate.evaluate` on dev and test with the
best-dev checkpoint. Each finished run leaves ``result.json``; a rerun reuses it while the run's
checkpoint steps are unchanged. The summary (``compare.md``, ``compare.json``, ``compare.png``) is
rebuilt from every ``result.json`` present, so two processes sharing the runs (``--shard 0/2`` and
``--shard 1/2``, or ``--jobs 2``) both end with the whole table; a lock file per run keeps two
processes from training the same run.

Spread is the sample standard deviation (n - 1 in the denominator) over seeds: with 3 seeds it is
itself uncertain by about +-50%, so differences of the order of one std are not evidence.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

from recipes.timit.model import FRONTENDS
from recipes.timit.utils import write_text_atomic


def parse_list(text: str, name: str, conv=str) -> list:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ValueError(f"{name}: give a comma-separated list, got {text!r}")
    try:
        out = [conv(t) for t in items]
    except ValueError:
        raise ValueError(f"{name}: cannot read {text!r} as a list of {conv.__name__}") from None
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: repeated values in {text!r}")
    return out


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/2), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard i/n needs 0 <= i < n, got {text!r}")
    return i, n


def split_overrides(overrides, frontends) -> dict[str, dict]:
    """``key=value`` applies to every run, ``<front end>:key=value`` to that front end's runs (e.g.
    ``kaleidoscope:frontend_freeze_epochs=2``) -> {front end: {key: value}}."""
    from recipes.timit.train import _parse_override
    per = {fe: {} for fe in frontends}
    for o in overrides or []:
        head, sep, rest = o.partition(":")
        if sep and "=" not in head:  # "fe:key=value" (a value may itself hold ':')
            if head not in per:
                raise ValueError(f"override {o!r}: {head!r} is not one of --frontends {','.join(frontends)}")
            targets, o = [head], rest
        else:
            targets = frontends
        k, v = _parse_override(o)
        for fe in targets:
            per[fe][k] = v
    return per


def run_one(data, exp, cfg: dict, *, progress: bool = True) -> dict:
    """Train (or resume, or find finished) one run, evaluate dev and test; the result row."""
    from recipes.timit.evaluate import evaluate
    from recipes.timit.train import train
    exp = Path(exp)
    summary = train(data, exp, cfg, progress=progress)
    done = exp / "result.json"
    if done.exists():
        old = json.loads(done.read_text())
        if (old["steps"], old["best_step"]) == (summary["steps"], summary["best_step"]):
            return old  # evaluated at these checkpoints already
    dev, test = evaluate(exp, "dev"), evaluate(exp, "test")
    row = {"frontend": cfg["frontend"], "seed": cfg["seed"], "exp": str(exp), "dev_per": dev["per"],
           "test_per": test["per"], "test_sub": test["sub"], "test_del": test["del"], "test_ins": test["ins"],
           "test_ref_phones": test["ref_phones"], "steps": summary["steps"], "best_step": summary["best_step"],
           "ckpt_step": test["step"], "params": test["params"], "train_wall_s": summary["wall_s"]}
    write_text_atomic(done, json.dumps(row, indent=1))
    return row


class _Lock:
    """``<exp>/.lock`` holding the owner's pid; a lock whose process is gone is taken over."""

    def __init__(self, exp: Path):
        self.path, self.held = exp / ".lock", False

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    os.kill(int(self.path.read_text() or 0), 0)
                    return None  # alive: another process is training this run
                except (ProcessLookupError, ValueError, FileNotFoundError):
                    self.path.unlink(missing_ok=True)  # stale
                    continue
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            self.held = True
            return self
        return None

    def __exit__(self, *exc):
        if self.held:
            self.path.unlink(missing_ok=True)


def _locked_run(args) -> dict | None:
    data, exp, cfg, progress = args
    with _Lock(Path(exp)) as got:
        if got is None:
            print(f"compare: {exp} is being trained by another process; skipped", file=sys.stderr)
            return None
        return run_one(data, exp, cfg, progress=progress)


def summarize(rows: list[dict], frontends: list[str]) -> dict:
    """Per front end: n, mean and sample std (n - 1) of dev and test PER, and the per-seed values."""
    out = {}
    for fe in frontends:
        rs = sorted((r for r in rows if r["frontend"] == fe), key=lambda r: r["seed"])
        s = {"n": len(rs), "seeds": [r["seed"] for r in rs]}
        for split in ("dev", "test"):
            v = [r[f"{split}_per"] for r in rs]
            s[f"{split}_per"] = v
            s[f"{split}_mean"] = statistics.fmean(v) if v else None
            s[f"{split}_std"] = statistics.stdev(v) if len(v) > 1 else None
        s["train_wall_s_mean"] = statistics.fmean(r["train_wall_s"] for r in rs) if rs else None
        out[fe] = s
    return out


def _ms(mean, std) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f}" + ("" if std is None else f" ± {std:.2f}")


def summary_table(summary: dict) -> str:
    lines = ["| front end | n seeds | dev PER % (mean ± std) | test PER % (mean ± std) | test PER % per seed | "
             "dev PER % per seed | train wall s (mean) |", "|" + "---|" * 7]
    for fe, s in summary.items():
        per_seed = {sp: ", ".join(f"s{k}: {v:.2f}" for k, v in zip(s["seeds"], s[f"{sp}_per"])) or "-"
                    for sp in ("dev", "test")}
        wall = "-" if s["train_wall_s_mean"] is None else f"{s['train_wall_s_mean']:.0f}"
        lines.append(f"| {fe} | {s['n']} | {_ms(s['dev_mean'], s['dev_std'])} | "
                     f"{_ms(s['test_mean'], s['test_std'])} | {per_seed['test']} | {per_seed['dev']} | {wall} |")
    return "\n".join(lines)


def runs_table(rows: list[dict]) -> str:
    """One Markdown row per run (the demo's results table too)."""
    lines = ["| front end | seed | dev PER % | test PER % | sub | del | ins | ref phones | ckpt step | "
             "params (front end) | train wall s |", "|" + "---|" * 11]
    for r in rows:
        p = r["params"]
        lines.append(f"| {r['frontend']} | {r['seed']} | {r['dev_per']:.2f} | {r['test_per']:.2f} | {r['test_sub']} | "
                     f"{r['test_del']} | {r['test_ins']} | {r['test_ref_phones']} | {r['ckpt_step']} | "
                     f"{p['total']:,} ({p['frontend']:,}) | {r['train_wall_s']:.0f} |")
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> Path:
    """Per-seed dev and test PER per front end (dots, labelled by seed), mean ± sample std (bars)."""
    from recipes.timit.utils import pyplot, save_figure
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(3.0 + 2.0 * len(summary), 3.8), sharey=True)
    for ax, split in zip(axes, ("dev", "test")):
        for i, (fe, s) in enumerate(summary.items()):
            v = s[f"{split}_per"]
            xs = [i + 0.08 * (j - (len(v) - 1) / 2) for j in range(len(v))]
            ax.scatter(xs, v, s=18, color=f"C{i}", zorder=3)
            for x, y, k in zip(xs, v, s["seeds"]):
                ax.annotate(str(k), (x, y), xytext=(4, 0), textcoords="offset points", fontsize=7, va="center")
            if s[f"{split}_std"] is not None:
                ax.errorbar(i + 0.3, s[f"{split}_mean"], yerr=s[f"{split}_std"], fmt="_", color=f"C{i}",
                            capsize=4, markersize=12)
        ax.set_xticks(range(len(summary)), list(summary), rotation=20)
        ax.set(title=split, ylabel="PER % (39 phones)")
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("PER per seed (dots, seed number beside); bar: mean ± sample std", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def write_report(work: Path, runs: list[tuple], settings: dict) -> dict:
    """compare.md / .json / .png from the result.json of every run in ``runs`` that has one."""
    frontends = list(dict.fromkeys(fe for fe, _, _ in runs))
    rows, missing = [], []
    for fe, seed, exp in runs:
        p = Path(exp) / "result.json"
        (rows.append(json.loads(p.read_text())) if p.exists() else missing.append(f"{fe}/seed{seed}"))
    summary = summarize(rows, frontends)
    md = [f"# Seeds study: {', '.join(frontends)}", "",
          "PER % on the 39-phone set, greedy decoding, best-dev checkpoint. Mean ± **sample** standard "
          "deviation over seeds (n - 1 in the denominator; none for one seed).", "",
          f"Settings: `{json.dumps(settings)}`", "", summary_table(summary), "", "## Runs", "", runs_table(rows)]
    if missing:
        md += ["", f"Not finished yet ({len(missing)}): {', '.join(missing)}"]
    write_text_atomic(work / "compare.md", "\n".join(md) + "\n")
    write_text_atomic(work / "compare.json", json.dumps({"settings": settings, "summary": summary, "runs": rows,
                                                     "missing": missing}, indent=1))
    if rows:
        plot(summary, work / "compare.png")
    return {"summary": summary, "rows": rows, "missing": missing}


def compare(data, work, frontends, seeds, *, config: str = "small", max_steps: int | None = None,
            overrides=(), jobs: int = 1, shard=(0, 1), progress: bool = True) -> dict:
    """Train every (front end, seed) of this shard (resumable), then write the report."""
    from recipes.timit.train import load_config
    frontends = parse_list(frontends, "--frontends") if isinstance(frontends, str) else list(frontends)
    seeds = parse_list(seeds, "--seeds", int) if isinstance(seeds, str) else list(seeds)
    bad = [fe for fe in frontends if fe not in FRONTENDS]
    if bad:
        raise ValueError(f"--frontends: unknown {bad}; choose from {','.join(FRONTENDS)}")
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"--jobs must be a positive integer, got {jobs!r}")
    i, n = parse_shard(shard) if isinstance(shard, str) else shard
    if not (Path(data) / "prepare.json").exists():
        raise FileNotFoundError(f"--data {data}: no prepare.json there; run `prepare` first")
    work = Path(work)
    per_fe = split_overrides(overrides, frontends)
    runs, cfgs = [], {}
    for seed in seeds:  # seed-major: an interrupted study has every front end for its first seeds
        for fe in frontends:
            over = {**per_fe[fe], "frontend": fe, "seed": seed}
            if max_steps is not None:
                over["max_steps"] = max_steps
            if jobs > 1:  # parallel runs on a small machine: one thread each unless told otherwise
                over.setdefault("cpu_threads", 1)
            exp = work / fe / f"seed{seed}"
            runs.append((fe, seed, exp))
            cfgs[exp] = load_config(config, over)  # every config checked before any training
    mine = runs[i::n]
    settings = {"data": str(Path(data).resolve()), "config": config, "max_steps": max_steps,
                "overrides": list(overrides or []), "frontends": frontends, "seeds": seeds}
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tasks = [(data, exp, cfgs[exp], progress and jobs == 1) for _, _, exp in mine]
    failed = []
    from tqdm import tqdm
    bar = tqdm(total=len(tasks), desc=f"compare (shard {i}/{n})" if n > 1 else "compare", unit="run",
               disable=not progress)
    if jobs == 1:
        for t in tasks:
            try:
                _locked_run(t)
            except Exception as e:  # one broken run must not cost the others
                failed.append((str(t[1]), repr(e)))
            bar.update()
    else:
        # separate processes (spawn: a fresh interpreter, no forked torch state), one thread each
        import concurrent.futures as cf
        import multiprocessing as mp
        with cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            futs = {pool.submit(_locked_run, t): t for t in tasks}
            for f in cf.as_completed(futs):
                if f.exception() is not None:
                    failed.append((str(futs[f][1]), repr(f.exception())))
                bar.update()
    bar.close()
    report = write_report(work, runs, settings)
    report["failed"], report["wall_s"] = failed, time.time() - t0
    if progress:
        print("\n" + summary_table(report["summary"]))
        print(f"\n{work / 'compare.md'}, compare.json, compare.png ({len(report['rows'])} of {len(runs)} runs "
              f"finished; std = sample std over seeds; this command: {report['wall_s']:.0f} s)")
    for exp, err in failed:
        print(f"compare: {exp} failed: {err}", file=sys.stderr)
    return report
