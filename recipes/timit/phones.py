"""TIMIT phone sets, the standard 61 -> 48 -> 39 folding and phone error rate (PER).

The folding is Lee & Hon (1989) as in Kaldi's ``egs/timit/s5/conf/phones.60-48-39.map``: the glottal
stop ``q`` is deleted; training uses 48 classes; scoring folds references and hypotheses to 39 and
keeps ``sil`` (consecutive identical phones are *not* merged, as in Kaldi's scoring).
"""
from __future__ import annotations

from typing import Iterable, Sequence

PHONES61 = (
    "b d g p t k dx q bcl dcl gcl pcl tcl kcl jh ch s sh z zh f th v dh m n ng em en eng nx "
    "l r w y hh hv el iy ih eh ey ae aa aw ay ah ao oy ow uh uw ux er ax ix axr ax-h pau epi h#"
).split()

# 61 -> 48; phones not listed map to themselves, ``q`` maps to None (deleted).
_FOLD_61_48 = {
    "bcl": "vcl", "dcl": "vcl", "gcl": "vcl", "pcl": "cl", "tcl": "cl", "kcl": "cl",
    "h#": "sil", "pau": "sil", "ax-h": "ax", "axr": "er", "em": "m", "eng": "ng", "hv": "hh",
    "nx": "n", "ux": "uw", "q": None,
}
MAP_61_48 = {p: _FOLD_61_48.get(p, p) for p in PHONES61}
PHONES48 = tuple(sorted({p for p in MAP_61_48.values() if p is not None}))

_FOLD_48_39 = {
    "ao": "aa", "ax": "ah", "ix": "ih", "el": "l", "en": "n", "zh": "sh",
    "cl": "sil", "vcl": "sil", "epi": "sil",
}
MAP_48_39 = {p: _FOLD_48_39.get(p, p) for p in PHONES48}
PHONES39 = tuple(sorted(set(MAP_48_39.values())))
MAP_61_39 = {p: (None if q is None else MAP_48_39[q]) for p, q in MAP_61_48.items()}

assert len(PHONES61) == 61 and len(PHONES48) == 48 and len(PHONES39) == 39


def _fold(seq: Iterable[str], table: dict, name: str) -> list[str]:
    out = []
    for p in seq:
        if p not in table:
            raise ValueError(f"unknown {name} phone label {p!r}")
        q = table[p]
        if q is not None:
            out.append(q)
    return out


def fold61to48(seq: Iterable[str]) -> list[str]:
    """61 TIMIT labels -> 48 training labels (``q`` deleted). Unknown labels raise ValueError."""
    return _fold(seq, MAP_61_48, "TIMIT-61")


def fold61to39(seq: Iterable[str]) -> list[str]:
    return _fold(seq, MAP_61_39, "TIMIT-61")


def fold48to39(seq: Iterable[str]) -> list[str]:
    return _fold(seq, MAP_48_39, "48-phone")


def align_counts(ref: Sequence, hyp: Sequence) -> tuple[int, int, int]:
    """Levenshtein alignment of ``hyp`` against ``ref``: (substitutions, deletions, insertions).

    S + D + I is the edit distance. Among minimum-cost alignments the backtrace prefers a match or
    substitution, then a deletion, then an insertion, so the breakdown is deterministic.
    """
    n, m = len(ref), len(hyp)
    # cost[i][j]: edit distance between ref[:i] and hyp[:j]
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        cost[i][0] = i
    for j in range(m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        ri, row, prev = ref[i - 1], cost[i], cost[i - 1]
        for j in range(1, m + 1):
            row[j] = min(prev[j - 1] + (ri != hyp[j - 1]), prev[j] + 1, row[j - 1] + 1)
    s = d = ins = 0
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i][j] == cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            s += ref[i - 1] != hyp[j - 1]
            i, j = i - 1, j - 1
        elif i > 0 and cost[i][j] == cost[i - 1][j] + 1:
            d += 1
            i -= 1
        else:
            ins += 1
            j -= 1
    return s, d, ins


def per(refs: Sequence[Sequence[str]], hyps: Sequence[Sequence[str]]) -> dict:
    """Corpus phone error rate: (S + D + I) / (number of reference phones), summed over utterances.

    Sequences are compared as given (fold both to 39 phones first for the standard TIMIT score).
    Returns a dict with ``per`` (percent), ``errors``, ``sub``, ``del``, ``ins``, ``ref_phones``,
    ``utterances``.
    """
    if len(refs) != len(hyps):
        raise ValueError(f"refs and hyps must have the same length, got {len(refs)} and {len(hyps)}")
    tot = {"sub": 0, "del": 0, "ins": 0, "ref_phones": 0}
    for r, h in zip(refs, hyps):
        s, d, i = align_counts(r, h)
        tot["sub"] += s
        tot["del"] += d
        tot["ins"] += i
        tot["ref_phones"] += len(r)
    errors = tot["sub"] + tot["del"] + tot["ins"]
    if tot["ref_phones"] == 0:
        raise ValueError("PER is undefined: the references hold no phones")
    return {"per": 100.0 * errors / tot["ref_phones"], "errors": errors, **tot, "utterances": len(refs)}
