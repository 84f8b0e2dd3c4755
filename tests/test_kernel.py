"""The fused Triton butterfly kernel (kernels/butterfly.py) against the stage-by-stage reference.

Without a GPU these run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1 before
the kernels are imported); on a CUDA machine the same tests run on CPU tensors only if the
interpreter is on, so they skip there (tests/test_cuda.py covers the GPU).

Tolerance: max |kernel - reference| <= 1e-4 * max |reference| (fp32; complex64), for outputs and
for both gradients.  The kernel applies the same 2x2 products in the same order as the reference,
so real results agree to a few ulps; the bound leaves room for the fused complex arithmetic and
for rounding that grows with nblocks * log2 N stages (seen: <= 5e-7 at N = 4096).
"""
from __future__ import annotations

import math

import pytest
import torch

from helpers import deterministic_twiddle_grads
from kfrontend.functional import butterfly_multiply, butterfly_multiply_reference
from kfrontend.layers import twiddle_init

kb = pytest.importorskip("kfrontend.kernels.butterfly")
if not kb._is_interpreted():
    pytest.skip("interpreter tests (CPU tensors); the GPU is covered by tests/test_cuda.py",
                allow_module_level=True)

RTOL = 1e-4


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def make_case(n, nblocks, complex_, batch, generator, noncontiguous=False, dtype=torch.float32):
    log_n = n.bit_length() - 1
    tw = twiddle_init((nblocks, log_n, n // 2, 2, 2), "randn", complex_, generator=generator)
    cdtype = torch.complex64 if complex_ else dtype
    if noncontiguous:
        # every other column of a wider tensor, leading dims transposed: neither rows nor
        # columns contiguous
        base = torch.randn(*batch[::-1], 2 * n, generator=generator, dtype=torch.float32)
        if complex_:
            base = torch.complex(base, torch.randn(base.shape, generator=generator))
        x = base[..., ::2].to(cdtype)
        if len(batch) >= 2:
            x = x.transpose(0, 1)
    else:
        x = torch.randn(*batch, n, generator=generator)
        if complex_:
            x = torch.complex(x, torch.randn(x.shape, generator=generator))
        x = x.to(cdtype)
    return x, tw


def check_fwd_bwd(x, tw, inc, rtol=RTOL):
    x = x.detach().requires_grad_()
    tw = tw.detach().requires_grad_()
    y = butterfly_multiply(x, tw, inc, backend="triton")
    ref = butterfly_multiply_reference(x, tw, inc)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    assert rel_err(y, ref) <= rtol, rel_err(y, ref)
    g = torch.randn(ref.shape, dtype=ref.dtype)
    gx, gtw = torch.autograd.grad(y, (x, tw), g)
    rx, rtw = torch.autograd.grad(ref, (x, tw), g)
    assert gx.dtype == x.dtype and gtw.dtype == tw.dtype
    assert rel_err(gx, rx) <= rtol, ("grad x", rel_err(gx, rx))
    assert rel_err(gtw, rtw) <= rtol, ("grad twiddle", rel_err(gtw, rtw))


# Every N from 2 to 4096, real and complex; nblocks 1..4, both stride orders, batch shapes and
# (non-)contiguity rotate over the sizes.  Frames per case shrink with N to keep the interpreter
# fast; small N get more frames than fit one tile row, so masking of partial tiles is exercised.
# For N <= 512 nblocks cycles with period 4 and the stride order flips every 4 cases, so every
# (nblocks, order) pair runs, real and complex alike (asserted below); an order tied to nblocks'
# parity would never run (3, decreasing) or (4, increasing).
SIZES = [2**k for k in range(1, 13)]
CASES = []
for _i, _n in enumerate(SIZES):
    for _c in (False, True):
        _nb = 1 + (_i + _c) % 4 if _n <= 512 else (1 if _c else 2)
        _inc = ((_i + _c) // 4) % 2 == 0 if _n <= 512 else (_i + _c) % 2 == 0
        _batch = [(37,), (3, 5), (2, 3, 2), (4, 3)][_i % 4] if _n <= 256 else [(3,), (2, 2)][_i % 2]
        CASES.append((_n, _c, _nb, _inc, _batch, _i % 3 == 1))
for _c in (False, True):
    assert {(c[2], c[3]) for c in CASES if c[1] == _c and c[0] <= 512} == {
        (nb, inc) for nb in (1, 2, 3, 4) for inc in (True, False)}


@pytest.mark.parametrize("n,complex_,nblocks,inc,batch,noncontig", CASES,
                         ids=[f"N{c[0]}-{'c' if c[1] else 'r'}-b{c[2]}-{'inc' if c[3] else 'dec'}"
                              f"{'-nc' if c[5] else ''}" for c in CASES])
def test_matches_reference(n, complex_, nblocks, inc, batch, noncontig):
    gen = torch.Generator().manual_seed(n * 7 + complex_)
    x, tw = make_case(n, nblocks, complex_, batch, gen, noncontiguous=noncontig)
    assert x.is_contiguous() == (not noncontig)
    check_fwd_bwd(x, tw, inc)


@pytest.mark.parametrize("nblocks,inc,complex_", [(3, False, False), (2, True, False), (2, False, True),
                                                  (1, True, True)])
def test_chunked_geometries(monkeypatch, nblocks, inc, complex_):
    """Narrow tiles force every code path at a small N: N > T splits into 'low' (strides < T)
    and 'high' (strides >= T, several columns per tile) launches, the backward into chunks of
    BWD_CHUNK steps with recomputed chunk inputs."""
    n = 64
    monkeypatch.setitem(kb.CONFIGS, ("fwd", complex_), kb.KernelConfig(T=16, BLOCK_M=4, num_warps=1))
    monkeypatch.setitem(kb.CONFIGS, ("bwd", complex_), kb.KernelConfig(T=8, BLOCK_M=4, num_warps=1))
    monkeypatch.setattr(kb, "BWD_CHUNK", 2)
    for T in (8, 16):
        kinds = {ln.kind for ln in kb.launch_plan(kb.all_steps(n, nblocks, inc), n, T, 2)}
        assert kinds == {"low", "high"}
    gen = torch.Generator().manual_seed(nblocks)
    x, tw = make_case(n, nblocks, complex_, (3,), gen)
    check_fwd_bwd(x, tw, inc)


@pytest.mark.parametrize("complex_", [False, True])
def test_packed_tiles_narrowed_to_the_frame(monkeypatch, complex_):
    """min_packed_T (the GPU configs' setting): frames smaller than the tile get tiles max(N,
    min_packed_T) wide with proportionally more rows (here 64 x 1 -> 16 x 4, 8 x 8 at N = 4, 8),
    forward and backward; N >= T keeps the configured tile."""
    fwd = kb.KernelConfig(T=64, BLOCK_M=1, num_warps=1, min_packed_T=8)
    bwd = kb.KernelConfig(T=32, BLOCK_M=2, num_warps=1, min_packed_T=8)
    assert [fwd.tile(n) for n in (4, 8, 16, 64, 128)] == [(8, 8), (8, 8), (16, 4), (64, 1), (64, 1)]
    monkeypatch.setitem(kb.CONFIGS, ("fwd", complex_), fwd)
    monkeypatch.setitem(kb.CONFIGS, ("bwd", complex_), bwd)
    seen = set()
    run = kb._launch
    monkeypatch.setattr(kb, "_launch", lambda kernel, grid, args, meta: (
        seen.add((kernel is kb._bfly_bwd_kernel, meta["T"], meta["BLOCK_M"])), run(kernel, grid, args, meta)))
    gen = torch.Generator().manual_seed(5)
    for n in (4, 16):
        x, tw = make_case(n, 2, complex_, (19,), gen)
        check_fwd_bwd(x, tw, n == 4)
    # forward tiles 8 x 8 (N = 4) and 16 x 4 (N = 16); backward (T = 32, 2 rows) the same shapes
    assert seen == {(False, 8, 8), (False, 16, 4), (True, 8, 8), (True, 16, 4)}


def test_bfloat16_io():
    """bf16 in and out, fp32 arithmetic: equals the fp32 reference on the bf16 input, rounded."""
    gen = torch.Generator().manual_seed(3)
    for n, nblocks, inc in [(16, 2, True), (512, 1, False)]:
        x, tw = make_case(n, nblocks, False, (5, 7), gen, dtype=torch.bfloat16)
        x.requires_grad_()
        tw.requires_grad_()
        y = butterfly_multiply(x, tw, inc, backend="triton")
        assert y.dtype == torch.bfloat16
        ref = butterfly_multiply_reference(x.float(), tw, inc)
        # one bf16 rounding of the output: 2^-8 relative on a GPU (round to nearest); the
        # interpreter truncates fp32 -> bf16 (triton.runtime.interpreter._convert_float): 2^-7
        assert rel_err(y.float(), ref) <= 2**-7
        g = torch.randn(y.shape, generator=gen).to(torch.bfloat16)
        gx, gtw = torch.autograd.grad(y, (x, tw), g)
        rx, rtw = torch.autograd.grad(ref, (x, tw), g.float())
        assert gx.dtype == torch.bfloat16 and gtw.dtype == torch.float32
        # both input gradients are bf16: ours truncated (2^-7), the reference's rounded (2^-8)
        assert rel_err(gx.float(), rx.float()) <= 2**-6
        # inputs of each factor are recomputed in fp32 from the bf16 input: fp32 accuracy
        assert rel_err(gtw, rtw) <= RTOL


@pytest.mark.parametrize("xdtype,twdtype", [
    (torch.float16, torch.float32), (torch.float32, torch.complex64), (torch.complex64, torch.float32),
])
def test_mixed_dtypes(xdtype, twdtype):
    gen = torch.Generator().manual_seed(5)
    n = 32
    tw = twiddle_init((2, 5, 16, 2, 2), "randn", twdtype.is_complex, generator=gen)
    x = torch.randn(6, n, generator=gen)
    if xdtype.is_complex:
        x = torch.complex(x, torch.randn(x.shape, generator=gen))
    x = x.to(xdtype)
    y = butterfly_multiply(x, tw, False, backend="triton")
    ref = butterfly_multiply_reference(x, tw, False)
    assert y.dtype == ref.dtype
    tol = 2**-10 if xdtype == torch.float16 else RTOL
    assert rel_err(y.to(ref.dtype), ref) <= tol


def test_empty_batch_and_one_row():
    gen = torch.Generator().manual_seed(0)
    tw = twiddle_init((1, 3, 4, 2, 2), "randn", False, generator=gen).requires_grad_()
    x = torch.zeros(0, 8, requires_grad=True)
    y = butterfly_multiply(x, tw, True, backend="triton")
    assert y.shape == (0, 8)
    y.sum().backward()
    assert torch.equal(tw.grad, torch.zeros_like(tw))
    x1, _ = make_case(8, 1, False, (), gen)  # a single frame, no batch dims
    check_fwd_bwd(x1, tw.detach(), True)


def test_rejects_unsupported():
    tw = torch.randn(1, 3, 4, 2, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match="backend='triton'"):
        butterfly_multiply(torch.randn(2, 8, dtype=torch.float64), tw, backend="triton")
    with pytest.raises(ValueError, match="twiddle must have shape"):
        butterfly_multiply(torch.randn(2, 8), torch.randn(1, 2, 4, 2, 2), backend="triton")
    with pytest.raises(ValueError, match="needs x of shape"):
        kb.butterfly_multiply_op(torch.randn(2, 8, 2), torch.randn(1, 3, 4, 2, 2), True)


def test_deterministic_twiddle_gradients(monkeypatch):
    """Several persistent programs, each over several row blocks: the twiddle gradient (summed per
    program without atomics, then over programs) is bitwise identical run to run."""
    monkeypatch.setitem(kb.CONFIGS, ("bwd", False), kb.KernelConfig(T=64, BLOCK_M=2, num_warps=1))
    assert kb._bwd_programs(torch.device("cpu"), 10, 1) > 1  # 20 frames = 10 row blocks
    gen = torch.Generator().manual_seed(11)
    x, tw = make_case(64, 1, False, (20,), gen)
    g = torch.randn(20, 64, generator=gen)
    grads = deterministic_twiddle_grads(x, tw, g, 2)
    assert torch.equal(grads[0], grads[1])
    ref_tw = tw.clone().requires_grad_()
    butterfly_multiply_reference(x, ref_tw, True).backward(g)
    assert rel_err(grads[0], ref_tw.grad) <= RTOL


@pytest.mark.parametrize("complex_", [False, True])
def test_opcheck(complex_):
    gen = torch.Generator().manual_seed(2)
    n = 16
    tw = twiddle_init((2, 4, 8, 2, 2), "randn", complex_, generator=gen)
    x = torch.randn(5, n, generator=gen)
    if complex_:
        x = torch.view_as_real(torch.complex(x, torch.randn(x.shape, generator=gen)))
        tw = torch.view_as_real(tw)
    x.requires_grad_()
    tw.requires_grad_()
    torch.library.opcheck(kb.butterfly_multiply_op, (x, tw, True))
    g = torch.randn(x.shape, generator=gen)
    torch.library.opcheck(kb.butterfly_multiply_backward_op, (g, x.detach(), tw.detach(), False))


def test_torch_compile_fullgraph():
    gen = torch.Generator().manual_seed(4)
    tw = twiddle_init((2, 5, 16, 2, 2), "randn", True, generator=gen)
    x = torch.randn(3, 4, 32, generator=gen)

    def f(x, tw):
        y = butterfly_multiply(x, tw, True, backend="triton")
        return (y.abs() ** 2).sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    t1 = tw.clone().requires_grad_()
    t2 = tw.clone().requires_grad_()
    l1 = compiled(x, t1)
    l1.backward()
    l2 = f(x, t2)
    l2.backward()
    assert rel_err(l1, l2) <= RTOL
    assert rel_err(t1.grad, t2.grad) <= RTOL


def test_plan_covers_every_step_once():
    """Launch plans (any tile width) apply each factor exactly once, in order, and every stride
    is representable in its launch's geometry."""
    for n in (2, 64, 4096, 8192, 2**16):
        for T in (16, 1024, 4096):
            if n > T * T:
                continue
            steps = kb.all_steps(n, 3, False)
            plan = kb.launch_plan(steps, n, T, 5)
            assert [s for ln in plan for s in ln.steps] == steps
            for ln in plan:
                c, b, bb = ln.geometry
                assert c * bb * ln.frames_per_row == T and ln.n_ab * c * bb == n
                for _, s in ln.steps:
                    ts = ln.tile_stride(s)
                    assert 1 <= ts < c * bb and math.log2(ts).is_integer()
                assert len(ln.steps) <= 5


@pytest.mark.parametrize("complex_,nblocks,inc", [(False, 1, True), (False, 2, False), (True, 3, True),
                                                  (True, 2, False)])
def test_transpose_conjugate(complex_, nblocks, inc):
    """transpose / conjugate on the kernel (the same kernels on the transformed twiddle): output
    and both gradients equal the reference's transposed / adjoint product; gradients reach the
    untransformed twiddle through the transform."""
    from kfrontend.functional import transposed_twiddle

    gen = torch.Generator().manual_seed(nblocks + 10 * complex_)
    x, tw = make_case(16, nblocks, complex_, (6,), gen)
    for transpose, conjugate in [(True, False), (False, True), (True, True)]:
        xr, tr = x.clone().requires_grad_(), tw.clone().requires_grad_()
        y = butterfly_multiply(xr, tr, inc, backend="triton", transpose=transpose, conjugate=conjugate)
        x0, t0 = x.clone().requires_grad_(), tw.clone().requires_grad_()
        t_ref, inc_ref = transposed_twiddle(t0, inc, transpose, conjugate)
        ref = butterfly_multiply_reference(x0, t_ref, inc_ref)
        assert rel_err(y, ref) <= RTOL
        g = torch.randn(ref.shape, dtype=ref.dtype, generator=gen)
        for a, b in zip(torch.autograd.grad(y, (xr, tr), g), torch.autograd.grad(ref, (x0, t0), g)):
            assert rel_err(a, b) <= RTOL
