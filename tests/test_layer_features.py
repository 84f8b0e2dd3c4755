"""Butterfly / Kaleidoscope features beyond the product (issue 13): transposed and conjugated
multiplies on every backend, the unitary / orthogonal parameterisation, the orthogonal init with
reflections, weight-decay groups, Kaleidoscope argument checks.

References: the dense matrix (``to_dense``, itself checked against the forward in test_layers.py)
and its transpose / conjugate, in float64 at rtol = atol = 1e-10 (float32 on the Triton interpreter
is in test_kernel.py).  Tests marked "port" are cases of the reference library's tests
(HazyResearch/butterfly, tests/test_butterfly.py) rewritten against this API, with its tolerances
(rtol 1e-3, atol 1e-5) where its case uses float32.
"""
import math

import pytest
import torch
from torch import nn

from kfrontend import Butterfly, Kaleidoscope
from kfrontend.functional import butterfly_multiply, kmatrix_multiply, transposed_twiddle
from kfrontend.layers import ButterflyUnitary, param_groups_for_weight_decay, twiddle_init

F64 = dict(rtol=1e-10, atol=1e-10)
CPU_BACKENDS = ["torch", "blocked", "dense", "auto"]


# --- transpose / conjugate -------------------------------------------------------------------
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("increasing_stride", [True, False])
@pytest.mark.parametrize("nblocks", [1, 2, 3])
def test_transpose_conjugate_multiply_port(complex_, increasing_stride, nblocks):
    """Port of test_butterfly.py::test_transpose_conjugate_multiply (n = 16, float32 / complex64):
    the matrices of forward(transpose, conjugate) are M.T, conj(M), M^H."""
    torch.manual_seed(nblocks)
    n = 16
    b = Butterfly(n, n, complex=complex_, increasing_stride=increasing_stride, nblocks=nblocks)
    eye = torch.eye(n, dtype=torch.complex64 if complex_ else torch.float32)
    with torch.no_grad():
        m = b(eye).t()
        m_t = b(eye, transpose=True).t()
        m_c = b(eye, conjugate=True).t()
        m_h = b(eye, transpose=True, conjugate=True).t()
    tol = dict(rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(m_t, m.t(), **tol)
    torch.testing.assert_close(m_c, m.conj(), **tol)
    torch.testing.assert_close(m_h, m.t().conj(), **tol)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("in_f,out_f,cls_kw", [
    (16, 16, {}),                                # square
    (5, 3, {}),                                  # padding and truncation
    (10, 40, {}),                                # out > N: 3 stacks, summed in the transpose
    (33, 7, {"width": 2, "expansion": 2}),       # Kaleidoscope, N = 128 = 2 * 64
    (6, 50, {"width": 1, "expansion": 4}),       # expansion and stacks together
])
def test_transposed_module_is_the_dense_transpose(backend, complex_, in_f, out_f, cls_kw):
    """forward(y, transpose=True) == y @ W and with conjugate y @ conj(W), W = to_dense()
    (out_features x in_features), for every padding / stacking / expansion; conjugate alone
    == x @ conj(W).T + bias."""
    torch.manual_seed(in_f * out_f)
    cls = Kaleidoscope if cls_kw else Butterfly
    kw = dict(cls_kw) if cls_kw else {"nblocks": 3, "increasing_stride": False}
    m = cls(in_f, out_f, complex=complex_, dtype=torch.float64, backend=backend, **kw)
    w = m.to_dense()
    y = torch.randn(2, 3, out_f, dtype=w.dtype)
    torch.testing.assert_close(m(y, transpose=True), y @ w, **F64)
    torch.testing.assert_close(m(y, transpose=True, conjugate=True), y @ w.conj(), **F64)
    mb = cls(in_f, out_f, complex=complex_, dtype=torch.float64, backend=backend, bias=True, **kw)
    with torch.no_grad():
        mb.bias.normal_()
    x = torch.randn(4, in_f, dtype=w.dtype)
    torch.testing.assert_close(mb(x, conjugate=True), x @ mb.to_dense().conj().T + mb.bias, **F64)


def test_transpose_is_the_adjoint_for_gradients():
    """<W x, y> == <x, W^T y> and twiddle gradients through the transposed product equal those of
    the dense route (autograd through to_dense's builder, independent of the transform)."""
    torch.manual_seed(0)
    m = Kaleidoscope(12, 20, width=2, complex=True, dtype=torch.float64)
    x = torch.randn(5, 12, dtype=torch.complex128)
    y = torch.randn(5, 20, dtype=torch.complex128)
    lhs = (m(x) * y.conj()).sum()
    rhs = (x * m(y, transpose=True, conjugate=True).conj()).sum()
    torch.testing.assert_close(lhs, rhs, **F64)
    g1 = torch.autograd.grad(m(y, transpose=True).abs().pow(2).sum(), m.twiddle)[0]
    tw = m.twiddle.detach().clone().requires_grad_()
    dense = kmatrix_multiply(torch.eye(12, dtype=tw.dtype), tw, 20, True, "torch").T  # W
    g2 = torch.autograd.grad((y.to(dense.dtype) @ dense).abs().pow(2).sum(), tw)[0]
    torch.testing.assert_close(g1, g2, **F64)


def test_transposed_twiddle_is_an_involution_and_real_output_transposes():
    tw = twiddle_init((2, 3, 4, 8, 2, 2), "randn", True, torch.float64)
    t1, inc1 = transposed_twiddle(tw, False)
    t2, inc2 = transposed_twiddle(t1, inc1)
    assert torch.equal(t2, tw) and inc2 is False
    # nblocks 3 from increasing: last block increasing, so the transpose starts decreasing.
    assert transposed_twiddle(tw, True)[1] is False
    from kfrontend import constructions as C

    d = C.dct(12, 8, dtype=torch.float64)  # real_output: the map is Re(W)
    y = torch.randn(3, 8, dtype=torch.float64)
    torch.testing.assert_close(d(y, transpose=True), y @ d.to_dense(), **F64)


def test_transpose_errors():
    m = Butterfly(5, 3, bias=True)
    with pytest.raises(ValueError, match="bias"):
        m(torch.randn(2, 3), transpose=True)
    m = Butterfly(5, 3)
    with pytest.raises(ValueError, match=r"with transpose=True expected input of shape \(\.\.\., 3\)"):
        m(torch.randn(2, 5), transpose=True)
    tw = m.twiddle.detach()
    with pytest.raises(ValueError, match="out_features is the K-matrix's input count"):
        kmatrix_multiply(torch.randn(2, 3), tw, 9, transpose=True)
    with pytest.raises(ValueError, match=r"x.shape\[-1\] is the K-matrix's output count"):
        kmatrix_multiply(torch.randn(2, 9), tw, 5, transpose=True)


def test_butterfly_multiply_transpose_all_cpu_backends():
    tw = twiddle_init((3, 5, 16, 2, 2), "randn", True, torch.float64)
    eye = torch.eye(32, dtype=torch.complex128)
    m = butterfly_multiply(eye, tw, False, "torch").T
    for backend in CPU_BACKENDS:
        got = butterfly_multiply(eye, tw, False, backend, transpose=True, conjugate=True).T
        torch.testing.assert_close(got, m.conj().T, **F64)


# --- unitary / orthogonal --------------------------------------------------------------------
@pytest.mark.parametrize("in_f,out_f", [(7, 15), (15, 7)])
@pytest.mark.parametrize("increasing_stride", [True, False])
@pytest.mark.parametrize("nblocks", [1, 2, 3])
@pytest.mark.parametrize("complex_", [True, False])
def test_butterfly_unitary_shapes_port(in_f, out_f, increasing_stride, nblocks, complex_):
    """Port of test_butterfly.py::test_butterfly_unitary (shapes), also for the real case."""
    b = ButterflyUnitary(in_f, out_f, bias=True, complex=complex_, increasing_stride=increasing_stride,
                         nblocks=nblocks)
    x = torch.randn(10, in_f, dtype=torch.complex64 if complex_ else torch.float32)
    assert b(x).shape == (10, out_f)


@pytest.mark.parametrize("complex_", [True, False])
@pytest.mark.parametrize("increasing_stride", [True, False])
@pytest.mark.parametrize("nblocks", [1, 2, 3])
def test_butterfly_unitary_is_unitary_before_and_after_training(complex_, increasing_stride, nblocks):
    """Port of test_butterfly.py::test_butterfly_unitary (unitarity at size 32), in float64 at
    1e-12, and still so after optimizer steps (the parameterisation, not the init, keeps it)."""
    torch.manual_seed(nblocks)
    b = ButterflyUnitary(32, 32, complex=complex_, increasing_stride=increasing_stride, nblocks=nblocks,
                         dtype=torch.float64)
    eye = torch.eye(32, dtype=torch.float64)
    w = b.to_dense()
    torch.testing.assert_close(w @ w.conj().T, eye.to(w.dtype), rtol=0, atol=1e-12)
    opt = torch.optim.SGD(b.parameters(), lr=0.5)
    x = torch.randn(16, 32, dtype=w.dtype)
    for _ in range(3):
        loss = (b(x) - x.flip(-1)).abs().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    w2 = b.to_dense()
    assert (w2 - w).abs().max() > 1e-3  # it moved
    torch.testing.assert_close(w2 @ w2.conj().T, eye.to(w.dtype), rtol=0, atol=1e-12)


def test_orthogonal_blocks_include_reflections():
    """Real ortho init and the real ButterflyUnitary: every 2x2 block orthogonal with det +-1, both
    signs occurring (about half each); reflections=False gives rotations only."""
    torch.manual_seed(0)
    for tw in (Kaleidoscope(64, 64, width=2, init="ortho", dtype=torch.float64).twiddle.detach(),
               ButterflyUnitary(64, 64, complex=False, nblocks=4, dtype=torch.float64).twiddle.detach()):
        blocks = tw.reshape(-1, 2, 2)
        torch.testing.assert_close(blocks @ blocks.transpose(-1, -2), torch.eye(2, dtype=tw.dtype).expand_as(blocks),
                                   rtol=0, atol=1e-14)
        det = torch.linalg.det(blocks)
        torch.testing.assert_close(det.abs(), torch.ones_like(det), rtol=0, atol=1e-14)
        frac = (det < 0).double().mean().item()
        assert 0.4 < frac < 0.6, frac  # 768 blocks: 0.5 +- 0.018 (1 sd)
    rot = ButterflyUnitary(16, 16, complex=False, reflections=False).twiddle.detach()
    assert (torch.linalg.det(rot.reshape(-1, 2, 2)) > 0).all()


@pytest.mark.parametrize("in_f,out_f", [(7, 15), (15, 7)])
@pytest.mark.parametrize("complex_", [False, True])
def test_ortho_init_blocks_have_unit_norm_port(in_f, out_f, complex_):
    """Port of test_butterfly.py::test_butterfly (init='ortho'): each 2x2 block has spectral norm 1."""
    for nblocks in (1, 2, 3):
        b = Butterfly(in_f, out_f, bias=True, complex=complex_, init="ortho", nblocks=nblocks)
        norms = torch.linalg.matrix_norm(b.twiddle.detach().reshape(-1, 2, 2), ord=2)
        torch.testing.assert_close(norms, torch.ones_like(norms), rtol=1e-3, atol=1e-5)


# --- weight decay ----------------------------------------------------------------------------
def test_param_groups_for_weight_decay():
    """Twiddles / angles (also inside containers, shared once) go to the no-decay group, everything
    else (biases, dense layers) to the decay group; the groups drive AdamW (a decayed dense weight
    shrinks, a twiddle with zero gradient stays put) and survive .to()."""
    torch.manual_seed(0)
    shared = Butterfly(8, 8, bias=True)
    model = nn.Sequential(shared, nn.Linear(8, 8), ButterflyUnitary(8, 8, complex=False), shared,
                          Kaleidoscope(8, 4))
    model = model.to(torch.float64)
    decay, no_decay = param_groups_for_weight_decay(model, 0.5)
    assert decay["weight_decay"] == 0.5 and no_decay["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(no_decay["params"]) == ids([shared.twiddle, model[2].angles, model[4].twiddle])
    assert ids(decay["params"]) == ids([shared.bias, model[1].weight, model[1].bias])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    flagged = nn.Linear(2, 2)
    flagged.weight._is_structured = True  # the reference library's flag is honoured too
    assert ids(param_groups_for_weight_decay(flagged, 0.1)[1]["params"]) == {id(flagged.weight)}
    tw0 = shared.twiddle.detach().clone()
    w0 = model[1].weight.detach().clone()
    opt = torch.optim.AdamW(param_groups_for_weight_decay(model, 0.5), lr=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(shared.twiddle.detach(), tw0)
    torch.testing.assert_close(model[1].weight.detach(), w0 * (1 - 0.1 * 0.5))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        param_groups_for_weight_decay([shared.twiddle], 0.1)


# --- Kaleidoscope argument checks ------------------------------------------------------------
def test_kaleidoscope_twiddle_consistency():
    tw = torch.randn(1, 4, 6, 32, 2, 2)  # 4 blocks, N = 64
    k = Kaleidoscope(20, 20, twiddle=tw)  # width and expansion read from the twiddle
    assert k.nblocks == 4 and k.size == 64
    assert Kaleidoscope(20, 20, width=2, expansion=2, twiddle=tw).size == 64
    with pytest.raises(ValueError, match=r"\(1, 4, 6, 32, 2, 2\) has 4 blocks.*width=3 needs 2 \* width = 6 blocks"):
        Kaleidoscope(20, 20, width=3, twiddle=tw)
    with pytest.raises(ValueError, match=r"expansion=1 needs N = 32 \* 1 = 32"):
        Kaleidoscope(20, 20, expansion=1, twiddle=tw)
    with pytest.raises(ValueError, match=r"has 3 blocks.*an even number of blocks \(2 \* width\)"):
        Kaleidoscope(20, 20, twiddle=torch.randn(1, 3, 6, 32, 2, 2))
    with pytest.raises(ValueError, match="size must be a power of two"):
        Kaleidoscope(20, 20, twiddle=torch.randn(1, 2, 4, 8, 2, 2))  # N = 16 < in_features
    assert math.isclose(Kaleidoscope(20, 20).size, 32)
