"""Build train / dev / test manifests from a TIMIT corpus.

Layouts read (names matched case-insensitively):

- LDC: ``<root>/{TRAIN,TEST}/DR<n>/<SPEAKER>/<UTT>.{WAV,PHN,WRD,TXT}``, upper or lower case, audio
  NIST SPHERE or RIFF (a ``<UTT>.WAV.wav`` RIFF copy next to the SPHERE file is used only when
  ``<UTT>.WAV`` is absent);
- flat (the TIMIT sample the NLTK project distributed): ``<root>/dr<n>-<speaker>/<utt>.wav``.

SA sentences are left out. Splits:

- **standard**, when all 50 dev and 24 core-test speakers are present in the corpus's TEST part:
  train = the TRAIN speakers (3,696 utterances on the full corpus), dev = :data:`DEV_SPEAKERS`
  (400), test = :data:`CORE_TEST_SPEAKERS` (core test, 192);
- **fallback** (a corpus without those speakers: the sample, a synthetic corpus, a partial copy):
  speaker-disjoint. Held-out speakers are the TEST speakers when the corpus has at least two,
  otherwise 2 x round(n / 8) (at least 1 + 1) speakers chosen as every k-th speaker of the list
  sorted by (sex, dialect region, speaker); held-out speakers sorted the same way go alternately
  to dev and test (so both get both sexes when possible); everyone else trains.

Labels: ``phones61`` as in the .PHN file; ``phones48`` (training targets) and ``phones39``
(scoring references) folded with :mod:`recipes.timit.phones`, ``q`` removed.
Missing (no .PHN or no audio), unreadable or inconsistent files (unknown labels, non-monotonic or
overlapping segments, segments past the end of the audio, a sample rate other than 16 kHz,
truncated audio, the same utterance twice) are listed with their paths; ``prepare`` fails on any,
unless ``skip_bad`` (then they are reported and left out).
"""
from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from pathlib import Path

from recipes.timit.phones import PHONES61, fold61to39, fold61to48
from recipes.timit.sphere import read_audio

DEV_SPEAKERS = tuple(
    "faks0 fdac1 fjem0 mgwt0 mjar0 mmdb1 mmdm2 mpdf0 fcmh0 fkms0 mbdg0 mbwm0 mcsh0 fadg0 fdms0 "
    "fedw0 mgjf0 mglb0 mrtk0 mtaa0 mtdt0 mthc0 mwjg0 fnmr0 frew0 fsem0 mbns0 mmjr0 mdls0 mdlf0 "
    "mdvc0 mers0 fmah0 fdrw0 mrcs0 mrjm4 fcal1 mmwh0 fjsj0 majc0 mjsw0 mreb0 fgjd0 fjmg0 mroa0 "
    "mteb0 mjfc0 mrjr0 fmml0 mrws1".split())
CORE_TEST_SPEAKERS = tuple(
    "mdab0 mwbt0 felc0 mtas1 mwew0 fpas0 mjmp0 mlnt0 fpkt0 mlll0 mtls0 fjlm0 mbpm0 mklt0 fnlp0 "
    "mcmj0 mjdh0 fmgd0 mgrt0 mnjm0 fdhc0 mjln0 mpam0 fmld0".split())
assert len(DEV_SPEAKERS) == 50 and len(CORE_TEST_SPEAKERS) == 24

SAMPLE_RATE = 16000
_FLAT_DIR = re.compile(r"^dr(\d)-([a-z]{4}\d)$")
_SPEAKER = re.compile(r"^[fm][a-z]{3}\d$")
_DR = re.compile(r"^dr(\d)$")


