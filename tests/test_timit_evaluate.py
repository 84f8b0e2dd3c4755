"""recipes.timit.evaluate beyond decoding (tests/test_mutation_regressions.py scores a hand-worked
decode): loading a checkpoint, the refusals, and the results table, each against values written
out here.  Fast (a 16-unit model, no training)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recipes.timit import evaluate as E
from recipes.timit.model import Recognizer
from recipes.timit.train import load_config


def _cfg():
    return load_config("small", dict(hidden=16, layers=1, dropout=0.0))


def _save(path, model, cfg, **extra):
    torch.save({"config": cfg, "model": model.state_dict(), "optimizer": {"x": 1}, "rng": 2, "schedule": 3,
                **extra}, path)


def test_load_experiment_best_then_last_and_metadata(tmp_path):
    cfg = _cfg()
    torch.manual_seed(1)
    best, last = Recognizer(cfg), Recognizer(cfg)
    _save(tmp_path / "best.pt", best, cfg, step=7)
    _save(tmp_path / "last.pt", last, cfg, step=9)
    for which, want, step in (("best", best, 7), ("last", last, 9)):
        model, c, meta = E.load_experiment(tmp_path, which)
        assert c == cfg and meta["step"] == step and meta["checkpoint"] == str(tmp_path / f"{which}.pt")
        assert not ({"model", "optimizer", "rng", "schedule"} & set(meta))  # only the metadata
        assert all(torch.equal(v, want.state_dict()[k]) for k, v in model.state_dict().items())
        assert next(model.parameters()).device.type == "cpu"
    (tmp_path / "best.pt").unlink()  # no best.pt: best falls back to last.pt
    model, _, meta = E.load_experiment(tmp_path, "best")
    assert meta["checkpoint"] == str(tmp_path / "last.pt") and meta["step"] == 9
    (tmp_path / "last.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"^no checkpoint in .* \(expected best.pt or last.pt\): train first$"):
        E.load_experiment(tmp_path, "best")
    _save(tmp_path / "best.pt", best, cfg, step=7)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):  # last is asked for: no fallback to best
        E.load_experiment(tmp_path, "last")


def test_evaluate_refuses_other_splits(tmp_path):
    with pytest.raises(ValueError, match=r"^split must be 'dev' or 'test', got 'train'$"):
        E.evaluate(tmp_path, "train")


ROW = {"exp": "kal", "frontend": "kaleidoscope", "split": "test", "per": 21.456, "sub": 10, "del": 5, "ins": 2,
       "ref_phones": 80, "params": {"total": 1234567, "frontend": 8901}, "step": 300, "train_wall_s": 61.6}


def test_table_plain_and_markdown():
    other = dict(ROW, exp="mfcc-long-name", frontend="mfcc", per=7.0, train_wall_s=None, step=None)
    head = ["experiment", "front end", "split", "PER %", "sub", "del", "ins", "ref phones",
            "params (front end)", "ckpt step", "train wall s"]
    cells = [["kal", "kaleidoscope", "test", "21.46", "10", "5", "2", "80", "1,234,567 (8,901)", "300", "62"],
             ["mfcc-long-name", "mfcc", "test", "7.00", "10", "5", "2", "80", "1,234,567 (8,901)", "None", "-"]]
    md = E.table([ROW, other], markdown=True).splitlines()
    assert md[0] == "| " + " | ".join(head) + " |" and md[1] == "|" + "---|" * 11
    assert md[2:] == ["| " + " | ".join(c) + " |" for c in cells]
    plain = E.table([ROW, other]).splitlines()
    widths = [max(len(h), len(cells[0][i]), len(cells[1][i])) for i, h in enumerate(head)]
    want = ["  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in [head] + cells]
    assert plain == want
    assert E.table([]) == "  ".join(head)  # no rows: the header alone


def test_decode_rows_skips_infeasible_utterances_and_restores_the_mode(tmp_path):
    """An utterance CTC cannot align (fewer frames than labels: infinite loss) is left out of the
    mean loss, not averaged in as inf; all infeasible gives NaN; the model's train/eval mode is
    restored; small batches give the same hypotheses as one batch (sorted by length, written back
    in manifest order)."""
    import math

    import numpy as np
    from test_mutation_regressions import ROWS, _ctc_nll, _manifest, _paths, _StubModel

    from recipes.timit.data import encode

    rows = _manifest(tmp_path)
    paths = _paths()
    short = dict(rows[0], utt="C", num_samples=2800)  # 3 frames for 8 labels
    import soundfile as sf
    sf.write(str(tmp_path / "C.wav"), np.zeros(2800, dtype=np.int16), 16000, subtype="PCM_16")
    short["audio"] = str(tmp_path / "C.wav")
    paths[2800] = [1, 2, 3]
    model = _StubModel(paths).train()
    decoded, loss = E.decode_rows(model, [rows[1], short, rows[0]], torch.device("cpu"), batch_size=1)
    assert model.training  # put back as it was
    assert [d["utt"] for d in decoded] == ["B", "C", "A"]
    want = np.mean([_ctc_nll(model.lp[r["samples"]].double().numpy(), encode(r["phones48"].split()))
                    / len(r["phones48"].split()) for r in ROWS])
    assert loss == pytest.approx(want, rel=1e-4)
    _, loss = E.decode_rows(model.eval(), [short], torch.device("cpu"))
    assert math.isnan(loss) and not model.training
    together, _ = E.decode_rows(model, rows, torch.device("cpu"), batch_size=16)
    assert [d["hyp48"] for d in together] == [d["hyp48"] for d in decoded[::2][::-1]]


def test_checkpoints_load_without_running_code(tmp_path):
    """load_checkpoint is torch.load(weights_only=True): a checkpoint that would run code on load
    is refused; one from before the RNG state was stored as a list (numpy's arrays) still loads."""
    import pickle

    import numpy as np

    old = {"rng": [{"numpy": np.random.get_state()}], "config": {"a": 1}}
    torch.save(old, tmp_path / "old.pt")
    got = E.load_checkpoint(tmp_path / "old.pt")
    assert np.array_equal(got["rng"][0]["numpy"][1], old["rng"][0]["numpy"][1]) and got["config"] == {"a": 1}

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        E.load_checkpoint(tmp_path / "evil.pt")


def test_evaluate_row_and_files_in_full(tmp_path, monkeypatch):
    """Every field of the result row and of per.json, the output folders for greedy and beam
    decoding, the arguments passed on (checkpoint choice, device, batch size, manifests from the
    config unless ``data`` is given), and the training wall time read from summary.json."""
    import json

    from test_mutation_regressions import HYP_TXT, _manifest, _paths, _StubModel

    rows = _manifest(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    for split in ("test", "dev"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    exp = tmp_path / "run7"
    exp.mkdir()
    stub = _StubModel(_paths())
    seen = []

    def fake_load(e, which, device):
        seen.append((Path(e), which, device))
        return stub, {"frontend": "stub", "data": str(data)}, {"checkpoint": str(exp / f"{which}.pt"), "step": 42}

    monkeypatch.setattr(E, "load_experiment", fake_load)
    calls = []
    real = E.decode_rows
    monkeypatch.setattr(E, "decode_rows", lambda *a, **k: calls.append(k) or real(*a, **k))
    row = E.evaluate(exp)  # defaults: test split, best checkpoint, greedy, CPU here
    assert seen[-1] == (exp, "best", torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    assert calls[-1] == {"batch_size": 16, "beam": 1}
    want = {"exp": "run7", "frontend": "stub", "split": "test", "beam": 1, "checkpoint": "best.pt", "step": 42,
            "params": {"frontend": 0, "recognizer": 1, "total": 1}, "train_wall_s": None,
            "per": 20.0, "errors": 3, "sub": 1, "del": 1, "ins": 1, "ref_phones": 15, "utterances": 2}
    loss = row.pop("loss")
    assert row == want and loss > 0
    per_json = json.loads((exp / "decode_test" / "per.json").read_text())
    assert per_json.pop("loss") == pytest.approx(loss) and per_json == want
    assert (exp / "decode_test" / "hyp.txt").read_text() == HYP_TXT
    assert sorted(p.name for p in (exp / "decode_test").iterdir()) == ["hyp.txt", "per.json"]  # no .tmp left

    (exp / "summary.json").write_text(json.dumps({"wall_s": 12.5}))
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "dev.jsonl").write_text(json.dumps(rows[0]) + "\n")  # data= overrides the config's
    row = E.evaluate(exp, "dev", which="last", beam=3, device="cpu", batch_size=5, data=other)
    assert seen[-1] == (exp, "last", torch.device("cpu")) and calls[-1] == {"batch_size": 5, "beam": 3}
    assert (row["split"], row["beam"], row["checkpoint"], row["train_wall_s"], row["ref_phones"]) == (
        "dev", 3, "last.pt", 12.5, 8)
    assert json.loads((exp / "decode_dev_beam3" / "per.json").read_text())["beam"] == 3
    for _ in range(2):  # beam 2 is a beam search (its own folder); a rerun overwrites in place
        E.evaluate(exp, "dev", beam=2, device="cpu", data=other)
    assert json.loads((exp / "decode_dev_beam2" / "per.json").read_text())["beam"] == 2
    assert json.loads((exp / "decode_test" / "per.json").read_text())["beam"] == 1


def test_load_checkpoint_is_weights_only(tmp_path):
    """Plain checkpoints load; numpy arrays (an older RNG state format) load too; anything that
    would run code on loading is refused."""
    import numpy as np

    torch.save({"a": torch.ones(2), "n": 3}, tmp_path / "plain.pt")
    got = E.load_checkpoint(tmp_path / "plain.pt")
    assert torch.equal(got["a"], torch.ones(2)) and got["n"] == 3
    torch.save({"rng": np.arange(4, dtype=np.uint32)}, tmp_path / "numpy.pt")
    assert np.array_equal(E.load_checkpoint(tmp_path / "numpy.pt")["rng"], np.arange(4))
    torch.save({"bad": _Evil()}, tmp_path / "evil.pt")
    import pickle
    with pytest.raises(pickle.UnpicklingError):
        E.load_checkpoint(tmp_path / "evil.pt")


class _Evil:
    """Stands for an arbitrary pickled object (its class would be imported and run on loading)."""


def test_load_experiment_default_is_best(tmp_path):
    cfg = _cfg()
    _save(tmp_path / "best.pt", Recognizer(cfg), cfg, step=1)
    _save(tmp_path / "last.pt", Recognizer(cfg), cfg, step=2)
    _, _, meta = E.load_experiment(tmp_path)
    assert meta["step"] == 1


# ---- where tensors go, without a GPU ------------------------------------------------------------
# On a CPU-only machine every tensor is on the CPU, so dropping a device argument cannot show
# (docs/TESTING.md, "CPU-only" survivors).  Stand-ins: a checkpoint whose storages are tagged
# "cuda:0" (what a GPU run writes; only the tag differs from a CPU checkpoint), the meta device as
# the second device a model is moved to, and torch.cuda.is_available patched to say yes.
def _save_as_if_on_gpu(obj, path, monkeypatch):
    """torch.save(obj, path) with every storage tagged as saved from cuda:0 (torch.serialization
    reads the tag through its module-level location_tag), as a checkpoint written by a GPU run."""
    import torch.serialization as S

    with monkeypatch.context() as m:
        m.setattr(S, "location_tag", lambda storage: "cuda:0")
        torch.save(obj, path)


def test_load_checkpoint_maps_a_gpu_checkpoint_to_the_cpu(tmp_path, monkeypatch):
    """A checkpoint written on a GPU loads on the CPU (map_location="cpu"): its tensors are CPU
    tensors with the saved values, and load_experiment builds the model from it.  Without the
    mapping torch.load would put them on cuda:0 (an error on a machine without CUDA)."""
    cfg = _cfg()
    torch.manual_seed(3)
    model = Recognizer(cfg)
    _save_as_if_on_gpu({"a": torch.arange(4.0), "n": 3}, tmp_path / "gpu.pt", monkeypatch)
    got = E.load_checkpoint(tmp_path / "gpu.pt")
    assert got["a"].device == torch.device("cpu") and torch.equal(got["a"], torch.arange(4.0)) and got["n"] == 3
    exp = tmp_path / "exp"
    exp.mkdir()
    _save_as_if_on_gpu({"config": cfg, "model": model.state_dict(), "step": 5}, exp / "best.pt", monkeypatch)
    loaded, _, meta = E.load_experiment(exp, device="cpu")
    assert meta["step"] == 5
    assert all(v.device.type == "cpu" and torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())


@pytest.mark.parametrize("device", ["meta", torch.device("meta")])
def test_load_experiment_moves_the_model_to_the_device(tmp_path, device):
    """The model is moved to the device asked for (meta stands in for a GPU): every parameter and
    buffer is there, with the checkpoint's shapes and dtypes."""
    cfg = _cfg()
    ref = Recognizer(cfg)
    _save(tmp_path / "best.pt", ref, cfg, step=1)
    model, _, _ = E.load_experiment(tmp_path, device=device)
    state = model.state_dict()
    assert state.keys() == ref.state_dict().keys()
    for k, v in ref.state_dict().items():
        assert state[k].device == torch.device("meta") and (state[k].shape, state[k].dtype) == (v.shape, v.dtype)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("cuda", [True, False])
def test_evaluate_default_device_is_cuda_when_available(tmp_path, monkeypatch, cuda):
    """device=None means torch.device("cuda") when CUDA is available and "cpu" otherwise (here
    torch.cuda.is_available is patched, so both branches run on any machine); a device given
    wins.  The device is only recorded: loading stops there."""
    seen = []

    def fake_load(e, which, device):
        seen.append(device)
        raise _Stop

    monkeypatch.setattr(E, "load_experiment", fake_load)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    for given, want in ((None, "cuda" if cuda else "cpu"), ("cpu", "cpu"), (torch.device("meta"), "meta")):
        with pytest.raises(_Stop):
            E.evaluate(tmp_path, "test", device=given)
        assert seen[-1] == torch.device(want) and isinstance(seen[-1], torch.device)


def test_evaluate_decodes_on_the_device_it_loaded_the_model_to(tmp_path, monkeypatch):
    """evaluate() hands decode_rows the device it chose and loaded the model to, so the batches go
    where the model is (a spy: on a CPU-only machine the two cannot differ in any value)."""
    import json

    from test_mutation_regressions import _manifest, _paths, _StubModel

    rows = _manifest(tmp_path)
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    exp = tmp_path / "exp"
    exp.mkdir()
    loaded_to, decoded_on = [], []

    def fake_load(e, which, device):
        loaded_to.append(device)
        return _StubModel(_paths()), {"frontend": "stub", "data": str(tmp_path)}, {"checkpoint": "best.pt"}

    real = E.decode_rows

    def spy(model, rows, device, **kw):
        decoded_on.append(device)
        return real(model, rows, device, **kw)

    monkeypatch.setattr(E, "load_experiment", fake_load)
    monkeypatch.setattr(E, "decode_rows", spy)
    for given in ("cpu", torch.device("cpu")):
        E.evaluate(exp, "test", device=given)
    assert loaded_to == decoded_on == [torch.device("cpu")] * 2
