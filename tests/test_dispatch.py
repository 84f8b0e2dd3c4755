"""Which backend runs: kfrontend.functional's dispatch (butterfly_multiply, auto_backend,
kmatrix_multiply and its transposed form), checked by spying on the backends.

Every backend computes the same numbers (tests/test_cpu_paths.py, test_kernel.py), so a dispatch bug
that sends a call to the wrong one passes every numeric test; these tests record the calls instead
(each spy runs the real backend unless it is the Triton kernel, which is stubbed: no GPU here) and
check the numbers against a dense matrix built from the reference product (float64, 1e-12).
"""
from __future__ import annotations

import pytest
import torch

import kfrontend.kernels as kernels
from kfrontend import cpu, functional as F
from kfrontend.reference import butterfly_multiply_reference, transposed_twiddle

D = torch.float64


def _tw(shape, complex_=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, dtype=D, generator=g) * 0.5**0.5
    if complex_:
        t = torch.complex(t, torch.randn(shape, dtype=D, generator=g) * 0.5**0.5)
    return t


def _dense(tw, inc):
    """(N, N) matrix M with reference(x) == x @ M (rows of the identity through the reference)."""
    n = tw.shape[-3] * 2
    eye = torch.eye(n, dtype=torch.complex128 if tw.is_complex() else D)
    return butterfly_multiply_reference(eye, tw, inc)


def _close(a, b):
    assert a.shape == b.shape and ((a - b).abs().max() / b.abs().max()).item() <= 1e-12


@pytest.fixture
def calls(monkeypatch):
    """Spies on every backend entry point the dispatch can reach; ``calls`` lists (name, args)."""
    log = []

    def spy(module, name, real=True):
        orig = getattr(module, name)

        def wrapper(*args, **kwargs):
            log.append((name, args, kwargs))
            if real:
                return orig(*args, **kwargs)
            x = args[0]
            return torch.full(x.shape, 7.0, dtype=x.dtype)  # the stubbed Triton kernel's answer

        monkeypatch.setattr(module, name, wrapper)

    spy(F, "butterfly_multiply_reference")
    spy(cpu, "butterfly_multiply_blocked")
    spy(cpu, "butterfly_multiply_dense")
    spy(cpu, "kmatrix_multiply_cpu")
    spy(kernels, "butterfly_multiply_triton", real=False)
    return log


def _names(calls):
    return [c[0] for c in calls]


# ---- butterfly_multiply ----------------------------------------------------------------------------
@pytest.mark.parametrize("backend,called", [("torch", "butterfly_multiply_reference"),
                                            ("blocked", "butterfly_multiply_blocked"),
                                            ("dense", "butterfly_multiply_dense")])
@pytest.mark.parametrize("inc", [True, False])
def test_butterfly_multiply_runs_the_named_backend(calls, backend, called, inc):
    tw = _tw((2, 3, 4, 2, 2), seed=1)
    x = _tw((5, 8), seed=2)
    y = F.butterfly_multiply(x, tw, inc, backend)
    assert _names(calls)[:1] == [called]
    name, args, _ = calls[0]
    assert args[0] is x and args[1] is tw and args[2] is inc
    _close(y, x @ _dense(tw, inc))


def test_butterfly_multiply_triton_backend_calls_the_kernel(calls):
    tw = _tw((1, 3, 4, 2, 2), seed=1).float()
    x = torch.randn(3, 8)
    y = F.butterfly_multiply(x, tw, False, "triton")
    assert _names(calls) == ["butterfly_multiply_triton"]
    assert calls[0][1][0] is x and calls[0][1][1] is tw and calls[0][1][2] is False
    assert torch.equal(y, torch.full((3, 8), 7.0))


@pytest.mark.parametrize("choice,called", [("torch", "butterfly_multiply_reference"),
                                           ("blocked", "butterfly_multiply_blocked"),
                                           ("dense", "butterfly_multiply_dense")])
