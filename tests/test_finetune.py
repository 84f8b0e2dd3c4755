"""Fine-tuning keeps the exact start: K-matrix stages learn an offset from their exact twiddles
whose optimizer steps move each stage's matrix about as much as a step on a dense matrix
(kfrontend.frontend.TwiddleOffset); the figures for every size are benchmarks/bench_drift.py's."""
import math

import pytest
import torch

from kfrontend import KaleidoscopeFrontend as KF
from kfrontend.frontend import TwiddleOffset

MEL = dict(hop_length=160, n_mels=40)


def _drift(fe, steps: int, lr: float = 1e-3, optim=torch.optim.Adam):
    """Relative change of each stage's matrix after ``steps`` steps on the mean log-mel energy
    of fresh white noise (the objective of benchmarks/bench_drift.py)."""
    gen = torch.Generator().manual_seed(0)
    opt = optim(fe.param_groups(lr=lr))
    w0 = {s: getattr(fe, s).dense() for s in ("dft", "mel")}
    for _ in range(steps):
        opt.zero_grad()
        torch.log(fe(torch.randn(2, 8000, generator=gen)) + 1e-6).mean().backward()
        opt.step()
    return {s: ((getattr(fe, s).dense() - w).norm() / w.norm()).item() for s, w in w0.items()}


@pytest.mark.parametrize("n_fft", [400, 512])
def test_adam_steps_move_kmatrix_stages_no_more_than_dense(n_fft):
    """Bound of the fine-tuning issue: within 3x of the dense baseline's relative change per step.
    Before TwiddleOffset the n_fft = 400 DFT stage (Bluestein) moved 135% in one step, 990x dense."""
    for steps in (1, 10):
        torch.manual_seed(0)
        kal = _drift(KF.from_melspectrogram(n_fft=n_fft, **MEL), steps)
        dense = _drift(KF.from_melspectrogram(n_fft=n_fft, structure="dense", **MEL), steps)
        for stage in ("dft", "mel"):
            assert 0 < kal[stage] <= 3 * dense[stage], (steps, stage, kal, dense)
    # ... and it is the parametrization that does it: plain twiddles break the bound at once.
    plain = _drift(KF.from_melspectrogram(n_fft=n_fft, step_scale=None, **MEL), 1)
    dense1 = _drift(KF.from_melspectrogram(n_fft=n_fft, structure="dense", **MEL), 1)
    assert plain["dft"] > 3 * dense1["dft"]


def test_step_scale_scales_the_step():
    """One Adam step moves every twiddle by ~lr in offset units, so the stage's change is
    proportional to step_scale (to first order)."""
    a = _drift(KF.from_melspectrogram(n_fft=512, step_scale=0.1, **MEL), 1)["dft"]
    b = _drift(KF.from_melspectrogram(n_fft=512, step_scale=0.2, **MEL), 1)["dft"]
    assert b / a == pytest.approx(2.0, rel=0.05)


def test_offset_starts_at_zero_and_state_dicts_convert_both_ways():
    """The offset is 0 at the exact start; a checkpoint that stores plain twiddles (before
    TwiddleOffset, or step_scale=None) loads into an offset front end and back, same features."""
    x = torch.randn(2, 4000, generator=torch.Generator().manual_seed(1))
    anchored = KF.from_melspectrogram(n_fft=400, **MEL)
    assert torch.count_nonzero(anchored.dft.param) == 0 and torch.count_nonzero(anchored.mel.param) == 0
    plain = KF.from_melspectrogram(n_fft=400, step_scale=None, **MEL)
    with torch.no_grad():  # a trained plain front end
        plain.dft.param.mul_(1.01)
        plain.mel.param.add_(1e-3)
    ref = plain(x)
    anchored.load_state_dict(plain.state_dict())
    assert torch.count_nonzero(anchored.dft.param) > 0
    torch.testing.assert_close(anchored(x), ref, rtol=1e-5, atol=1e-6 * ref.abs().max().item())
    back = KF.from_melspectrogram(n_fft=400, step_scale=None, **MEL)
    back.load_state_dict(anchored.state_dict())
    torch.testing.assert_close(back(x), ref, rtol=1e-5, atol=1e-6 * ref.abs().max().item())


