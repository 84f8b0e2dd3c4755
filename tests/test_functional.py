"""The reference butterfly multiply against an independent dense construction, autograd, errors."""
import numpy as np
import pytest
import torch

from kfrontend.functional import butterfly_multiply, butterfly_multiply_reference, kmatrix_multiply


def dense_factor(t: np.ndarray, n: int, stride: int) -> np.ndarray:
    """N x N matrix of one factor, written straight from the documented convention."""
    m = np.zeros((n, n), dtype=t.dtype)
    j = 0
    for p in range(n):
        if p & stride:
            continue
        m[p, p], m[p, p + stride] = t[j, 0, 0], t[j, 0, 1]
        m[p + stride, p], m[p + stride, p + stride] = t[j, 1, 0], t[j, 1, 1]
        j += 1
    return m


def dense_product(tw: np.ndarray, increasing_stride: bool) -> np.ndarray:
    nblocks, log_n, half = tw.shape[:3]
    n = 2 * half
    m = np.eye(n, dtype=tw.dtype)
    for b in range(nblocks):
        inc = increasing_stride if b % 2 == 0 else not increasing_stride
        for i in range(log_n):
            stride = 2**i if inc else n // 2 ** (i + 1)
            m = dense_factor(tw[b, i], n, stride) @ m
    return m


