"""kfrontend.features function by function, against torch.stft, torchaudio.compliance.kaldi and
torchaudio.functional (the counterparts the front end must equal), or a formula written out here.

Fast, float64 unless said otherwise; tolerance 1e-12 relative to the reference's largest value
unless said otherwise (everything here is a few float64 operations).  These tests exist so that
mutation testing of features.py (tools/mutation.sh) can run on seconds of tests, not the front end's
whole suite; docs/TESTING.md has the score.
"""
from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as taF

from kfrontend import features as Fe

TOL = 1e-12
D = torch.float64


def _close(got, ref, tol=TOL):
    assert got.shape == ref.shape, (got.shape, ref.shape)
    scale = ref.abs().max().clamp_min(1e-300)
    assert ((got - ref).abs().max() / scale).item() <= tol


def _signal(*shape, seed=0):
    return torch.randn(*shape, dtype=D, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------
# torch.stft framing
# ------------------------------------------------------------------------------------------------
def _stft_frames_ref(x, n_fft, hop, win, center, pad_mode, pad):
    """torch.stft's frames, read back from torch.stft itself: with a rectangular window and the
    two-sided spectrum, the inverse DFT of column t is frame t with zeros outside the window's
    support.  Returns the n_fft-long frames (..., frames, n_fft)."""
    if pad:
        x = F.pad(x, (pad, pad))  # torchaudio's Spectrogram pads with zeros before torch.stft
    spec = torch.stft(x, n_fft, hop, win, torch.ones(win, dtype=D), center=center, pad_mode=pad_mode,
                      onesided=False, return_complex=True)
    return torch.fft.ifft(spec, dim=-2).real.transpose(-1, -2)


STFT_CASES = [  # n_fft, hop, win_length, center, pad_mode, pad
    (64, 16, 64, True, "reflect", 0),
    (64, 16, 48, True, "reflect", 0),     # even n_fft - win_length
    (64, 16, 37, True, "reflect", 0),     # odd n_fft - win_length
    (64, 20, 41, True, "constant", 0),
    (64, 16, 50, True, "replicate", 3),
    (64, 24, 64, True, "circular", 0),
    (63, 16, 30, False, "reflect", 0),    # odd n_fft, no centring
    (64, 16, 51, False, "reflect", 5),
    (64, 16, 63, True, "reflect", 0),     # window offset 0, one zero after it
    (64, 16, 50, True, "replicate", 0),   # replicate of the signal's own edge samples
    (64, 16, 48, True, "reflect", 5),     # reflection of the zero-padded signal
    (64, 16, 48, True, "circular", 1),
    (64, 16, 48, True, "reflect", 20),    # pad longer than the hop
    (2, 1, 2, True, "reflect", 0),        # n_fft 2: centring pads one sample
    (3, 2, 2, True, "constant", 0),
]


@pytest.mark.parametrize("n_fft,hop,win,center,pad_mode,pad", STFT_CASES)
def test_stft_frames_are_torch_stft_frames(n_fft, hop, win, center, pad_mode, pad):
    """Frames under the window, whole tensor and per item (items of different lengths in one
    zero-padded batch, garbage after each item's end): equal to torch.stft's frames of each item
    alone.  torch.stft puts the window at (n_fft - win_length) // 2 of the frame (its documented
    centring); the rest of each reference frame must be exactly zero, which pins that offset
    from torch.stft's own output."""
    x = _signal(3, 700)
    lengths = torch.tensor([700, 517, 301])
    batch = x.clone()
    for i, n in enumerate(lengths):
        batch[i, n:] = 1e6  # must never be read
    off = (n_fft - win) // 2
    kw = dict(n_fft=n_fft, hop_length=hop, win_length=win, center=center, pad_mode=pad_mode, pad=pad)
    whole = Fe.stft_frames(x, **kw)
    per_item = Fe.stft_frames(batch, lengths=lengths, **kw)
    assert per_item.shape == whole.shape  # the batch's frame count; each item's tail is padding
    for i, n in enumerate(lengths.tolist()):
        ref = _stft_frames_ref(x[i, :n], n_fft, hop, win, center, pad_mode, pad)
        outside = torch.cat((ref[..., :off], ref[..., off + win:]), -1)
        assert outside.numel() == 0 or outside.abs().max() <= 1e-12
        frames = Fe.stft_num_frames(n, n_fft, hop, center, pad)
        assert frames == ref.shape[-2]
        assert int(Fe.stft_num_frames(torch.tensor(n), n_fft, hop, center, pad)) == frames
        if pad == 0:
            assert Fe.stft_num_frames(n, n_fft, hop, center) == frames  # pad defaults to 0
        _close(per_item[i, :frames], ref[..., off: off + win])
        if n == 700:
            _close(whole[i], ref[..., off: off + win])
    assert whole.shape == (3, Fe.stft_num_frames(700, n_fft, hop, center, pad), win)


def test_stft_frames_keep_leading_dims():
    x = _signal(2, 3, 500)
    kw = dict(n_fft=64, hop_length=16, win_length=40)
    y = Fe.stft_frames(x, **kw)
    _close(y, Fe.stft_frames(x, center=True, pad_mode="reflect", pad=0, **kw))  # the defaults
    _close(y[1, 2], Fe.stft_frames(x[1, 2], **kw))
    _close(Fe.stft_frames(x, lengths=torch.full((2, 3), 500), **kw), y)


@pytest.mark.parametrize("center,pad_mode,pad,ok,bad", [
    (True, "reflect", 0, 33, 32),     # reflection needs more than n_fft // 2 = 32 samples
    (True, "reflect", 2, 29, 28),     # ... counting the constant pad on both sides
    (True, "constant", 0, 1, None),   # constant padding takes any length
    (False, "reflect", 0, 64, 63),    # no centring: at least one whole frame
    (False, "reflect", 3, 58, 57),
])
def test_stft_length_limits_match_torch(center, pad_mode, pad, ok, bad):
    """The shortest accepted input, exactly: torch.stft accepts ``ok`` samples (checked) and ours
    does too; one sample fewer, ours refuses with a message naming the limit."""
    kw = dict(n_fft=64, hop_length=16, win_length=64, center=center, pad_mode=pad_mode, pad=pad)
    _stft_frames_ref(_signal(ok), 64, 16, 64, center, pad_mode, pad)
    Fe.stft_frames(_signal(ok), **kw)
    Fe.stft_frames(_signal(2, 100), lengths=torch.tensor([100, ok]), **kw)
    if bad is not None:
        padded = f" (+ 2 * pad {pad})" if pad else ""
        need = "more than n_fft // 2 = 32" if center else "at least n_fft = 64"
        mode = " with pad_mode='reflect'" if center else ""
        msg = f"is too short for center={center}{mode}: {bad} samples{padded}, need {need}"
        with pytest.raises(ValueError, match="^" + re.escape("waveform " + msg) + "$"):
            Fe.stft_frames(_signal(bad), **kw)
        with pytest.raises(ValueError, match="^" + re.escape("sig " + msg) + "$"):
            Fe.stft_frames(_signal(2, 100), lengths=torch.tensor([100, bad]), name="sig", **kw)


def test_unknown_pad_mode_is_named():
    with pytest.raises(ValueError, match="^unknown padding mode 'mirror'$"):
        Fe.stft_frames(_signal(2, 100), n_fft=8, hop_length=4, win_length=8, pad_mode="mirror",
                       lengths=torch.tensor([100, 90]))


# ------------------------------------------------------------------------------------------------
# Kaldi framing and preprocessing
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,shift,snip", [(40, 16, True), (40, 16, False), (41, 15, False), (25, 10, True),
                                             (25, 10, False)])