def test_plain_twiddle_checkpoint_loads_into_an_offset_front_end_on_another_device():
    """A plain-twiddle checkpoint read on the CPU (``torch.load(..., map_location="cpu")``) loads
    into an offset front end on another device: the twiddles are re-expressed as offsets on the
    module's device.  The meta device stands in for a GPU (a CPU tensor mixed with a meta one
    raises, as with CUDA); the offsets land on meta with the module's shapes and dtype."""
    import warnings

    plain = KF.from_mfcc(n_mfcc=5, step_scale=None, melkwargs=dict(n_fft=64, hop_length=32, n_mels=8))
    fe = KF.from_mfcc(n_mfcc=5, melkwargs=dict(n_fft=64, hop_length=32, n_mels=8)).to("meta")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "copying from a non-meta parameter ... is a no-op"
        fe.load_state_dict(plain.state_dict())
    for s in ("dft", "mel", "dct"):
        delta, tw = getattr(fe, s).param, getattr(plain, s).k.twiddle
        assert delta.device.type == "meta" and delta.shape == tw.shape and delta.dtype == tw.dtype, s


def test_weight_decay_pulls_toward_the_exact_start():
    """With the offset as the parameter, decoupled weight decay (AdamW) shrinks the change from
    the exact start, not the twiddles themselves."""
    fe = KF.from_melspectrogram(n_fft=256, **MEL)
    w0 = fe.dft.dense()
    with torch.no_grad():
        fe.dft.param.add_(torch.randn_like(fe.dft.param) * 0.1)
    d0 = (fe.dft.dense() - w0).norm()
    opt = torch.optim.AdamW(fe.param_groups(lr=0.1), weight_decay=1.0)
    for _ in range(5):  # no loss gradient: only the decay acts
        for g in opt.param_groups:
            for p in g["params"]:
                p.grad = torch.zeros_like(p)
        opt.step()
    d5 = (fe.dft.dense() - w0).norm()
    assert d5 < 0.7 * d0  # (1 - 0.1)^5 = 0.59 to first order


def test_twiddle_offset_scale_is_step_scale_times_magnitude_over_the_factor_count():
    """``scale = step_scale * (|twiddle0| + 1e-3) / L``, L = nblocks * log2 N the number of factors,
    in the twiddles' real dtype, computed here from the module's nblocks and size; ``twiddle =
    twiddle0 + scale * delta`` and ``right_inverse`` undoes it (float64, 1e-12).  The DFT's
    K-matrix has 3 blocks and the mel bank's 2, so a count from another dimension is seen."""
    from kfrontend import constructions as C

    import torchaudio

    fb = torchaudio.functional.melscale_fbanks(33, 0.0, 8000.0, 6, 16000).double()
    g = torch.Generator().manual_seed(6)
    for k in (C.dft(16, onesided=True, dtype=torch.complex128), C.mel(fb, dtype=torch.float64)):
        tw0 = k.twiddle.detach()
        n_factors = k.nblocks * int(math.log2(k.size))
        off = TwiddleOffset(tw0, 0.3)
        assert off.scale.dtype == torch.float64 and off.scale.shape == tw0.shape
        assert (off.scale - 0.3 * (tw0.abs() + 1e-3) / n_factors).abs().max() <= 1e-15
        delta = torch.randn(tw0.shape, dtype=torch.float64, generator=g).to(tw0.dtype)
        tw = off(delta)
        assert (tw - (tw0 + off.scale * delta)).abs().max() <= 1e-12
        assert (off.right_inverse(tw) - delta).abs().max() <= 1e-12


@pytest.mark.parametrize("bad", [0, -1.0, "big", True])
def test_bad_step_scale_is_refused(bad):
    with pytest.raises(ValueError, match="step_scale"):
        TwiddleOffset(torch.ones(1, 1, 1, 1, 2, 2), bad)


def test_weight_decay_reaches_offsets_only():
    """param_groups(weight_decay=...) and layers.param_groups_for_weight_decay agree: the offsets
    decay (toward the exact start); the window, dense weights and plain twiddles never do."""
    from kfrontend.layers import param_groups_for_weight_decay

    fe = KF.from_mfcc(n_mfcc=13, melkwargs=dict(n_fft=256, **MEL))
    wd = {g["name"]: g["weight_decay"] for g in fe.param_groups(lr=1e-3, weight_decay=0.5)}
    assert wd == {"frontend.window": 0.0, "frontend.dft": 0.5, "frontend.mel": 0.5, "frontend.dct": 0.5}
    decay, no_decay = param_groups_for_weight_decay(fe, 0.5)
    assert {id(p) for p in no_decay["params"]} == {id(fe.window)}
    assert {id(p) for p in decay["params"]} == {id(fe.dft.param), id(fe.mel.param), id(fe.dct.param)}
    for kw in ({"structure": "dense"}, {"step_scale": None}):
        other = KF.from_melspectrogram(n_fft=256, **MEL, **kw)
        assert all(g["weight_decay"] == 0.0 for g in other.param_groups(weight_decay=0.5))
        decay, no_decay = param_groups_for_weight_decay(other, 0.5)
        assert decay["params"] == [] and len(no_decay["params"]) == 3
    assert all("weight_decay" not in g for g in fe.param_groups())  # None: the optimizer's own
