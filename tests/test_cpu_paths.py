"""The fast CPU paths (blocked, dense, K-matrix materialisation) against the stage-by-stage reference."""
import itertools

import pytest
import torch

from kfrontend import cpu
from kfrontend.functional import butterfly_multiply, butterfly_multiply_reference, kmatrix_multiply

SIZES = [2, 4, 8, 32, 256, 4096]  # every log2 N parity, the smallest and the largest supported here


def _twiddle(n, nblocks, complex_, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32
    shape = (nblocks, n.bit_length() - 1, n // 2, 2, 2)
    # Entries N(0, 1/2) keep every factor norm-preserving on average, so 36 factors stay O(1).
    t = torch.randn(shape, dtype=real, generator=g) * 0.5**0.5
    if complex_:
        t = torch.complex(t, torch.randn(shape, dtype=real, generator=g) * 0.5**0.5) * 0.5**0.5
    return t


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture
def small_chunks(monkeypatch):
    """Force several row chunks (and a ragged last one) on small inputs."""
    monkeypatch.setattr(cpu, "_chunk_rows", lambda n: 3)


CASES = [
    (n, nb, inc, cw, cx)
    for n, nb, inc, cw, cx in itertools.product(SIZES, [1, 2, 3], [True, False], [False, True], [False, True])
    # N = 4096 only twice (it is the slow one): both orders, real and complex.
    if n < 4096 or (nb == 3 and inc and cw and not cx) or (nb == 2 and not inc and not cw and not cx)
]


@pytest.mark.parametrize("n,nblocks,inc,complex_w,complex_x", CASES)
def test_blocked_and_dense_equal_reference_float64(n, nblocks, inc, complex_w, complex_x):
    tw = _twiddle(n, nblocks, complex_w, torch.float64, seed=n + 7 * nblocks)
    g = torch.Generator().manual_seed(n)
    rows = 3 if n == 4096 else 5
    x = torch.randn(2, rows, n, dtype=torch.float64, generator=g)  # leading dims (2, rows)
    if complex_x:
        x = torch.complex(x, torch.randn(2, rows, n, dtype=torch.float64, generator=g))
    ref = butterfly_multiply_reference(x, tw, inc)
    for backend in ("blocked", "dense"):
        y = butterfly_multiply(x, tw, inc, backend=backend)
        assert y.shape == ref.shape and y.dtype == ref.dtype
        assert _rel(y, ref) < 1e-12, backend


@pytest.mark.parametrize("n", [16, 512])
@pytest.mark.parametrize("inc", [True, False])
def test_every_split_and_chunking(n, inc, small_chunks):
    tw = _twiddle(n, 3, True, torch.float64, seed=n)
    x = torch.randn(10, n, dtype=torch.float64)
    ref = butterfly_multiply_reference(x, tw, inc)
    for split in range(1, n.bit_length() - 1):
        assert _rel(cpu.butterfly_multiply_blocked(x, tw, inc, split=split), ref) < 1e-12, split


@pytest.mark.parametrize("n,complex_w", [(64, False), (64, True), (1024, True)])
def test_float32_within_1e5(n, complex_w):
    tw64 = _twiddle(n, 2, complex_w, torch.float64, seed=3)
    tw = tw64.to(torch.complex64 if complex_w else torch.float32)
    x = torch.randn(7, n)
    ref = butterfly_multiply_reference(x.double(), tw.to(tw64.dtype), True)
    for backend in ("blocked", "dense"):
        y = butterfly_multiply(x, tw, True, backend=backend)
        assert y.dtype == tw.dtype
        assert _rel(y.to(ref.dtype), ref) < 1e-5, backend


def test_worker_threads_and_serial_path_agree(small_chunks):
    """Chunks (and the pass matrices, one pass per worker, forward and backward) run in
    single-threaded worker threads when torch uses several threads, in the calling thread
    otherwise; both give the reference, gradients too, and the thread count is restored."""
    tw = _twiddle(64, 3, True, torch.float64, seed=4).requires_grad_()
    x = torch.randn(11, 64, dtype=torch.float64, requires_grad=True)
    before = torch.get_num_threads()
    results = []
    for threads in (2, 1):
        torch.set_num_threads(threads)
        try:
            y = cpu.butterfly_multiply_blocked(x, tw, False)
            results.append((y, *torch.autograd.grad(y.abs().sum(), (x, tw))))
            assert torch.get_num_threads() == threads
        finally:
            torch.set_num_threads(before)
    assert _rel(results[0][0], butterfly_multiply_reference(x, tw, False)) < 1e-12
    for a, b in zip(*results):
        assert _rel(a, b) < 1e-12


def test_non_contiguous_input_and_half_precision():
    tw = _twiddle(32, 2, False, torch.float32, seed=1)
    x = torch.randn(32, 9).t()  # (9, 32) with strides (1, 9)
    ref = butterfly_multiply_reference(x, tw)
    for backend in ("blocked", "dense"):
        torch.testing.assert_close(butterfly_multiply(x, tw, backend=backend), ref, rtol=1e-5, atol=1e-5)
    xb = x.to(torch.bfloat16)
    y = butterfly_multiply(xb, tw, backend="blocked")
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, butterfly_multiply_reference(xb, tw))


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("inc", [True, False])
def test_gradcheck_blocked(complex_, inc, small_chunks):
    dtype = torch.complex128 if complex_ else torch.float64
    tw = _twiddle(8, 2, complex_, dtype, seed=5).requires_grad_()
    x = torch.randn(4, 8, dtype=dtype).requires_grad_()
    for split in (1, 2):
        assert torch.autograd.gradcheck(
            lambda a, t: cpu.butterfly_multiply_blocked(a, t, inc, split=split), (x, tw), fast_mode=split == 2
        )
    # Real input, complex twiddle: the first pass is a real GEMM.
    xr = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, t: cpu.butterfly_multiply_blocked(a, t, inc), (xr, tw))