def test_butterfly_multiply_auto_on_cpu_follows_the_cost_model(calls, monkeypatch, choice, called):
    seen = []

    def choose(x, twiddle, *rest):
        seen.append((x, twiddle))
        return choice

    monkeypatch.setattr(cpu, "choose_backend", choose)
    tw = _tw((1, 3, 4, 2, 2), seed=3)
    x = _tw((4, 8), seed=4)
    y = F.butterfly_multiply(x, tw)  # backend "auto", increasing by default
    assert seen == [(x, tw)] and _names(calls) == [called] and calls[0][1][2] is True
    _close(y, x @ _dense(tw, True))


@pytest.mark.parametrize("kind,called", [("triton", "butterfly_multiply_triton"), ("dense", "butterfly_multiply_dense")])
def test_butterfly_multiply_auto_takes_what_auto_backend_says_off_cpu(calls, monkeypatch, kind, called):
    """Where auto_backend does not answer "cpu" (CUDA), its answer is the backend: the cost model is
    not asked."""
    asked = []
    monkeypatch.setattr(F, "auto_backend", lambda dev, xd, td: asked.append((dev, xd, td)) or kind)
    monkeypatch.setattr(cpu, "choose_backend", lambda *a: pytest.fail("the CPU cost model was asked"))
    tw = _tw((1, 3, 4, 2, 2), seed=3).float()
    x = torch.randn(4, 8)
    F.butterfly_multiply(x, tw)
    assert asked == [("cpu", torch.float32, torch.float32)] and _names(calls) == [called]


@pytest.mark.parametrize("transpose,conjugate", [(True, False), (False, True), (True, True)])
def test_butterfly_multiply_transpose_and_conjugate_pass_the_transformed_twiddle(calls, transpose, conjugate):
    tw = _tw((2, 3, 4, 2, 2), complex_=True, seed=5)
    x = _tw((3, 8), complex_=True, seed=6)
    y = F.butterfly_multiply(x, tw, True, "blocked", transpose=transpose, conjugate=conjugate)
    want_tw, want_inc = transposed_twiddle(tw, True, transpose, conjugate)
    (name, args, _), = calls
    assert name == "butterfly_multiply_blocked" and torch.equal(args[1], want_tw) and args[2] is want_inc
    m = _dense(tw, True)
    m = m.T if transpose else m
    _close(y, x @ (m.conj() if conjugate else m))
    calls.clear()
    F.butterfly_multiply(x, tw, True, "blocked")  # neither: the twiddle itself
    assert calls[0][1][1] is tw and calls[0][1][2] is True


def test_auto_backend_answers():
    """The pure rule: "cpu" off CUDA; on CUDA "triton" only for a verified kernel and dtypes it
    supports, otherwise "dense"; kernel_verified None reads kfrontend.kernels.CUDA_VERIFIED."""
    f32, f64, c64 = torch.float32, torch.float64, torch.complex64
    assert F.auto_backend("cpu", f32, f32, kernel_verified=True) == "cpu"
    assert F.auto_backend("meta", f32, f32) == "cpu"
    assert F.auto_backend("cuda", f32, f32, kernel_verified=True) == "triton"
    assert F.auto_backend("cuda", c64, c64, kernel_verified=True) == "triton"
    assert F.auto_backend("cuda", f64, f64, kernel_verified=True) == "dense"
    assert F.auto_backend("cuda", f32, f32, kernel_verified=False) == "dense"
    assert F.auto_backend("cuda", f32, f32) == ("triton" if kernels.CUDA_VERIFIED else "dense")


def test_auto_backend_default_reads_the_verified_flag(monkeypatch):
    monkeypatch.setattr(kernels, "CUDA_VERIFIED", True)
    assert F.auto_backend("cuda", torch.float32, torch.float32) == "triton"
    assert F.auto_backend("cuda", torch.float32, torch.float32, kernel_verified=False) == "dense"
    monkeypatch.setattr(kernels, "CUDA_VERIFIED", False)
    assert F.auto_backend("cuda", torch.float32, torch.float32) == "dense"
    assert F.auto_backend("cuda", torch.float32, torch.float32, kernel_verified=True) == "triton"