def test_kaldi_frames_are_torchaudio_kaldi_frames(size, shift, snip):
    """Whole tensor and per item vs torchaudio.compliance.kaldi's own framing (_get_strided)."""
    x = _signal(3, 300)
    lengths = torch.tensor([300, 187, 41])
    batch = x.clone()
    for i, n in enumerate(lengths):
        batch[i, n:] = 1e6
    whole = Fe.kaldi_frames(x, window_size=size, window_shift=shift, snip_edges=snip)
    per_item = Fe.kaldi_frames(batch, window_size=size, window_shift=shift, snip_edges=snip, lengths=lengths)
    assert per_item.shape == whole.shape  # the batch's frame count; each item's tail is padding
    for xs in (x[0], x.reshape(3, 1, 300)):  # one signal, and two leading dims
        _close(Fe.kaldi_frames(xs, window_size=size, window_shift=shift, snip_edges=snip),
               whole[0] if xs.dim() == 1 else whole.unsqueeze(1))
    for i, n in enumerate(lengths.tolist()):
        ref = kaldi._get_strided(x[i, :n], size, shift, snip)
        frames = Fe.kaldi_num_frames(n, size, shift, snip)
        assert frames == ref.shape[0] and int(Fe.kaldi_num_frames(torch.tensor(n), size, shift, snip)) == frames
        _close(per_item[i, :frames], ref)
        if n == 300:
            _close(whole[i], ref)


