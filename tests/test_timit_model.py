"""Recognizer pieces against independent references: per-utterance padding and features vs
torchaudio (center=True), the unpacked BiLSTM vs nn.LSTM on packed sequences, CTC decoding vs brute
force, and the learnable front ends at initialisation vs the fixed ones."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
import torchaudio
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from recipes.timit.model import BiLSTM, Recognizer, greedy_decode, prefix_beam_decode, reflect_pad
from recipes.timit.train import load_config


def _cfg(**kw):
    return load_config("small", dict(dict(hidden=16, layers=2, dropout=0.0), **kw))


def _batch():
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([8000, 5123, 6400])
    wave = torch.zeros(3, 8000)
    for i, n in enumerate(lengths):
        wave[i, :n] = torch.randn(n, generator=g) * 0.1
    return wave, lengths


def test_reflect_pad_per_utterance():
    wave, lengths = _batch()
    x, plen = reflect_pad(wave, lengths, 200)
    for i, n in enumerate(lengths):
        ref = F.pad(wave[i, :n].view(1, 1, -1), (200, 200), mode="reflect").view(-1)
        assert plen[i] == n + 400 and torch.equal(x[i, : plen[i]], ref)
    with pytest.raises(ValueError, match="longer than 200 samples"):
        reflect_pad(wave, torch.tensor([8000, 150, 10]), 200)


def test_features_equal_torchaudio_per_utterance():
    """Each utterance's features in a padded batch == torchaudio center=True on it alone, then CMVN."""
    wave, lengths = _batch()
    model = Recognizer(_cfg())
    feats, n = model.features(wave, lengths)
    ta = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=400, hop_length=160, n_mels=40)
    for i, L in enumerate(lengths):
        ref = torch.log(ta(wave[i, :L]) + 1e-6).T
        ref = (ref - ref.mean(0)) / torch.sqrt(ref.var(0, unbiased=False) + 1e-5)
        assert n[i] == ref.shape[0] and model.num_frames(int(L)) == ref.shape[0] // 2  # subsample 2
        torch.testing.assert_close(feats[i, : n[i]], ref, atol=1e-4, rtol=1e-4)
        assert torch.all(feats[i, n[i]:] == 0)


def test_bilstm_equals_packed_nn_lstm():
    torch.manual_seed(0)
    ours = BiLSTM(7, 5, layers=2, dropout=0.0)
    ref = torch.nn.LSTM(7, 5, num_layers=2, bidirectional=True, batch_first=True)
    with torch.no_grad():
        for layer in range(2):
            for d, m in (("", ours.fwd[layer]), ("_reverse", ours.bwd[layer])):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(ref, f"{name}_l{layer}{d}").copy_(getattr(m, f"{name}_l0"))
    x = torch.randn(3, 11, 7)
    n = torch.tensor([11, 6, 9])
    x_padded = x.clone()
    for i, k in enumerate(n):
        x_padded[i, k:] = 1e3  # garbage in the padding must not matter
    got = ours(x_padded, n)
    packed = pack_padded_sequence(x, n, batch_first=True, enforce_sorted=False)
    want, _ = pad_packed_sequence(ref(packed)[0], batch_first=True)
    for i, k in enumerate(n):
        torch.testing.assert_close(got[i, :k], want[i, :k], atol=1e-6, rtol=1e-5)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


def test_output_does_not_depend_on_batching():
    wave, lengths = _batch()
    model = Recognizer(_cfg()).eval()
    lp, n = model(wave, lengths)
    for i in range(3):
        lp1, n1 = model(wave[i: i + 1, : lengths[i]], lengths[i: i + 1])
        assert n1[0] == n[i]
        torch.testing.assert_close(lp1[0], lp[i, : n[i]], atol=1e-5, rtol=1e-5)


def test_greedy_decode_hand_example():
    # frames: a a blank a b b blank -> "a a b" (classes 1 = a, 2 = b, 0 = blank)
    path = [1, 1, 0, 1, 2, 2, 0, 2]
    lp = torch.log(F.one_hot(torch.tensor(path), 3).float() * 0.97 + 0.01).unsqueeze(0)
    assert greedy_decode(lp, torch.tensor([8])) == [[1, 1, 2, 2]]
    assert greedy_decode(lp, torch.tensor([7])) == [[1, 1, 2]]


def _brute_force_best(lp):
    """Most probable label sequence: sum the probabilities of every frame path collapsing to it."""
    T, C = lp.shape
    scores = {}
    for path in itertools.product(range(C), repeat=T):
        labels = tuple(c for i, c in enumerate(path) if c != 0 and (i == 0 or c != path[i - 1]))
        scores[labels] = scores.get(labels, 0.0) + math.exp(sum(float(lp[t, c]) for t, c in enumerate(path)))
    return list(max(scores, key=scores.get))


def test_prefix_beam_search_is_exact_with_a_wide_beam():
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        lp = torch.log_softmax(torch.randn(5, 3, generator=g) * 2, -1)
        assert prefix_beam_decode(lp.unsqueeze(0), torch.tensor([5]), beam=64)[0] == _brute_force_best(lp)


