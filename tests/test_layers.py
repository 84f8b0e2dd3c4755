"""Butterfly / Kaleidoscope modules: to_dense, inits, stacking, counting, nn.Linear use, errors."""
import pytest
import torch
from torch import nn

from kfrontend import Butterfly, Kaleidoscope


@pytest.mark.parametrize("in_f,out_f", [(1, 1), (5, 3), (8, 8), (10, 40), (33, 7), (64, 200)])
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("cls", [Butterfly, Kaleidoscope])
def test_to_dense_equals_forward(in_f, out_f, complex_, cls):
    torch.manual_seed(in_f + out_f)
    m = cls(in_f, out_f, complex=complex_, bias=True, dtype=torch.float64)
    with torch.no_grad():
        m.bias.normal_()
    x = torch.randn(2, 3, in_f, dtype=torch.float64)
    w = m.to_dense()
    assert w.shape == (out_f, in_f)
    ref = x.to(w.dtype) @ w.T + m.bias
    torch.testing.assert_close(m(x), ref, rtol=1e-10, atol=1e-10)


def test_stacks_when_out_larger_than_size():
    m = Butterfly(10, 40)
    assert m.size == 16 and m.twiddle.shape[0] == 3  # ceil(40 / 16) stacks


@pytest.mark.parametrize("complex_", [False, True])
def test_ortho_init_is_orthogonal_and_identity_init_is_identity(complex_):
    m = Kaleidoscope(32, 32, width=2, init="ortho", complex=complex_, dtype=torch.float64)
    w = m.to_dense()
    torch.testing.assert_close(w.conj().T @ w, torch.eye(32, dtype=w.dtype), rtol=0, atol=1e-12)
    i = Kaleidoscope(20, 20, init="identity", complex=complex_, dtype=torch.float64)
    torch.testing.assert_close(i.to_dense(), torch.eye(20, dtype=i.to_dense().dtype))


def test_randn_init_roughly_preserves_norm():
    torch.manual_seed(0)
    m = Butterfly(256, 256)
    x = torch.randn(512, 256)
    ratio = (m(x).norm() / x.norm()).item()
    assert 0.5 < ratio < 2.0


def test_expansion_and_width():
    m = Kaleidoscope(100, 100, width=3, expansion=2)
    assert m.size == 256 and m.nblocks == 6


def test_parameter_and_flop_counts():
    m = Butterfly(512, 512)
    assert m.parameter_count() == 9 * 256 * 4
    assert m.flops() == 9 * 256 * 6
    c = Kaleidoscope(512, 512, complex=True)
    assert c.parameter_count() == 2 * 9 * 256 * 4 * 2
    assert c.flops() == 2 * 9 * 256 * 28
    assert c.dense_parameter_count() == 512 * 512 * 2


def test_replaces_nn_linear_and_learns():
    """Trained like an nn.Linear, a width-2 Kaleidoscope fits a map of K-matrix structure (a random
    width-1 teacher): the loss falls by well over 4x in 300 Adam steps (measured: ~9x)."""
    torch.manual_seed(0)
    teacher = Kaleidoscope(16, 16, width=1, init="ortho")
    model = nn.Sequential(Kaleidoscope(16, 16, width=2, init="ortho", bias=True))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x = torch.randn(256, 16)
    with torch.no_grad():
        y = teacher(x)
    first = None
    for _ in range(300):
        loss = ((model(x) - y) ** 2).mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.25 * first


def test_errors():
    with pytest.raises(ValueError, match="in_features must be a positive integer"):
        Butterfly(0, 4)
    with pytest.raises(ValueError, match="init must be one of"):
        Butterfly(4, 4, init="zeros")
    with pytest.raises(ValueError, match=r"expected input of shape \(\.\.\., 4\)"):
        Butterfly(4, 4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="twiddle must have shape"):
        Butterfly(8, 8, twiddle=torch.randn(1, 1, 2, 4, 2, 2))
    with pytest.raises(ValueError, match="expansion must be a power of two"):
        Kaleidoscope(8, 8, expansion=3)
    with pytest.raises(ValueError, match="width must be a positive integer"):
        Kaleidoscope(8, 8, width=0)