def test_kaldi_frame_counts_and_short_input():
    """Frame counts at the edges vs torchaudio; fewer samples than the window are refused, as
    torchaudio does (it asserts), and a signal of exactly one window gives one frame."""
    for n in (25, 26, 34, 35, 36, 44, 45):
        for snip in (True, False):
            want = kaldi._get_strided(_signal(n), 25, 10, snip).shape[0]
            assert Fe.kaldi_num_frames(n, 25, 10, snip) == want, (n, snip)
            count = Fe.kaldi_num_frames(torch.tensor([n]), 25, 10, snip)
            assert count.dtype == torch.long and count.tolist() == [want], (n, snip)
    assert Fe.kaldi_num_frames(10, 25, 10, True) == 0  # far below one window: still none
    # snip_edges with fewer samples than the window: no frame (torchaudio returns an empty tensor
    # for 0 < n < window in _get_strided; the front end refuses such input before counting)
    assert Fe.kaldi_num_frames(24, 25, 10, True) == 0
    assert int(Fe.kaldi_num_frames(torch.tensor(24), 25, 10, True)) == 0
    assert kaldi._get_strided(_signal(24), 25, 10, True).shape[0] == 0
    assert Fe.kaldi_frames(_signal(25), window_size=25, window_shift=10).shape == (1, 25)
    msg = "is too short: 24 samples, Kaldi framing needs at least the window size 25 (frame_length x sample_frequency)"
    with pytest.raises(ValueError, match="^" + re.escape("waveform " + msg) + "$"):
        Fe.kaldi_frames(_signal(24), window_size=25, window_shift=10)
    with pytest.raises(ValueError, match="^" + re.escape("x " + msg) + "$"):
        Fe.kaldi_frames(_signal(2, 30), window_size=25, window_shift=10, lengths=torch.tensor([30, 24]), name="x")


@pytest.mark.parametrize("kind", Fe.KALDI_WINDOWS)
@pytest.mark.parametrize("size", [2, 25, 400])
def test_kaldi_window_equals_torchaudio(kind, size):
    ref = kaldi._feature_window_function(kind, size, 0.42, torch.device("cpu"), D)
    _close(Fe.kaldi_window(kind, size), ref)  # blackman_coeff defaults to Kaldi's 0.42
    w32 = Fe.kaldi_window(kind, size, dtype=torch.float32)
    assert Fe.kaldi_window(kind, size).dtype == D and w32.dtype == torch.float32
    if kind == "blackman":
        _close(Fe.kaldi_window(kind, size, 0.3),
               kaldi._feature_window_function(kind, size, 0.3, torch.device("cpu"), D))
    with pytest.raises(ValueError, match="window_type must be one of"):
        Fe.kaldi_window("hann", size)


@pytest.mark.parametrize("dc,a", [(False, 0.0), (True, 0.0), (False, 0.97), (True, 0.97), (True, 0.5), (False, 1.0)])
def test_kaldi_preprocess_and_fold(dc, a):
    """Preprocessing written out from Kaldi's definition (DC removal, then y_0 = x_0 - a x_0,
    y_i = x_i - a x_{i-1}) on (2, 7, 25) frames; folding it into a weight gives the same product
    (windows of 25, 2 and 1 samples)."""
    f = _signal(2, 7, 25)
    ref = f - f.mean(-1, keepdim=True) if dc else f.clone()
    prev = torch.cat((ref[..., :1], ref[..., :-1]), -1)
    ref = ref - a * prev
    got = Fe.kaldi_preprocess(f, dc, a)
    _close(got, ref)
    w = _signal(25, 9, seed=1)
    _close(f @ Fe.kaldi_fold(w, dc, a), ref @ w)
    for size in (2, 1):
        ws, fs = _signal(size, 3, seed=2), _signal(4, size, seed=3)
        _close(fs @ Fe.kaldi_fold(ws, dc, a), Fe.kaldi_preprocess(fs, dc, a) @ ws)