def test_gradients_match_reference_at_512():
    tw = _twiddle(512, 3, True, torch.float64, seed=2).requires_grad_()
    x = torch.randn(5, 512, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(5, 512, dtype=torch.complex128)
    grads = {}
    for backend in ("torch", "blocked", "dense"):
        y = butterfly_multiply(x, tw, True, backend=backend)
        grads[backend] = torch.autograd.grad((y * gy.conj()).real.sum(), (x, tw))
    for backend in ("blocked", "dense"):
        for got, ref in zip(grads[backend], grads["torch"]):
            assert _rel(got, ref) < 1e-12, backend


# K-matrix path: no padding to N, truncated first / last passes, or the materialised (in x out) matrix.
KCASES = [
    (1024, 400, 201, 2, False),  # shape of the Bluestein one-sided DFT of n_fft = 400
    (512, 512, 257, 3, True),  # shape of the power-of-two one-sided DFT
    (256, 80, 40, 2, False),
    (64, 64, 64, 1, True),
    (8, 3, 8, 3, False),
    (2, 1, 2, 2, True),
    (16, 16, 40, 2, True),  # stacked: out_features > N
    (32, 1, 1, 2, False),
]


@pytest.mark.parametrize("n,in_f,out_f,nblocks,inc", KCASES)
@pytest.mark.parametrize("complex_w", [False, True])
def test_kmatrix_cpu_paths_equal_reference(n, in_f, out_f, nblocks, inc, complex_w, small_chunks):
    nstacks = -(-out_f // n)
    tw = torch.stack([_twiddle(n, nblocks, complex_w, torch.float64, seed=k) for k in range(nstacks)])
    x = torch.randn(3, 4, in_f, dtype=torch.float64)
    ref = kmatrix_multiply(x, tw, out_f, inc, backend="torch")
    assert ref.shape == (3, 4, out_f)
    for method in ("blocked", "dense", "auto"):
        y = kmatrix_multiply(x, tw, out_f, inc, backend=method)
        assert y.shape == ref.shape and y.dtype == ref.dtype
        assert _rel(y, ref) < 1e-12, method
    # float32 / complex64
    tw32 = tw.to(torch.complex64 if complex_w else torch.float32)
    for method in ("blocked", "dense"):
        y = kmatrix_multiply(x.float(), tw32, out_f, inc, backend=method)
        assert _rel(y.to(ref.dtype), ref) < 1e-5, method


def test_kmatrix_gradients_match_reference(small_chunks):
    tw = _twiddle(64, 2, True, torch.float64, seed=9)[None].requires_grad_()
    x = torch.randn(6, 25, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(6, 33, dtype=torch.complex128)
    grads = {}
    for method in ("torch", "blocked", "dense"):
        y = kmatrix_multiply(x, tw, 33, False, backend=method)
        grads[method] = torch.autograd.grad((y * gy.conj()).real.sum(), (x, tw))
    for method in ("blocked", "dense"):
        for got, ref in zip(grads[method], grads["torch"]):
            assert _rel(got, ref) < 1e-12, method


def _identity_rows(n, start, stop):
    """Rows start..stop-1 of the n x n identity (float64): the inputs kmatrix_rows stands for."""
    eye = torch.zeros(stop - start, n, dtype=torch.float64)
    eye[:, start:stop] = torch.eye(stop - start, dtype=torch.float64)
    return eye


@pytest.mark.parametrize("n", [2, 8, 64, 1024])
@pytest.mark.parametrize("nblocks,inc", [(1, True), (2, False), (3, True)])
@pytest.mark.parametrize("complex_w", [False, True])
def test_kmatrix_rows_equal_reference_on_identity_rows(n, nblocks, inc, complex_w):
    """``kmatrix_rows`` (the front end's materialisation: first two passes as broadcasts) against the
    stage-by-stage reference on identity rows, for row windows that start mid-block and outputs cut
    mid-block, so every truncation of the first and last pass is exercised."""
    tw = _twiddle(n, nblocks, complex_w, torch.float64, seed=3 * n + nblocks)
    for start, stop, out_f in [(0, n, n), (0, max(1, n // 3), n // 2 + 1), (n // 4, n // 4 + max(1, n // 2), n - 1 or 1)]:
        ref = kmatrix_multiply(_identity_rows(n, start, stop), tw[None], out_f, inc, backend="torch")
        got = cpu.kmatrix_rows(tw, inc, out_f, start, stop)
        assert got.shape == ref.shape and got.dtype == ref.dtype
        assert _rel(got, ref) < 1e-12, (start, stop, out_f)


def test_kmatrix_rows_refuses_rows_or_outputs_outside_the_matrix():
    tw = _twiddle(16, 1, False, torch.float64, seed=0)
    for start, stop, out_f in [(0, 17, 16), (5, 5, 16), (-1, 4, 16), (0, 16, 0), (0, 16, 17)]:
        with pytest.raises(ValueError, match="start < stop <= N = 16"):
            cpu.kmatrix_rows(tw, True, out_f, start, stop)


def test_kmatrix_rows_gradients_autograd_and_torch_func():
    """Gradients of ``kmatrix_rows`` w.r.t. the twiddles: autograd (the pass matrices' custom
    backward) and torch.func.vjp (plain ops, used under torch.compile) against the reference."""
    n, start, stop, out_f = 64, 5, 45, 33
    tw = _twiddle(n, 2, True, torch.float64, seed=11).requires_grad_()
    gy = torch.randn(stop - start, out_f, dtype=torch.complex128)
    eye = _identity_rows(n, start, stop)
    ref = torch.autograd.grad((kmatrix_multiply(eye, tw[None], out_f, False, backend="torch") * gy.conj()).real.sum(), tw)[0]
    got = torch.autograd.grad((cpu.kmatrix_rows(tw, False, out_f, start, stop) * gy.conj()).real.sum(), tw)[0]
    _, vjp = torch.func.vjp(lambda t: cpu.kmatrix_rows(t, False, out_f, start, stop), tw.detach())
    assert _rel(got, ref) < 1e-12
    assert _rel(vjp(gy)[0], ref) < 1e-12


def test_dft_construction_through_every_cpu_path():
    constructions = pytest.importorskip("kfrontend.constructions")
    for n in (400, 512):
        m = constructions.dft(n, onesided=True, dtype=torch.complex128)
        x = torch.randn(6, n, dtype=torch.float64)
        ref = torch.fft.rfft(x)
        for method in ("blocked", "dense", "auto"):
            y = kmatrix_multiply(x, m.twiddle, m.out_features, m.increasing_stride, backend=method)
            assert _rel(y, ref) < 1e-12, (n, method)


def test_backend_choice_follows_the_cost_model():
    tw = _twiddle(1024, 3, True, torch.float32, seed=0).to(torch.complex64)
    # One row: building blocked matrices costs more than the stage-by-stage reference.
    assert cpu.choose_backend(torch.randn(1, 1024), tw) == "torch"
    assert cpu.choose_backend(torch.randn(48000, 1024), tw) in ("blocked", "dense")
    # A K-matrix whose (in x out) matrix is small next to N: materialising it wins.
    tw6 = _twiddle(1024, 2, True, torch.float32, seed=0).to(torch.complex64)[None]
    assert cpu.kmatrix_backend(torch.randn(48000, 40), tw6, 40) == "dense"


def test_bad_arguments():
    tw = _twiddle(8, 1, False, torch.float64, seed=0)
    with pytest.raises(ValueError, match="split"):
        cpu.butterfly_multiply_blocked(torch.randn(2, 8, dtype=torch.float64), tw, split=3)
    with pytest.raises(ValueError, match="power of two"):
        cpu.butterfly_multiply_blocked(torch.randn(2, 6), tw)
    with pytest.raises(ValueError, match="method"):
        cpu.kmatrix_multiply_cpu(torch.randn(2, 8, dtype=torch.float64), tw[None], 8, True, "fast")
    with pytest.raises(ValueError, match="backend"):
        kmatrix_multiply(torch.randn(2, 8, dtype=torch.float64), tw[None], 8, backend="fast")
    with pytest.raises(ValueError, match="twiddle"):
        kmatrix_multiply(torch.randn(2, 8), tw[None, :, :2], 8, backend="blocked")


def test_worker_threads_follow_the_callers_inference_mode():
    """The CPU paths' worker threads do not inherit inference mode (thread-local): under
    inference_mode their writes into the caller's buffers were in-place updates of inference tensors
    from outside inference mode (a RuntimeError on 2 threads, CI's default; hidden on 1)."""
    from kfrontend import Butterfly

    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        m = Butterfly(64, 64)
        x = torch.randn(4096, 64, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            y = m(x)
        xr = x.clone().requires_grad_()
        ref = m(xr)
        ref.pow(2).mean().backward()
        torch.testing.assert_close(y, ref.detach(), rtol=1e-5, atol=1e-6)  # float32 products
        assert xr.grad is not None and torch.isfinite(xr.grad).all()
    finally:
        torch.set_num_threads(old)


# ---- the stages' multiply-out: hand-written backward, batched build, both orientations ----------
@pytest.mark.parametrize("n", [4, 8, 64, 512, 1024])
@pytest.mark.parametrize("nblocks,inc", [(1, True), (2, False), (3, True)])
@pytest.mark.parametrize("complex_w", [False, True])
def test_kmatrix_rows_gradients_equal_reference_both_orientations(n, nblocks, inc, complex_w, monkeypatch):
    """Values and twiddle gradients of ``kmatrix_rows`` (the custom backward: broadcast product,
    pass matmuls, batched doubling) against autograd through the stage-by-stage reference, float64,
    relative 1e-11, with the orientation forced each way (rows > outputs picks the transposed product
    by cost; a cut row window and outputs exercise every truncation)."""
    tw = _twiddle(n, nblocks, complex_w, torch.float64, seed=7 * n + nblocks).requires_grad_()
    g = torch.Generator().manual_seed(n)
    windows = [(0, n, n), (n // 8, n // 8 + max(1, (5 * n) // 8), n // 2 + 1), (1, n // 2 + 1, max(1, n // 5))]
    for start, stop, out_f in windows:
        eye = _identity_rows(n, start, stop)
        ref_y = kmatrix_multiply(eye, tw[None], out_f, inc, backend="torch")
        gy = torch.randn(ref_y.shape, dtype=ref_y.dtype, generator=g)
        ref_g = torch.autograd.grad((ref_y * gy.conj()).real.sum(), tw)[0]
        for force in (-1.0, 1e30):  # transposed product always / never
            real_cost = cpu._rows_cost

            def cost(n_, nb_, inc_, rows, stop_, out_, _force=force, _start=start, _stop=stop):
                c, s = real_cost(n_, nb_, inc_, rows, stop_, out_)
                transposed_call = rows != _stop - _start or stop_ != _stop
                return (c + (_force if transposed_call else 0.0)) if _force > 0 else (c - (1e30 if transposed_call else 0.0)), s

            monkeypatch.setattr(cpu, "_rows_cost", cost)
            y = cpu.kmatrix_rows(tw, inc, out_f, start, stop)
            got_g = torch.autograd.grad((y * gy.conj()).real.sum(), tw)[0]
            monkeypatch.setattr(cpu, "_rows_cost", real_cost)
            assert y.shape == ref_y.shape and y.dtype == ref_y.dtype
            assert _rel(y, ref_y) < 1e-11, (start, stop, out_f, force)
            assert _rel(got_g, ref_g) < 1e-11, (start, stop, out_f, force)


def test_kmatrix_rows_orientation_follows_the_cost():
    """Few outputs: the transposed product (fewer rows through every pass); as many outputs as rows:
    the direct one.  Checked by spying on which twiddles the multiply-out receives."""
    tw = _twiddle(1024, 2, True, torch.float64, seed=1)
    seen = []
    real = cpu._kmatrix_rows_spec
    try:
        cpu._kmatrix_rows_spec = lambda t, spec, a, b, flip=False: (seen.append((spec[4], spec[5], a, b)), real(t, spec, a, b, flip))[1]
        cpu.kmatrix_rows(tw, True, 40, 0, 201)  # a mel stage: 201 rows, 40 outputs
        cpu.kmatrix_rows(tw, True, 1024, 0, 1024)
    finally:
        cpu._kmatrix_rows_spec = real
    # spec = (..., in_f (= stop), out_f, ...); the transposed call has in_f = 40 outputs, rows 0:40
    assert seen[0] == (40, 201, 0, 40)
    assert seen[1] == (1024, 1024, 0, 1024)


@pytest.mark.parametrize("complex_w", [False, True])
def test_doubling_backward_equals_autograd_and_second_order(complex_w):
    """_DoublingFn's hand-written backward against autograd through the plain doubling, and its
    create_graph path (second-order gradients) by gradgradcheck, float64."""
    dt = torch.complex128 if complex_w else torch.float64
    g = torch.Generator().manual_seed(5)
    t = torch.randn(3, 4, 8, 2, 2, 5, dtype=dt, generator=g).requires_grad_()
    gz = torch.randn(3, 5, 16, 16, dtype=dt, generator=g)
    z, zr = cpu._DoublingFn.apply(t), cpu._doubling_reference(t)
    assert torch.equal(z, zr)
    a = torch.autograd.grad(z, t, gz)[0]
    b = torch.autograd.grad(zr, t, gz)[0]
    assert _rel(a, b) < 1e-13
    small = torch.randn(2, 2, 2, 2, 2, 3, dtype=dt, generator=g).requires_grad_()
    assert torch.autograd.gradgradcheck(cpu._DoublingFn.apply, (small,))


def test_kmatrix_rows_second_order_gradients():
    """create_graph through the custom backward: gradgradcheck on a small K-matrix (both
    orientations are reached: 6 rows -> 3 outputs and 3 rows -> 6 outputs)."""
    tw = _twiddle(8, 2, True, torch.float64, seed=2).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda t: cpu.kmatrix_rows(t, True, 3, 1, 7), (tw,))
    assert torch.autograd.gradgradcheck(lambda t: cpu.kmatrix_rows(t, False, 6, 2, 5), (tw,))


def test_kmatrix_rows_under_two_threads_and_inference_mode():
    """The worker-thread and inference-mode paths give the same numbers as one thread."""
    tw = _twiddle(512, 3, True, torch.float64, seed=4).requires_grad_()
    gy = torch.randn(400, 257, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    before = torch.get_num_threads()
    out = {}
    try:
        for th in (1, 2):
            torch.set_num_threads(th)
            y = cpu.kmatrix_rows(tw, True, 257, 56, 456)
            out[th] = (y.detach(), torch.autograd.grad((y * gy.conj()).real.sum(), tw)[0])
            with torch.inference_mode():
                assert _rel(cpu.kmatrix_rows(tw, True, 257, 56, 456), out[th][0]) < 1e-13
    finally:
        torch.set_num_threads(before)
    assert _rel(out[2][0], out[1][0]) < 1e-13 and _rel(out[2][1], out[1][1]) < 1e-13


def test_kmatrix_rows_backward_twice_with_retain_graph():
    """A second backward through a retained graph gives the same gradient, bit for bit (the
    custom backward keeps what the forward saved until the graph goes)."""
    tw = _twiddle(64, 2, True, torch.float64, seed=9).requires_grad_()
    y = cpu.kmatrix_rows(tw, True, 20, 3, 50)
    loss = (y.abs() ** 2).sum()
    g1 = torch.autograd.grad(loss, tw, retain_graph=True)[0]
    g2 = torch.autograd.grad(loss, tw)[0]
    assert torch.equal(g2, g1)


def test_keep_freed_memory_stops_page_faults_on_reallocation():
    """In a fresh process (the setting is process-wide) started with glibc's default thresholds
    pinned (128 KiB: a tensor above it is mmapped and returned to the OS when freed; pinned so that
    glibc's dynamic adjustment, which depends on what ran before, cannot hide it): allocating,
    touching and freeing MB-sized tensors faults their pages in every time, as a training step's
    temporaries do; after ``keep_freed_memory()`` the freed memory is reused (no new faults)."""
    import os
    import subprocess
    import sys

    code = """
import resource, torch
from kfrontend.cpu import keep_freed_memory
def faults():
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        ts = [torch.ones(1 << 20) for _ in range(5)]  # 5 x 4 MB, touched, then freed
        del ts
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
faults()
before = faults()
ok = keep_freed_memory()
faults()
after = faults()
print(ok, before, after)
"""
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="131072", MALLOC_MMAP_THRESHOLD_="131072")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout.split()
    ok, before, after = out[0] == "True", int(out[1]), int(out[2])
    if not ok:
        pytest.skip("the C library is not glibc")
    assert before > 5 * 5 * 900, before  # ~1,024 pages per 4 MB tensor faulted in again
    assert after < 500, after


def test_front_end_stages_built_side_by_side_equal_one_thread():
    """With 2 threads the front end multiplies its stages out concurrently on single-threaded
    workers (cpu.run_parallel): features and every parameter's gradient equal the 1-thread run,
    float64, and the workers really ran them (their thread names)."""
    import threading

    from kfrontend import KaleidoscopeFrontend

    fe = KaleidoscopeFrontend.from_mfcc(sample_rate=16000, n_mfcc=13,
                                        melkwargs=dict(n_fft=512, win_length=400, hop_length=160, n_mels=40)).double()
    x = torch.randn(2, 4000, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    seen = set()
    real = cpu._kmatrix_rows_spec

    def spy(*a, **k):
        seen.add(threading.current_thread().name.split("_")[0])
        return real(*a, **k)

    before = torch.get_num_threads()
    out = {}
    try:
        for th in (1, 2):
            torch.set_num_threads(th)
            cpu._kmatrix_rows_spec = spy
            y = fe(x)
            cpu._kmatrix_rows_spec = real
            grads = torch.autograd.grad(y.pow(2).sum(), list(fe.parameters()))
            out[th] = (y.detach(), grads)
    finally:
        cpu._kmatrix_rows_spec = real
        torch.set_num_threads(before)
    assert seen == {"kfrontend-cpu", "MainThread"}, seen
    assert _rel(out[2][0], out[1][0]) < 1e-12
    for a, b in zip(out[2][1], out[1][1]):
        assert _rel(a, b) < 1e-12


def test_dft_stage_packed_matrix_equals_its_parts():
    """The DFT stage's [Re | Im] matrix in one copy (stages._packed_matrix, through view_as_real)
    equals the one concatenated from the real and imaginary parts, bit for bit, and so do its
    twiddle gradients; n_fft 400 (transposed product) and 512 (its window rows 56:456)."""
    from kfrontend import KaleidoscopeFrontend
    from kfrontend.stages import _packed_matrix, stage_matrix_parts

    for n_fft in (400, 512):
        fe = KaleidoscopeFrontend.from_melspectrogram(sample_rate=16000, n_fft=n_fft, win_length=400, n_mels=40)
        k, left = fe.dft.k, fe.window_offset
        g = torch.randn(400, 2 * k.out_features, generator=torch.Generator().manual_seed(n_fft))
        packed = _packed_matrix(k, left, left + 400)
        (gp,) = torch.autograd.grad((packed * g).sum(), [fe.dft.param])
        re, im = stage_matrix_parts(k, left, left + 400)
        parts = torch.cat((re, im), dim=0).transpose(0, 1)
        (gq,) = torch.autograd.grad((parts * g).sum(), [fe.dft.param])
        assert packed.shape == parts.shape == (400, 2 * k.out_features)
        assert torch.equal(packed, parts)
        assert torch.equal(gp, gq)


def test_training_path_keeps_every_tensor_on_the_module_device():
    """The stages' build, its custom backwards and power_mel on a device that is not the CPU
    (meta stands in for CUDA here: a tensor made on the CPU by mistake would fail to mix with it),
    on 1 and 2 threads (the CPU worker threads must not be used for other devices)."""
    from kfrontend import KaleidoscopeFrontend

    before = torch.get_num_threads()
    try:
        for th, n_fft in ((1, 400), (2, 512)):
            torch.set_num_threads(th)
            fe = KaleidoscopeFrontend.from_mfcc(sample_rate=16000, n_mfcc=13, melkwargs=dict(
                n_fft=n_fft, win_length=400, hop_length=160, n_mels=40)).to("meta")
            y = fe(torch.empty(2, 16000, device="meta"))
            y.sum().backward()
            assert y.shape == (2, 13, 101) and y.device.type == "meta"
            grads = [p.grad for p in fe.parameters()]
            assert all(g is not None and g.device.type == "meta" for g in grads)
    finally:
        torch.set_num_threads(before)
