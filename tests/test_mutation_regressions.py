"""Regression tests for bugs a mutation spot-check put in and the suite did not notice (issue 15).

Each test names the bug it kills and checks against an independent reference: torch.fft / scipy
for the Bluestein constructions at sizes whose chirp is asymmetric, torch.stft's own framing for
an odd ``n_fft - win_length``, a hand-scored decode for PER and the dev loss (a CTC forward pass
written here), exhaustive search for a narrow prefix beam, the documented init variance, and
torchaudio's MFCC for ``top_db``.  docs/TESTING.md lists which mutant each test kills.
"""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F
import torchaudio

from helpers import default_dtype
from kfrontend import Butterfly
from kfrontend import constructions as C
from kfrontend import features as Fe
from kfrontend.layers import twiddle_init


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got - ref).abs().max() / ref.abs().max()).item()


# ------------------------------------------------------------------------------------------------
# Bluestein: the circulant must hold every lag -(n-1) .. k_out-1, i.e. size >= n + k_out - 1.
# ------------------------------------------------------------------------------------------------
def _pow2(m: int) -> bool:
    return m >= 1 and m & (m - 1) == 0


# Sizes where n + k_out - 2 is a power of two: a circulant one too small (next_pow2(n + k_out - 2))
# wraps lag k_out - 1 onto lag -(n - 1).  For the full DFT (k_out = n) the chirp is symmetric, the
# two lags carry the same value and the wrap is harmless -- that is why the size sweep in
# test_constructions.py never caught it; onesided outputs and DCTs with n_out < n_in are asymmetric.
ONESIDED_EDGE = [n for n in range(3, 400) if not _pow2(n) and _pow2(n + (n // 2 + 1) - 2)]
DCT_EDGE = [(40, 26), (23, 11), (80, 50), (100, 30)]
assert ONESIDED_EDGE == [6, 22, 86, 342] and all(_pow2(a + b - 2) for a, b in DCT_EDGE)


@pytest.mark.parametrize("n", ONESIDED_EDGE)
def test_bluestein_onesided_dft_at_asymmetric_chirp_sizes(n):
    """Kills: circulant one size too small (onesided n = 22 goes 22% wrong).  float64 <= 1e-9."""
    g = torch.Generator().manual_seed(n)
    x = torch.randn(3, n, dtype=torch.float64, generator=g)
    m = C.dft(n, onesided=True, dtype=torch.complex128)
    assert _rel(m(x), torch.fft.rfft(x)) <= 1e-9
    mi = C.dft(n, onesided=True, inverse=True, dtype=torch.complex128)
    assert _rel(mi(x), torch.fft.ifft(x.to(torch.complex128))[..., : n // 2 + 1]) <= 1e-9


@pytest.mark.parametrize("n_in,n_out", DCT_EDGE)
def test_bluestein_dct_at_asymmetric_chirp_sizes(n_in, n_out):
    """Kills: circulant one size too small (DCT 40 -> 26 goes 16% wrong).  float64 <= 1e-9 vs scipy."""
    x = torch.randn(4, n_in, dtype=torch.float64, generator=torch.Generator().manual_seed(n_in))
    for norm in ("ortho", None):
        ref = torch.from_numpy(scipy.fft.dct(x.numpy(), type=2, norm=norm, axis=-1)[:, :n_out])
        assert _rel(C.dct(n_in, n_out, norm=norm, dtype=torch.float64)(x), ref) <= 1e-9


# ------------------------------------------------------------------------------------------------
# torch.stft framing with an odd n_fft - win_length
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_fft,win_length,hop", [(512, 401, 160), (256, 199, 80), (64, 31, 16)])
@pytest.mark.parametrize("center", [True, False])
def test_stft_frames_odd_window_offset(n_fft, win_length, hop, center):
    """Kills: window_offset = (n_fft - win_length + 1) // 2 (every other test has an even difference).

    |DFT| does not depend on where the window sits inside the n_fft frame, so |rfft(frame * w, n_fft)|
    must equal |torch.stft| whatever offset convention is used -- only *which samples* are framed
    matters, and that is what the offset decides.  float64, <= 1e-9 of the largest magnitude; both
    the whole-tensor path and the per-item (``lengths``) path."""
    g = torch.Generator().manual_seed(n_fft + win_length)
    x = torch.randn(2, 3000, dtype=torch.float64, generator=g)
    w = torch.hann_window(win_length, dtype=torch.float64)
    ref = torch.stft(x, n_fft, hop, win_length, w, center=center, pad_mode="reflect",
                     return_complex=True).abs().transpose(-1, -2)
    kw = dict(n_fft=n_fft, hop_length=hop, win_length=win_length, center=center)
    for lengths in (None, torch.tensor([3000, 3000])):
        frames = Fe.stft_frames(x, lengths=lengths, **kw)
        assert frames.shape[-2:] == (ref.shape[-2], win_length)
        got = torch.fft.rfft(frames * w, n=n_fft).abs()
        assert _rel(got, ref) <= 1e-9


def test_melspectrogram_odd_window_offset_equals_torchaudio():
    """Kills the same window_offset bug end to end (7.8e-3 relative at n_fft 512, win_length 401).
    float64 both sides, <= 1e-9 relative to the largest value."""
    from kfrontend.frontend import KaleidoscopeFrontend as KF

    kw = dict(n_fft=512, win_length=401, hop_length=160, n_mels=40)
    x = torch.randn(2, 4000, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    with default_dtype(torch.float64):
        ref = torchaudio.transforms.MelSpectrogram(**kw)(x)
        fe = KF.from_melspectrogram(dtype=torch.float64, **kw)
    assert _rel(fe(x), ref) <= 1e-9


# ------------------------------------------------------------------------------------------------
# Complex randn init
# ------------------------------------------------------------------------------------------------
def test_complex_randn_init_variance_and_norm():
    """Kills: complex randn scaled by sqrt(0.5) instead of sqrt(0.25) (norms x15.9 at N = 256).

    Documented: real and imaginary parts N(0, 1/4), so E|t|^2 = 1/2 and every factor keeps the
    expected squared norm.  2e5 samples: the variance estimate's standard error is ~8e-4, the
    tolerance 0.01 (the bug makes it 0.5).  Then the norm ratio of Butterfly(256) (8 factors) on
    512 vectors stays in (0.5, 2): the bug multiplies it by sqrt(2)^8 = 16."""
    g = torch.Generator().manual_seed(0)
    t = twiddle_init((100_000, 2), "randn", True, dtype=torch.float64, generator=g)
    assert t.dtype == torch.complex128
    assert abs(t.real.var().item() - 0.25) < 0.01 and abs(t.imag.var().item() - 0.25) < 0.01
    real = twiddle_init((200_000,), "randn", False, dtype=torch.float64, generator=g)
    assert abs(real.var().item() - 0.5) < 0.01
    torch.manual_seed(0)
    m = Butterfly(256, 256, complex=True)
    x = torch.randn(512, 256, dtype=torch.complex64, generator=g.manual_seed(1))
    ratio = (m(x).norm() / x.norm()).item()
    assert 0.5 < ratio < 2.0, ratio


# ------------------------------------------------------------------------------------------------
# from_transform keeps the MFCC's top_db
# ------------------------------------------------------------------------------------------------
def test_from_transform_mfcc_keeps_top_db_on_a_batch_with_a_quiet_item():
    """Kills: from_transform dropping AmplitudeToDB's top_db (52 dB error on the quiet item).

    Reference: the torchaudio MFCC instance itself, float64 buffers, per-utterance error <= 1e-9
    of that utterance's largest value.  The clamp must really bite: without it torchaudio's own
    output moves by > 10 dB (checked on the reference, so the test cannot pass vacuously)."""
    from kfrontend.frontend import KaleidoscopeFrontend as KF

    g = torch.Generator().manual_seed(11)
    x = 0.1 * torch.randn(3, 6000, dtype=torch.float64, generator=g)
    x[1] *= 1e-5  # 100 dB below the others
    x[2, 2000:4000] = 0.0  # digital silence: the amin floor, far below max - top_db
    with default_dtype(torch.float64):
        t = torchaudio.transforms.MFCC(n_mfcc=13, melkwargs=dict(n_fft=400, hop_length=160, n_mels=40))
    assert t.amplitude_to_DB.top_db == 80.0
    fe = KF.from_transform(t, dtype=torch.float64)
    ref, got = t(x), fe(x)
    for i in range(3):
        assert _rel(got[i], ref[i]) <= 1e-9, i
    # torchaudio's MFCC without the clamp: dB of the mel spectrogram, then the DCT over mels
    db = torchaudio.functional.amplitude_to_DB(t.MelSpectrogram(x), 10.0, 1e-10, 0.0, None)
    unclamped = (db.transpose(-1, -2) @ t.dct_mat).transpose(-1, -2)
    assert (unclamped[1] - ref[1]).abs().max() > 10.0


# ------------------------------------------------------------------------------------------------
# CTC prefix beam search: a narrow beam that really prunes, against exhaustive search
# ------------------------------------------------------------------------------------------------
def _collapse(path):
    return tuple(c for i, c in enumerate(path) if c != 0 and (i == 0 or c != path[i - 1]))


BEAM_T, BEAM_K = 7, 4  # 7 frames over blank + 3 labels: 4^7 = 16384 frame paths, all enumerated
_PATHS = np.array(list(itertools.product(range(BEAM_K), repeat=BEAM_T)))
_LABELLINGS = sorted({_collapse(p) for p in _PATHS})
_GROUP = np.array([_LABELLINGS.index(_collapse(p)) for p in _PATHS])


def _exhaustive(lp: torch.Tensor) -> np.ndarray:
    """Probability of every labelling in _LABELLINGS: the sum over all frame paths collapsing to it."""
    a = lp.double().numpy()
    path_p = np.exp(a[np.arange(BEAM_T), _PATHS].sum(1))
    return np.bincount(_GROUP, weights=path_p, minlength=len(_LABELLINGS))


def test_prefix_beam_search_narrow_beam_against_exhaustive_search():
    """Kills: pruning that keeps the worst prefixes (and any beam that drops the best).

    Beam 4 prunes: after 3 frames there are already more than 4 prefixes.  On seeded frames
    (logits N(0, 4)) whose best labelling has at least 1.5x the probability of the runner-up,
    beam 4 must return it; some of these bests are not the greedy path's (asserted), so the
    beam search's merging of paths is exercised, not only the argmax."""
    from recipes.timit.model import greedy_decode, prefix_beam_decode

    assert len({_collapse(p) for p in itertools.product(range(BEAM_K), repeat=3)}) > 4
    g = torch.Generator().manual_seed(4)
    checked = not_greedy = 0
    n = torch.tensor([BEAM_T])
    for _ in range(40):
        lp = torch.log_softmax(torch.randn(BEAM_T, BEAM_K, generator=g) * 2.0, -1)
        prob = _exhaustive(lp)
        assert abs(prob.sum() - 1.0) < 1e-6  # every path counted once (float32 rows sum to 1 +- 1e-7)
        order = np.argsort(-prob)
        if prob[order[0]] < 1.5 * prob[order[1]]:
            continue
        best = list(_LABELLINGS[order[0]])
        assert prefix_beam_decode(lp[None], n, beam=4)[0] == best
        checked += 1
        not_greedy += best != greedy_decode(lp[None], n)[0]
    assert checked >= 10 and not_greedy >= 2  # the seeded draw: 18 examples, 3 not greedy


# ------------------------------------------------------------------------------------------------
# Evaluation: a hand-scored decode (PER on 39 phones, folded hypotheses, per-phone dev loss)
# ------------------------------------------------------------------------------------------------
# Two utterances; the stub model's frames decode (greedy) to HYP48.  Scored by hand on 39 phones:
#   A ref39  sil sil b ih er sil t sil          (8 phones)
#     hyp39  sil sil b ah er     t sil          ix->ih vs ax->ah: 1 S; the second sil deleted: 1 D
#   B ref39  sil dh ah k ae t sil               (7 phones)
#     hyp39  sil dh ah sil k ae t sil           cl->sil inserted: 1 I
# PER = (1 + 1 + 1) / 15 = 20%.  Unfolded hypotheses (vcl, ax, cl) give 5 errors; references on
# 48 phones (vcl, ix, cl, ax) give 6.
ROWS = [
    dict(utt="A", phones48="sil vcl b ix er cl t sil", phones39="sil sil b ih er sil t sil",
         hyp48="sil vcl b ax er t sil", samples=3200),
    dict(utt="B", phones48="sil dh ax k ae t sil", phones39="sil dh ah k ae t sil",
         hyp48="sil dh ax cl k ae t sil", samples=4000),
]
HYP_TXT = ("A\tREF sil sil b ih er sil t sil\nA\tHYP sil sil b ah er t sil\n"
           "B\tREF sil dh ah k ae t sil\nB\tHYP sil dh ah sil k ae t sil\n")


class _StubModel(torch.nn.Module):
    """Maps each utterance (told apart by its sample count) to fixed per-frame log-probs: frame f
    puts 0.9 on label path[f] and spreads 0.1 over the other 48 classes."""

    def __init__(self, paths: dict):
        super().__init__()
        self.lp = {}
        for n, path in paths.items():
            p = torch.full((len(path), 49), 0.1 / 48, dtype=torch.float64)
            p[torch.arange(len(path)), torch.tensor(path)] = 0.9
            self.lp[n] = p.log().float()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def check_lengths(self, lengths):
        """Recognizer's host-side length check; every stub utterance is long enough for any
        padding, so here it only checks it is given the sample counts the stub knows."""
        assert lengths.device.type == "cpu" and all(int(n) in self.lp for n in lengths)

    def forward(self, wave, lengths, autocast_dtype=None):
        lps = [self.lp[int(n)] for n in lengths]
        T = max(x.shape[0] for x in lps)
        out = torch.stack([F.pad(x, (0, 0, 0, T - x.shape[0]), value=math.log(1 / 49)) for x in lps])
        return out, torch.tensor([x.shape[0] for x in lps])

    def parameter_counts(self):
        return {"frontend": 0, "recognizer": 1, "total": 1}


def _paths():
    from recipes.timit.data import encode

    paths = {}
    for r in ROWS:
        ids = encode(r["hyp48"].split())
        path = []
        for i, c in enumerate(ids):  # label, blank (so repeats stay distinct), then a trailing blank
            path += [c, 0]
        paths[r["samples"]] = path + [0, 0]
    return paths


def _manifest(tmp_path):
    sf = pytest.importorskip("soundfile")
    rows = []
    for r in ROWS:
        audio = tmp_path / f"{r['utt']}.wav"
        sf.write(str(audio), np.zeros(r["samples"], dtype=np.int16), 16000, subtype="PCM_16")
        rows.append(dict(utt=r["utt"], audio=str(audio), num_samples=r["samples"],
                         phones48=r["phones48"].split(), phones39=r["phones39"].split()))
    return rows


def _ctc_nll(lp: np.ndarray, target: list[int]) -> float:
    """-log p(target | lp) by the CTC forward recursion, written out here as the reference."""
    ext = [0]
    for c in target:
        ext += [c, 0]
    S, T = len(ext), lp.shape[0]
    alpha = np.full(S, -np.inf)
    alpha[0], alpha[1] = lp[0, 0], lp[0, ext[1]]
    for t in range(1, T):
        new = np.full(S, -np.inf)
        for s in range(S):
            terms = [alpha[s]] + ([alpha[s - 1]] if s >= 1 else [])
            if s >= 2 and ext[s] != 0 and ext[s] != ext[s - 2]:
                terms.append(alpha[s - 2])
            new[s] = np.logaddexp.reduce(terms) + lp[t, ext[s]]
        alpha = new
    return -float(np.logaddexp(alpha[-1], alpha[-2]))


def test_decode_rows_and_score_hand_worked(tmp_path):
    """Kills: hypotheses not folded to 39 phones; references scored on 48 phones; dev loss not
    divided by the target lengths.  Counts are exact; the loss is the mean over utterances of
    CTC NLL / reference length, the NLL from the forward recursion above (float64 vs the float32
    model output: <= 1e-4 relative)."""
    from recipes.timit.data import encode
    from recipes.timit.evaluate import decode_rows, score

    rows = _manifest(tmp_path)
    paths = _paths()
    decoded, loss = decode_rows(_StubModel(paths), rows, torch.device("cpu"), batch_size=2)
    assert [d["hyp48"] for d in decoded] == [r["hyp48"].split() for r in ROWS]
    assert [d["hyp39"] for d in decoded] == [["sil", "sil", "b", "ah", "er", "t", "sil"],
                                             ["sil", "dh", "ah", "sil", "k", "ae", "t", "sil"]]
    s = score(decoded)
    assert (s["sub"], s["del"], s["ins"], s["ref_phones"], s["errors"]) == (1, 1, 1, 15, 3)
    assert s["per"] == pytest.approx(20.0)
    model = _StubModel(paths)
    want = np.mean([_ctc_nll(model.lp[r["samples"]].double().numpy(), encode(r["phones48"].split()))
                    / len(r["phones48"].split()) for r in ROWS])
    assert loss == pytest.approx(want, rel=1e-4)
    # the two utterances' NLLs differ enough that dividing or not by 8 vs 7 phones shows
    assert abs(want - np.mean([_ctc_nll(model.lp[r["samples"]].double().numpy(),
                                        encode(r["phones48"].split())) for r in ROWS])) > 1.0


def test_evaluate_writes_folded_hypotheses_and_hand_scored_per(tmp_path, monkeypatch):
    """Kills the same bugs through evaluate(): per.json and hyp.txt hold the hand-scored,
    39-phone results (no 48-phone label such as vcl in hyp.txt); beam 4 gives the same here (the
    frames are peaky)."""
    from recipes.timit import evaluate as E

    rows = _manifest(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    exp = tmp_path / "exp"
    exp.mkdir()
    stub = _StubModel(_paths())
    monkeypatch.setattr(E, "load_experiment", lambda e, which, device: (
        stub, {"frontend": "stub", "data": str(data)}, {"checkpoint": str(exp / "best.pt"), "step": 1}))
    for beam, sub in ((1, "decode_test"), (4, "decode_test_beam4")):
        row = E.evaluate(exp, "test", beam=beam, device="cpu")
        assert (row["sub"], row["del"], row["ins"], row["ref_phones"]) == (1, 1, 1, 15)
        assert row["per"] == pytest.approx(20.0)
        assert (exp / sub / "hyp.txt").read_text() == HYP_TXT
        assert json.loads((exp / sub / "per.json").read_text())["per"] == pytest.approx(20.0)


# ------------------------------------------------------------------------------------------------
# features.power_mel: which path runs (the custom op or the plain power spectrum @ mel: the same
# numbers, so a spy tells them apart), and the custom op's gradients in the cases the main test in
# test_features.py does not take (only y requiring grad; create_graph values).
# ------------------------------------------------------------------------------------------------
def _power_mel_definition(y, mel, n):
    re, im = y[..., :n], y[..., n:]
    return (re * re + im * im) @ mel


@pytest.fixture
def power_mel_op_calls(monkeypatch):
    calls = []
    real = Fe._PowerMel

    class Spy:
        @staticmethod
        def apply(*args):
            calls.append(tuple(a.shape if isinstance(a, torch.Tensor) else a for a in args))
            return real.apply(*args)

    monkeypatch.setattr(Fe, "_PowerMel", Spy)
    return calls


@pytest.mark.parametrize("batch", [(), (3,), (2, 3), (2, 1, 3)])
def test_power_mel_takes_the_custom_op_for_power_2_with_autograd(power_mel_op_calls, batch):
    """Power 2, grad enabled, y or mel requiring grad, real same-dtype tensors: one call of the
    custom op on (B, 2n, T), B the flattened batch (1 for a 2-d y); values against the definition
    (float64, 1e-12)."""
    g = torch.Generator().manual_seed(len(batch))
    n, t, m = 5, 7, 3
    y = torch.randn(*batch, t, 2 * n, dtype=torch.float64, generator=g)
    mel = torch.rand(n, m, dtype=torch.float64, generator=g)
    for y_grad, mel_grad in ((True, True), (True, False), (False, True)):
        power_mel_op_calls.clear()
        yy, mm = y.clone().requires_grad_(y_grad), mel.clone().requires_grad_(mel_grad)
        out = Fe.power_mel(yy, mm, n, 2.0)
        assert power_mel_op_calls == [((math.prod(batch), 2 * n, t), (n, m), n)]
        assert out.shape == (*batch, t, m) and _rel(out, _power_mel_definition(y, mel, n)) < 1e-12


def test_power_mel_plain_path_otherwise(power_mel_op_calls):
    """Other powers, no autograd (nothing requires grad, or no_grad), a 1-d y, and functorch
    transforms take the plain path; the values are the definition's (power 2) or |Y| @ mel."""
    g = torch.Generator().manual_seed(5)
    n = 5
    y = torch.randn(4, 2 * n, dtype=torch.float64, generator=g)
    mel = torch.rand(n, 3, dtype=torch.float64, generator=g)
    want = _power_mel_definition(y, mel, n)
    assert _rel(Fe.power_mel(y, mel, n, 2.0), want) < 1e-12
    with torch.no_grad():
        assert _rel(Fe.power_mel(y.clone().requires_grad_(), mel, n, 2.0), want) < 1e-12
    mag = torch.sqrt(y[..., :n] ** 2 + y[..., n:] ** 2) @ mel
    assert _rel(Fe.power_mel(y.clone().requires_grad_(), mel, n, 1.0), mag) < 1e-12  # autograd, power 1
    assert _rel(Fe.power_mel(y[0].clone().requires_grad_(), mel, n, 2.0), want[0]) < 1e-12  # autograd, 1-d
    assert power_mel_op_calls == []
    gy = torch.func.grad(lambda a: Fe.power_mel(a, mel, n, 2.0).sum())(y.detach())
    ref_y = y.detach().clone().requires_grad_()
    (want_gy,) = torch.autograd.grad(_power_mel_definition(ref_y, mel, n).sum(), ref_y)
    assert _rel(gy, want_gy) < 1e-12 and power_mel_op_calls == []


def test_power_mel_gradient_of_y_alone_and_create_graph_values():
    """The custom op's gradients when only y requires grad, and with create_graph (the values of
    the first derivatives, which gradgradcheck does not compare with the definition)."""
    g = torch.Generator().manual_seed(6)
    n, t, m = 5, 7, 3
    y = torch.randn(2, t, 2 * n, dtype=torch.float64, generator=g)
    mel = torch.rand(n, m, dtype=torch.float64, generator=g)
    gout = torch.randn(2, t, m, dtype=torch.float64, generator=g)
    ry, rm = y.clone().requires_grad_(), mel.clone().requires_grad_()
    want_y, want_mel = torch.autograd.grad(_power_mel_definition(ry, rm, n), (ry, rm), gout)
    yy = y.clone().requires_grad_()
    (got_y,) = torch.autograd.grad(Fe.power_mel(yy, mel, n, 2.0), yy, gout)
    assert _rel(got_y, want_y) < 1e-12
    yy, mm = y.clone().requires_grad_(), mel.clone().requires_grad_()
    got_y, got_mel = torch.autograd.grad(Fe.power_mel(yy, mm, n, 2.0), (yy, mm), gout, create_graph=True)
    assert _rel(got_y, want_y) < 1e-12 and _rel(got_mel, want_mel) < 1e-12


# ------------------------------------------------------------------------------------------------
# K-matrix stages (kfrontend/stages.py): the multiplied-out matrix, eagerly and through the
# kfrontend::kmatrix_dense custom op that torch.compile runs (mutation runs of stages.py).
# ------------------------------------------------------------------------------------------------
def _stage_modules():
    """(K-matrix, its (out, in) matrix from an independent computation): a power-of-two and a
    Bluestein one-sided DFT (torch.fft.rfft of the identity), a DCT (complex K-matrix, real output:
    scipy.fft.dct of the identity) and a mel bank (real K-matrix: the bank itself)."""
    fb = torchaudio.functional.melscale_fbanks(33, 0.0, 8000.0, 6, 16000).double()
    return [
        (C.dft(16, onesided=True, dtype=torch.complex128), torch.fft.rfft(torch.eye(16, dtype=torch.float64)).T),
        (C.dft(12, onesided=True, dtype=torch.complex128), torch.fft.rfft(torch.eye(12, dtype=torch.float64)).T),
        (C.dct(10, 6, dtype=torch.float64), torch.from_numpy(scipy.fft.dct(np.eye(10), norm="ortho")[:, :6]).T),
        (C.mel(fb, dtype=torch.float64), fb.T),
    ]


@pytest.mark.parametrize("compiling", [False, True])
def test_stage_matrix_parts_equal_the_transforms_eagerly_and_through_the_custom_op(compiling, monkeypatch):
    """``stage_matrix_parts(k, start, stop)``: columns start:stop of the (out, in) matrix as (real,
    imaginary or None), the whole matrix by default.  ``compiling=True`` patches
    torch.compiler.is_compiling so the branch torch.compile takes (the custom op
    kfrontend::kmatrix_dense, its complex twiddle as view_as_real) runs eagerly: mutmut's
    trampolines cannot run under torch.compile, so the compile tests cannot tell its mutants.
    Reference: torch.fft.rfft / scipy.fft.dct / the bank, float64, <= 1e-12 absolute; the imaginary
    part is None exactly for real matrices (the DCT's complex K-matrix has a real output)."""
    from kfrontend.stages import stage_matrix_parts

    if compiling:
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    for k, ref in _stage_modules():
        n_in = ref.shape[1]
        for args, cols in (((), slice(0, n_in)), ((1,), slice(1, n_in)), ((2, n_in - 3), slice(2, n_in - 3))):
            re, im = stage_matrix_parts(k, *args)
            want = ref[:, cols]
            assert re.shape == want.shape and re.dtype == torch.float64, (k.in_features, args)
            assert (re - want.real).abs().max() <= 1e-12, (k.in_features, args)
            if ref.is_complex():
                assert im is not None and (im - want.imag).abs().max() <= 1e-12, (k.in_features, args)
            else:
                assert im is None
        if compiling:
            # What torch.compile traces: the op's fake (register_fake) under FakeTensorMode must
            # give the real parts' dtypes and shapes (a complex twiddle passed as it is, not as
            # view_as_real, would make the fake complex while the op returns real parts).
            from torch._subclasses.fake_tensor import FakeTensorMode

            with FakeTensorMode(allow_non_fake_inputs=True):
                fake = stage_matrix_parts(k, 2, n_in - 3)
            real = stage_matrix_parts(k, 2, n_in - 3)
            assert [None if t is None else (t.dtype, t.shape) for t in fake] == [
                None if t is None else (t.dtype, t.shape) for t in real], k.in_features


def test_kmatrix_dense_custom_op_gradient_by_finite_differences():
    """The custom op's backward (kfrontend::kmatrix_dense_backward: torch.func.vjp of the product)
    against central finite differences (torch.autograd.gradcheck, float64, its default tolerances
    atol 1e-5 / rtol 1e-3), for a random complex twiddle (as view_as_real, both parts of the
    output, a cut column window) and a real one with decreasing strides (one part).  A wrong
    backward (another stride order, another window, the parts swapped) fails."""
    from kfrontend.stages import _kmatrix_dense_op

    g = torch.Generator().manual_seed(11)
    tw_c = torch.view_as_real(torch.randn(1, 2, 3, 4, 2, 2, dtype=torch.complex128, generator=g)).requires_grad_()
    tw_r = torch.randn(1, 2, 3, 4, 2, 2, dtype=torch.float64, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: _kmatrix_dense_op(t, 6, 1, 7, True, True, False), (tw_c,))
    assert torch.autograd.gradcheck(lambda t: _kmatrix_dense_op(t, 5, 0, 8, False, False, False), (tw_r,))
    # real_output: the real part only, one part
    y = _kmatrix_dense_op(tw_c, 6, 0, 8, True, True, True)
    assert y.shape == (1, 6, 8)
    assert torch.autograd.gradcheck(lambda t: _kmatrix_dense_op(t, 6, 0, 8, True, True, True), (tw_c,))


def _mfcc64(**kw):
    from kfrontend import KaleidoscopeFrontend

    return KaleidoscopeFrontend.from_mfcc(n_mfcc=5, dtype=torch.float64, melkwargs=dict(n_fft=64, hop_length=32, n_mels=8),
                                          **kw)


@pytest.mark.parametrize("compiling", [False, True])
def test_stage_weight_t_rows_equal_the_transforms(compiling, monkeypatch):
    """``LinearStage.weight_t(start, stop)``: rows start:stop of the (in, out) matrix, the DFT stage's
    as the real ``[Re | Im]`` (packed in one copy eagerly; from the custom op's two parts with
    ``compiling=True``, torch.compiler.is_compiling patched), against torch.fft.rfft of the
    identity, the bank and scipy's DCT, float64 <= 1e-12 absolute."""
    if compiling:
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    fe = _mfcc64()
    dft = torch.fft.rfft(torch.eye(64, dtype=torch.float64))
    dct = torch.from_numpy(scipy.fft.dct(np.eye(8), norm="ortho")[:, :5])
    for start, stop in ((0, 64), (3, 50)):
        w = fe.dft.weight_t(start, stop)
        assert w.shape == (stop - start, 66)
        assert (w - torch.cat((dft.real, dft.imag), dim=1)[start:stop]).abs().max() <= 1e-12
    assert (fe.mel.weight_t() - fe.ref_fb).abs().max() <= 1e-12
    assert (fe.dct.weight_t() - dct).abs().max() <= 1e-12


@pytest.mark.parametrize("structure", ["kaleidoscope", "dense"])
def test_linear_stage_forward_applies_its_matrix(structure):
    """``LinearStage.forward`` (the stages applied to activations: the kernel path, or a stage used
    on its own): the DFT stage gives torch.fft.rfft (complex), the mel stage ``x @ fb``, the DCT stage
    ``x @ dct`` (real; ``dct`` is torchaudio's float32 DCT matrix, which the K-matrix reproduces to
    float32 rounding: 1e-6), for a float64 front end, K-matrix and dense alike; a float32 input
    works too (a dense stage casts its weight to the input's dtype and returns that dtype).
    Tolerances: float64 1e-10, float32 input 1e-5, relative to the largest entry."""
    fe = _mfcc64(structure=structure)
    g = torch.Generator().manual_seed(5)
    x, m, d = (torch.randn(3, n, dtype=torch.float64, generator=g) for n in (64, 33, 8))
    refs = (torch.fft.rfft(x), m @ fe.ref_fb, d @ fe.ref_dct)
    for stage, inp, ref in zip((fe.dft, fe.mel, fe.dct), (x, m, d), refs):
        for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
            y = stage(inp.to(dtype))
            assert y.is_complex() == ref.is_complex() and y.shape == ref.shape, (stage.name, dtype)
            if structure == "dense":
                assert (y.real.dtype if y.is_complex() else y.dtype) == dtype, (stage.name, dtype)
            tol = max(tol, 1e-6) if stage.name == "dct" else tol
            assert _rel(y.to(ref.dtype), ref) <= tol, (stage.name, dtype)


def test_random_init_redraws_every_stage_with_the_documented_variance():
    """``init="random"``: every K-matrix stage's twiddles redrawn (``kfrontend.layers.twiddle_init``
    "randn"): real entries N(0, 1/2), complex ones with real and imaginary parts N(0, 1/4) each,
    drawn in the module's dtype (a float64 front end's are not float32 numbers).  At least 1500
    entries per stage (and part): the sample variance's standard error is <= 0.019 at 1/2, the
    tolerance 0.06; the exact constructions' twiddles are mostly 0, 1 and roots of unity."""
    torch.manual_seed(3)
    from kfrontend import KaleidoscopeFrontend

    fe = KaleidoscopeFrontend.from_mfcc(n_mfcc=13, init="random", dtype=torch.float64,
                                        melkwargs=dict(n_fft=512, hop_length=160, n_mels=40))
    exact = KaleidoscopeFrontend.from_mfcc(n_mfcc=13, dtype=torch.float64, melkwargs=dict(n_fft=512, hop_length=160, n_mels=40))
    for name in ("dft", "mel", "dct"):
        tw, tw0 = getattr(fe, name).k.twiddle.detach(), getattr(exact, name).k.twiddle.detach()
        assert tw.shape == tw0.shape and tw.dtype == tw0.dtype, name
        parts = (tw.real, tw.imag) if tw.is_complex() else (tw,)
        want = 0.25 if tw.is_complex() else 0.5
        for part in parts:
            assert part.numel() >= 1500
            assert abs(part.mean().item()) <= 0.05 and abs(part.var().item() - want) <= 0.06, (name, part.var())
            assert (part.float().double() != part).float().mean() > 0.99, name  # float64 draws


def test_linear_stage_built_directly_with_its_defaults():
    """``LinearStage`` used on its own (it is public): with the default backend a K-matrix stage
    applies its construction (torch.fft.rfft, float64 1e-10 relative), has no ``weight``, and names
    itself and its structure in its repr; a dense stage's weight is the target in the given dtype
    (a float32 target, dtype float64: the float64 copy of its values), laid out contiguously, real
    ``[Re | Im]`` for a complex target."""
    from kfrontend.stages import LinearStage

    target = torch.fft.rfft(torch.eye(16, dtype=torch.float64))  # (in, out) = (16, 9)
    k = LinearStage("dft", target, structure="kaleidoscope", init="exact", width=0,
                    build=lambda: C.dft(16, onesided=True, dtype=torch.complex128), dtype=torch.float64)
    x = torch.randn(4, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert _rel(k(x), torch.fft.rfft(x)) <= 1e-10
    assert k.weight is None and k.param is k.k.twiddle  # (step_scale=None: the twiddles themselves)
    assert "name='dft'" in repr(k) and "structure='kaleidoscope'" in repr(k)
    fb = torchaudio.functional.melscale_fbanks(9, 0.0, 8000.0, 4, 16000)  # float32
    d = LinearStage("mel", fb, structure="dense", init="exact", width=0, build=None, dtype=torch.float64)
    assert d.weight.dtype == torch.float64 and torch.equal(d.weight, fb.double())
    assert "structure='dense'" in repr(d)
    fb_t = fb.double().T.contiguous().T  # a transposed view, e.g. librosa's bank ``.T``
    dt = LinearStage("mel", fb_t, structure="dense", init="exact", width=0, build=None, dtype=torch.float64)
    assert not fb_t.is_contiguous() and dt.weight.is_contiguous() and torch.equal(dt.weight, fb_t)
    dc = LinearStage("dft", target, structure="dense", init="exact", width=0, build=None, dtype=torch.float64)
    assert torch.equal(dc.weight, torch.cat((target.real, target.imag), dim=1))


def test_dense_random_init_has_variance_one_over_in_features():
    """``structure="dense", init="random"``: each stage's weight redrawn N(0, 1/in_features), same
    shape as the exact matrix (the DFT's real [Re | Im]).  At least 1000 entries per stage: the
    sample variance's standard error is <= 4.5% of 1/in; the tolerance 20%."""
    torch.manual_seed(4)
    from kfrontend import KaleidoscopeFrontend

    fe = KaleidoscopeFrontend.from_mfcc(n_mfcc=13, structure="dense", init="random",
                                        melkwargs=dict(n_fft=256, hop_length=160, n_mels=40))
    for stage, shape in ((fe.dft, (256, 2 * 129)), (fe.mel, (129, 40)), (fe.dct, (40, 13))):
        w = stage.weight.detach()
        assert w.shape == shape and w.numel() >= 500, stage.name
        assert abs(w.var().item() * shape[0] - 1) <= 0.2, (stage.name, w.var().item() * shape[0])