def test_frame_log_energy_equals_torchaudio():
    frames = _signal(2, 6, 25)
    frames[0, 0] = 0.0            # zero energy: log(float32 eps)
    frames[0, 1] *= 1e-3          # below the floor of 1.0
    eps = kaldi._get_epsilon(torch.device("cpu"), D)
    for floor in (0.0, 1.0, 0.5):
        ref = kaldi._get_log_energy(frames.reshape(12, 25), eps, floor).reshape(2, 6)  # torchaudio's is 2-d
        _close(Fe.frame_log_energy(frames, floor), ref)
    assert Fe.frame_log_energy(frames, 0.0)[0, 0].item() == pytest.approx(math.log(Fe.FLOAT32_EPS), rel=1e-15)


# ------------------------------------------------------------------------------------------------
# Matmuls over frames and layouts
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(300,), (2, 300), (2, 3, 300)])
@pytest.mark.parametrize("method", ["auto", "conv", "unfold"])
def test_frames_matmul_equals_unfold_then_matmul(shape, method):
    xp = _signal(*shape)
    w = _signal(40, 7, seed=1)
    ref = xp.unfold(-1, 40, 16) @ w
    got = Fe.frames_matmul(xp, w, 16, method)
    _close(got, ref)


def test_matmul_last_both_layouts():
    w = _signal(5, 3, seed=1)
    plain = _signal(2, 4, 7, 5)
    transposed = _signal(2, 4, 5, 7).transpose(-1, -2)  # the strided conv's (..., F, T) layout
    assert not transposed.is_contiguous()
    for x in (plain, transposed, transposed[0]):
        y = Fe.matmul_last(x, w)
        _close(y, x.contiguous() @ w)
        assert y.is_contiguous()


# ------------------------------------------------------------------------------------------------
# Power, log, dB, masks
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("power", [1.0, 2.0, 0.5, 3.0])
def test_power_spectrum_plain_and_packed(power):
    """|re + i im| ** power vs torch.abs of the complex number, exact zeros included (they stay 0,
    and their gradient is 0, not NaN)."""
    re, im = _signal(4, 6, 9), _signal(4, 6, 9, seed=1)
    re[0, 0, :3] = 0.0
    im[0, 0, :3] = 0.0
    ref = torch.complex(re, im).abs() ** power
    _close(Fe.power_spectrum(re, im, power), ref, 1e-12)
    packed = torch.cat((re, im), -1)  # [Re | Im] (..., T, 2n)
    _close(Fe.power_spectrum_packed(packed, 9, power), ref, 1e-12)
    conv_layout = packed.transpose(-1, -2).contiguous().transpose(-1, -2)  # (..., 2n, T) storage
    _close(Fe.power_spectrum_packed(conv_layout, 9, power), ref, 1e-12)
    r, i = re.clone().requires_grad_(), im.clone().requires_grad_()
    Fe.power_spectrum(r, i, power).sum().backward()
    assert torch.isfinite(r.grad).all() and torch.isfinite(i.grad).all()
    assert (r.grad[0, 0, :3] == 0).all()


def test_safe_log():
    x = torch.tensor([0.0, 1e-9, 1.0, -0.5, float("nan")], dtype=D)
    got = Fe.safe_log(x, 1e-6)
    ref = torch.log(torch.clamp(x + 1e-6, min=Fe.FLOAT32_EPS))
    assert torch.equal(got[:4], ref[:4]) and torch.isnan(got[4])
    assert got[2].item() == pytest.approx(math.log(1 + 1e-6), rel=1e-15)
    assert Fe.safe_log(x, 0.0)[0].item() == pytest.approx(math.log(Fe.FLOAT32_EPS), rel=1e-15)
    assert Fe.safe_log(x, 0.0, floor=1e-3)[1].item() == pytest.approx(math.log(1e-3), rel=1e-15)
    assert Fe.safe_log(x, 0.0)[2].item() == 0.0
    assert torch.equal(Fe.safe_log(x[:4]), Fe.safe_log(x[:4], 0.0, Fe.FLOAT32_EPS))  # Kaldi's defaults
    assert Fe.safe_log(x, 1.0)[2].item() == pytest.approx(math.log(2.0), rel=1e-15)


