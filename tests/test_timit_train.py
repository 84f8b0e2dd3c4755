"""End to end on a tiny synthetic corpus: the loss falls, evaluation writes its outputs, a killed run
resumes to exactly the state of an uninterrupted one, the front end stays frozen for its epochs,
non-finite losses are skipped (and stop the run when they persist), and a 2-process gloo DDP run
equals the single-process run with the same global batch."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("espeakng_loader", reason="the synthetic corpus needs espeakng-loader")

from helpers import TINY_RECIPE as TINY, tiny_corpus_data  # noqa: E402
from recipes.timit import model as M  # noqa: E402
from recipes.timit.data import epoch_batches  # noqa: E402
from recipes.timit.evaluate import evaluate, table  # noqa: E402
from recipes.timit.prepare import load_manifest  # noqa: E402
from recipes.timit.train import load_config, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("timit")
    tiny_corpus_data(base)
    n = len(load_manifest(base / "data", "train"))
    assert n % TINY["batch_size"] != 1  # every batch splits over 2 processes (DDP test)
    return base / "data"


def _cfg(**kw):
    return load_config("small", dict(TINY, **kw))


def _log(exp, name="train_log.csv"):
    with open(Path(exp) / name) as f:
        return list(csv.DictReader(f))


def _state(exp):
    return torch.load(Path(exp) / "last.pt", map_location="cpu", weights_only=False)


def _cli(args, extra_env=None, module=("-m", "recipes.timit")):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **(extra_env or {}))
    return subprocess.run([sys.executable, *module, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


# The recipe's CLI in a process that dies like a killed one (os._exit: no cleanup, no checkpoint)
# right after it logs step 7 (log_every_steps=1; step 7 is no checkpoint step).
_KILLED_AFTER_STEP_7 = """
import os, sys
from recipes.timit import utils
add = utils.CsvLog.add
def add_then_die(self, row):
    add(self, row)
    if self.path.name == "train_log.csv" and int(row["step"]) == 7:
        sys.stdout.flush()
        os._exit(86)
utils.CsvLog.add = add_then_die
from recipes.timit.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def _overrides(**kw):
    return [f"{k}={json.dumps(v)}" for k, v in dict(TINY, **kw).items()]


def test_loss_falls_and_evaluate(data, tmp_path):
    exp = tmp_path / "mfsc"
    s = train(data, exp, _cfg(max_steps=24), progress=False)
    losses = [float(r["loss"]) for r in _log(exp)]
    assert len(losses) == 24 and s["steps"] == 24 and s["skipped_steps"] == 0
    assert sum(losses[-3:]) < 0.6 * sum(losses[:3])
    for f in ("last.pt", "best.pt", "curves.png", "summary.json", "dev_log.csv", "config.json"):
        assert (exp / f).exists(), f
    row = evaluate(exp, "test")
    refs = load_manifest(data, "test")
    assert row["ref_phones"] == sum(len(r["phones39"]) for r in refs) and row["utterances"] == len(refs)
    assert row["per"] == pytest.approx(100 * (row["sub"] + row["del"] + row["ins"]) / row["ref_phones"])
    hyp = (exp / "decode_test" / "hyp.txt").read_text().splitlines()
    assert len(hyp) == 2 * len(refs)
    assert "mfsc" in table([row]) and "| mfsc |" in table([row], markdown=True)
    # the same command again: nothing left to do, the state is unchanged
    before = _state(exp)["model"]
    train(data, exp, _cfg(max_steps=24), progress=False)
    assert all(torch.equal(before[k], v) for k, v in _state(exp)["model"].items())
    with pytest.raises(ValueError, match="different configuration.*hidden"):
        train(data, exp, _cfg(max_steps=24, hidden=8), progress=False)


def test_kill_and_resume_is_exact(data, tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    train(data, ref, _cfg(max_steps=9), progress=False)
    # killed (os._exit, no cleanup) after step 7; the last checkpoint is from step 6
    r = _cli(["train", "--data", str(data), "--exp", str(killed), "--max-steps", "9", *_overrides()],
             module=("-c", _KILLED_AFTER_STEP_7))
    assert r.returncode == 86, r.stderr[-2000:]
    assert _state(killed)["step"] == 6 and len(_log(killed)) == 7
    train(data, killed, _cfg(max_steps=9), progress=False)
    a, b = _state(ref), _state(killed)
    assert a["step"] == b["step"] == 9 and a["epoch"] == b["epoch"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for (ka, va), (kb, vb) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items()):
        assert all(torch.equal(va[n], vb[n]) for n in va), ka
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])
    assert [r["loss"] for r in _log(ref)] == [r["loss"] for r in _log(killed)]