# ---- kmatrix_multiply --------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["blocked", "dense", "auto"])
@pytest.mark.parametrize("inc", [True, False])
def test_kmatrix_multiply_cpu_backends_take_the_unpadded_cpu_path(calls, backend, inc):
    tw = _tw((2, 2, 3, 4, 2, 2), seed=7)  # 2 stacks of N = 8
    x = _tw((3, 5), seed=8)  # 5 inputs: not padded
    y = F.kmatrix_multiply(x, tw, 13, inc, backend)
    assert _names(calls)[0] == "kmatrix_multiply_cpu"
    args = calls[0][1]
    assert args[0] is x and args[1] is tw and args[2:] == (13, inc, backend)
    want = torch.cat([x @ _dense(tw[k], inc)[:5] for k in range(2)], -1)[:, :13]
    _close(y, want)


@pytest.mark.parametrize("backend,called", [("torch", "butterfly_multiply_reference"),
                                            ("triton", "butterfly_multiply_triton")])
def test_kmatrix_multiply_torch_and_triton_pad_and_run_per_stack(calls, monkeypatch, backend, called):
    per_stack = []
    real = F.butterfly_multiply

    def spy(x, twiddle, inc, be):
        per_stack.append((x.shape, twiddle, inc, be))
        return real(x, twiddle, inc, be)

    monkeypatch.setattr(F, "butterfly_multiply", spy)
    dtype = D if backend == "torch" else torch.float32
    tw = _tw((3, 1, 3, 4, 2, 2), seed=9).to(dtype)
    x = _tw((2, 6), seed=10).to(dtype)
    y = F.kmatrix_multiply(x, tw, 17, False, backend)
    assert [(s, be, inc) for s, _, inc, be in per_stack] == [((2, 8), backend, False)] * 3
    assert all(torch.equal(t, tw[k]) for k, (_, t, _, _) in enumerate(per_stack))
    assert _names(calls) == [called] * 3 and y.shape == (2, 17)
    if backend == "torch":
        xp = torch.nn.functional.pad(x, (0, 2))
        _close(y, torch.cat([xp @ _dense(tw[k], False) for k in range(3)], -1)[:, :17])


def test_kmatrix_multiply_full_width_input_is_not_padded(monkeypatch):
    seen = []
    real = F.butterfly_multiply
    monkeypatch.setattr(F, "butterfly_multiply", lambda x, t, i, b: seen.append(x) or real(x, t, i, b))
    tw = _tw((1, 1, 3, 4, 2, 2), seed=11)
    x = _tw((2, 8), seed=12)
    y = F.kmatrix_multiply(x, tw, 8, True, "torch")
    assert seen[0] is x
    _close(y, x @ _dense(tw[0], True))


@pytest.mark.parametrize("verdict", ["dense", "triton"])
def test_kmatrix_multiply_auto_off_cpu(calls, monkeypatch, verdict):
    """auto where auto_backend says "dense" (CUDA, kernel not verified): the CPU module's dense path
    (one matmul); where it says "triton" on a CPU tensor: still the CPU path with "auto"."""
    asked = []
    monkeypatch.setattr(F, "auto_backend", lambda dev, xd, td: asked.append((dev, xd, td)) or verdict)
    tw = _tw((1, 1, 3, 4, 2, 2), seed=13).float()
    x = _tw((2, 8), complex_=True, seed=14).to(torch.complex64)
    F.kmatrix_multiply(x, tw, 8)
    assert asked == [("cpu", torch.complex64, torch.float32)]  # the devices and dtypes it is asked about
    assert _names(calls)[0] == "kmatrix_multiply_cpu"
    assert calls[0][1][4] == ("dense" if verdict == "dense" else "auto")