@pytest.mark.parametrize("shape", [(40, 30), (3, 40, 30), (2, 3, 40, 30), (2, 2, 3, 40, 30)])
@pytest.mark.parametrize("top_db", [None, 80.0, 20.0])
@pytest.mark.parametrize("db_multiplier", [0.0, 0.7, 1.0])
def test_amplitude_to_db_equals_torchaudio(shape, top_db, db_multiplier):
    """Same (..., freq, time) semantics, the top_db clamp's grouping included: items differ by
    orders of magnitude so where the maximum is taken matters."""
    x = _signal(*shape).abs() ** 4
    scale = torch.logspace(0, -12, math.prod(shape[:-2]) or 1, dtype=D).reshape(shape[:-2] or ())
    x = x * scale[..., None, None] if len(shape) > 2 else x
    x[..., 0, 0] = 0.0  # below amin
    for mult, amin in ((10.0, 1e-10), (20.0, 1e-5)):
        ref = taF.amplitude_to_DB(x, mult, amin, db_multiplier, top_db)
        _close(Fe.amplitude_to_db(x, mult, amin, db_multiplier, top_db), ref)
    _close(Fe.amplitude_to_db(x), taF.amplitude_to_DB(x, 10.0, 1e-10, 0.0, None))  # the defaults


def test_frame_mask():
    n = torch.tensor([[0, 3], [5, 1]])
    m = Fe.frame_mask(n, 5)
    ref = torch.arange(5)[None, None] < n[..., None]
    assert m.dtype == torch.bool and torch.equal(m, ref)
    assert m.sum().item() == 9


def test_index_tensors_follow_the_input_device():
    """Index tensors are made on the input's device (the meta device stands in for a GPU here:
    an index made on the CPU would not combine with it)."""
    meta = torch.empty(2, 300, device="meta")
    assert Fe.frame_mask(torch.tensor([1, 2], device="meta"), 5).device.type == "meta"
    y = Fe.kaldi_frames(meta, window_size=25, window_shift=10, snip_edges=False)
    assert y.device.type == "meta" and y.shape == (2, Fe.kaldi_num_frames(300, 25, 10, False), 25)


def test_frames_matmul_method_choice(monkeypatch):
    """auto: the strided conv on the CPU, unfold + matmul elsewhere (cuBLAS and the TF32 setting
    on CUDA; the meta device stands in for it); an explicit method is obeyed."""
    calls = []
    conv = F.conv1d
    monkeypatch.setattr(Fe.F, "conv1d", lambda *a, **k: calls.append("conv") or conv(*a, **k))
    xp, w = _signal(2, 300), _signal(40, 7, seed=1)
    for method, device, want in (("auto", "cpu", ["conv"]), ("conv", "cpu", ["conv"]), ("unfold", "cpu", []),
                                 ("auto", "meta", []), ("conv", "meta", ["conv"])):
        calls.clear()
        y = Fe.frames_matmul(xp.to(device), w.to(device), 16, method)
        assert calls == want, (method, device)
        assert y.shape == (2, 17, 7)
    for device, want in (("cpu", ["conv"]), ("meta", [])):  # the default is auto
        calls.clear()
        Fe.frames_matmul(xp.to(device), w.to(device), 16)
        assert calls == want, device


def test_transposed_layout_predicate():
    """The strided conv's output layout: a (..., T, F) view of a contiguous (..., F, T) tensor,
    three or more dims.  Both layouts give the same numbers (test_matmul_last_both_layouts); this
    decides which of the two code paths runs."""
    base3, base4 = torch.zeros(2, 5, 7), torch.zeros(3, 2, 5, 7)
    assert Fe._is_transposed_contiguous(base3.transpose(-1, -2))
    assert Fe._is_transposed_contiguous(base4.transpose(-1, -2))
    assert not Fe._is_transposed_contiguous(base3)                        # contiguous
    assert not Fe._is_transposed_contiguous(torch.zeros(5, 7).t())        # 2-d: not the conv's output
    assert not Fe._is_transposed_contiguous(base3[:, :, ::2])            # strided another way
    assert not Fe._is_transposed_contiguous(base3.transpose(0, 1))       # batch dims swapped
    assert not Fe._is_transposed_contiguous(base4.transpose(-1, -3).transpose(-2, -3))