class CorpusError(ValueError):
    """Bad corpus files; ``problems`` lists (path, reason)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = "\n".join(f"  {p}: {r}" for p, r in problems)
        super().__init__(f"{len(problems)} bad corpus file(s) (use --skip-bad to leave them out):\n{lines}")


def read_phn(path) -> list[tuple[int, int, str]]:
    """``begin end label`` lines -> list of tuples; ValueError (with the path) on bad lines."""
    segs = []
    for k, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(f"{path}:{k}: expected 'begin end label', got {line!r}")
        try:
            a, b = int(parts[0]), int(parts[1])
        except ValueError:
            raise ValueError(f"{path}:{k}: begin/end are not integers: {line!r}") from None
        segs.append((a, b, parts[2]))
    return segs


def _check_phn(segs, path, num_samples) -> None:
    if not segs:
        raise ValueError(f"{path}: no phone segments")
    unknown = sorted({lab for _, _, lab in segs if lab not in PHONES61})
    if unknown:
        raise ValueError(f"{path}: unknown phone label(s) {', '.join(unknown)} (not in the TIMIT-61 set)")
    prev_end = 0
    for a, b, lab in segs:
        if not (0 <= a < b):
            raise ValueError(f"{path}: segment {a} {b} {lab} is empty or negative")
        if a < prev_end:
            raise ValueError(f"{path}: segment {a} {b} {lab} starts before the previous one ends ({prev_end})")
        prev_end = b
    if prev_end > num_samples:
        raise ValueError(f"{path}: phones end at sample {prev_end}, past the audio's {num_samples} "
                         f"samples (truncated audio?)")


def _reason(e: Exception, path) -> str:
    msg = str(e)
    return msg[len(str(path)) + 2:] if msg.startswith(f"{path}: ") else msg


def _locate(path: Path, root: Path):
    """(subset or None, dialect_region, speaker) from an utterance directory, or None."""
    d = path.parent
    m = _FLAT_DIR.match(d.name.lower())
    if m:
        return None, int(m.group(1)), m.group(2)
    parts = [p.lower() for p in d.relative_to(root).parts]
    if len(parts) >= 2 and _SPEAKER.match(parts[-1]) and _DR.match(parts[-2]):
        subset = parts[-3] if len(parts) >= 3 and parts[-3] in ("train", "test") else None
        return subset, int(_DR.match(parts[-2]).group(1)), parts[-1]
    return None


def scan(root) -> tuple[list[dict], list[tuple[str, str]]]:
    """All utterances under ``root`` (SA included) and the problems found."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"corpus directory {root} does not exist")
    groups: dict[Path, dict[str, Path]] = defaultdict(dict)
    for dirpath, _, files in os.walk(root):
        for f in files:
            low = f.lower()
            for ext in (".wav.wav", ".wav", ".phn", ".wrd", ".txt"):
                if low.endswith(ext):
                    stem = f[: -len(ext)]
                    groups[Path(dirpath) / stem.lower()][ext] = Path(dirpath) / f
                    break
    utts, problems, seen = [], [], {}
    for key in sorted(groups):
        files = groups[key]
        where = _locate(key, root)
        if where is None:
            if ".phn" in files or ".wav" in files:
                problems.append((str(files.get(".phn") or files.get(".wav")),
                                 "cannot tell the speaker from the path (expected DR<n>/<SPEAKER>/ "
                                 "or dr<n>-<speaker>/)"))
            continue
        subset, dr, speaker = where
        audio = files.get(".wav") or files.get(".wav.wav")
        if ".phn" not in files and audio is None:
            continue  # only .WRD/.TXT: not an utterance we can use, nothing to report
        if ".phn" not in files:
            problems.append((str(audio), "missing .PHN for this audio file"))
            continue
        if audio is None:
            problems.append((str(files[".phn"]), "missing audio (.WAV) for this .PHN"))
            continue
        utt = key.name.lower()
        ident = (speaker, utt)
        if ident in seen:
            problems.append((str(audio), f"utterance {speaker}/{utt} also at {seen[ident]}"))
            continue
        try:
            samples, sr = read_audio(audio)
            if sr != SAMPLE_RATE:
                raise ValueError(f"sample rate {sr}, expected {SAMPLE_RATE}")
        except (ValueError, OSError) as e:
            problems.append((str(audio), _reason(e, audio)))
            continue
        try:
            segs = read_phn(files[".phn"])
            _check_phn(segs, files[".phn"], len(samples))
        except (ValueError, OSError) as e:
            problems.append((str(files[".phn"]), _reason(e, files[".phn"])))
            continue
        seen[ident] = audio
        text = ""
        if ".txt" in files:
            words = files[".txt"].read_text().split()
            text = " ".join(words[2:]) if len(words) > 2 else ""
        phones61 = [lab for _, _, lab in segs]
        utts.append({
            "utt": f"{speaker}_{utt}", "speaker": speaker, "sex": speaker[0].upper(),
            "dialect_region": dr, "subset": subset, "audio": str(Path(audio).resolve()),
            "num_samples": len(samples), "sample_rate": sr, "text": text,
            "phones61": phones61, "phones48": fold61to48(phones61), "phones39": fold61to39(phones61),
        })
    return utts, problems