def test_kmatrix_multiply_conjugate_conjugates_complex_twiddles_only(calls):
    tw = _tw((1, 2, 3, 4, 2, 2), complex_=True, seed=15)
    x = _tw((2, 8), complex_=True, seed=16)
    y = F.kmatrix_multiply(x, tw, 8, True, "blocked", conjugate=True)
    assert torch.equal(calls[0][1][1], tw.conj_physical())
    _close(y, x @ _dense(tw[0], True).conj())
    calls.clear()
    real = _tw((1, 2, 3, 4, 2, 2), seed=17)
    F.kmatrix_multiply(x.real.contiguous(), real, 8, True, "blocked", conjugate=True)
    assert calls[0][1][1] is real


def test_kmatrix_multiply_refusals():
    tw = _tw((2, 1, 3, 4, 2, 2), seed=18)
    x = torch.randn(2, 8, dtype=D)
    for call, exc, msg in (
            (lambda: F.kmatrix_multiply([0.0] * 8, tw, 8), TypeError, "x must be a torch.Tensor, got list"),
            (lambda: F.kmatrix_multiply(x, tw.numpy(), 8), TypeError, "twiddle must be a torch.Tensor, got ndarray"),
            (lambda: F.kmatrix_multiply(x, tw[0], 8), ValueError,
             r"twiddle must have shape \(nstacks, nblocks, log2 N, N/2, 2, 2\); got \(1, 3, 4, 2, 2\)"),
            (lambda: F.kmatrix_multiply(torch.randn(2, 9, dtype=D), tw, 8), ValueError,
             r"x.shape\[-1\] = 9 is larger than the K-matrix size N = 8"),
            (lambda: F.kmatrix_multiply(x, tw, 17), ValueError, "out_features = 17 exceeds nstacks \\* N = 16"),
            (lambda: F.kmatrix_multiply(x, tw, 8, True, "cuda"), ValueError,
             r"backend must be one of \('auto', 'torch', 'blocked', 'dense', 'triton'\), got 'cuda'")):
        with pytest.raises(exc, match="^" + msg + "$"):
            call()
    assert F.kmatrix_multiply(x, tw, 16).shape == (2, 16)  # out_features == nstacks * N is accepted
    assert F.kmatrix_multiply(x, tw, 16, backend="torch").shape == (2, 16)


# ---- the transposed K-matrix ----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", "blocked", "auto"])
@pytest.mark.parametrize("conjugate", [False, True])
def test_transposed_kmatrix_runs_each_stack_transposed_and_sums(monkeypatch, backend, conjugate):
    tw = _tw((3, 2, 3, 4, 2, 2), complex_=True, seed=19)  # 3 stacks of N = 8: a 24 x 8 matrix
    y = _tw((2, 20), complex_=True, seed=20)  # 20 of the 24 outputs: the last stack's slice is short
    real = F.kmatrix_multiply
    seen = []
    monkeypatch.setattr(F, "kmatrix_multiply", lambda *a, **k: seen.append((a, k)) or real(*a, **k))
    got = real(y, tw, 5, False, backend, transpose=True, conjugate=conjugate)
    want_tw, want_inc = transposed_twiddle(tw, False, True, conjugate)
    assert len(seen) == 3
    for k, (a, kw) in enumerate(seen):
        assert torch.equal(a[0], y[..., 8 * k:8 * (k + 1)]) and torch.equal(a[1], want_tw[k:k + 1])
        assert a[2:] == (5, want_inc, backend) and kw == {}
    m = torch.cat([_dense(tw[k], False) for k in range(3)], -1)  # (8, 24): x @ m is the forward map
    w = m.T[:20, :5]  # y (20 outputs) -> the 5 inputs
    _close(got, y @ (w.conj() if conjugate else w))


