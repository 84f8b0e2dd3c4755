"""The PyTorch module contract, for every public module and constructor (issue 14): what people do
with modules -- dtype moves, deepcopy, pickle, state_dicts, inference_mode, ``.data`` writes,
torch.func.vmap, torch.compile, torch.export, second-order gradients, TorchScript -- works, or is
refused with an error that names the supported route; never a silently wrong result.

References are independent of the code under test where one exists: the float64 module against
the float32 one (relative 1e-5 of the maximum: the float32 module is within ~1e-6 of exact);
second-order gradients against the same module on the stage-by-stage reference implementation
(``path="kernel", backend="torch"``: plain torch ops, no custom autograd) to 1e-9 relative in
float64; state_dict loads against a module rebuilt from scratch.
"""
from __future__ import annotations

import copy
import io
import pickle
import warnings

import pytest
import torch

from kfrontend import (Butterfly, ButterflyUnitary, ChannelShuffle, FixedFrontend, Kaleidoscope,
                       KaleidoscopeFrontend as KF)

torchaudio = pytest.importorskip("torchaudio")

MEL = dict(n_fft=64, hop_length=32, n_mels=8)


def _ta_mel(**kw):
    return torchaudio.transforms.MelSpectrogram(**dict(MEL, **kw))


def _ta_mfcc(**kw):
    return torchaudio.transforms.MFCC(n_mfcc=5, melkwargs=dict(MEL, **kw))


# name -> (factory(**changes), an input maker, a configuration change that keeps every tensor shape)
FRONTENDS = {
    "melspectrogram": (lambda **c: KF.from_melspectrogram(**dict(MEL, log="log", **c)), dict(hop_length=16)),
    "mfcc": (lambda **c: KF.from_mfcc(n_mfcc=5, melkwargs=dict(MEL, **c)), dict(power=1.0)),
    "kaldi_fbank": (lambda **c: KF.from_kaldi_fbank(**dict(dict(frame_length=8.0, frame_shift=4.0, num_mel_bins=6), **c)),
                    dict(frame_shift=2.0)),
    "librosa": (lambda **c: KF.from_librosa_melspectrogram(**dict(dict(sr=16000, n_fft=64, hop_length=32, n_mels=8), **c)),
                dict(power=1.0)),
    "transform_mel": (lambda **c: KF.from_transform(_ta_mel(**c)), dict(hop_length=16)),
    "transform_mfcc": (lambda **c: KF.from_transform(_ta_mfcc(**c)), dict(hop_length=16)),
    "dense": (lambda **c: KF.from_mfcc(n_mfcc=5, structure="dense", melkwargs=dict(MEL, **c)), dict(hop_length=16)),
    "fixed": (lambda **c: KF.from_mfcc(n_mfcc=5, melkwargs=dict(MEL, **c)).to_fixed(), dict(hop_length=16)),
}
LAYERS = {
    "butterfly": (lambda **c: Butterfly(16, 10, bias=True, **c), dict(increasing_stride=False)),
    "butterfly_complex": (lambda **c: Butterfly(16, 16, complex=True, **c), dict(increasing_stride=False)),
    "kaleidoscope": (lambda **c: Kaleidoscope(16, 12, width=2, **c), dict(increasing_stride=False)),
    "unitary": (lambda **c: ButterflyUnitary(16, 16, **c), dict(increasing_stride=False)),
    "orthogonal": (lambda **c: ButterflyUnitary(16, 16, complex=False, **c), dict(increasing_stride=False)),
    "channel_shuffle": (lambda **c: ChannelShuffle(**dict(dict(groups=4, channels=16), **c)), dict(groups=2)),
}
MODULES = {**FRONTENDS, **LAYERS}


def make(name, **changes):
    torch.manual_seed(0)
    if name == "librosa":
        pytest.importorskip("librosa")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty mel filters at these small sizes
        return MODULES[name][0](**changes)