def test_frontend_frozen_then_fine_tuned(data, tmp_path):
    pytest.importorskip("kfrontend.frontend")
    exp = tmp_path / "kal"
    per_epoch = len(epoch_batches([1] * len(load_manifest(data, "train")), TINY["batch_size"], 0, 0))
    cfg = _cfg(frontend="kaleidoscope", frontend_freeze_epochs=1, frontend_lr=1e-2, dropout=0.0)
    torch.manual_seed(cfg["seed"])
    init = M.Recognizer(cfg).state_dict()
    train(data, exp, dict(cfg, max_steps=per_epoch), progress=False)
    frozen = _state(exp)["model"]
    fe_keys = [k for k in init if k.startswith("frontend.")]
    assert fe_keys and all(torch.equal(init[k], frozen[k]) for k in fe_keys)
    assert not torch.equal(init["out.weight"], frozen["out.weight"])
    train(data, exp, dict(cfg, max_steps=per_epoch + 3), progress=False)
    tuned = _state(exp)["model"]
    assert any(not torch.equal(frozen[k], tuned[k]) for k in fe_keys if tuned[k].is_floating_point()
               or tuned[k].is_complex())


def test_per_stage_freezing_threads_and_safe_checkpoints(data, tmp_path, monkeypatch):
    """Issue 14's recipe rows: unfreezing after frontend_freeze_epochs gives each stage back its own
    setting (a stage frozen on purpose stays frozen), train() restores the process's thread count,
    and checkpoints load with weights_only=True."""
    pytest.importorskip("kfrontend.frontend")
    from recipes.timit import train as T

    class WindowFrozen(M.Recognizer):
        def __init__(self, cfg):
            super().__init__(cfg)
            self.frontend.set_trainable({"window": False})

    monkeypatch.setattr(T, "Recognizer", WindowFrozen)
    exp = tmp_path / "kal"
    per_epoch = len(epoch_batches([1] * len(load_manifest(data, "train")), TINY["batch_size"], 0, 0))
    cfg = _cfg(frontend="kaleidoscope", frontend_freeze_epochs=1, frontend_lr=1e-2, dropout=0.0, cpu_threads=1)
    torch.manual_seed(cfg["seed"])
    init = WindowFrozen(cfg).state_dict()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train(data, exp, dict(cfg, max_steps=per_epoch + 3), progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    tuned = torch.load(exp / "last.pt", map_location="cpu", weights_only=True)["model"]
    assert torch.equal(tuned["frontend.window"], init["frontend.window"])
    assert not torch.equal(tuned["frontend.mel.k.parametrizations.twiddle.original"],
                           init["frontend.mel.k.parametrizations.twiddle.original"])


def test_nonfinite_losses_are_skipped_then_stop(data, tmp_path, monkeypatch):
    forward = M.Recognizer.forward
    calls = {"n": 0, "bad": {3, 4}}

    def flaky(self, wave, lengths, autocast_dtype=None):
        lp, n = forward(self, wave, lengths, autocast_dtype)
        if self.training:
            calls["n"] += 1
            if calls["bad"] == "all" or calls["n"] in calls["bad"]:
                lp = lp * float("nan")
        return lp, n

    monkeypatch.setattr(M.Recognizer, "forward", flaky)
    s = train(data, tmp_path / "a", _cfg(max_steps=6), progress=False)
    assert s["skipped_steps"] == 2 and s["steps"] == 6
    assert all(torch.isfinite(v).all() for v in _state(tmp_path / "a")["model"].values())
    calls.update(n=0, bad="all")
    with pytest.raises(RuntimeError, match="3 consecutive steps with a non-finite loss"):
        train(data, tmp_path / "b", _cfg(max_steps=10, max_bad_steps=2), progress=False)


def test_ddp_two_processes_gloo_equals_single_process(data, tmp_path):
    """Also crosses the end of a frozen-front-end epoch (DDP is rebuilt when the front end
    unfreezes) and, with the kaleidoscope front end, all-reduces its complex parameters."""
    n = len(load_manifest(data, "train"))
    for epoch in range(2):
        assert epoch_batches([1] * n, 2, 0, epoch, world=1) == epoch_batches([1] * n, 2, 0, epoch, world=2)
    try:
        import kfrontend.frontend  # noqa: F401
        kw = dict(frontend="kaleidoscope", frontend_freeze_epochs=1, dropout=0.0)
    except ImportError:
        kw = dict(dropout=0.0)
    # one step after unfreezing: Adam's first update moves every front-end twiddle by about lr
    # (sign-like), which makes later front-end gradients differ wherever round-off flipped a sign
    steps = len(epoch_batches([1] * n, 2, 0, 0)) + 1
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    train(data, single, _cfg(max_steps=steps, **kw), progress=False)
    r = _cli(["--standalone", "--nproc_per_node", "2", "-m", "recipes.timit", "train", "--data", str(data),
              "--exp", str(ddp), "--max-steps", str(steps), *_overrides(**kw)],
             module=("-m", "torch.distributed.run"))
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _state(single), _state(ddp)
    assert b["step"] == steps and len(b["rng"]) == 2
    torch.manual_seed(a["config"]["seed"])
    init = M.Recognizer(a["config"]).state_dict()
    # Gradients agree: Adam's first moments are sums of past gradients, so compare them (float32
    # all-reduce order differs from a single sum: ~1e-5 relative after a few steps; a wrong average
    # or a missing all-reduce is an O(1) error). Parameters agree less tightly because Adam
    # divides by sqrt(v), which amplifies round-off where v is tiny.
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and len(sa) > 0
    for i in sa:
        m = float(sa[i]["exp_avg"].abs().max())
        assert float((sa[i]["exp_avg"] - sb[i]["exp_avg"]).abs().max()) <= 1e-3 * m + 1e-12, i
    update = max(float((a["model"][k] - init[k]).abs().max()) for k in init)
    diff = max(float((a["model"][k] - b["model"][k]).abs().max()) for k in init)
    assert update > 5e-3 and diff < 0.05 * update, (update, diff)


def test_demo_end_to_end_and_idempotent(tmp_path, capsys):
    from recipes.timit.__main__ import main
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(dict(TINY, save_every_steps=2)))
    args = ["demo", "--work", str(tmp_path / "w"), "--speakers", "6", "--utts-per-speaker", "4",
            "--config", str(cfg), "--max-steps", "4", "--frontends", "mfsc,mfcc"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for f in ("results.md", "curves.png", "exp/mfsc/curves.png", "exp/mfcc/decode_test/hyp.txt",
              "exp/mfcc/decode_dev/hyp.txt"):
        assert (tmp_path / "w" / f).exists(), f
    first = (tmp_path / "w" / "results.md").read_text()
    # one table row per front end, in order, with numbers that parse and add up; printed too
    lines = [line for line in first.splitlines() if line.startswith("| ")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(head, (c.strip() for c in line.strip("|").split("|")))) for line in lines[1:]]
    assert [r["front end"] for r in rows] == ["mfsc", "mfcc"]
    for r in rows:
        assert r["front end"] in out and r["test PER %"] in out
        sub, dele, ins, ref = (int(r[k]) for k in ("sub", "del", "ins", "ref phones"))
        assert ref == sum(len(u["phones39"]) for u in load_manifest(tmp_path / "w" / "data", "test"))
        assert float(r["test PER %"]) == pytest.approx(100 * (sub + dele + ins) / ref, abs=0.006)
        # PER may pass 100 only through insertions: its substitution + deletion part is in [0, 100]
        assert 0 <= 100 * (sub + dele) / ref <= 100 and 0 <= 100 * ins / ref <= float(r["test PER %"])
        assert all(0 <= float(r[k]) <= 100 for k in ("dev PER %", "test PER %")), r  # few insertions here
        assert int(r["ckpt step"]) <= 4
    state = _state(tmp_path / "w" / "exp" / "mfsc")["model"]
    assert main(args) == 0  # everything done: nothing is recomputed, same results
    assert "already complete" in capsys.readouterr().out
    assert (tmp_path / "w" / "results.md").read_text() == first
    assert all(torch.equal(v, _state(tmp_path / "w" / "exp" / "mfsc")["model"][k]) for k, v in state.items())