def test_transposed_kmatrix_refusals_and_edges():
    tw = _tw((2, 1, 3, 4, 2, 2), seed=21)
    y = torch.randn(2, 16, dtype=D)
    for call, exc, msg in (
            (lambda: F.kmatrix_multiply([0.0], tw, 8, transpose=True), TypeError, "x must be a torch.Tensor, got list"),
            (lambda: F.kmatrix_multiply(y, tw[0], 8, transpose=True), ValueError,
             r"twiddle must be a tensor of shape \(nstacks, nblocks, log2 N, N/2, 2, 2\); got \(1, 3, 4, 2, 2\)"),
            (lambda: F.kmatrix_multiply(y, [1.0], 8, transpose=True), ValueError,
             r"twiddle must be a tensor of shape \(nstacks, nblocks, log2 N, N/2, 2, 2\); got list"),
            (lambda: F.kmatrix_multiply(torch.randn(2, 17, dtype=D), tw, 8, transpose=True), ValueError,
             r"with transpose=True x.shape\[-1\] is the K-matrix's output count and must be in "
             r"\[1, nstacks \* N = 16\]; got x of shape \(2, 17\)"),
            (lambda: F.kmatrix_multiply(torch.randn(2, 0, dtype=D), tw, 8, transpose=True), ValueError,
             r"with transpose=True x.shape\[-1\] is the K-matrix's output count and must be in "
             r"\[1, nstacks \* N = 16\]; got x of shape \(2, 0\)"),
            (lambda: F.kmatrix_multiply(torch.tensor(1.0, dtype=D), tw, 8, transpose=True), ValueError,
             r"with transpose=True x.shape\[-1\] is the K-matrix's output count and must be in "
             r"\[1, nstacks \* N = 16\]; got x of shape \(\)"),
            (lambda: F.kmatrix_multiply(y, tw, 9, transpose=True), ValueError,
             r"with transpose=True out_features is the K-matrix's input count and must be in \[1, N = 8\]; got 9"),
            (lambda: F.kmatrix_multiply(y, tw, 0, transpose=True), ValueError,
             r"with transpose=True out_features is the K-matrix's input count and must be in \[1, N = 8\]; got 0")):
        with pytest.raises(exc, match="^" + msg + "$"):
            call()
    m = torch.cat([_dense(tw[k], True) for k in range(2)], -1)
    _close(F.kmatrix_multiply(y, tw, 8, transpose=True), y @ m.T[:, :8])  # 16 outputs, 8 inputs: the edges
    y1 = torch.randn(2, 1, dtype=D)
    _close(F.kmatrix_multiply(y1, tw, 1, transpose=True), y1 @ m.T[:1, :1])


@pytest.mark.parametrize("backend", ["torch", "blocked", "auto"])
def test_leading_dimensions_other_than_one(backend):
    """The feature axis is the last one whatever x's rank: 1-d and 3-d inputs, forward (3 stacks,
    padded) and transposed, against the dense matrix; a too-wide 3-d input is refused."""
    tw = _tw((3, 2, 3, 4, 2, 2), seed=22)  # 24 x 8
    m = torch.cat([_dense(tw[k], True) for k in range(3)], -1)  # x (.., 8) @ m (8, 24)
    x3 = _tw((2, 3, 6), seed=23)
    _close(F.kmatrix_multiply(x3, tw, 20, True, backend), x3 @ m[:6, :20])
    x1 = _tw((6,), seed=24)
    _close(F.kmatrix_multiply(x1, tw, 20, True, backend), x1 @ m[:6, :20])
    y3 = _tw((2, 3, 20), seed=25)
    _close(F.kmatrix_multiply(y3, tw, 6, True, backend, transpose=True), y3 @ m[:6, :20].T)
    y1 = _tw((20,), seed=26)
    _close(F.kmatrix_multiply(y1, tw, 6, True, backend, transpose=True), y1 @ m[:6, :20].T)
    with pytest.raises(ValueError, match=r"^x.shape\[-1\] = 9 is larger than the K-matrix size N = 8$"):
        F.kmatrix_multiply(torch.randn(2, 3, 9, dtype=D), tw, 8, True, backend)


def test_transposed_twiddle_defaults_to_the_plain_transpose():
    """transposed_twiddle(tw, inc) is the transpose, not the adjoint: a complex product's dense
    matrix transposed, its entries not conjugated."""
    tw = _tw((3, 3, 4, 2, 2), complex_=True, seed=27)
    t, inc = transposed_twiddle(tw, True)
    assert inc is False  # 3 blocks from increasing: the last is increasing, the transpose starts decreasing
    _close(_dense(t, inc), _dense(tw, True).T)