def split_speakers(utts: list[dict]) -> tuple[dict[str, str], str]:
    """speaker -> "train" | "dev" | "test" | "unused", and a description of the rule used."""
    speakers = {u["speaker"]: (u["sex"], u["dialect_region"], u["subset"]) for u in utts}
    test_part = {s for s, (_, _, sub) in speakers.items() if sub == "test"}
    if set(DEV_SPEAKERS) <= test_part and set(CORE_TEST_SPEAKERS) <= test_part:
        out = {}
        for s, (_, _, sub) in speakers.items():
            out[s] = ("dev" if s in DEV_SPEAKERS else "test" if s in CORE_TEST_SPEAKERS
                      else "train" if sub == "train" else "unused")
        return out, "standard: TRAIN speakers / 50 dev speakers / 24 core-test speakers"
    if len(speakers) < 3:
        raise ValueError(f"a speaker-disjoint split needs at least 3 speakers, the corpus has {len(speakers)}")
    order = sorted(speakers, key=lambda s: (speakers[s][0], speakers[s][1], s))
    if len(test_part) >= 2 and len(test_part) < len(speakers):
        held = [s for s in order if s in test_part]
        rule = "fallback: TEST speakers alternately to dev and test (sorted by sex, region, ID)"
    else:
        k = max(1, round(len(order) / 8))
        step = len(order) / (2 * k)
        held = [order[int(i * step + step / 2)] for i in range(2 * k)]
        rule = (f"fallback: {2 * k} of {len(order)} speakers held out (every {step:g}-th by sex, "
                f"region, ID), alternately to dev and test")
    out = {s: "train" for s in speakers}
    for i, s in enumerate(held):
        out[s] = "dev" if i % 2 == 0 else "test"
    return out, rule


def prepare(timit, out, *, skip_bad: bool = False, progress: bool = True) -> dict:
    """Write ``train.jsonl``, ``dev.jsonl``, ``test.jsonl`` and ``prepare.json`` under ``out``."""
    utts, problems = scan(timit)
    if problems and not skip_bad:
        raise CorpusError(problems)
    if problems and progress:
        print(f"prepare: leaving out {len(problems)} bad file(s):")
        for p, r in problems:
            print(f"  {p}: {r}")
    used = [u for u in utts if not u["utt"].split("_", 1)[1].startswith("sa")]
    if not used:
        raise ValueError(f"no usable (non-SA) utterances under {timit}")
    assign, rule = split_speakers(used)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"corpus": str(Path(timit).resolve()), "split_rule": rule, "splits": {},
               "bad_files": [{"path": p, "reason": r} for p, r in problems],
               "sa_excluded": len(utts) - len(used)}
    for split in ("train", "dev", "test"):
        rows = sorted((u for u in used if assign[u["speaker"]] == split), key=lambda u: u["utt"])
        if not rows:
            raise ValueError(f"the {split} split is empty ({rule})")
        tmp = out / f"{split}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, out / f"{split}.jsonl")
        summary["splits"][split] = {
            "utterances": len(rows), "speakers": len({r["speaker"] for r in rows}),
            "hours": round(sum(r["num_samples"] for r in rows) / SAMPLE_RATE / 3600, 4),
            "phones39": sum(len(r["phones39"]) for r in rows)}
    tmp = out / "prepare.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, out / "prepare.json")
    if progress:
        print(f"prepare: {rule}")
        for split, s in summary["splits"].items():
            print(f"  {split:5s} {s['utterances']:5d} utts {s['speakers']:4d} speakers "
                  f"{s['hours']:.3f} h {s['phones39']} phones")
    return summary


def load_manifest(data_dir, split: str) -> list[dict]:
    path = Path(data_dir) / f"{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `python -m recipes.timit prepare` first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
