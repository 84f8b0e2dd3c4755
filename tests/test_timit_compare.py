"""The seeds study (`compare`): runs land in WORK/<front end>/seed<k>/, the report's mean and sample
std match the per-seed results, a rerun trains nothing, shards split the runs and together give the
whole table, per-front-end overrides reach only their runs, and bad arguments are refused."""
import json
import statistics

import pytest
import torch

pytest.importorskip("espeakng_loader", reason="the synthetic corpus needs espeakng-loader")

from helpers import TINY_RECIPE as TINY, tiny_corpus_data  # noqa: E402
from recipes.timit.compare import compare, split_overrides  # noqa: E402
from recipes.timit.train import load_config  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("compare")
    tiny_corpus_data(base)
    cfg = base / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    return base / "data", str(cfg)


def _kw(cfg, **kw):
    return dict(dict(config=cfg, max_steps=2, progress=False), **kw)


def test_report_resume_and_shards(setup, tmp_path):
    data, cfg = setup
    w = tmp_path / "w"
    # two shards, as two processes would run them: the second one's report holds every run
    r0 = compare(data, w, "mfsc,mfcc", "0,1", shard="0/2", **_kw(cfg))
    assert len(r0["rows"]) == 2 and len(r0["missing"]) == 2
    assert "Not finished yet (2)" in (w / "compare.md").read_text()
    r = compare(data, w, "mfsc,mfcc", "0,1", shard=(1, 2), **_kw(cfg))
    assert not r["missing"] and not r["failed"] and len(r["rows"]) == 4
    for fe in ("mfsc", "mfcc"):
        for seed in (0, 1):
            res = json.loads((w / fe / f"seed{seed}" / "result.json").read_text())
            assert res["frontend"] == fe and res["seed"] == seed
            assert json.loads((w / fe / f"seed{seed}" / "config.json").read_text())["seed"] == seed
        s = r["summary"][fe]
        assert s["n"] == 2 and s["seeds"] == [0, 1]
        for split in ("dev", "test"):
            v = [json.loads((w / fe / f"seed{k}" / "result.json").read_text())[f"{split}_per"] for k in (0, 1)]
            assert s[f"{split}_per"] == v
            assert s[f"{split}_mean"] == pytest.approx(sum(v) / 2)
            assert s[f"{split}_std"] == pytest.approx(abs(v[0] - v[1]) / 2 ** 0.5)  # sample std, n - 1
    md = (w / "compare.md").read_text()
    for fe in ("mfsc", "mfcc"):
        s = r["summary"][fe]
        assert f"| {fe} | 2 | {s['dev_mean']:.2f} ± {s['dev_std']:.2f} | {s['test_mean']:.2f} ± {s['test_std']:.2f} |" in md
        assert f"s0: {s['test_per'][0]:.2f}, s1: {s['test_per'][1]:.2f}" in md
    assert "sample" in md and "Not finished" not in md
    assert json.loads((w / "compare.json").read_text())["summary"]["mfcc"]["n"] == 2
    assert (w / "compare.png").stat().st_size > 0
    # the same command again: no run is trained or evaluated again
    stamps = {p: p.stat().st_mtime_ns for p in w.rglob("*") if p.name in ("last.pt", "result.json")}
    assert len(stamps) == 8
    compare(data, w, "mfsc,mfcc", "0,1", **_kw(cfg))
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def test_two_jobs_and_per_frontend_overrides(setup, tmp_path):
    data, cfg = setup
    w = tmp_path / "w"
    r = compare(data, w, "mfsc,kaleidoscope", "3", jobs=2, overrides=["lr=0.004", "kaleidoscope:frontend_lr=0.002"],
                **_kw(cfg))
    assert not r["failed"] and len(r["rows"]) == 2
    k = json.loads((w / "kaleidoscope" / "seed3" / "config.json").read_text())
    m = json.loads((w / "mfsc" / "seed3" / "config.json").read_text())
    assert (k["lr"], k["frontend_lr"], k["cpu_threads"]) == (0.004, 0.002, 1)
    assert (m["lr"], m["frontend_lr"]) == (0.004, load_config(cfg)["frontend_lr"])  # the default, whatever it is
    assert r["summary"]["mfsc"]["test_std"] is None and "| mfsc | 1 |" in (w / "compare.md").read_text()
    assert not list(w.rglob(".lock"))
    ckpt = torch.load(w / "kaleidoscope" / "seed3" / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["step"] == 2


@pytest.mark.parametrize("kw, name", [
    (dict(frontends="mfsc,bogus"), "--frontends"), (dict(seeds="0,x"), "--seeds"), (dict(seeds="0,0"), "--seeds"),
    (dict(shard="2/2"), "--shard"), (dict(shard="a"), "--shard"), (dict(jobs=0), "--jobs"),
    (dict(overrides=["dense:lr=1"]), "dense"), (dict(overrides=["nosuchkey=1"]), "nosuchkey"),
])
def test_bad_arguments(setup, tmp_path, kw, name):
    data, cfg = setup
    args = dict(frontends="mfsc", seeds="0", **_kw(cfg))
    args.update(kw)
    with pytest.raises(ValueError, match=name):
        compare(data, tmp_path / "w", args.pop("frontends"), args.pop("seeds"), **args)
    assert not (tmp_path / "w").exists()  # refused before any work


def test_cli(setup, tmp_path, capsys):
    from recipes.timit.__main__ import main
    data, cfg = setup
    assert main(["compare", "--data", str(tmp_path / "nodata"), "--work", str(tmp_path / "w")]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["compare", "--data", str(data), "--work", str(tmp_path / "w"), "--seeds", "1",
                 "--frontends", "mfcc", "--config", cfg, "--max-steps", "1", "dropout=0.0"]) == 0
    out = capsys.readouterr().out
    assert "| mfcc | 1 |" in out and (tmp_path / "w" / "mfcc" / "seed1" / "result.json").exists()


def test_split_overrides():
    per = split_overrides(["a=1", "x:b=c:d", "y:a=2"], ["x", "y"])
    assert per == {"x": {"a": 1, "b": "c:d"}, "y": {"a": 2}}
    assert statistics.stdev([1.0, 3.0]) == pytest.approx(2 ** 0.5)  # the std the report uses is n - 1
