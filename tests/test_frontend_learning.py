"""KaleidoscopeFrontend beyond equality at init: lengths, pre-cut frames, learning (gradients, freezing,
width, random init, parameter groups, a short training), precision (bf16 autocast), deployment
(to_fixed, ONNX in onnxruntime, torch.compile), bad input, NaN, pictures.

Signals are short (a fraction of a second) so that the file stays fast on two shared cores.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import math
import warnings

import numpy as np
import pytest
import torch
import torchaudio
import torchaudio.compliance.kaldi as kaldi

from kfrontend import features as Fe
from helpers import default_dtype
from kfrontend.frontend import FixedFrontend, KaleidoscopeFrontend as KF

SMALL = dict(n_fft=256, win_length=200, hop_length=80, n_mels=24)
SMALL_MFCC = dict(n_mfcc=13, log_mels=True, melkwargs=SMALL)


pytestmark = pytest.mark.usefixtures("one_thread")


def rel(a, b) -> float:
    """max |a - b| / max |b| in double precision; complex tensors (the DFT stage's twiddle and its
    gradient) compare as complex: ``.double()`` alone would drop their imaginary parts."""
    a, b = (t.to(torch.complex128 if t.is_complex() else torch.float64) for t in (a, b))
    return ((a - b).abs().max() / b.abs().max()).item()


@functools.lru_cache(maxsize=None)
def _batch(root: str | None) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    rows = []
    if root is not None:
        import soundfile as sf

        x, _ = sf.read(f"{root}/dr1-fvmh0/sa2.wav", dtype="float64")
        rows += [torch.from_numpy(x[6000:10000].copy()), torch.from_numpy(x[16000:20000].copy())]
    while len(rows) < 3:
        rows.append(0.1 * torch.randn(4000, dtype=torch.float64, generator=g))
    return torch.stack(rows)


@pytest.fixture
def batch(request) -> torch.Tensor:
    """(3, 4000) float64: two stretches of real speech (noise where the sample is absent) and noise."""
    try:
        root = str(request.getfixturevalue("timit_sample"))
    except pytest.skip.Exception:
        root = None
    return _batch(root).clone()


# ------------------------------------------------------------------------------------------------
# lengths (padded batches) and pre-cut frames
# ------------------------------------------------------------------------------------------------
LENGTH_CASES = [
    ("mel", dict(n_fft=256, hop_length=80, n_mels=24)),  # reflect
    ("mel", dict(n_fft=256, win_length=200, hop_length=64, n_mels=24, pad=11, pad_mode="replicate")),
    ("mel", dict(n_fft=256, hop_length=80, n_mels=24, center=False)),
    ("mfcc", dict(n_mfcc=13, log_mels=True, melkwargs=dict(n_fft=256, hop_length=80, n_mels=24,
                                                           pad_mode="circular"))),
    ("kaldi", dict(num_mel_bins=23, snip_edges=False)),
    ("kaldi", dict(num_mel_bins=23, snip_edges=True, subtract_mean=True)),
]


@pytest.mark.parametrize("kind,kw", LENGTH_CASES)
def test_lengths_give_each_item_its_own_features(kind, kw, batch):
    """With ``lengths`` every item's first n_frames[i] frames equal the counterpart run on that item
    alone (padding, reflection and Kaldi's mirroring happen at the item's own end); float64, 1e-9."""
    lengths = torch.tensor([4000, 2789, 1203])
    with default_dtype(torch.float64):
        if kind == "kaldi":
            fe = KF.from_kaldi_fbank(dtype=torch.float64, **kw)
            ref = lambda s: kaldi.fbank(s[None], **kw)  # noqa: E731
        else:
            make = KF.from_mfcc if kind == "mfcc" else KF.from_melspectrogram
            fe = make(dtype=torch.float64, **kw)
            ref = (torchaudio.transforms.MFCC if kind == "mfcc" else torchaudio.transforms.MelSpectrogram)(**kw)
    x = batch.clone()
    for i, n in enumerate(lengths):
        x[i, n:] = 7.0  # garbage in the padding must not leak into the valid frames
    feats, n_frames = fe(x, lengths=lengths)
    assert n_frames.dtype == torch.long and n_frames.shape == (3,)
    for i, n in enumerate(lengths):
        with default_dtype(torch.float64):  # Kaldi builds its mel banks in the default dtype
            r = ref(x[i, :n])
        if kind == "kaldi":
            assert r.shape[0] == n_frames[i]
            got = feats[i, : n_frames[i]]
        else:
            assert r.shape[-1] == n_frames[i]
            got = feats[i, :, : n_frames[i]]
        assert rel(got, r) <= 1e-9


EMPTY_CASES = LENGTH_CASES + [("mfcc", dict(n_mfcc=13, melkwargs=dict(n_fft=256, hop_length=80, n_mels=24)))]


@pytest.mark.parametrize("kind,kw", EMPTY_CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(EMPTY_CASES)])
def test_an_empty_batch_gives_empty_features(kind, kw, batch):
    """A batch of no signals (say a filtered DataLoader's last batch) gives features of shape
    (0, *one signal's feature shape), with or without lengths ([] included), on the matrix path, the
    kernel path and to_fixed(); the last case is the dB MFCC, whose top_db has no maximum to take.
    (torchaudio fails here: torch.stft's padding and MKL's FFT refuse an empty batch.)"""
    make = dict(mel=KF.from_melspectrogram, mfcc=KF.from_mfcc, kaldi=KF.from_kaldi_fbank)[kind]
    fe = make(**kw)
    one = fe(batch[:1, :4000].float())
    empty = batch[:0, :4000].float()
    for name, f in (("matrix", fe), ("kernel", make(path="kernel", **kw)), ("to_fixed", fe.to_fixed())):
        y = f(empty)
        assert y.shape == (0,) + one.shape[1:] and y.dtype == one.dtype, name
        for lengths in (torch.zeros(0, dtype=torch.long), []):
            y, n_frames = f(empty, lengths=lengths)
            assert y.shape == (0,) + one.shape[1:] and n_frames.shape == (0,), (name, lengths)
            assert n_frames.dtype == torch.long


def test_precut_frames(batch):
    """``framed=True`` takes (..., frames, win_length) samples under the window; cut them by the
    torch.stft definition (reflect-pad n_fft // 2, frame t = padded[t hop + offset : ... + win])."""
    kw = dict(n_fft=256, win_length=200, hop_length=80, n_mels=24)
    with default_dtype(torch.float64):
        fe = KF.from_melspectrogram(dtype=torch.float64, **kw)
        ref = torchaudio.transforms.MelSpectrogram(**kw)
    padded = torch.nn.functional.pad(batch[:, None], (128, 128), mode="reflect")[:, 0]
    n_frames = 1 + (padded.shape[-1] - 256) // 80
    offset = (256 - 200) // 2
    frames = torch.stack([padded[:, t * 80 + offset: t * 80 + offset + 200] for t in range(n_frames)], dim=1)
    assert rel(fe(frames, framed=True), ref(batch)) <= 1e-9
    out, n = fe(frames, lengths=torch.tensor([n_frames, 5, 9]), framed=True)
    assert n.tolist() == [n_frames, 5, 9]
    with pytest.raises(ValueError, match="win_length=200"):
        fe(frames[..., :100], framed=True)
    # Kaldi: the raw window_size samples (before DC removal and pre-emphasis).
    with default_dtype(torch.float64):
        fk = KF.from_kaldi_fbank(dtype=torch.float64)
        rk = kaldi.fbank(batch[:1])
    kf = torch.stack([batch[:, t * 160: t * 160 + 400] for t in range(1 + (4000 - 400) // 160)], dim=1)
    assert rel(fk(kf, framed=True)[0], rk) <= 1e-9


@pytest.mark.parametrize("path", ["matrix", "kernel"])
def test_precut_frames_and_nested_batches_with_kaldi_energy(path, batch):
    """Kaldi fbank with the energy of the windowed, pre-emphasised frame (``raw_energy=False``) on
    both paths: a (3, 1, time) batch and pre-cut frames (3, frames, 400), also nested (3, 1, ...),
    give torchaudio's kaldi.fbank of each signal, float64 1e-9."""
    kw = dict(num_mel_bins=23, use_energy=True, raw_energy=False)
    with default_dtype(torch.float64):
        fe = KF.from_kaldi_fbank(dtype=torch.float64, path=path, **kw)
        ref = torch.stack([kaldi.fbank(s[None], **kw) for s in batch])
    n = ref.shape[1]
    assert rel(fe(batch[:, None]), ref[:, None]) <= 1e-9
    kf = torch.stack([batch[:, t * 160: t * 160 + 400] for t in range(n)], dim=1)
    assert rel(fe(kf, framed=True), ref) <= 1e-9
    assert rel(fe(kf[:, None], framed=True), ref[:, None]) <= 1e-9


@pytest.mark.parametrize("which", ["fixed", "kernel"])
def test_fixed_and_kernel_path_take_precut_frames_and_lengths(which, batch):
    """``to_fixed()`` and the kernel path keep the forward's options: pre-cut frames
    (``framed=True``) and ``lengths`` (Kaldi with ``subtract_mean``: the mean over each item's valid
    frames only) against torchaudio's kaldi.fbank of each item's valid samples, float64 1e-9; the
    frame counts returned.  (20 bins: 23 would equal the 23 frames of a full item, and a mask
    built over the bins instead of the frames would go unseen.)"""
    kw = dict(num_mel_bins=20, subtract_mean=True)
    with default_dtype(torch.float64):
        fe = KF.from_kaldi_fbank(dtype=torch.float64, path="matrix" if which == "fixed" else "kernel", **kw)
        fx = fe.to_fixed() if which == "fixed" else fe
        ref = torch.stack([kaldi.fbank(s[None], **kw) for s in batch])
    n = ref.shape[1]
    kf = torch.stack([batch[:, t * 160: t * 160 + 400] for t in range(n)], dim=1)
    assert rel(fx(kf, framed=True), ref) <= 1e-9
    # with frame counts as lengths; and an STFT front end's frames (here a waveform of 400 samples
    # would be padded and framed again), against the learnable module's own pre-cut-frames path
    out_f, n_f = fx(kf, lengths=torch.tensor([n, 5, 1]), framed=True)
    assert n_f.tolist() == [n, 5, 1] and rel(out_f[0], ref[0]) <= 1e-9
    with default_dtype(torch.float64):
        mfcc = KF.from_mfcc(dtype=torch.float64, path="matrix" if which == "fixed" else "kernel", **SMALL_MFCC)
        module = KF.from_mfcc(dtype=torch.float64, **SMALL_MFCC)
    m = mfcc.to_fixed() if which == "fixed" else mfcc
    frames = torch.randn(2, 7, SMALL["win_length"], dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    assert rel(m(frames, framed=True), module(frames, framed=True)) <= 1e-9
    lengths = torch.tensor([4000, 2500, 450])  # the last item: one frame, its features all 0
    # nested (3, 2, time): each row's second signal is another row's, with its length
    x2, l2 = torch.stack((batch, batch.roll(1, 0)), dim=1), torch.stack((lengths, lengths.roll(1, 0)), dim=1)
    out2, n2 = fx(x2, lengths=l2)
    out, n_frames = fx(batch, lengths=lengths)
    for i, length in enumerate(lengths.tolist()):
        with default_dtype(torch.float64):
            r = kaldi.fbank(batch[i: i + 1, :length], **kw)
        assert n_frames[i] == r.shape[0] == n2[i, 0] == n2[(i + 1) % 3, 1]
        assert rel(out[i, : r.shape[0]], r) <= 1e-9 or (r.shape[0] == 1 and out[i, 0].abs().max() <= 1e-12)
        for got in (out2[i, 0], out2[(i + 1) % 3, 1]):
            assert (got[: r.shape[0]] - r).abs().max() <= 1e-9 * r.abs().max().clamp(min=1)


def test_precut_frames_shapes_and_lengths_arguments(batch):
    """``framed=True`` takes one signal's frames (n_frames, win_length) as well as a batch; fewer
    than 2 dimensions are refused naming the expected shape, bad ``lengths`` naming ``lengths``
    and integer frames naming ``frames``.  ``lengths`` may be a list (as for a waveform).  float64, 1e-12."""
    with default_dtype(torch.float64):
        fe = KF.from_kaldi_fbank(dtype=torch.float64, num_mel_bins=20)
    kf = torch.stack([batch[:, t * 160: t * 160 + 400] for t in range(10)], dim=1)  # (3, 10, 400)
    full = fe(kf, framed=True)
    assert rel(fe(kf[1], framed=True), full[1]) <= 1e-12
    with pytest.raises(ValueError, match=r"framed input must have shape \(\.\.\., n_frames, win_length=400\)"):
        fe(kf[1, 0], framed=True)
    for bad in (torch.tensor([10, 0, 3]), torch.tensor([10, 11, 3]), torch.tensor([10, 3])):
        with pytest.raises(ValueError, match="^lengths must"):
            fe(kf, lengths=bad, framed=True)
    with pytest.raises(TypeError, match="^frames must be a floating point tensor"):  # not "waveform"
        fe((kf * 1000).to(torch.int16), framed=True)
    out, n = fe(batch, lengths=[4000, 2500, 1000])
    want, n_t = fe(batch, lengths=torch.tensor([4000, 2500, 1000]))
    assert torch.equal(n, n_t) and torch.equal(out, want)


def test_one_sample_window_with_precut_frames_and_lengths():
    """A front end with a one-sample window (win_length 1; the generic constructor): each frame's
    spectrum is flat, ``|X_k|^2 = x^2``, so the mel energies are ``x^2`` times each filter's sum;
    pre-cut frames (..., n_frames, 1) with lengths give that and the lengths back (float64 1e-12)."""
    fb = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], dtype=torch.float64)
    fe = KF(n_fft=4, win_length=1, hop_length=1, window=torch.ones(1, dtype=torch.float64), fb=fb, center=False,
            dtype=torch.float64)
    frames = torch.randn(2, 5, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    y, n = fe(frames, lengths=torch.tensor([5, 3]), framed=True)
    assert n.tolist() == [5, 3]
    assert (y - (frames.square() * fb.sum(0)).transpose(-1, -2)).abs().max() <= 1e-12


# (ids without the bare word "cuda": conftest skips tests with that keyword on machines without one)
@pytest.mark.parametrize("device", ["cpu", "cuda", "xpu", "mps", "meta"], ids=lambda d: f"on_{d}")
def test_stages_run_without_autocast_on_every_autocast_device(device, monkeypatch):
    """The front end disables autocast around its stages on every device type torch.autocast
    knows (cpu, cuda, xpu, mps), so a bf16 / fp16 autocast region cannot lower their precision;
    other devices (meta) get no context.  On this machine only the CPU exists: the contexts
    entered are recorded from a stand-in input whose device reads as ``device`` (the front end's
    private ``_no_autocast``); the CPU case is also run for real inside a bf16 autocast region
    (float32 features within 1e-5 of the run outside it)."""
    import types

    from kfrontend import frontend

    made = []
    real = torch.autocast
    monkeypatch.setattr(torch, "autocast", lambda **k: made.append(k) or contextlib.nullcontext())
    ctx = frontend._no_autocast(types.SimpleNamespace(device=torch.device(device)))
    monkeypatch.setattr(torch, "autocast", real)
    if device == "meta":
        assert made == [] and isinstance(ctx, contextlib.nullcontext)
    else:
        assert made == [dict(device_type=device, enabled=False)]
    if device == "cpu":
        fe = KF.from_mfcc(n_mfcc=5, melkwargs=dict(n_fft=64, hop_length=32, n_mels=8))
        x = torch.randn(2, 800, generator=torch.Generator().manual_seed(3))
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            y = fe(x)
        assert y.dtype == torch.float32 and rel(y, fe(x)) <= 1e-5


@pytest.mark.parametrize("frames_op", ["auto", "conv", "unfold"])
def test_frames_op_option_picks_the_framing_kernel(frames_op, monkeypatch):
    """``frames_op``: on the CPU "auto" and "conv" frame and multiply by a strided conv1d, "unfold"
    by unfold + matmul (``features.frames_matmul``); a spy counts the conv1d calls.  The features
    agree to 1e-5 relative (float32) either way."""
    calls = []
    real = Fe.F.conv1d
    monkeypatch.setattr(Fe.F, "conv1d", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.randn(2, 800, generator=torch.Generator().manual_seed(3))
    fe = KF.from_mfcc(n_mfcc=5, frames_op=frames_op, melkwargs=dict(n_fft=64, hop_length=32, n_mels=8))
    y = fe(x)
    assert len(calls) == (0 if frames_op == "unfold" else 1)
    assert rel(y, KF.from_mfcc(n_mfcc=5, frames_op="unfold", melkwargs=dict(n_fft=64, hop_length=32, n_mels=8))(x)) <= 1e-5


def test_log_floor_is_applied(batch):
    """``log="log"`` with a ``log_floor`` (the generic constructor's): ``log(max(mel + log_offset,
    log_floor))``, against torchaudio's MelSpectrogram floored by hand, float64 1e-9, on a quiet
    signal whose mel energies straddle the floor (asserted, so the floor changes the result)."""
    kw = dict(n_fft=256, hop_length=80, n_mels=24)
    x = batch * 1e-2
    with default_dtype(torch.float64):
        ta = torchaudio.transforms.MelSpectrogram(**kw)
        mel = ta(x)
        fe = KF(n_fft=256, win_length=256, hop_length=80, window=ta.spectrogram.window, fb=ta.mel_scale.fb,
                dtype=torch.float64, log="log", log_offset=1e-6, log_floor=1e-4)
    assert (mel + 1e-6 < 1e-4).any() and (mel + 1e-6 > 1e-4).any()
    assert rel(fe(x), torch.clamp(mel + 1e-6, min=1e-4).log()) <= 1e-9


@pytest.mark.parametrize("structure", ["kaleidoscope", "dense"])
def test_path_option_picks_what_runs(structure, monkeypatch):
    """``path``: "auto" and "matrix" multiply the stages out (``LinearStage.weight_t``) and never
    apply them to activations (``LinearStage.forward``); "kernel" does the opposite for K-matrix
    stages, and dense stages always take the matrix path.  (The numbers agree either way; the
    option decides the computation, e.g. the fused kernel on a GPU.)  Spies count the calls."""
    from kfrontend import stages

    calls = {"weight_t": 0, "forward": 0}
    for meth in calls:
        real = getattr(stages.LinearStage, meth)

        def spy(self, *a, _real=real, _m=meth, **k):
            calls[_m] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(stages.LinearStage, meth, spy)
    x = torch.randn(1, 800, generator=torch.Generator().manual_seed(3))
    for path in ("auto", "matrix", "kernel"):
        fe = KF.from_mfcc(n_mfcc=5, structure=structure, path=path, melkwargs=dict(n_fft=64, hop_length=32, n_mels=8))
        calls.update(weight_t=0, forward=0)
        fe(x)
        kernel = path == "kernel" and structure == "kaleidoscope"
        assert (calls["weight_t"] == 0) == kernel and (calls["forward"] == 3) == kernel, (path, calls)
        assert calls["weight_t"] in (0, 3) and calls["forward"] in (0, 3), (path, calls)


# ------------------------------------------------------------------------------------------------
# Structure, init, width, kernel path
# ------------------------------------------------------------------------------------------------
def test_kernel_path_equals_matrix_path_and_reference(batch):
    """path="kernel" applies the K-matrices to the activations (butterfly_multiply); same features
    (float64 1e-9 vs torchaudio) and the same gradients as the matrix path."""
    kw = dict(n_mfcc=13, log_mels=True, melkwargs=dict(n_fft=200, hop_length=100, n_mels=20))
    x = batch[:2, :1200]
    with default_dtype(torch.float64):
        ref = torchaudio.transforms.MFCC(**kw)
        fk = KF.from_mfcc(dtype=torch.float64, path="kernel", **kw)
        fm = KF.from_mfcc(dtype=torch.float64, path="matrix", **kw)
    yk, ym = fk(x), fm(x)
    assert rel(yk, ref(x)) <= 1e-9 and rel(ym, ref(x)) <= 1e-9
    (yk.square().sum()).backward()
    (ym.square().sum()).backward()
    for (name, pk), pm in zip(fk.named_parameters(), fm.parameters()):
        assert pk.grad is not None and rel(pk.grad, pm.grad) <= 1e-8, name


def test_matrix_and_kernel_paths_and_frame_ops_agree(batch):
    """The stages multiplied out (matrix path, strided conv1d framing) and the K-matrices applied to
    the activations (kernel path, unfold framing) give the same features and gradients (float64)."""
    kw = dict(n_mfcc=13, log_mels=True, melkwargs=dict(n_fft=512, win_length=400, hop_length=160, n_mels=40))
    x = batch[:, :3200]
    with default_dtype(torch.float64):
        ref = torchaudio.transforms.MFCC(**kw)(x)
        a = KF.from_mfcc(dtype=torch.float64, **kw)
        b = KF.from_mfcc(dtype=torch.float64, path="kernel", frames_op="unfold", **kw)
    ya, yb = a(x), b(x)
    assert rel(ya, ref) <= 1e-9 and rel(yb, ref) <= 1e-9
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert rel(pa.grad, pb.grad) <= 1e-8, name


@pytest.mark.cuda
def test_cuda_paths_match_the_float64_reference(batch):
    """On a GPU: matrix path (Triton-multiplied stages, unfold + cuBLAS), kernel path and to_fixed
    against torchaudio's float64 run on the CPU; gradients of both paths agree."""
    kw = dict(n_fft=512, win_length=400, hop_length=160, n_mels=40)
    x = batch.float()
    exact = torchaudio.transforms.MelSpectrogram(**kw).double()(batch)
    for path in ("matrix", "kernel"):
        fe = KF.from_melspectrogram(path=path, **kw).cuda()
        y = fe(x.cuda())
        assert rel(y.cpu(), exact) <= 1e-5, path
        assert rel(fe.to_fixed()(x.cuda()).cpu(), exact) <= 1e-5, path
        y.square().sum().backward()
        assert all(torch.isfinite(torch.view_as_real(p.grad) if p.is_complex() else p.grad).all()
                   for p in fe.parameters())
    with torch.autocast("cuda", dtype=torch.bfloat16):
        yb = KF.from_melspectrogram(**kw).cuda()(x.cuda())
    assert yb.dtype == torch.float32 and rel(yb.cpu(), exact) <= 1e-5


def test_structures_inits_widths(batch):
    x = batch[:, :2000].float()
    exact = KF.from_mfcc(**SMALL_MFCC)
    dense = KF.from_mfcc(structure="dense", **SMALL_MFCC)
    rand = KF.from_mfcc(init="random", **SMALL_MFCC)
    wide = KF.from_mfcc(width={"dft": 1, "mel": 2, "dct": 1}, **SMALL_MFCC)
    ce, cd, cr, cw = (m.parameter_counts() for m in (exact, dense, rand, wide))
    n_freqs = 129
    assert cd == {"window": 200, "dft": 256 * 2 * n_freqs, "mel": n_freqs * 24, "dct": 24 * 13}
    assert cr == ce  # random twiddles, same shapes
    for s in ("dft", "mel", "dct"):
        assert ce[s] > 0 and cw[s] > ce[s]
        assert ce[s] == sum(p.numel() * (2 if p.is_complex() else 1) for p in getattr(exact, s).parameters())
    ref = exact(x)
    assert rel(dense(x), ref) <= 1e-4
    assert rel(wide(x), ref) <= 1e-4  # identity BB* pairs keep the init exact ...
    with default_dtype(torch.float64):  # ... to float64 precision
        w64 = KF.from_mfcc(width=1, dtype=torch.float64, **SMALL_MFCC)
        r64 = torchaudio.transforms.MFCC(**SMALL_MFCC)(batch)
    assert rel(w64(batch), r64) <= 1e-9
    assert rel(rand(x), ref) > 0.1
    assert exact.dft.k.twiddle.shape == rand.dft.k.twiddle.shape


# ------------------------------------------------------------------------------------------------
# Gradients, freezing, parameter groups, training
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("maker", ["mfcc", "kaldi_energy", "mel_power1_db"])
def test_gradients_reach_every_trainable_stage(maker, batch):
    if maker == "mfcc":
        fe = KF.from_mfcc(**SMALL_MFCC)
    elif maker == "kaldi_energy":
        fe = KF.from_kaldi_fbank(num_mel_bins=23, use_energy=True, raw_energy=False)
    else:
        fe = KF.from_melspectrogram(power=1.0, log="db", top_db=80.0, **SMALL)
    x = batch[:, :3000].float().clone()
    x[0, :1500] = 0.0  # exact silence: |X| = 0, where sqrt would give NaN gradients
    fe(x).square().mean().backward()
    for stage, params in fe.stage_parameters().items():
        for p in params:
            assert p.grad is not None, stage
            assert torch.isfinite(torch.view_as_real(p.grad) if p.is_complex() else p.grad).all(), stage
            assert p.grad.abs().max() > 0, stage


def test_power_spectrum_safe_sqrt():
    re = torch.tensor([0.0, 3.0, 0.0], requires_grad=True)
    im = torch.tensor([0.0, 4.0, 1e-30], requires_grad=True)
    for power in (1.0, 0.5, 2.0):
        re.grad = im.grad = None
        p = Fe.power_spectrum(re, im, power)
        assert torch.allclose(p, torch.hypot(re, im).pow(power))
        p.sum().backward()
        assert torch.isfinite(re.grad).all() and torch.isfinite(im.grad).all()
        assert re.grad[0] == 0 and im.grad[0] == 0
        assert torch.isclose(re.grad[1], torch.tensor(power * 5.0 ** (power - 2) * 3.0))


def test_freezing_and_param_groups(batch):
    fe = KF.from_mfcc(trainable={"window": False, "dct": False}, **SMALL_MFCC)
    assert fe.trainable_stages() == {"window": False, "dft": True, "mel": True, "dct": False}
    fe(batch[:, :2000].float()).sum().backward()
    assert fe.window.grad is None and fe.dct.param.grad is None
    assert fe.dft.param.grad is not None and fe.mel.param.grad is not None
    groups = fe.param_groups(lr=1e-4, lr_dft=1e-2)
    assert [(g["name"], g["lr"]) for g in groups] == [("frontend.dft", 1e-2), ("frontend.mel", 1e-4)]
    torch.optim.Adam(groups)  # accepted by an optimizer
    fe.set_trainable(False)
    assert fe.param_groups() == [] and not any(fe.trainable_stages().values())
    fe.set_trainable(True)
    assert all(fe.trainable_stages().values())
    with pytest.raises(ValueError, match="trainable keys"):
        fe.set_trainable({"fft": True})


def test_short_training_changes_stages_and_lowers_loss():
    """A tiny classifier (mean-pooled MFCC -> linear) on two classes of tones in noise, trained with
    the front end for 15 Adam steps: the loss falls and every stage moves."""
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    n, length, sr = 16, 1024, 16000
    t = torch.arange(length) / sr
    labels = torch.arange(n) % 2
    freqs = torch.where(labels == 0, 600.0, 2400.0) * (1 + 0.2 * torch.rand(n, generator=g))
    x = torch.sin(2 * math.pi * freqs[:, None] * t) * 0.3 + 0.1 * torch.randn(n, length, generator=g)
    fe = KF.from_mfcc(n_mfcc=8, log_mels=True, melkwargs=dict(n_fft=128, hop_length=64, n_mels=16))
    init = {k: [p.detach().clone() for p in ps] for k, ps in fe.stage_parameters().items()}
    head = torch.nn.Linear(8, 2)
    opt = torch.optim.Adam(fe.param_groups(lr=3e-3) + [{"params": head.parameters(), "lr": 3e-2}])
    losses = []
    for _ in range(15):
        logits = head(fe(x).mean(-1))
        loss = torch.nn.functional.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    for k, ps in fe.stage_parameters().items():
        moved = max((p.detach() - p0).abs().max().item() for p, p0 in zip(ps, init[k]))
        assert moved > 1e-4, k


# ------------------------------------------------------------------------------------------------
# Precision
# ------------------------------------------------------------------------------------------------
def test_bf16_autocast_keeps_stages_in_fp32(batch):
    fe = KF.from_melspectrogram(log="log", **SMALL)
    x = batch[:, :2000].float()
    ref = fe(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fe(x)
        yb = fe(x.bfloat16())
    assert y.dtype == torch.float32 and torch.equal(y, ref)
    assert yb.dtype == torch.float32 and (yb - fe(x.bfloat16().float())).abs().max() == 0


# ------------------------------------------------------------------------------------------------
# Deployment
# ------------------------------------------------------------------------------------------------
def _perturb(fe, scale=0.01, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in fe.parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.real.dtype if p.is_complex() else p.dtype)
            p.add_(scale * noise * (p != 0))


@pytest.mark.parametrize("maker", ["mfcc_db", "kaldi"])
def test_to_fixed_equals_module_after_training(maker, batch):
    fe = KF.from_mfcc(n_mfcc=13, melkwargs=SMALL) if maker == "mfcc_db" else KF.from_kaldi_fbank(use_energy=True)
    _perturb(fe)
    fx = fe.to_fixed()
    assert isinstance(fx, FixedFrontend) and len(list(fx.parameters())) == 0
    x = batch.float()
    a, b = fe(x), fx(x)
    assert a.shape == b.shape and (a - b).abs().max().item() <= 1e-4 * a.abs().max().item()
    lengths = torch.tensor([4000, 3000, 2500])
    (a2, n2), (b2, m2) = fe(x, lengths=lengths), fx(x, lengths=lengths)
    assert torch.equal(n2, m2) and (a2 - b2).abs().max().item() <= 1e-4 * a2.abs().max().item()


@pytest.mark.parametrize("maker", ["mfcc_db", "kaldi"])
def test_onnx_export_runs_in_onnxruntime(maker, batch, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    fe = KF.from_mfcc(n_mfcc=13, melkwargs=SMALL) if maker == "mfcc_db" else KF.from_kaldi_fbank(num_mel_bins=40)
    _perturb(fe)
    fx = fe.to_fixed()
    x = batch[:2, :3000].float()
    dims = ({0: torch.export.Dim("batch", max=64), 1: torch.export.Dim("time", min=1000, max=10**7)},)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(fx, (x,), dynamo=True, dynamic_shapes=dims, verbose=False)
    path = tmp_path / "frontend.onnx"
    program.save(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for inp in (x, batch.float()):  # another batch size and length than the traced one
        got = sess.run(None, {sess.get_inputs()[0].name: inp.numpy()})[0]
        want = fe(inp).detach()
        assert got.shape == tuple(want.shape)
        assert np.abs(got - want.numpy()).max() <= 1e-4 * max(1.0, want.abs().max().item())


def test_torch_compile_forward_and_backward(batch):
    """Inductor, fullgraph, forward and backward: each stage's product is one custom op in the
    graph (the unrolled product took minutes to compile)."""
    fe = KF.from_mfcc(**SMALL_MFCC)
    ref = copy.deepcopy(fe)
    x = batch[:, :2000].float()
    compiled = torch.compile(fe, fullgraph=True)
    y = compiled(x)
    y_ref = ref(x)
    assert rel(y, y_ref) <= 1e-5
    y.square().sum().backward()
    y_ref.square().sum().backward()
    for (name, p), q in zip(fe.named_parameters(), ref.parameters()):
        assert rel(p.grad, q.grad) <= 1e-3, name


# ------------------------------------------------------------------------------------------------
# Constructors from instances, bad input, NaN
# ------------------------------------------------------------------------------------------------
def test_from_transform_copies_configuration_and_buffers(batch):
    mel = torchaudio.transforms.MelSpectrogram(n_fft=256, win_length=180, hop_length=90, n_mels=20, power=1.0,
                                               f_min=30.0, norm="slaney", mel_scale="slaney", center=False)
    mel.spectrogram.window.pow_(1.5)  # a modified buffer is taken as it is
    mfcc = torchaudio.transforms.MFCC(n_mfcc=12, melkwargs=dict(n_fft=256, hop_length=100, n_mels=24))
    mfcc_log = torchaudio.transforms.MFCC(n_mfcc=12, log_mels=True, melkwargs=dict(n_fft=256, n_mels=24))
    x = batch.float()
    for t in (mel, mfcc, mfcc_log):
        fe = KF.from_transform(t)
        r = t(x)
        y = fe(x)
        assert y.shape == r.shape
        err = (y - r).abs().max().item()
        assert (err <= 2e-2) if t is not mel else (err <= 1e-5 * r.abs().max().item())
    with pytest.raises(TypeError, match="MelSpectrogram or MFCC"):
        KF.from_transform(torchaudio.transforms.Spectrogram())


BAD_CONFIGS = [
    (KF.from_melspectrogram, dict(f_max=9000.0), ValueError, "f_max"),
    (KF.from_melspectrogram, dict(n_fft=64, n_mels=40), ValueError, "n_mels"),
    (KF.from_melspectrogram, dict(win_length=500), ValueError, "win_length"),
    (KF.from_melspectrogram, dict(hop_length=0), ValueError, "hop_length"),
    (KF.from_melspectrogram, dict(power=None), ValueError, "power"),
    (KF.from_melspectrogram, dict(onesided=False), ValueError, "onesided"),
    (KF.from_melspectrogram, dict(pad_mode="symmetric"), ValueError, "pad_mode"),
    (KF.from_melspectrogram, dict(mel_scale="bark"), ValueError, "mel_scale"),
    (KF.from_melspectrogram, dict(normalized="energy"), ValueError, "normalized"),
    (KF.from_melspectrogram, dict(n_mfcc=13), TypeError, "n_mfcc"),
    (KF.from_melspectrogram, dict(structure="fft"), ValueError, "structure"),
    (KF.from_melspectrogram, dict(init="zeros"), ValueError, "init"),
    (KF.from_melspectrogram, dict(width=-1), ValueError, "width"),
    (KF.from_melspectrogram, dict(structure="dense", width=1), ValueError, "width"),
    (KF.from_melspectrogram, dict(dtype=torch.float16), TypeError, "dtype"),
    (KF.from_mfcc, dict(dct_type=3), ValueError, "dct_type"),
    (KF.from_mfcc, dict(n_mfcc=50, melkwargs=dict(n_mels=40)), ValueError, "n_mfcc"),
    (KF.from_mfcc, dict(melkwargs=dict(sample_rate=8000)), TypeError, "sample_rate"),
    (KF.from_mfcc, dict(melkwargs=dict(n_mfcc=3)), TypeError, "melkwargs"),
    (KF.from_mfcc, dict(log="log"), TypeError, "log"),
    (KF.from_kaldi_fbank, dict(dither=1.0), ValueError, "dither"),
    (KF.from_kaldi_fbank, dict(channel=0), ValueError, "channel"),
    (KF.from_kaldi_fbank, dict(min_duration=1.0), ValueError, "min_duration"),
    (KF.from_kaldi_fbank, dict(high_freq=9000.0), ValueError, "high_freq"),
    (KF.from_kaldi_fbank, dict(low_freq=8000.0), ValueError, "low_freq"),
    (KF.from_kaldi_fbank, dict(num_mel_bins=3), ValueError, "num_mel_bins"),
    (KF.from_kaldi_fbank, dict(num_mel_bins=200), ValueError, "num_mel_bins"),
    (KF.from_kaldi_fbank, dict(window_type="kaiser"), ValueError, "window_type"),
    (KF.from_kaldi_fbank, dict(preemphasis_coefficient=1.5), ValueError, "preemphasis_coefficient"),
    (KF.from_kaldi_fbank, dict(frame_length=20.0, round_to_power_of_two=False, frame_shift=10.0,
                               sample_frequency=16050.0), ValueError, "even"),
    (KF.from_librosa_melspectrogram, dict(pad_mode="median"), ValueError, "pad_mode"),
    (KF.from_librosa_melspectrogram, dict(sr=16000, fmax=10000.0), ValueError, "fmax"),
    (KF.from_librosa_melspectrogram, dict(S=np.zeros((1025, 3))), TypeError, "'S'"),
]


@pytest.mark.parametrize("maker,kw,exc,match", BAD_CONFIGS, ids=[f"{m.__name__}-{k}" for m, k, _, _ in BAD_CONFIGS])
def test_bad_configuration_is_refused(maker, kw, exc, match):
    with pytest.raises(exc, match=match):
        maker(**kw)


def test_empty_filters_warn_like_the_counterpart():
    with pytest.warns(UserWarning, match="n_mels"):
        KF.from_melspectrogram()  # torchaudio's own defaults: 4 of 128 filters cover no bin


def test_bad_input_is_refused(batch):
    fe = KF.from_melspectrogram(center=False, **SMALL)
    fr = KF.from_melspectrogram(**SMALL)
    fk = KF.from_kaldi_fbank()
    x = batch.float()
    with pytest.raises(TypeError, match="waveform.*floating point"):
        fe((x * 32768).to(torch.int16))
    with pytest.raises(TypeError, match="waveform must be real"):
        fe(x.to(torch.complex64))
    with pytest.raises(ValueError, match="too short for center=False.*n_fft = 256"):
        fe(x[:, :200])
    with pytest.raises(ValueError, match="too short for center=True"):
        fr(x[:, :100])
    with pytest.raises(ValueError, match="too short.*window size 400"):
        fk(x[:, :300])
    with pytest.raises(ValueError, match=r"lengths must have shape \(3,\)"):
        fr(x, lengths=torch.tensor([10, 20]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 4000\]"):
        fr(x, lengths=torch.tensor([4000, 4001, 10]))
    with pytest.raises(TypeError, match="lengths must be an integer"):
        fr(x, lengths=torch.tensor([4000.0, 10.0, 10.0]))
    with pytest.raises(ValueError, match="too short for center=True"):
        fr(x, lengths=torch.tensor([4000, 100, 4000]))  # one item too short to reflect


def test_nan_propagates_like_torchaudio(batch):
    """A NaN sample makes NaN every frame whose window covers it, all bins (the DFT mixes the
    frame), as in torchaudio; nothing crashes.  With win_length < n_fft torch.stft also poisons the
    frames whose zero-padded margin holds it (0 * NaN); ours only reads the window's support, so
    its NaN frames are those under the window (documented in kfrontend.frontend)."""
    x = batch.float().clone()
    x[1, 1234] = float("nan")
    full = dict(n_fft=256, hop_length=80, n_mels=24)  # win_length == n_fft: the same frames
    r, y = torchaudio.transforms.MelSpectrogram(**full)(x), KF.from_melspectrogram(**full)(x)
    assert r.isnan().any() and torch.equal(r.isnan(), y.isnan())
    assert torch.isfinite(y[0]).all() and torch.isfinite(y[2]).all()
    mfcc_t, mfcc = torchaudio.transforms.MFCC(n_mfcc=13, melkwargs=full), KF.from_mfcc(n_mfcc=13, melkwargs=full)
    assert torch.equal(mfcc_t(x).isnan(), mfcc(x).isnan())  # dB: the batch-wide max is NaN, all NaN
    rk = kaldi.fbank(x[1:2])
    yk = KF.from_kaldi_fbank()(x[1:2])[0]
    assert rk.isnan().any() and torch.equal(rk.isnan(), yk.isnan())
    # win_length < n_fft: NaN exactly in the frames whose window [t hop + 28, t hop + 228) holds the
    # sample (padded position 1234 + 128), a subset of torchaudio's.
    r, y = torchaudio.transforms.MelSpectrogram(**SMALL)(x), KF.from_melspectrogram(**SMALL)(x)
    nan_frames = y[1].isnan().all(0).nonzero().flatten().tolist()
    assert nan_frames == [t for t in range(y.shape[-1]) if t * 80 + 28 <= 1234 + 128 < t * 80 + 228]
    assert not (y.isnan() & ~r.isnan()).any()


# ------------------------------------------------------------------------------------------------
# Pictures
# ------------------------------------------------------------------------------------------------
def test_plots_against_initialisation(batch, tmp_path):
    from kfrontend import plot

    fe = KF.from_melspectrogram(log="log", **SMALL)
    learned, ref = plot.dft_responses(fe), plot.dft_responses(fe, reference=True)
    strong = ref > ref.max() - 60
    assert (learned - ref)[strong].abs().max() < 0.01  # at init the stage *is* the windowed DFT
    _perturb(fe, 0.02)
    assert (plot.dft_responses(fe) - ref)[strong].abs().max() > 0.01
    paths = plot.plot_all(fe, batch[:1].float(), tmp_path)
    assert [p.name for p in paths] == ["dft_responses.png", "mel_filters.png", "features.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
    kp = plot.plot_features(KF.from_kaldi_fbank(), batch[:1].float(), tmp_path / "kaldi.png")
    assert kp.stat().st_size > 10_000