def inputs(name, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    if name in FRONTENDS:
        shape = (2, 600)
    elif name == "channel_shuffle":
        shape = (2, 16, 3, 3)
    else:
        shape = (3, 16)
    return torch.randn(shape, generator=g).to(dtype)


def run(m, x):
    y = m(x)
    return torch.view_as_real(y) if y.is_complex() else y


def rel(a, b) -> float:
    a, b = torch.view_as_real(a) if a.is_complex() else a, torch.view_as_real(b) if b.is_complex() else b
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def perturb(m, scale=0.01):
    """A trained-looking module: every parameter (or, without any, every floating buffer) moved."""
    g = torch.Generator().manual_seed(2)
    tensors = list(m.parameters()) or [b for b in m.buffers() if b.is_floating_point()]
    with torch.no_grad():
        for t in tensors:
            t.add_(scale * torch.randn(t.shape, generator=g, dtype=t.real.dtype).to(t.dtype))
    return m


ALL = list(MODULES)


# ---- dtype moves ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_dtype_moves_keep_the_map(name):
    m = make(name)
    x = inputs(name)
    ref = run(m, x)
    kinds = {n: t.is_complex() for n, t in list(m.named_parameters()) + list(m.named_buffers())}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Casting complex values to real discards the imaginary part"
        same = copy.deepcopy(m).to(torch.float32)
        assert torch.equal(run(same, x), ref)  # a no-op for a float32 module
        for move in (lambda t: t.to(torch.float64), lambda t: t.to("cpu", torch.float64), lambda t: t.double()):
            m64 = move(copy.deepcopy(m))
            assert {n: t.is_complex() for n, t in list(m64.named_parameters()) + list(m64.named_buffers())} == kinds
            y64 = run(m64, x.double())
            assert y64.dtype == torch.float64
            assert rel(y64, ref) < 1e-5
            back = m64.float()
            assert rel(run(back, x), ref) < 1e-5
            assert all(t.dtype in (torch.float32, torch.complex64) for t in back.parameters())


@pytest.mark.parametrize("maker", [
    lambda **k: KF.from_melspectrogram(**dict(MEL, **k)),
    lambda **k: KF.from_mfcc(n_mfcc=5, melkwargs=MEL, **k),
    lambda **k: KF.from_kaldi_fbank(frame_length=8.0, frame_shift=4.0, num_mel_bins=6, **k),
], ids=["melspectrogram", "mfcc", "kaldi_fbank"])
def test_float_of_a_float64_front_end(maker):
    """Built in float64, then ``.float()``: within float32 rounding of the one built in float32
    (before: a conv dtype error)."""
    x = inputs("mfcc")
    got = maker(dtype=torch.float64).float()(x)
    assert got.dtype == torch.float32
    assert rel(got, maker()(x)) < 1e-5


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_modules_run(name, half):
    """``.half()`` / ``.bfloat16()``: parameters stored in half precision (complex ones stay
    complex64), the arithmetic in float32, the output in the module's dtype for half inputs.
    Tolerance: one half-precision rounding of every parameter (2^-8 bf16, 2^-11 fp16) carried
    through a few dozen factors and the log: 5e-2 / 1e-2 of the maximum."""
    m = make(name)
    x = inputs(name)
    ref = run(m, x)
    mh = m.half() if half == torch.float16 else m.bfloat16()
    y = mh(x.to(half))
    if not y.is_complex():
        assert y.dtype == half
    y = torch.view_as_real(y) if y.is_complex() else y
    assert torch.isfinite(y.float()).all()
    assert rel(y.float(), ref) < (5e-2 if half == torch.bfloat16 else 1e-2)


# ---- copies -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_deepcopy_and_pickle_give_an_independent_equal_module(name):
    m = perturb(make(name))
    x = inputs(name)
    ref = run(m, x)
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    for other in (copy.deepcopy(m), pickle.loads(pickle.dumps(m)), torch.load(buf, weights_only=False)):
        assert type(other) is type(m)
        assert torch.equal(run(other, x), ref)
        assert [n for n, _ in other.named_parameters()] == [n for n, _ in m.named_parameters()]
        assert [p.requires_grad for p in other.parameters()] == [p.requires_grad for p in m.parameters()]
        perturb(other, 0.5)  # shares no storage with the original
        assert torch.equal(run(m, x), ref)


# ---- state_dict -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip(name):
    m = perturb(make(name))
    x = inputs(name)
    fresh = make(name)
    assert not torch.equal(run(fresh, x), run(m, x))
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(run(fresh, x), run(m, x))
    assert all(isinstance(v, torch.Tensor) for v in m.state_dict().values())  # torch.equal loops keep working


@pytest.mark.parametrize("name", ALL)
def test_state_dict_of_another_configuration_is_refused(name):
    changes = MODULES[name][1]
    other = make(name, **changes)
    sd = make(name).state_dict()
    assert {k: v.shape for k, v in sd.items() if not k.endswith("_extra_state")} == {
        k: v.shape for k, v in other.state_dict().items() if not k.endswith("_extra_state")}  # shapes alone agree
    key = next(iter(changes))
    key = {"frame_shift": "hop_length"}.get(key, key)
    with pytest.raises(ValueError, match=f"another configuration.*{key}"):
        other.load_state_dict(sd)


@pytest.mark.parametrize("name", ALL)
def test_state_dicts_from_before_the_configuration_load(name):
    m = perturb(make(name))
    old = {k: v for k, v in m.state_dict().items() if not k.endswith("_extra_state")}
    fresh = make(name)
    fresh.load_state_dict(old)  # strict
    x = inputs(name)
    assert torch.equal(run(fresh, x), run(m, x))


def test_state_dict_configuration_names_n_mels_and_n_out_and_leaves_out_frames_op():
    """Front ends whose stages have the same tensor shapes but another n_mels or n_out (K-matrix
    sizes are padded to powers of two) refuse each other's state_dicts, naming the difference,
    for the learnable and the fixed module; ``frames_op`` only picks a kernel, so a state_dict of
    a "conv" front end loads into an "unfold" one and gives the same features (1e-6 relative)."""
    a, b = KF.from_mfcc(n_mfcc=5, melkwargs=MEL), KF.from_mfcc(n_mfcc=6, melkwargs=MEL)
    c, d = (KF.from_melspectrogram(**dict(MEL, n_mels=n)) for n in (7, 8))
    for src, dst, key in ((a, b, "n_out: 5 there, 6 here"), (c, d, "n_mels: 7 there, 8 here")):
        assert {k: v.shape for k, v in src.state_dict().items()} == {k: v.shape for k, v in dst.state_dict().items()}
        with pytest.raises(ValueError, match=f"another configuration.*{key}"):
            dst.load_state_dict(src.state_dict())
    fx = a.to_fixed()
    assert (fx.n_mels, fx.n_out) == (8, 5) and (c.to_fixed().n_mels, c.to_fixed().n_out) == (7, 7)
    with pytest.raises(ValueError, match="another configuration.*n_out: 5 there, 6 here"):
        b.to_fixed().load_state_dict(fx.state_dict())
    x = inputs("mfcc")
    conv = perturb(KF.from_mfcc(n_mfcc=5, frames_op="conv", melkwargs=MEL))
    unfold = KF.from_mfcc(n_mfcc=5, frames_op="unfold", melkwargs=MEL)
    unfold.load_state_dict(conv.state_dict())
    assert rel(unfold(x), conv(x)) <= 1e-6


# ---- caches -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_no_grad_forward_sees_data_writes(name):
    """EMA updates and hand loading write ``p.data``, which version counters do not see."""
    m = make(name)
    x = inputs(name)
    with torch.no_grad():
        before = run(m, x)
        run(m, x)
    g = torch.Generator().manual_seed(3)
    tensors = list(m.parameters()) or [b for b in m.buffers() if b.is_floating_point()]
    for t in tensors:
        t.data.add_(0.01 * torch.randn(t.shape, generator=g, dtype=t.real.dtype).to(t.dtype))
        t.data.mul_(0.9)
    with torch.no_grad():
        after = run(m, x)
    want = make(name)
    want.load_state_dict(m.state_dict())
    with torch.no_grad():
        assert torch.equal(after, run(want, x))
    assert not torch.equal(after, before)


@pytest.mark.parametrize("name", ALL)
def test_inference_mode_then_a_training_step(name):
    """Lightning validates under inference_mode; a frozen stage's cached product must not be an
    inference tensor that the next training step saves for backward."""
    m = make(name)
    if isinstance(m, KF):
        m.set_trainable({"dft": False, "mel": False})
    x = inputs(name)
    with torch.inference_mode():
        run(m, x)
    xr = x.clone().requires_grad_()
    run(m, xr).pow(2).mean().backward()
    assert xr.grad is not None and torch.isfinite(xr.grad).all()
    if isinstance(m, KF):
        assert m.window.grad is not None


def test_stage_products_are_cached_exactly_when_no_gradient_is_wanted(monkeypatch):
    """A K-matrix stage's product (``LinearStage.weight_t``) is multiplied out once while no
    gradient is wanted (no_grad, or every tensor of the stage frozen) and the stage's tensors hold
    the same values, and recomputed whenever a gradient is wanted (a cached product carries none).
    Counted by spying on the product (``stages.kmatrix_rows``); the values against the exact
    filterbank (``ref_fb``, float32 <= 1e-6 absolute).  A stage moved to float64 recomputes in
    float64: the cache compares dtypes, not only shapes and values (float32 values are exact in
    float64)."""
    from kfrontend import stages

    calls = []
    real = stages.kmatrix_rows
    monkeypatch.setattr(stages, "kmatrix_rows", lambda *a, **k: calls.append(a[3:5]) or real(*a, **k))
    fe = make("mfcc")
    stage = fe.mel
    with torch.no_grad():
        a = stage.weight_t()
        b = stage.weight_t()
        assert stage.weight_t() is b  # the cached tensor itself
        c = stage.weight_t(1, 20)  # another row window: a product of its own
    assert len(calls) == 2 and torch.equal(b, a) and calls[1] == (1, 20)
    assert (a - fe.ref_fb).abs().max() <= 1e-6 and torch.equal(c, stage.weight_t(1, 20).detach())
    # a gradient wanted: computed every time, each with its graph to the stage's parameter
    calls.clear()
    grads = []
    for _ in range(2):
        w = stage.weight_t()
        assert w.requires_grad and w.grad_fn is not None
        (g,) = torch.autograd.grad(w.square().sum(), stage.param)
        grads.append(g)
    assert len(calls) == 2 and torch.equal(grads[0], grads[1]) and grads[0].abs().max() > 0
    # frozen, gradients enabled: cached again
    fe.set_trainable(False)
    calls.clear()
    first, second = stage.weight_t(), stage.weight_t()
    assert stage.weight_t() is second and torch.equal(first, second) and len(calls) == 1
    assert not second.requires_grad
    # moved to float64 after a float32 product was cached
    stage.double()
    with torch.no_grad():
        w64 = stage.weight_t()
    assert w64.dtype == torch.float64 and len(calls) == 2
    assert (w64 - fe.ref_fb.double()).abs().max() <= 1e-6


def test_copies_of_a_front_end_with_plain_twiddles_and_no_grad_forward_of_a_copy():
    """``step_scale=None`` (twiddles learned as they are, no TwiddleOffset): deepcopy and pickle
    work and give the same features, and a copy's no-gradient forward (the product cache, which a
    copy starts empty) equals the original's; likewise for the default TwiddleOffset stages."""
    x = inputs("mfcc")
    for step_scale in (None, "default"):
        m = perturb(KF.from_mfcc(n_mfcc=5, step_scale=step_scale, melkwargs=MEL))
        with torch.no_grad():
            ref = m(x)  # (its product is cached now)
        ref_grad = m(x)
        for other in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
            assert other.dft._cache is None and other.mel._cache is None
            with torch.no_grad():
                assert torch.equal(other(x), ref)
            assert torch.equal(other(x), ref_grad)


# ---- aliasing -------------------------------------------------------------------------------------
@pytest.mark.parametrize("structure", ["dense", "kaleidoscope"])
@pytest.mark.parametrize("source", ["mel", "mfcc"])
def test_training_never_changes_the_source_module(structure, source):
    ta = _ta_mel() if source == "mel" else _ta_mfcc()
    saved = {k: v.clone() for k, v in ta.state_dict().items()}
    fe = KF.from_transform(ta, structure=structure)
    refs = {n: b.clone() for n, b in fe.named_buffers() if n.startswith("ref_")}
    opt = torch.optim.SGD(fe.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        fe(torch.randn(2, 600)).pow(2).mean().backward()
        opt.step()
    assert all(torch.equal(v, saved[k]) for k, v in ta.state_dict().items())
    assert all(torch.equal(b, refs[n]) for n, b in fe.named_buffers() if n.startswith("ref_"))
    assert not torch.equal(fe.mel.dense(), fe.ref_fb)  # the drift plots see the change


@pytest.mark.parametrize("cls", [Butterfly, Kaleidoscope])
def test_layers_copy_a_given_twiddle(cls):
    tw = torch.randn(1, 2, 4, 8, 2, 2)
    keep = tw.clone()
    layer = cls(16, 16, twiddle=tw)
    with torch.no_grad():
        layer.twiddle.mul_(2)
    assert torch.equal(tw, keep)


def test_kaleidoscope_refuses_a_twiddle_that_contradicts_width():
    with pytest.raises(ValueError, match="2 \\* width = 2 blocks"):
        Kaleidoscope(16, 16, width=1, twiddle=torch.randn(1, 3, 4, 8, 2, 2))
    with pytest.raises(ValueError, match="expansion=2 needs N = 16 \\* 2 = 32"):
        Kaleidoscope(16, 16, expansion=2, twiddle=torch.randn(1, 2, 4, 8, 2, 2))


# ---- float64 conversions take the module's own buffers -------------------------------------------
@pytest.mark.parametrize("source", ["mel", "mfcc", "mfcc_log", "mfcc_default"])
def test_from_transform_float64_equals_module_double(source):
    ta = {"mel": lambda: _ta_mel(), "mfcc": lambda: _ta_mfcc(),
          "mfcc_log": lambda: torchaudio.transforms.MFCC(n_mfcc=13, log_mels=True, melkwargs=dict(n_fft=400, n_mels=40)),
          "mfcc_default": lambda: torchaudio.transforms.MFCC()}[source]()
    x = torch.randn(2, 4000, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fe = KF.from_transform(ta, dtype=torch.float64)
        want = ta.double()(x)
        again = KF.from_transform(ta, dtype=torch.float64)  # of the float64 module: the same values
    assert (fe(x) - want).abs().max() <= 1e-12 * want.abs().max()
    assert (again(x) - want).abs().max() <= 1e-12 * want.abs().max()


def test_from_transform_of_an_mfcc_built_in_float64():
    """Under a float64 default dtype torchaudio's DCT differs from the float32 one by 7e-6 at 128
    mels: it is still a DCT (no 'dct must be create_dct' refusal) and is reproduced exactly."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        ta = torchaudio.transforms.MFCC()
    finally:
        torch.set_default_dtype(old)
    x = torch.randn(2, 4000, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fe = KF.from_transform(ta, dtype=torch.float64)
    want = ta(x)
    assert (fe(x) - want).abs().max() <= 1e-12 * want.abs().max()


# ---- second-order gradients --------------------------------------------------------------------------
def _reference_frontend(name, m):
    """The same front end on the stage-by-stage reference: K-matrices applied to activations by
    butterfly_multiply_reference (plain torch ops, no custom autograd)."""
    ref = copy.deepcopy(m)
    ref.path = "kernel"
    for st in (ref.dft, ref.mel, ref.dct):
        if st is not None and st.k is not None:
            st.k.backend = "torch"
    return ref


@pytest.mark.parametrize("name", ["melspectrogram", "mfcc", "kaldi_fbank", "dense", "fixed", "butterfly",
                                  "butterfly_complex", "kaleidoscope", "unitary", "channel_shuffle"])
def test_second_order_gradients(name):
    """A gradient penalty: d/d(x, params) of |d out / d x|^2, against the reference implementation;
    no gradient may be None."""
    m = perturb(make(name)).double()
    if isinstance(m, KF):
        ref = _reference_frontend(name, m)
    elif isinstance(m, FixedFrontend):
        ref = None  # plain matmuls: the reference is itself (checked by gradgradcheck below)
    else:
        ref = copy.deepcopy(m)
        for mod in ref.modules():
            if isinstance(mod, Butterfly):
                mod.backend = "torch"
    x = inputs(name, torch.float64)

    def penalty(mod):
        xr = x.clone().requires_grad_()
        (gx,) = torch.autograd.grad(run(mod, xr).pow(2).sum(), xr, create_graph=True)
        wrt = [xr] + [p for p in mod.parameters() if p.requires_grad]
        return torch.autograd.grad(gx.pow(2).sum(), wrt)

    got = penalty(m)
    assert all(g is not None for g in got)
    if ref is not None:
        want = penalty(ref)
        scale = max(w.abs().max().item() for w in want)  # some are 0 up to rounding (unitary maps)
        for g, w in zip(got, want):
            assert (g - w).abs().max().item() <= 1e-9 * scale
    else:
        xs = inputs(name, torch.float64)[:1, :200].requires_grad_()
        assert torch.autograd.gradgradcheck(lambda t: m(t), (xs,))


def test_second_order_through_the_triton_kernel_is_refused():
    pytest.importorskip("triton")
    layer = Butterfly(16, 16, backend="triton")
    x = torch.randn(3, 16, requires_grad=True)
    (gx,) = torch.autograd.grad(layer(x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="second-order gradients through the Triton"):
        torch.autograd.grad(gx.pow(2).sum(), x)


# ---- transforms -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_vmap_with_gradients_enabled(name):
    m = make(name)
    xs = torch.stack([inputs(name), 2 * inputs(name)])
    got = torch.func.vmap(lambda t: run(m, t))(xs)
    want = torch.stack([run(m, t) for t in xs])
    assert rel(got, want) < 1e-6


@pytest.mark.parametrize("name", ["melspectrogram", "butterfly_complex"])
def test_torch_compile(name):
    """Kept small: Inductor on 2 CPU cores is slow, so aot_eager (Dynamo and AOT autograd)."""
    m = make(name)
    x = inputs(name)
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    assert rel(run(compiled, x), run(m, x)) < 1e-6
    xr = x.clone().requires_grad_()
    run(compiled, xr).pow(2).mean().backward()
    xe = x.clone().requires_grad_()
    run(m, xe).pow(2).mean().backward()
    assert rel(xr.grad, xe.grad) < 1e-5


@pytest.mark.parametrize("name", ["mfcc", "kaldi_fbank"])
def test_torch_export_of_to_fixed(name):
    fixed = make(name).to_fixed()
    x = inputs(name)
    program = torch.export.export(fixed, (x,))
    assert torch.equal(program.module()(x), fixed(x))


@pytest.mark.parametrize("name", ["mfcc", "fixed", "butterfly", "channel_shuffle"])
def test_torchscript_is_refused_with_the_supported_route(name):
    m = make(name)
    with pytest.raises(RuntimeError, match="does not support TorchScript.*to_fixed\\(\\).*torch.export"):
        torch.jit.script(m)
    who = type(m).__name__  # the module traced, not a Butterfly inside it
    with pytest.raises(RuntimeError, match=f"^{who} does not support TorchScript.*to_fixed\\(\\).*torch.export"):
        torch.jit.trace(m, (inputs(name),))


# ---- CUDA routing (a pure function: tested here; the GPU runs are in tests/test_cuda.py) -----------------
def test_auto_backend_routing():
    from kfrontend import kernels
    from kfrontend.functional import auto_backend

    f32, c64, f64 = torch.float32, torch.complex64, torch.float64
    assert auto_backend("cpu", f32, c64) == "cpu"
    assert auto_backend("cuda", f32, c64, kernel_verified=False) == "dense"
    assert auto_backend("cuda", f32, c64, kernel_verified=True) == "triton"
    assert auto_backend("cuda", f64, f64, kernel_verified=True) == "dense"  # the kernel is float32 only
    # Not verified until tests/test_cuda.py has passed on a GPU and docs/BENCHMARKS.md says so.
    assert auto_backend("cuda", f32, c64) == ("triton" if kernels.CUDA_VERIFIED else "dense")


def test_triton_backward_size_limit_is_refused_at_forward(monkeypatch):
    """With the GPU tile shapes, the backward takes N up to 256^2 (complex) while the forward
    takes 1024^2: a product that will need a backward is refused before it runs."""
    pytest.importorskip("triton")
    from kfrontend.kernels import butterfly as kb
    from kfrontend.kernels import butterfly_multiply_triton

    monkeypatch.setattr(kb, "CONFIGS", dict(kb.GPU_CONFIGS))
    monkeypatch.setattr(kb, "_LAUNCH_HOOK", lambda *a: None)
    n = 1 << 17
    tw = torch.zeros(1, 17, n // 2, 2, 2, dtype=torch.complex64, requires_grad=True)
    x = torch.zeros(1, n, dtype=torch.complex64)
    with pytest.raises(ValueError, match="backward supports N up to 65536 \\(complex\\); got N = 131072"):
        butterfly_multiply_triton(x, tw)
    with torch.no_grad():
        butterfly_multiply_triton(x, tw)  # the forward alone is fine


def test_triton_takes_conjugate_views():
    pytest.importorskip("triton")
    from kfrontend.functional import butterfly_multiply, butterfly_multiply_reference

    g = torch.Generator().manual_seed(0)
    tw = torch.randn(1, 4, 8, 2, 2, dtype=torch.complex64, generator=g)
    x = torch.randn(3, 16, dtype=torch.complex64, generator=g)
    got = butterfly_multiply(x.conj(), tw.conj(), backend="triton")
    want = butterfly_multiply_reference(x.conj().resolve_conj().to(torch.complex128),
                                        tw.conj().resolve_conj().to(torch.complex128))
    assert rel(got, want) < 1e-5