# ------------------------------------------------------------------------------------------------
# Input checks
# ------------------------------------------------------------------------------------------------
def test_check_waveform_refuses_what_it_should():
    Fe.check_waveform(torch.zeros(3))
    Fe.check_waveform(torch.zeros(2, 3, dtype=torch.float16))
    with pytest.raises(TypeError, match="waveform must be a torch.Tensor of shape \\(..., time\\), got list"):
        Fe.check_waveform([0.0])
    with pytest.raises(TypeError, match="x must be real"):
        Fe.check_waveform(torch.zeros(3, dtype=torch.complex64), "x")
    with pytest.raises(TypeError, match="floating point.*int16.*32768"):
        Fe.check_waveform(torch.zeros(3, dtype=torch.int16))
    with pytest.raises(TypeError, match="floating point"):
        Fe.check_waveform(torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="0-d"):
        Fe.check_waveform(torch.tensor(1.0))


def test_check_lengths_bounds_and_types():
    x = torch.zeros(2, 3, 50)
    got = Fe.check_lengths([[1, 50, 7], [2, 3, 4]], x)  # both ends of [1, 50] are valid
    assert got.dtype == torch.long and got.tolist() == [[1, 50, 7], [2, 3, 4]]
    assert Fe.check_lengths(torch.tensor([[1, 2, 3], [4, 5, 6]], dtype=torch.int32), x).dtype == torch.long
    for bad, lo, hi in (([[0, 50, 7], [2, 3, 4]], 0, 50), ([[1, 51, 7], [2, 3, 4]], 1, 51)):
        with pytest.raises(ValueError, match=rf"lengths must lie in \[1, 50\].*got values in \[{lo}, {hi}\]"):
            Fe.check_lengths(bad, x)
    with pytest.raises(ValueError, match=r"n must have shape \(2, 3\).*got \(2,\)"):
        Fe.check_lengths([1, 2], x, "n")
    for dtype in (torch.float32, torch.bool, torch.complex64):
        with pytest.raises(TypeError, match="integer tensor"):
            Fe.check_lengths(torch.ones(2, 3, dtype=dtype), x)
    assert Fe.check_lengths(torch.zeros(0, dtype=torch.long), torch.zeros(0, 5)).shape == (0,)


@pytest.mark.cuda
def test_per_item_framing_on_cuda():
    """Lengths given on the CPU for a CUDA batch are moved to it, and the per-item index maps are
    built there (skipped without a GPU; on the CPU the device of an index tensor cannot show)."""
    x = _signal(2, 700).cuda()
    lengths = Fe.check_lengths(torch.tensor([700, 517]), x)
    assert lengths.device == x.device
    kw = dict(n_fft=64, hop_length=16, win_length=48)
    _close(Fe.stft_frames(x, lengths=lengths, **kw).cpu(), Fe.stft_frames(x.cpu(), lengths=lengths.cpu(), **kw))


# ---- power_mel: |Y|^2 @ mel as one op (the training path's power spectrum and filterbank) --------
def _power_mel_reference(y, mel, n):
    """Written from the definition, independent of power_spectrum_packed: (re^2 + im^2) @ mel."""
    re, im = y[..., :n], y[..., n:]
    return (re * re + im * im) @ mel


@pytest.mark.parametrize("layout", ["conv", "contiguous"])
@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
def test_power_mel_values_and_gradients(layout, batch):
    """Values, first and second derivatives of ``power_mel`` (the custom op for power 2) against the
    definition through autograd, float64, relative 1e-12; both layouts the framing produces (the
    strided conv's transposed view and unfold + matmul's contiguous rows) and 1-3 batch dims."""
    g = torch.Generator().manual_seed(len(batch))
    n, t, m = 9, 7, 4
    if layout == "conv":
        y = torch.randn(*batch, 2 * n, t, dtype=torch.float64, generator=g).transpose(-1, -2)
    else:
        y = torch.randn(*batch, t, 2 * n, dtype=torch.float64, generator=g)
    y.requires_grad_()
    mel = torch.rand(n, m, dtype=torch.float64, generator=g).requires_grad_()
    out, ref = Fe.power_mel(y, mel, n, 2.0), _power_mel_reference(y, mel, n)
    assert out.shape == ref.shape == (*batch, t, m)
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-12
    gout = torch.randn(out.shape, dtype=torch.float64, generator=g)
    got = torch.autograd.grad(out, (y, mel), gout)
    want = torch.autograd.grad(ref, (y, mel), gout)
    for a, b in zip(got, want):
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-12
    # only one input requiring grad: the other gradient is not computed
    (gm,) = torch.autograd.grad(Fe.power_mel(y.detach(), mel, n, 2.0), mel, gout)
    assert ((gm - want[1]).abs().max() / want[1].abs().max()).item() < 1e-12
    small_y = y.detach()[..., :3, :].clone().requires_grad_()
    assert torch.autograd.gradgradcheck(lambda a, b: Fe.power_mel(a, b, n, 2.0), (small_y, mel))


