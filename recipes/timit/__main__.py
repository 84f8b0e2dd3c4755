"""python -m recipes.timit {synth,prepare,train,evaluate,compare,demo} ... (run from the repository root)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _degradation(a, command: str):
    """The --snr/--noise/--reverb/--rt60 arguments checked before any work (None: refused)."""
    from recipes.timit.degrade import Degradation
    try:
        return Degradation(snr=a.snr or (), noise=a.noise, reverb=a.reverb, rt60=a.rt60)
    except ValueError as e:
        print(f"{command}: {e}", file=sys.stderr)
        return None


def _synth_kwargs(deg, a) -> dict:
    return dict(snr=deg.snr, noise=deg.noise, reverb=deg.reverb, rt60=deg.rt60, voices=a.voices)


def _synth(a):
    from recipes.timit.synth import synth_corpus
    deg = _degradation(a, "synth")
    if deg is None:
        return 2
    synth_corpus(a.out, speakers=a.speakers, utts_per_speaker=a.utts_per_speaker, seed=a.seed,
                 layout=a.layout, case=a.case, audio_format=a.audio, jobs=a.jobs, **_synth_kwargs(deg, a))


def _prepare(a):
    from recipes.timit.prepare import CorpusError, prepare
    try:
        prepare(a.timit, a.out, skip_bad=a.skip_bad)
    except CorpusError as e:
        print(f"prepare: {e}", file=sys.stderr)
        return 1


def _train(a):
    from recipes.timit.train import load_config, train
    over = list(a.overrides)
    if a.max_steps is not None:
        over.append(f"max_steps={a.max_steps}")
    cfg = load_config(a.config, over)
    train(a.data, a.exp, cfg)


def _evaluate(a):
    from recipes.timit.evaluate import evaluate, table
    rows = [evaluate(e, a.split, which=a.checkpoint, beam=a.beam, data=a.data) for e in a.exp]
    print(table(rows))
    if a.markdown:
        Path(a.markdown).write_text(table(rows, markdown=True) + "\n")


def _compare(a):
    from recipes.timit.compare import compare
    try:
        report = compare(a.data, a.work, a.frontends, a.seeds, config=a.config, max_steps=a.max_steps,
                         overrides=a.overrides, jobs=a.jobs, shard=a.shard)
    except (ValueError, FileNotFoundError) as e:
        print(f"compare: {e}", file=sys.stderr)
        return 2
    return 1 if report["failed"] else 0


def _demo(a):
    from recipes.timit.compare import run_one, runs_table
    from recipes.timit.prepare import prepare
    from recipes.timit.train import load_config
    deg = _degradation(a, "demo")
    if deg is None:
        return 2
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if a.timit:
        corpus = Path(a.timit)
    else:
        from recipes.timit.synth import synth_corpus
        corpus = synth_corpus(work / "corpus", speakers=a.speakers, utts_per_speaker=a.utts_per_speaker,
                              seed=a.seed, **_synth_kwargs(deg, a))
    data = work / "data"
    done = data / "prepare.json"
    if not (done.exists() and json.loads(done.read_text())["corpus"] == str(corpus.resolve())):
        prepare(corpus, data, skip_bad=a.skip_bad)
    rows = []
    for fe in a.frontends.split(","):
        # The config's defaults are the recipe's fine-tuning defaults; the flags override them.
        over = {"frontend": fe, "max_steps": a.max_steps}
        if fe not in ("mfsc", "mfcc"):
            if a.frontend_lr is not None:
                over["frontend_lr"] = a.frontend_lr
            if a.freeze_epochs is not None:
                over["frontend_freeze_epochs"] = a.freeze_epochs
        cfg = load_config(a.config, over)
        rows.append(run_one(data, work / "exp" / fe, cfg))  # train (or resume), evaluate dev and test
    print()
    print(runs_table(rows))
    text = "PER % on the 39-phone set, greedy decoding, best-dev checkpoint.\n\n" + runs_table(rows) + "\n"
    from recipes.timit.utils import write_text_atomic
    write_text_atomic(work / "results.md", text)
    _combined_curves(work / "exp", [fe for fe in a.frontends.split(",")])
    print(f"\ncurves: {work / 'exp'}/<front end>/curves.png and {work / 'curves.png'}; "
          f"per-utterance hypotheses: {work / 'exp'}/<front end>/decode_test/hyp.txt")


def _combined_curves(exp_root: Path, names: list[str]):
    from recipes.timit.utils import pyplot, read_log, save_figure
    fig, ax = pyplot().subplots(1, 2, figsize=(10, 3.6))
    for name in names:
        for i, (fname, key) in enumerate((("train_log.csv", "loss"), ("dev_log.csv", "dev_per"))):
            r = read_log(exp_root / name, fname)
            if r:
                ax[i].plot([int(x["step"]) for x in r], [float(x[key]) for x in r], lw=1, label=name)
    ax[0].set(xlabel="step", ylabel="train CTC loss per phone", yscale="log")
    ax[1].set(xlabel="step", ylabel="dev PER % (39 phones)")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()
    save_figure(fig, exp_root.parent / "curves.png")


def _degradation_args(s):
    g = s.add_argument_group("noise and reverberation (synthetic corpus; recipes/timit/degrade.py)")
    g.add_argument("--snr", default=None,
                   help="dB values, one drawn per utterance, e.g. 20,10,5 (inf: clean); default: no noise")
    g.add_argument("--noise", default="white,pink,brown,babble", help="noise types, one drawn per utterance")
    g.add_argument("--reverb", default="0", help="probability that an utterance is reverberant (0..1)")
    g.add_argument("--rt60", default="0.2,0.8", help="RT60 range LOW,HIGH in seconds (0.1..1.2)")
    g.add_argument("--voices", choices=("standard", "extended"), default="standard",
                   help="espeak-ng voice variants: standard (m1-m8, f1-f5) or extended (+20 more)")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m recipes.timit",
                                description="TIMIT phone recognition with learnable kaleidoscope front ends")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="build a synthetic TIMIT-layout corpus with espeak-ng")
    s.add_argument("--out", required=True)
    s.add_argument("--speakers", type=int, default=12)
    s.add_argument("--utts-per-speaker", type=int, default=10)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--layout", choices=("ldc", "flat"), default="ldc")
    s.add_argument("--case", choices=("upper", "lower"), default="upper")
    s.add_argument("--audio", choices=("sphere", "riff"), default="sphere")
    s.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPU count)")
    _degradation_args(s)
    s.set_defaults(fn=_synth)

    s = sub.add_parser("prepare", help="train/dev/test manifests from a TIMIT corpus")
    s.add_argument("--timit", required=True, help="corpus root (LDC layout, or the flat NLTK sample)")
    s.add_argument("--out", required=True)
    s.add_argument("--skip-bad", action="store_true", help="report bad files and leave them out")
    s.set_defaults(fn=_prepare)

    s = sub.add_parser("train", help="train (or resume) an experiment")
    s.add_argument("--data", required=True, help="directory written by prepare")
    s.add_argument("--exp", required=True, help="experiment directory (resumed when it holds last.pt)")
    s.add_argument("--config", default="small", help="small | paper | path to a JSON config")
    s.add_argument("--max-steps", type=int, default=None)
    s.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. frontend=kaleidoscope")
    s.set_defaults(fn=_train)

    s = sub.add_parser("evaluate", help="decode and score experiments; print a comparison table")
    s.add_argument("--exp", required=True, nargs="+")
    s.add_argument("--split", choices=("dev", "test"), default="test")
    s.add_argument("--checkpoint", choices=("best", "last"), default="best")
    s.add_argument("--beam", type=int, default=1, help="CTC prefix beam width (1: greedy)")
    s.add_argument("--markdown", default=None, help="also write the table as Markdown to this file")
    s.add_argument("--data", default=None, help="manifests directory (default: the one used in training)")
    s.set_defaults(fn=_evaluate)

    s = sub.add_parser("compare", help="train front ends over seeds; mean ± std of dev/test PER, resumable")
    s.add_argument("--data", required=True, help="directory written by prepare")
    s.add_argument("--work", required=True, help="runs go to WORK/<front end>/seed<k>/; WORK/compare.{md,json,png}")
    s.add_argument("--frontends", default="mfsc,kaleidoscope", help="comma-separated front ends")
    s.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (config key seed)")
    s.add_argument("--config", default="small", help="small | paper | path to a JSON config")
    s.add_argument("--max-steps", type=int, default=None)
    s.add_argument("--jobs", type=int, default=1,
                   help="runs at once, each in its own process with cpu_threads=1 unless overridden")
    s.add_argument("--shard", default="0/1",
                   help="i/n: this process takes runs i, i+n, ... (start n commands to share the runs)")
    s.add_argument("overrides", nargs="*",
                   help="key=value for every run, or FRONTEND:key=value for that front end's runs "
                        "(e.g. kaleidoscope:frontend_freeze_epochs=2)")
    s.set_defaults(fn=_compare)

    s = sub.add_parser("demo", help="synth -> prepare -> train -> evaluate, resumable")
    s.add_argument("--work", required=True)
    s.add_argument("--timit", default=None, help="use this real TIMIT instead of the synthetic corpus")
    s.add_argument("--speakers", type=int, default=12)
    s.add_argument("--utts-per-speaker", type=int, default=10)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--config", default="small")
    s.add_argument("--frontends", default="mfsc,kaleidoscope",
                   help="comma-separated front ends to train and compare")
    s.add_argument("--max-steps", type=int, default=300)
    s.add_argument("--frontend-lr", type=float, default=None, help="default: the config's frontend_lr")
    s.add_argument("--freeze-epochs", type=int, default=None,
                   help="epochs with the learnable front ends frozen before fine-tuning "
                        "(default: the config's frontend_freeze_epochs)")
    s.add_argument("--skip-bad", action="store_true")
    _degradation_args(s)
    s.set_defaults(fn=_demo)

    a = p.parse_args(argv)
    return a.fn(a) or 0


if __name__ == "__main__":
    sys.exit(main())
