"""More exact constructions (issue 13) against independent references: DFT norms and the inverse
DFT vs torch.fft, DCT-II/III/IV and DST-II/III/IV (all norms) vs scipy.fft, the 2-D DFT vs
torch.fft.fft2, circulant / Toeplitz products vs scipy.linalg matrices, circular convolution vs
torch.fft and nn.Conv1d.

Tolerances as tests/test_constructions.py: float64 max error <= 1e-9 relative to the reference's
largest entry, float32 <= 1e-4.  Cases marked "port" come from the reference library's
tests/test_special.py (HazyResearch/butterfly), rewritten against this API.
"""
import numpy as np
import pytest
import scipy.fft
import scipy.linalg
import torch
from torch import nn

from kfrontend import constructions as C

TOL = {torch.float64: 1e-9, torch.float32: 1e-4}
CTYPE = {torch.float64: torch.complex128, torch.float32: torch.complex64}
NORMS = ["backward", "ortho", "forward"]


def rel_err(got, ref) -> float:
    got, ref = torch.as_tensor(got), torch.as_tensor(ref)
    return ((got.to(ref.dtype) - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("n", [1, 2, 3, 16, 23, 64, 100])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("real_dtype", [torch.float64, torch.float32])
def test_dft_and_idft_norms_match_torch_fft(n, norm, real_dtype):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(3, n, dtype=torch.complex128, generator=g)
    xr = torch.randn(3, n, dtype=torch.float64, generator=g)
    cd = CTYPE[real_dtype]
    tol = TOL[real_dtype]
    assert rel_err(C.dft(n, norm=norm, dtype=cd)(x.to(cd)), torch.fft.fft(x, norm=norm)) <= tol
    assert rel_err(C.idft(n, norm=norm, dtype=cd)(x.to(cd)), torch.fft.ifft(x, norm=norm)) <= tol
    assert rel_err(C.dft(n, onesided=True, norm=norm, dtype=cd)(xr.to(real_dtype)),
                   torch.fft.rfft(xr, norm=norm)) <= tol


def test_ortho_dft_is_unitary_and_default_norm_unchanged():
    for n in (16, 12):
        w = C.dft(n, norm="ortho", dtype=torch.complex128).to_dense()
        torch.testing.assert_close(w @ w.conj().T, torch.eye(n, dtype=w.dtype), rtol=0, atol=1e-12)
        torch.testing.assert_close(C.dft(n, norm=None, dtype=torch.complex128).to_dense(),
                                   C.dft(n, dtype=torch.complex128).to_dense(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="norm must be one of"):
        C.dft(8, norm="unitary")


@pytest.mark.parametrize("normalized", [False, True])
def test_fft_ifft_port(normalized):
    """Port of test_special.py::test_fft / test_ifft / test_fft_unitary / test_ifft_unitary
    (n = 16, complex64, rtol 1e-3 atol 1e-5)."""
    x = torch.randn(10, 16, dtype=torch.complex64)
    norm = "ortho" if normalized else None
    with torch.no_grad():
        torch.testing.assert_close(C.dft(16, norm=norm)(x), torch.fft.fft(x, norm=norm), rtol=1e-3, atol=1e-5)
        torch.testing.assert_close(C.idft(16, norm=norm)(x), torch.fft.ifft(x, norm=norm), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("kind", ["dct", "dst"])
@pytest.mark.parametrize("typ", [2, 3, 4])
@pytest.mark.parametrize("norm", [None, "ortho", "forward"])
@pytest.mark.parametrize("n_in,n_out", [(1, 1), (2, 2), (5, 5), (16, 16), (23, 23), (40, 13), (64, 64)])
def test_dct_dst_types_match_scipy(kind, typ, norm, n_in, n_out):
    """scipy.fft.dct / dst (norm "ortho" with scipy's default orthogonalize=True) in float64, and
    float32; the first n_out outputs when n_out < n_in."""
    x = torch.randn(4, n_in, dtype=torch.float64, generator=torch.Generator().manual_seed(n_in + typ))
    ref = torch.from_numpy(getattr(scipy.fft, kind)(x.numpy(), type=typ, norm=norm, axis=-1)[:, :n_out])
    for dtype in (torch.float64, torch.float32):
        m = getattr(C, kind)(n_in, n_out, type=typ, norm=norm, dtype=dtype)
        y = m(x.to(dtype))
        assert y.dtype == dtype and y.shape == (4, n_out)
        assert rel_err(y, ref) <= TOL[dtype]


def test_ortho_dst2_scales_the_last_row_and_is_orthogonal():
    """The orthonormal DST-II's 1/sqrt(2) is on row n-1 (scipy); the reference library puts it on
    row 0, which breaks orthogonality: the matrix here is orthogonal to 1e-12."""
    n = 8
    w = C.dst(n, type=2, norm="ortho", dtype=torch.float64).to_dense()
    torch.testing.assert_close(w @ w.T, torch.eye(n, dtype=w.dtype), rtol=0, atol=1e-12)
    unnorm = C.dst(n, type=2, norm=None, dtype=torch.float64).to_dense()
    ratio = w[:, 0] / unnorm[:, 0]
    assert torch.allclose(ratio[:-1], torch.full((n - 1,), (1 / (2 * n)) ** 0.5, dtype=w.dtype))
    assert torch.isclose(ratio[-1], torch.tensor((1 / (4 * n)) ** 0.5, dtype=w.dtype))


@pytest.mark.parametrize("normalized", [False, True])
def test_dct_dst_port(normalized):
    """Port of test_special.py::test_dct (types 2, 3, 4) and test_dst (types 2, 4): n = 16, float32,
    rtol 1e-3 atol 1e-5, vs scipy."""
    x = torch.randn(10, 16)
    norm = "ortho" if normalized else None
    with torch.no_grad():
        for kind, types in (("dct", (2, 3, 4)), ("dst", (2, 4))):
            for typ in types:
                ref = torch.tensor(getattr(scipy.fft, kind)(x.numpy(), type=typ, norm=norm))
                got = getattr(C, kind)(16, type=typ, norm=norm)(x)
                torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-5)


def test_trig_errors():
    with pytest.raises(ValueError, match="type must be 2, 3 or 4 for a DST"):
        C.dst(8, type=1)
    with pytest.raises(ValueError, match="norm must be one of"):
        C.dct(8, type=4, norm="unitary")
    with pytest.raises(ValueError, match=r"n_out \(9\) must be <= n_in \(8\)"):
        C.dst(8, 9)


@pytest.mark.parametrize("n1,n2", [(16, 32), (32, 16), (2, 2), (8, 4)])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("inverse", [False, True])
def test_dft2_matches_torch_fft2(n1, n2, norm, inverse):
    """Port of test_special.py::test_fft2d / test_ifft2d (n1 = 16, n2 = 32 and the reverse) with
    every norm, in complex128 at 1e-9 (the reference: torch.fft.fft2 / ifft2 over the last two
    axes of (..., n2, n1))."""
    x = torch.randn(5, n2, n1, dtype=torch.complex128, generator=torch.Generator().manual_seed(n1 * n2))
    m = C.dft2(n1, n2, inverse=inverse, norm=norm, dtype=torch.complex128)
    ref = (torch.fft.ifft2 if inverse else torch.fft.fft2)(x, norm=norm)
    assert m.nblocks == 3 and m.size == n1 * n2
    assert rel_err(m(x.flatten(-2)).unflatten(-1, (n2, n1)), ref) <= 1e-9


def test_dft2_refuses_non_powers_of_two():
    with pytest.raises(ValueError, match="n1 must be a power of two >= 2 for dft2"):
        C.dft2(12, 16)


@pytest.mark.parametrize("n", [1, 2, 13, 16, 40])
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_circulant_matches_scipy(n, complex_, dtype):
    """Port of test_special.py::test_circulant (n = 13 real and complex) and more sizes: x @ C.T for
    C = scipy.linalg.circulant(col); powers of two use one DIF / inverse-DIT pair of size n."""
    rng = np.random.default_rng(n)
    col = rng.standard_normal(n) + (1j * rng.standard_normal(n) if complex_ else 0)
    x = rng.standard_normal((4, n)) + (1j * rng.standard_normal((4, n)) if complex_ else 0)
    m = C.circulant(torch.from_numpy(col), dtype=CTYPE[dtype] if complex_ else dtype)
    ref = torch.from_numpy(x @ scipy.linalg.circulant(col).T)
    xt = torch.from_numpy(x).to(CTYPE[dtype] if complex_ else dtype)
    assert rel_err(m(xt), ref) <= TOL[dtype]
    if n in (16, 2):
        assert m.size == n


@pytest.mark.parametrize("n,m", [(13, 38), (27, 11), (1, 1), (1, 6), (6, 1), (16, 16)])
@pytest.mark.parametrize("complex_", [False, True])
def test_toeplitz_matches_scipy(n, m, complex_):
    """Port of test_special.py::test_toeplitz ((13, 38), (27, 11), real and complex) at float64 1e-9."""
    rng = np.random.default_rng(n * m)
    col = rng.standard_normal(n) + (1j * rng.standard_normal(n) if complex_ else 0)
    row = rng.standard_normal(m) + (1j * rng.standard_normal(m) if complex_ else 0)
    x = rng.standard_normal((3, m)) + (1j * rng.standard_normal((3, m)) if complex_ else 0)
    mod = C.toeplitz(col, row, dtype=torch.complex128 if complex_ else torch.float64)
    assert (mod.in_features, mod.out_features) == (m, n)
    assert rel_err(mod(torch.from_numpy(x)), torch.from_numpy(x @ scipy.linalg.toeplitz(col, row).T)) <= 1e-9
    # row omitted: scipy's Hermitian Toeplitz (row = conj(col))
    sq = C.toeplitz(col, dtype=torch.complex128)
    xs = torch.from_numpy(rng.standard_normal((2, n)) + 0j)
    assert rel_err(sq(xs), xs @ torch.from_numpy(scipy.linalg.toeplitz(col).astype(np.complex128)).T) <= 1e-9


@pytest.mark.parametrize("n", [13, 16])
@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
def test_circular_convolution_matches_fft_and_conv1d(n, kernel_size):
    """Port of test_special.py::test_conv1d_circular_singlechannel: nn.Conv1d(padding_mode
    "circular") is the circular convolution with the flipped, rolled weight; also vs
    torch.fft.ifft(fft(kernel, n) * fft(x)).  float64, 1e-9."""
    torch.manual_seed(n + kernel_size)
    padding = (kernel_size - 1) // 2
    conv = nn.Conv1d(1, 1, kernel_size, padding=padding, padding_mode="circular", bias=False).double()
    x = torch.randn(10, 1, n, dtype=torch.float64)
    with torch.no_grad():
        ref = conv(x)[:, 0]
        kernel = nn.functional.pad(conv.weight[0, 0].flip(-1), (0, n - kernel_size)).roll(-padding, -1)
        m = C.circular_convolution(kernel, dtype=torch.float64)
        assert rel_err(m(x[:, 0]), ref) <= 1e-9
        taps = torch.randn(kernel_size, dtype=torch.float64)
        ref_fft = torch.fft.ifft(torch.fft.fft(taps, n) * torch.fft.fft(x[:, 0])).real
        assert rel_err(C.circular_convolution(taps, n, dtype=torch.float64)(x[:, 0]), ref_fft) <= 1e-9


def test_structured_errors():
    with pytest.raises(ValueError, match="col must be a non-empty 1-D vector"):
        C.circulant(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="kernel has 5 taps, more than n = 4"):
        C.circular_convolution(np.ones(5), 4)
    with pytest.raises(TypeError, match="data is complex"):
        C.toeplitz(np.ones(3) * 1j, dtype=torch.float32)


def test_trig_backward_norm_truncated_ortho_dst2_and_dtype_message():
    """norm="backward" spelled out is scipy's "backward" (= None); the orthonormal DST-II with fewer
    outputs than n_in (its scaled last row dropped) is scipy's truncated (float64, 1e-9); a
    complex dtype is refused by its exact message (found by mutation testing)."""
    x = torch.randn(3, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    for kind in ("dct", "dst"):
        for typ in (2, 3, 4):
            ref = torch.from_numpy(getattr(scipy.fft, kind)(x.numpy(), type=typ, norm="backward", axis=-1))
            assert rel_err(getattr(C, kind)(12, type=typ, norm="backward", dtype=torch.float64)(x), ref) <= 1e-9
    for n_out in (11, 10, 1):
        ref = torch.from_numpy(scipy.fft.dst(x.numpy(), type=2, norm="ortho", axis=-1)[:, :n_out])
        assert rel_err(C.dst(12, n_out, type=2, norm="ortho", dtype=torch.float64)(x), ref) <= 1e-9
    with pytest.raises(TypeError, match=r"^dtype must be torch\.float32 or torch\.float64 \(the output is real\), "
                                        r"got torch\.complex64$"):
        C.dct(8, dtype=torch.complex64)