def test_power_mel_other_powers_and_no_grad_use_the_plain_path():
    """power 1 (magnitude) and calls without autograd give power_spectrum_packed @ mel exactly."""
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 5, 12, dtype=torch.float64, generator=g)
    mel = torch.rand(6, 3, dtype=torch.float64, generator=g)
    for power in (1.0, 2.0):
        want = Fe.power_spectrum_packed(y, 6, power) @ mel
        assert torch.equal(Fe.power_mel(y, mel, 6, power), want)
    mag = torch.sqrt(y[..., :6] ** 2 + y[..., 6:] ** 2) @ mel
    assert torch.allclose(Fe.power_mel(y, mel, 6, 1.0), mag, rtol=1e-13, atol=0)


# ================================================================================================
# Device placement without a GPU: the meta device stands in for a second device
# ================================================================================================
# On a machine without a GPU every tensor is on the CPU, so code that drops a ``device=`` argument
# (its tensor lands on the default device) computes the same thing and mutation testing cannot
# tell (docs/TESTING.md, "CPU-only" survivors).  Two stand-ins kill such mutants on the CPU:
# * the input on the meta device (a second device whose tensors have shapes, dtypes and a device
#   but no values), where nothing needs to read values: the result must be on the input's device;
# * the default device set to meta while the inputs are real CPU tensors: code that makes its
#   tensors on its input's device gives the same values as without the context, code that relies
#   on the default device mixes meta and CPU tensors and fails.
# ``torch.device`` as a context manager restores the default device even when the test fails.
def _assert_default_device_is_cpu():
    assert torch.get_default_device() == torch.device("cpu"), "the default device leaked"


def test_check_lengths_moves_host_lengths_to_the_input_device():
    """Lengths given on the CPU (a DataLoader's) for a batch on another device are checked where
    they are and returned on the batch's device, int64; the meta batch stands in for a GPU one."""
    x = torch.empty(2, 3, 50, device="meta")
    lengths = torch.tensor([[1, 50, 7], [2, 3, 4]], dtype=torch.int32)
    got = Fe.check_lengths(lengths, x)
    assert got.device == x.device and got.dtype == torch.long and got.shape == (2, 3)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 50\].*got values in \[0, 50\]"):
        Fe.check_lengths(torch.tensor([[0, 50, 7], [2, 3, 4]]), x)  # the bounds still read the values
    assert Fe.check_lengths(lengths, torch.empty(2, 3, 50)).device == torch.device("cpu")


@pytest.mark.parametrize("n_fft,hop,win,center,pad_mode,pad", [
    (64, 16, 48, True, "reflect", 0),     # centred: the reflection index map
    (64, 16, 51, False, "reflect", 5),    # not centred: the positions expanded per item
])
def test_per_item_framing_makes_its_index_maps_on_the_input_device(n_fft, hop, win, center, pad_mode, pad):
    """stft_frames / stft_padded with per-item lengths under a meta default device, on CPU inputs:
    every index tensor is made on the input's device, so the frames are exactly those made without
    the context, and equal (1e-12) to torch.stft's frames of each item alone."""
    x = _signal(3, 700, seed=5)
    lengths = torch.tensor([700, 517, 301])
    kw = dict(n_fft=n_fft, hop_length=hop, win_length=win, center=center, pad_mode=pad_mode, pad=pad)
    want = Fe.stft_frames(x, lengths=lengths, shortest=301, **kw)
    with torch.device("meta"):
        got = Fe.stft_frames(x, lengths=lengths, shortest=301, **kw)
        padded = Fe.stft_padded(x, lengths=lengths, shortest=301, **kw)
    _assert_default_device_is_cpu()
    assert got.device == padded.device == torch.device("cpu")
    assert torch.equal(got, want) and torch.equal(padded.unfold(-1, win, hop), want)
    left = (n_fft - win) // 2
    for i, n in enumerate(lengths.tolist()):
        ref = _stft_frames_ref(x[i, :n], n_fft, hop, win, center, pad_mode, pad)[..., left:left + win]
        _close(got[i, : ref.shape[0]], ref)