@pytest.mark.parametrize("n", [2, 4, 8, 32, 128])
@pytest.mark.parametrize("nblocks", [1, 2, 3])
@pytest.mark.parametrize("increasing", [True, False])
@pytest.mark.parametrize("complex_", [False, True])
def test_reference_matches_dense_factors(n, nblocks, increasing, complex_):
    g = torch.Generator().manual_seed(n * 10 + nblocks)
    dtype = torch.complex128 if complex_ else torch.float64
    tw = torch.randn(nblocks, n.bit_length() - 1, n // 2, 2, 2, dtype=dtype, generator=g)
    x = torch.randn(5, n, dtype=dtype, generator=g)
    ref = x.numpy() @ dense_product(tw.numpy(), increasing).T
    got = butterfly_multiply(x, tw, increasing, backend="torch")
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_real_input_complex_twiddle_promotes_and_leading_dims_are_kept():
    tw = torch.randn(2, 3, 4, 2, 2, dtype=torch.complex128)
    x = torch.randn(2, 3, 4, 8, dtype=torch.float64)
    y = butterfly_multiply(x, tw, backend="torch")
    assert y.shape == x.shape and y.dtype == torch.complex128
    ref = x.reshape(-1, 8).to(torch.complex128).numpy() @ dense_product(tw.numpy(), True).T
    np.testing.assert_allclose(y.reshape(-1, 8).numpy(), ref, atol=1e-12)


def test_non_contiguous_input():
    tw = torch.randn(1, 4, 8, 2, 2, dtype=torch.float64)
    base = torch.randn(16, 6, dtype=torch.float64)
    x = base.t()[:, :]  # (6, 16), non-contiguous
    assert not x.is_contiguous()
    torch.testing.assert_close(butterfly_multiply(x, tw, backend="torch"),
                               butterfly_multiply(x.contiguous(), tw, backend="torch"))


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("increasing", [True, False])
def test_gradcheck_input_and_twiddle(complex_, increasing):
    dtype = torch.complex128 if complex_ else torch.float64
    tw = torch.randn(2, 3, 4, 2, 2, dtype=dtype, requires_grad=True)
    x = torch.randn(3, 8, dtype=dtype, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: butterfly_multiply_reference(a, b, increasing), (x, tw))


def test_bf16_input_is_computed_in_fp32_and_returned_in_bf16():
    """bf16 in, fp32 arithmetic, one rounding to bf16 at the end: every element is within half a
    bf16 ulp -- 2^-8 of its own magnitude (8 significant bits, round to nearest) -- of the fp32
    product on the same bf16 input.  bf16 arithmetic rounds after every factor and breaks that
    bound; the end of the test shows it does on these very inputs, so the tolerance can tell fp32
    arithmetic from bf16 arithmetic (a max-normalised 1e-2 tolerance could not)."""
    g = torch.Generator().manual_seed(75)
    tw = torch.randn(1, 5, 16, 2, 2, generator=g)
    x = torch.randn(64, 32, generator=g).to(torch.bfloat16)
    y = butterfly_multiply(x, tw, backend="torch")
    assert y.dtype == torch.bfloat16
    ref = butterfly_multiply(x.float(), tw, backend="torch")
    bound = 2.0**-8 * ref.abs()
    assert bool(((y.float() - ref).abs() <= bound).all())
    # The same product in bf16 arithmetic (factors and every intermediate rounded to bf16; each
    # factor's two products and sum taken in fp32, so this errs on the kind side of real bf16).
    y16 = x.float()
    for i in range(5):
        m = torch.from_numpy(dense_factor(tw[0, i].bfloat16().float().numpy(), 32, 2**i))
        y16 = (y16 @ m.T).bfloat16().float()
    assert not bool(((y16 - ref).abs() <= bound).all())


def test_errors_name_the_argument_and_expected_shape():
    tw = torch.randn(1, 3, 4, 2, 2)
    with pytest.raises(ValueError, match=r"x.shape\[-1\] must be a power of two"):
        butterfly_multiply(torch.randn(2, 6), tw)
    with pytest.raises(ValueError, match=r"twiddle must have shape .*\(nblocks, 3, 4, 2, 2\).*got \(1, 2, 4, 2, 2\)"):
        butterfly_multiply(torch.randn(2, 8), torch.randn(1, 2, 4, 2, 2))
    with pytest.raises(TypeError, match="x must be a floating point or complex tensor"):
        butterfly_multiply(torch.ones(2, 8, dtype=torch.int64), tw)
    with pytest.raises(TypeError, match="twiddle must be float32"):
        butterfly_multiply(torch.randn(2, 8), tw.to(torch.int32))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        butterfly_multiply([1.0] * 8, tw)
    with pytest.raises(ValueError, match="backend must be one of"):
        butterfly_multiply(torch.randn(2, 8), tw, backend="cuda")
    with pytest.raises(ValueError, match="larger than the K-matrix size"):
        kmatrix_multiply(torch.randn(2, 9), tw[None], 8)
    with pytest.raises(ValueError, match="nstacks"):
        kmatrix_multiply(torch.randn(2, 8), tw, 8)


def test_kmatrix_pads_truncates_and_stacks():
    tw = torch.randn(2, 1, 3, 4, 2, 2, dtype=torch.float64)
    x = torch.randn(5, 6, dtype=torch.float64)
    y = kmatrix_multiply(x, tw, 13, backend="torch")
    xp = torch.nn.functional.pad(x, (0, 2))
    ref = torch.cat([butterfly_multiply_reference(xp, tw[k]) for k in range(2)], -1)[:, :13]
    torch.testing.assert_close(y, ref)


def test_power_of_two_helpers_against_their_definition():
    """is_power_of_two(n): n == 2**k for some k >= 0 (1 included); next_power_of_two(n): the least
    such 2**k >= n; both against a table of powers built here."""
    from kfrontend.functional import is_power_of_two, next_power_of_two

    powers = [2**k for k in range(13)]
    for n in range(0, 2100):
        assert is_power_of_two(n) == (n in powers), n
        if n >= 1:
            assert next_power_of_two(n) == min(p for p in powers if p >= n), n
    with pytest.raises(ValueError, match=r"^size must be >= 1, got 0$"):
        next_power_of_two(0)


def test_argument_checks_exact_messages_and_edges():
    tw = torch.randn(1, 3, 4, 2, 2)
    assert butterfly_multiply(torch.ones(8), tw, backend="torch").shape == (8,)  # one dimension is enough
    with pytest.raises(ValueError, match=r"^x must have at least one dimension \(\.\.\., N\)$"):
        butterfly_multiply(torch.tensor(1.0), tw)
    with pytest.raises(TypeError, match=r"^x must be a torch\.Tensor, got list$"):
        butterfly_multiply([1.0] * 8, tw)
    with pytest.raises(TypeError, match=r"^twiddle must be a torch\.Tensor, got list$"):
        butterfly_multiply(torch.ones(8), [1.0])
    with pytest.raises(ValueError, match=r"^twiddle must have shape .* got \(0, 3, 4, 2, 2\)$"):
        butterfly_multiply(torch.ones(8), torch.zeros(0, 3, 4, 2, 2))  # no block at all
    with pytest.raises(ValueError, match=r"^x is on meta but twiddle is on cpu$"):
        butterfly_multiply(torch.empty(2, 8, device="meta"), tw)


@pytest.mark.parametrize("xd,twd,out", [
    (torch.float64, torch.float32, torch.float64),      # the wider of the two, either way round
    (torch.float32, torch.float64, torch.float64),
    (torch.float32, torch.complex64, torch.complex64),
    (torch.float64, torch.complex64, torch.complex128),
    (torch.bfloat16, torch.float32, torch.bfloat16),    # half precision in, fp32 arithmetic, half out
    (torch.float16, torch.float64, torch.float16),
    (torch.bfloat16, torch.complex64, torch.complex64),  # complex output: no complex bf16
])
def test_dtype_rules(xd, twd, out):
    """Output dtype, and values equal to the float64 / complex128 dense product of the same
    (rounded) inputs to the output dtype's precision: a float64 side is never computed in float32."""
    g = torch.Generator().manual_seed(3)
    tw = torch.randn(2, 3, 4, 2, 2, dtype=torch.complex128 if twd.is_complex else torch.float64, generator=g).to(twd)
    x = torch.randn(5, 8, dtype=torch.float64, generator=g).to(xd)
    y = butterfly_multiply(x, tw, backend="torch")
    assert y.dtype == out
    ref = x.to(torch.complex128).numpy() @ dense_product(tw.to(torch.complex128).numpy(), True).T
    if not out.is_complex:
        ref = ref.real
    tol = {torch.float64: 1e-12, torch.complex128: 1e-12, torch.float32: 1e-5, torch.complex64: 1e-5,
           torch.bfloat16: 2**-7, torch.float16: 2**-9}[out]
    got = y.to(torch.complex128 if out.is_complex else torch.float64).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol * np.abs(ref).max())
