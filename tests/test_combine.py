"""kfrontend.combine against dense matrices (float64, rtol = atol = 1e-10): the product of two
modules equals composing them, the Kronecker product equals torch.kron of the dense matrices,
diagonal scalings equal scaling inputs / outputs.  Cases marked "port" come from the reference
library's tests/test_combine.py (HazyResearch/butterfly), rewritten against this API."""
import itertools

import pytest
import torch

from kfrontend import Butterfly, Kaleidoscope
from kfrontend import constructions as C
from kfrontend.combine import kronecker, product, scale

F64 = dict(rtol=1e-10, atol=1e-10)
DT = torch.float64


def _rand_bias(m):
    with torch.no_grad():
        m.bias.normal_()
    return m


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("inc1,inc2", list(itertools.product([True, False], [True, False])))
@pytest.mark.parametrize("nblocks1", [1, 2])
def test_product_port(complex_, inc1, inc2, nblocks1):
    """Port of test_combine.py::test_butterfly_product (13 -> 16 -> 15, every stride-order pair),
    plus a second module with 3 stacks and a bias, and a first with several blocks."""
    torch.manual_seed(nblocks1)
    x = torch.randn(10, 13, dtype=torch.complex128 if complex_ else DT)
    b1 = Butterfly(13, 16, complex=complex_, increasing_stride=inc1, nblocks=nblocks1, dtype=DT)
    for out in (15, 40):
        b2 = _rand_bias(Butterfly(16, out, bias=True, complex=complex_, increasing_stride=inc2, dtype=DT))
        p = product(b1, b2)
        with torch.no_grad():
            torch.testing.assert_close(p(x), b2(b1(x)), **F64)
        # an identity block is inserted only where the orders would not alternate
        last_inc = inc1 if nblocks1 % 2 == 1 else not inc1
        assert p.nblocks == nblocks1 + 1 + (inc2 == last_inc)


def test_product_of_constructions_and_mixed_dtypes():
    """A real permutation followed by a complex DFT fuses into one complex module; fusing a DFT
    and its inverse gives the identity."""
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    p = product(C.permutation(perm, dtype=DT), C.dft(16, dtype=torch.complex128))
    x = torch.randn(3, 16, dtype=DT)
    with torch.no_grad():
        torch.testing.assert_close(p(x), torch.fft.fft(x[:, perm]), **F64)
    ident = product(C.dft(16, dtype=torch.complex128), C.idft(16, dtype=torch.complex128))
    torch.testing.assert_close(ident.to_dense(), torch.eye(16, dtype=torch.complex128), **F64)


def test_product_errors():
    with pytest.raises(ValueError, match="first.out_features == first.size == second.in_features"):
        product(Butterfly(16, 15), Butterfly(15, 15))
    with pytest.raises(ValueError, match="first has a bias"):
        product(Butterfly(16, 16, bias=True), Butterfly(16, 16))
    with pytest.raises(ValueError, match="real part"):
        product(Butterfly(16, 16, complex=True, real_output=True), Butterfly(16, 16, complex=True))
    with pytest.raises(TypeError, match="second must be a kfrontend Butterfly"):
        product(Butterfly(4, 4), torch.nn.Linear(4, 4))


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("increasing_stride", [True, False])
@pytest.mark.parametrize("nblocks", [(1, 1), (2, 3), (4, 2)])
def test_kronecker_port(complex_, increasing_stride, nblocks):
    """Port of test_combine.py::test_butterfly_kronecker (n1 = 16, n2 = 32: b1 on the last axis, b2
    on the one before), generalised to several blocks each: equals torch.kron of the dense
    matrices, and applying each module along its axis."""
    torch.manual_seed(sum(nblocks))
    b1 = Butterfly(16, 16, complex=complex_, increasing_stride=increasing_stride, nblocks=nblocks[0], dtype=DT)
    b2 = Butterfly(32, 32, complex=complex_, increasing_stride=increasing_stride, nblocks=nblocks[1], dtype=DT)
    k = kronecker(b2, b1)
    torch.testing.assert_close(k.to_dense(), torch.kron(b2.to_dense(), b1.to_dense()), **F64)
    x = torch.randn(10, 32, 16, dtype=torch.complex128 if complex_ else DT)
    with torch.no_grad():
        tensor_product = b2(b1(x).transpose(-1, -2)).transpose(-1, -2)
        torch.testing.assert_close(k(x.flatten(-2)).unflatten(-1, (32, 16)), tensor_product, **F64)


def test_kronecker_errors():
    with pytest.raises(ValueError, match="kronecker needs a square on its size"):
        kronecker(Butterfly(5, 5), Butterfly(4, 4))
    with pytest.raises(ValueError, match="same increasing_stride"):
        kronecker(Butterfly(4, 4), Butterfly(4, 4, increasing_stride=False))
    with pytest.raises(ValueError, match="b has a bias or real_output"):
        kronecker(Butterfly(4, 4), Butterfly(4, 4, bias=True))


@pytest.mark.parametrize("in_f,out_f", [(9, 15), (15, 9), (10, 40)])
@pytest.mark.parametrize("nblocks", [1, 2, 3])
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("increasing_stride", [True, False])
def test_scale_port(in_f, out_f, nblocks, complex_, increasing_stride):
    """Port of test_combine.py::test_diagonal_butterfly ((9, 15), (15, 9), diagonal first or last),
    here both at once, with a bias and with 3 stacks; the source module is unchanged."""
    torch.manual_seed(in_f + nblocks)
    dt = torch.complex128 if complex_ else DT
    b = _rand_bias(Butterfly(in_f, out_f, bias=True, complex=complex_, increasing_stride=increasing_stride,
                             nblocks=nblocks, dtype=DT))
    tw0 = b.twiddle.detach().clone()
    d_in, d_out = torch.randn(in_f, dtype=dt), torch.randn(out_f, dtype=dt)
    x = torch.randn(10, in_f, dtype=dt)
    with torch.no_grad():
        torch.testing.assert_close(scale(b, input=d_in)(x), b(x * d_in), **F64)
        torch.testing.assert_close(scale(b, output=d_out)(x), b(x) * d_out, **F64)
        torch.testing.assert_close(scale(b, d_in, d_out)(x), b(x * d_in) * d_out, **F64)
    assert torch.equal(b.twiddle.detach(), tw0)


def test_scale_real_diagonal_on_real_output_and_errors():
    d = C.dct(12, 8, dtype=DT)  # real part of a complex K-matrix
    w = torch.randn(8, dtype=DT)
    x = torch.randn(3, 12, dtype=DT)
    with torch.no_grad():
        torch.testing.assert_close(scale(d, output=w)(x), d(x) * w, **F64)
    with pytest.raises(ValueError, match="output is complex but the module takes the real part"):
        scale(d, output=w.to(torch.complex128))
    with pytest.raises(ValueError, match=r"input must be a tensor of shape \(12,\)"):
        scale(d, input=torch.ones(8))
    k = Kaleidoscope(8, 8, width=2, dtype=DT)
    torch.testing.assert_close(scale(k, input=torch.full((8,), 2.0, dtype=DT)).to_dense(), 2 * k.to_dense(), **F64)
