"""TIMIT phone maps and PER against hand-worked examples and torchaudio's edit distance."""
import random

import pytest
import torchaudio

from recipes.timit import phones as P

# Kaldi egs/timit/s5/conf/phones.60-48-39.map, typed in independently (61st phone q deleted)
KALDI_MAP = """aa aa aa|ae ae ae|ah ah ah|ao ao aa|aw aw aw|ax ax ah|ax-h ax ah|axr er er|ay ay ay|b b b|
bcl vcl sil|ch ch ch|d d d|dcl vcl sil|dh dh dh|dx dx dx|eh eh eh|el el l|em m m|en en n|eng ng ng|
epi epi sil|er er er|ey ey ey|f f f|g g g|gcl vcl sil|h# sil sil|hh hh hh|hv hh hh|ih ih ih|ix ix ih|
iy iy iy|jh jh jh|k k k|kcl cl sil|l l l|m m m|n n n|ng ng ng|nx n n|ow ow ow|oy oy oy|p p p|
pau sil sil|pcl cl sil|r r r|s s s|sh sh sh|t t t|tcl cl sil|th th th|uh uh uh|uw uw uw|ux uw uw|
v v v|w w w|y y y|z z z|zh zh sh"""


def test_sets_and_kaldi_table():
    rows = [r.split() for r in KALDI_MAP.replace("\n", "").split("|")]
    assert len(rows) == 60 and len(P.PHONES61) == 61 and len(P.PHONES48) == 48 and len(P.PHONES39) == 39
    for p61, p48, p39 in rows:
        assert P.MAP_61_48[p61] == p48, p61
        assert P.MAP_61_39[p61] == p39, p61
        assert P.MAP_48_39[p48] == p39, p48
    assert P.MAP_61_48["q"] is None and P.MAP_61_39["q"] is None
    assert set(P.PHONES61) == {r[0] for r in rows} | {"q"}


def test_folding_examples_and_errors():
    seq = ["h#", "q", "bcl", "b", "ix", "axr", "pau", "zh", "ux", "em", "q", "h#"]
    assert P.fold61to48(seq) == ["sil", "vcl", "b", "ix", "er", "sil", "zh", "uw", "m", "sil"]
    assert P.fold61to39(seq) == ["sil", "sil", "b", "ih", "er", "sil", "sh", "uw", "m", "sil"]
    assert P.fold48to39(["cl", "vcl", "epi", "ao", "en"]) == ["sil", "sil", "sil", "aa", "n"]
    # the message names the label set the input was taken for
    with pytest.raises(ValueError, match="^unknown TIMIT-61 phone label 'xx'$"):
        P.fold61to48(["h#", "xx"])
    with pytest.raises(ValueError, match="^unknown TIMIT-61 phone label 'vcl'$"):
        P.fold61to39(["h#", "vcl"])  # a 48-phone label is not a TIMIT-61 label
    with pytest.raises(ValueError, match="^unknown 48-phone phone label 'bcl'$"):
        P.fold48to39(["bcl"])  # a 61-phone label is not a 48-phone label


@pytest.mark.parametrize("ref,hyp,expected", [
    ("a b c d", "a b c d", (0, 0, 0)),
    ("a b c d", "a x c d", (1, 0, 0)),
    ("a b c", "a c", (0, 1, 0)),
    ("a b", "a b c", (0, 0, 1)),
    ("a b c d", "", (0, 4, 0)),
    ("", "a b", (0, 0, 2)),
    # insert x, match a b, delete c, match d e, insert f: 3 edits; no 3-edit alignment with
    # substitutions exists (I - D must be 1 and S = 2, I = 1 needs 4 edits)
    ("a b c d e", "x a b d e f", (0, 1, 2)),
    # "sil b ih" vs "b iy" : delete sil, substitute ih -> iy
    ("sil b ih", "b iy", (1, 1, 0)),
])
def test_alignment_hand_worked(ref, hyp, expected):
    assert P.align_counts(ref.split(), hyp.split()) == expected


def test_per_hand_worked():
    r = P.per([["a", "b", "c"], ["d", "e"]], [["a", "c"], ["d", "e", "f"]])
    assert (r["sub"], r["del"], r["ins"], r["ref_phones"], r["errors"]) == (0, 1, 1, 5, 2)
    assert r["per"] == pytest.approx(40.0)
    assert r["utterances"] == 2
    with pytest.raises(ValueError, match="^refs and hyps must have the same length, got 1 and 0$"):
        P.per([["a"]], [])
    with pytest.raises(ValueError, match="^PER is undefined: the references hold no phones$"):
        P.per([[]], [["a"]])


def test_per_sums_every_count_over_utterances():
    """Each count is the sum over utterances (each kind of error occurs in two of them, so a count
    that is overwritten instead of summed shows).  By hand, each breakdown the only one at its
    edit distance (I - D is fixed by the lengths):
    1: ref a b c d   / hyp a x c d e    -> S 1 (b->x), I 1 (e)
    2: ref a b c     / hyp x b          -> S 1 (a->x), D 1 (c)
    3: ref a b c d e / hyp x a b d e f  -> D 1 (c), I 2 (x, f)   (as in the table above)
    S 2, D 2, I 3 = 7 errors over 12 reference phones."""
    refs = ["a b c d", "a b c", "a b c d e"]
    hyps = ["a x c d e", "x b", "x a b d e f"]
    r = P.per([x.split() for x in refs], [x.split() for x in hyps])
    assert (r["sub"], r["del"], r["ins"], r["ref_phones"], r["errors"], r["utterances"]) == (2, 2, 3, 12, 7, 3)
    assert r["per"] == pytest.approx(700 / 12)


def test_breakdown_matches_torchaudio_edit_distance():
    rng = random.Random(0)
    for _ in range(300):
        ref = [rng.choice("abcde") for _ in range(rng.randint(0, 12))]
        hyp = [rng.choice("abcdef") for _ in range(rng.randint(0, 12))]
        s, d, i = P.align_counts(ref, hyp)
        assert s + d + i == torchaudio.functional.edit_distance(ref, hyp)
        # a valid alignment: both sequences are fully accounted for
        assert i - d == len(hyp) - len(ref)
        assert s + d <= len(ref) and s + i <= len(hyp)