@pytest.mark.parametrize("kind,fixed", [("kaleidoscope", "mfsc"), ("dense", "mfsc"),
                                        ("kaleidoscope_mfcc", "mfcc")])
def test_learnable_front_ends_start_exact(kind, fixed):
    pytest.importorskip("kfrontend.frontend")
    wave, lengths = _batch()
    a, na = Recognizer(_cfg(frontend=kind)).features(wave, lengths)
    b, nb = Recognizer(_cfg(frontend=fixed)).features(wave, lengths)
    assert torch.equal(na, nb)
    torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)
    m = Recognizer(_cfg(frontend=kind))
    counts = m.parameter_counts()
    assert counts["frontend"] > 0 and counts["total"] == counts["frontend"] + counts["recognizer"]


def test_random_init_front_end_differs():
    pytest.importorskip("kfrontend.frontend")
    wave, lengths = _batch()
    torch.manual_seed(0)
    a, _ = Recognizer(_cfg(frontend="kaleidoscope_random")).features(wave, lengths)
    b, _ = Recognizer(_cfg(frontend="mfsc")).features(wave, lengths)
    assert (a - b).abs().max() > 0.1


def test_schedule_warmup_cosine_plateau_and_state():
    from recipes.timit.train import Schedule
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([{"params": [p], "lr": 2.0, "base_lr": 2.0}])
    cfg = _cfg(schedule="cosine", warmup_steps=4, min_lr_ratio=0.1)
    s = Schedule(opt, cfg, total_steps=100)
    assert s.set_step(0) == pytest.approx(0.25) and opt.param_groups[0]["lr"] == pytest.approx(0.5)
    assert s.set_step(50) == pytest.approx(0.1 + 0.9 * 0.5)       # half way down the cosine
    assert s.set_step(100) == pytest.approx(0.1) and s.set_step(500) == pytest.approx(0.1)
    s = Schedule(opt, _cfg(schedule="plateau", warmup_steps=0, plateau_factor=0.5, plateau_patience=2), 100)
    for per, scale in ((30.0, 1.0), (29.0, 1.0), (29.5, 1.0), (29.1, 0.5), (28.0, 0.5), (28.0, 0.5), (28.0, 0.25)):
        s.on_eval(per)
        assert s.set_step(10) == pytest.approx(scale)
    t = Schedule(opt, _cfg(schedule="plateau"), 1)
    t.load_state_dict(s.state_dict())
    assert t.state_dict() == s.state_dict()


def test_clipping_per_group_keeps_the_recognizer_step():
    from recipes.timit.train import _clip
    rec, fe = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    rec.grad, fe.grad = torch.tensor([0.3, 0.0, 0.4]), torch.tensor([300.0, 400.0])
    assert _clip([rec], 5.0) == pytest.approx(0.5) and _clip([fe], 5.0) == pytest.approx(500.0)
    assert torch.equal(rec.grad, torch.tensor([0.3, 0.0, 0.4]))              # untouched
    torch.testing.assert_close(fe.grad, torch.tensor([3.0, 4.0]), rtol=1e-5, atol=1e-5)  # clipped to 5
    assert _clip([torch.nn.Parameter(torch.zeros(1))], 5.0) is None           # no gradient (frozen)


def test_logaddexp_against_numpy_and_at_minus_infinity():
    """log(e^a + e^b) as numpy's logaddexp, including the empty sums the beam search starts from:
    -inf with -inf is -inf (not NaN), -inf with b is b."""
    import numpy as np

    from recipes.timit.model import _logaddexp

    for a, b in ((0.3, -1.2), (-700.0, -701.5), (5.0, 5.0), (-math.inf, 0.25), (0.25, -math.inf)):
        assert _logaddexp(a, b) == pytest.approx(float(np.logaddexp(a, b)), rel=1e-15, abs=1e-300)
    assert _logaddexp(-math.inf, -math.inf) == -math.inf


def test_reflect_pad_checks_host_lengths_only():
    """Too-short utterances are refused on CPU tensors; on an accelerator the check runs on the
    host copy (Recognizer.check_lengths, called by train/evaluate) so the forward does not sync."""
    from recipes.timit.model import check_reflect_lengths, reflect_pad

    wave = torch.randn(2, 400)
    with pytest.raises(ValueError, match="longer than 200 samples"):
        reflect_pad(wave, torch.tensor([400, 150]), 200)
    with pytest.raises(ValueError, match="got a length of 150"):
        check_reflect_lengths(torch.tensor([400, 150]), 200)
    check_reflect_lengths(torch.tensor([400, 150]), 0)  # no padding: any length
    meta = torch.tensor([400, 150], device="meta")  # a device tensor: no check, no host read
    out, plen = reflect_pad(wave.to("meta"), meta, 200)
    assert out.shape == (2, 800) and plen.device.type == "meta"
