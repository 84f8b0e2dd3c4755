"""Exact constructions against independent references (torch.fft, scipy, torchaudio, librosa).

Tolerances: float64 max error <= 1e-9 relative to the largest entry of the
reference, float32 <= 1e-4.
"""
import numpy as np
import pytest
import scipy.fft
import scipy.linalg
import torch
import torchaudio

from kfrontend import constructions as C

TOL = {torch.float64: 1e-9, torch.float32: 1e-4}
CTYPE = {torch.float64: torch.complex128, torch.float32: torch.complex64}
# Sizes: small, powers of two, the front-end sizes (400, 201, 23, 40, 80, 128), and a random sample.
_rng = np.random.default_rng(1234)
SIZES = sorted({1, 2, 3, 4, 5, 7, 16, 23, 40, 64, 80, 128, 201, 256, 400, 512, 1000, 4096}
               | set(int(v) for v in _rng.integers(2, 4097, size=6)))


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("real_dtype", [torch.float64, torch.float32])
def test_dft_matches_torch_fft(n, real_dtype):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(3, n, dtype=CTYPE[real_dtype], generator=g)
    xr = torch.randn(2, 3, n, dtype=real_dtype, generator=g)
    cd = CTYPE[real_dtype]
    assert rel_err(C.dft(n, dtype=cd)(x), torch.fft.fft(x.to(torch.complex128))) <= TOL[real_dtype]
    assert rel_err(C.dft(n, inverse=True, dtype=cd)(x), torch.fft.ifft(x.to(torch.complex128))) <= TOL[real_dtype]
    rfft = C.dft(n, onesided=True, dtype=cd)
    assert rfft.out_features == n // 2 + 1
    assert rel_err(rfft(xr), torch.fft.rfft(xr.double())) <= TOL[real_dtype]


def test_dft_uses_radix2_for_powers_of_two_and_bluestein_otherwise():
    m512 = C.dft(512, onesided=True)
    assert (m512.size, m512.nblocks) == (512, 3)  # Benes bit reversal (2) + DIT (1)
    m400 = C.dft(400, onesided=True)
    assert (m400.size, m400.nblocks) == (1024, 2)  # chirp-z: circulant of size >= 400 + 201 - 1
    # O(N log N): parameters grow like N log N, far below the dense matrix at large n.
    m4096 = C.dft(4096)
    assert m4096.parameter_count() < m4096.dense_parameter_count() / 50


@pytest.mark.parametrize("n_in,n_out", [(1, 1), (2, 2), (13, 13), (23, 23), (40, 13), (40, 40),
                                        (64, 20), (80, 40), (80, 80), (128, 40), (128, 128), (257, 30)])
@pytest.mark.parametrize("norm", ["ortho", None])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dct_matches_scipy_and_torchaudio(n_in, n_out, norm, dtype):
    x = torch.randn(4, n_in, dtype=torch.float64, generator=torch.Generator().manual_seed(n_in))
    m = C.dct(n_in, n_out, norm=norm, dtype=dtype)
    y = m(x.to(dtype))
    assert y.dtype == dtype and y.shape == (4, n_out)
    ref = torch.from_numpy(scipy.fft.dct(x.numpy(), type=2, norm=norm, axis=-1)[:, :n_out])
    assert rel_err(y, ref) <= TOL[dtype]
    # torchaudio builds create_dct in float32, so it agrees to float32 precision only.
    ta = x.float() @ torchaudio.functional.create_dct(n_out, n_in, norm)
    assert rel_err(y.float(), ta) <= 1e-4


MEL_CASES = [
    # (sample_rate, n_fft, n_mels, f_min, f_max, norm, mel_scale)
    (16000, 400, 40, 0.0, None, None, "htk"),
    (16000, 512, 40, 20.0, 7600.0, "slaney", "slaney"),
    (16000, 512, 80, 0.0, None, None, "slaney"),
    (16000, 1024, 128, 0.0, None, "slaney", "htk"),
    (8000, 256, 23, 64.0, 3800.0, None, "htk"),
    (16000, 400, 128, 0.0, 8000.0, None, "htk"),  # some empty filters
    (22050, 2048, 128, 0.0, None, "slaney", "slaney"),
    (16000, 256, 64, 300.0, 5000.0, None, "htk"),
]


@pytest.mark.filterwarnings("ignore:At least one mel filterbank has all zero values")
@pytest.mark.parametrize("sr,n_fft,n_mels,f_min,f_max,norm,scale", MEL_CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_mel_matches_torchaudio(sr, n_fft, n_mels, f_min, f_max, norm, scale, dtype):
    n_freqs = n_fft // 2 + 1
    fb = torchaudio.functional.melscale_fbanks(n_freqs, f_min, f_max or sr / 2, n_mels, sr, norm, scale).double()
    m = C.mel(fb, dtype=dtype)
    x = torch.rand(5, n_freqs, dtype=torch.float64, generator=torch.Generator().manual_seed(n_mels))
    assert rel_err(m(x.to(dtype)), x @ fb) <= TOL[dtype]
    assert rel_err(m.to_dense().double(), fb.T) <= TOL[dtype]
    # Cost is O(N log N): two butterflies of size N = 2H.
    assert m.nblocks == 2 and m.size <= 4 * 2 ** int(np.ceil(np.log2(n_freqs)))


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax,htk,norm", [
    (16000, 512, 40, 0.0, None, False, "slaney"),
    (16000, 2048, 128, 0.0, None, False, "slaney"),
    (22050, 1024, 64, 50.0, 8000.0, True, None),
])
def test_mel_matches_librosa(sr, n_fft, n_mels, fmin, fmax, htk, norm):
    librosa = pytest.importorskip("librosa")
    fb = torch.from_numpy(librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                                              htk=htk, norm=norm, dtype=np.float64)).T
    m = C.mel(fb, dtype=torch.float64)
    x = torch.rand(3, fb.shape[0], dtype=torch.float64)
    assert rel_err(m(x), x @ fb) <= 1e-9


@pytest.mark.parametrize("num_bins,window_size,low,high", [(23, 512, 20.0, 0.0), (40, 512, 20.0, 0.0),
                                                           (80, 512, 20.0, -400.0), (40, 1024, 64.0, 7000.0)])
def test_mel_matches_kaldi(num_bins, window_size, low, high):
    from torchaudio.compliance.kaldi import get_mel_banks

    banks, _ = get_mel_banks(num_bins, window_size, 16000.0, low, high, 100.0, -500.0, 1.0)
    fb = torch.nn.functional.pad(banks, (0, 1)).T.double()  # Kaldi drops the Nyquist bin: pad it back
    m = C.mel(fb, dtype=torch.float64)
    x = torch.rand(3, fb.shape[0], dtype=torch.float64)
    assert rel_err(m(x), x @ fb) <= 1e-9


def test_mel_parameter_count_for_257_bins_40_filters():
    fb = torchaudio.functional.melscale_fbanks(257, 0.0, 8000.0, 40, 16000)
    m = C.mel(fb)
    # Two real butterflies of size 1024: 2 * 10 * 512 * 4 parameters.
    assert (m.size, m.parameter_count()) == (1024, 40960)
    assert m.dense_parameter_count() == 257 * 40


def test_mel_rejects_non_triangular_banks():
    fb = torch.rand(20, 5)  # every bin in every filter
    with pytest.raises(ValueError, match="fb"):
        C.mel(fb)
    with pytest.raises(ValueError, match="fb must be a 2-D"):
        C.mel(torch.rand(5))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 16, 100, 512, 1000])
def test_permutation_is_exact(n):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    m = C.permutation(perm, dtype=torch.float64)
    x = torch.randn(2, n, dtype=torch.float64)
    assert torch.equal(m(x), x[:, perm])
    assert m.nblocks == 2


def test_permutation_rejects_non_permutations():
    with pytest.raises(ValueError, match="perm must be a permutation"):
        C.permutation([0, 0, 1])


@pytest.mark.parametrize("n", [2, 8, 64, 1024])
def test_hadamard_matches_scipy(n):
    ref = torch.from_numpy(scipy.linalg.hadamard(n)).double()
    assert torch.equal(C.hadamard(n, dtype=torch.float64).to_dense(), ref)
    assert rel_err(C.hadamard(n, normalized=True, dtype=torch.float64).to_dense(), ref / n**0.5) <= 1e-12
    with pytest.raises(ValueError, match="power of two"):
        C.hadamard(n + 1 if n > 2 else 3)


@pytest.mark.parametrize("n", [1, 5, 64])
def test_identity(n):
    assert torch.equal(C.identity(n, dtype=torch.float64).to_dense(), torch.eye(n, dtype=torch.float64))


@pytest.mark.parametrize("make", [lambda: C.dft(400, onesided=True, dtype=torch.complex128),
                                  lambda: C.dct(40, 13, dtype=torch.float64),
                                  lambda: C.mel(torchaudio.functional.melscale_fbanks(201, 0, 8000, 40, 16000).double(),
                                                dtype=torch.float64)])
def test_widen_keeps_the_map_exact_and_adds_parameters(make):
    m = make()
    w = C.widen(m, 2)
    assert w.nblocks == m.nblocks + 4 and w.parameter_count() > m.parameter_count()
    x = torch.randn(3, m.in_features, dtype=torch.float64)
    assert rel_err(w(x), m(x)) <= 1e-12
    # The extra pairs are trainable: a gradient reaches them.
    w(x).abs().sum().backward()
    assert w.twiddle.grad[:, m.nblocks:].abs().sum() > 0


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="n must be >= 1"):
        C.dft(0)
    with pytest.raises(TypeError, match="n must be an int"):
        C.dft(4.0)
    with pytest.raises(ValueError, match="n_out"):
        C.dct(10, 20)
    with pytest.raises(ValueError, match="norm"):
        C.dct(10, 5, norm="slaney")


def test_cost_table_lists_parameters_and_flops():
    table = C.cost_table({"dft": C.dft(400, onesided=True), "dct": C.dct(40, 13)})
    assert "| dft | 400 | 201 | 1024 | 2 |" in table and "| dct | 40 | 13 | 64 | 2 |" in table


# ------------------------------------------------------------------------------------------------
# Edges and messages found by mutation testing (tools/mutation.sh constructions, docs/TESTING.md)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make,name", [(C.dft, "n"), (C.hadamard, "n"), (C.identity, "n"), (C.dct, "n_in"),
                                       (lambda v: C.dct(40, v), "n_out")])
def test_size_checks_name_the_argument_exactly(make, name):
    with pytest.raises(TypeError, match=f"^{name} must be an int, got float$"):
        make(4.0)
    with pytest.raises(TypeError, match=f"^{name} must be an int, got bool$"):
        make(True)
    with pytest.raises(ValueError, match=f"^{name} must be >= 1, got 0$"):
        make(0)


def test_structure_at_the_smallest_sizes():
    """n = 2 is a power of two: radix-2 (Benes + DIT, 3 butterflies of size 2), not chirp-z;
    n = 1 is chirp-z on a circulant of the minimum size 2.  Values are checked by the size sweep."""
    m2 = C.dft(2)
    assert (m2.size, m2.nblocks, m2.increasing_stride) == (2, 3, True)
    m1 = C.dft(1)
    assert (m1.size, m1.nblocks, m1.increasing_stride) == (2, 2, False)
    m = C.dft(6)
    assert (m.size, m.nblocks, m.increasing_stride) == (16, 2, False)  # circulant >= 6 + 6 - 1


def test_identity_and_permutation_structure_and_dtypes():
    i = C.identity(5)
    assert (i.size, i.nblocks) == (8, 1) and i.twiddle.dtype == torch.float32  # real unless asked
    assert C.identity(5, complex=True).twiddle.dtype == torch.complex64
    assert C.identity(5, complex=True, dtype=torch.float64).twiddle.dtype == torch.complex128
    assert torch.equal(C.identity(5, complex=True, dtype=torch.float64).to_dense(), torch.eye(5, dtype=torch.complex128))
    p = C.permutation(torch.tensor([2, 0, 1]), dtype=torch.float64)
    assert (p.size, p.nblocks, p.increasing_stride) == (4, 2, True)
    assert torch.equal(p.to_dense(), torch.eye(3, dtype=torch.float64)[[2, 0, 1]])
    with pytest.raises(ValueError, match=r"^perm must be a non-empty 1-D sequence of indices, got shape \(1, 2\)$"):
        C.permutation([[0, 1]])
    with pytest.raises(ValueError, match=r"^perm must be a non-empty 1-D sequence of indices, got shape \(0,\)$"):
        C.permutation([])
    with pytest.raises(ValueError, match=r"^perm must be a permutation of 0\.\.2$"):
        C.permutation([0, 3, 1])


def test_widen_copies_every_setting():
    from kfrontend import Butterfly

    torch.manual_seed(0)
    m = Butterfly(10, 6, bias=True, increasing_stride=False, backend="torch", dtype=torch.float64)
    with torch.no_grad():
        m.bias.normal_()
    w = C.widen(m, 1)
    assert (w.in_features, w.out_features, w.size, w.increasing_stride, w.backend) == (10, 6, 16, False, "torch")
    assert w.twiddle.dtype == m.twiddle.dtype and w.nblocks == m.nblocks + 2
    assert torch.equal(w.bias, m.bias)
    x = torch.randn(4, 10, dtype=torch.float64)
    torch.testing.assert_close(w(x), m(x), rtol=0, atol=1e-12)
    same = C.widen(m, 0)  # no extra pair: the same map, a copy
    assert same.nblocks == m.nblocks and torch.equal(same(x), m(x)) and same is not m
    assert C.widen(Butterfly(8, 8), 1).bias is None
    assert C.widen(C.dct(40, 13), 1).real_output
    with pytest.raises(ValueError, match=r"^extra_pairs must be an int >= 0, got -1$"):
        C.widen(m, -1)
    with pytest.raises(ValueError, match=r"^extra_pairs must be an int >= 0, got 1\.0$"):
        C.widen(m, 1.0)
    with pytest.raises(TypeError, match=r"^module must be a kfrontend\.Butterfly, got Linear$"):
        C.widen(torch.nn.Linear(2, 2), 1)


def test_mel_edges_and_messages():
    one = torch.tensor([[0.0], [1.0], [0.5]], dtype=torch.float64)  # a single filter
    x = torch.rand(4, 3, dtype=torch.float64)
    assert rel_err(C.mel(one, dtype=torch.float64)(x), x @ one) <= 1e-12
    fb = torchaudio.functional.melscale_fbanks(33, 0.0, 8000.0, 6, 16000).double()
    assert torch.equal(C.mel(fb.numpy(), dtype=torch.float64).to_dense(), C.mel(fb, dtype=torch.float64).to_dense())
    bad = fb.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="^fb must be finite$"):
        C.mel(bad)
    with pytest.raises(ValueError, match=r"^fb must be a 2-D \(n_freqs, n_mels\) filterbank, got shape \(0, 3\)$"):
        C.mel(np.zeros((0, 3)))
    swapped = torch.zeros(6, 2)
    swapped[2:4, 0] = 1.0
    swapped[0:2, 1] = 1.0
    with pytest.raises(ValueError, match=r"^fb: filter 1 \(bins 0\.\.1\) is not ordered after the previous filter "
                                         r"\(bins 2\.\.3\); mel\(\) needs triangular filters in increasing order$"):
        C.mel(swapped)
    three = torch.zeros(6, 3)
    three[0:3, 0] = three[1:4, 1] = three[2:5, 2] = 1.0  # bin 2 in three filters
    with pytest.raises(ValueError, match=r"^fb: filters 0 and 2 overlap \(bins 0\.\.2 and 2\.\.4\); mel\(\) needs "
                                         r"each bin in at most two adjacent filters$"):
        C.mel(three)


def test_dft_dtype_argument():
    """A real dtype means its complex counterpart; anything else is refused by name."""
    assert C.dft(8, dtype=torch.float64).twiddle.dtype == torch.complex128
    assert C.dft(6, dtype=torch.float32).twiddle.dtype == torch.complex64
    assert C.dft(8, dtype=torch.complex128).twiddle.dtype == torch.complex128
    with pytest.raises(TypeError, match=r"^dtype must be a float or complex torch dtype, got torch\.int32$"):
        C.dft(8, dtype=torch.int32)
    from kfrontend import Butterfly

    assert C.widen(Butterfly(8, 8), 1).increasing_stride is True  # the order is copied either way


def test_structured_constructions_defaults_names_and_complexity():
    """Defaults against the references they promise (scipy / torch.fft with their own defaults),
    the argument named in each refusal, and complex data giving a complex map."""
    x = torch.randn(3, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    xc = torch.randn(3, 12, dtype=torch.complex128, generator=torch.Generator().manual_seed(3))
    assert rel_err(C.idft(12, dtype=torch.complex128)(xc), torch.fft.ifft(xc)) <= 1e-9
    assert rel_err(C.idft(12, onesided=True, dtype=torch.complex128)(xc), torch.fft.ifft(xc)[:, :7]) <= 1e-9
    x2 = torch.randn(2, 4, 2, dtype=torch.complex128, generator=torch.Generator().manual_seed(4))  # (.., n2, n1)
    y2 = C.dft2(2, 4, dtype=torch.complex128)(x2.reshape(2, 8)).reshape(2, 4, 2)
    assert rel_err(y2, torch.fft.fft2(x2)) <= 1e-9  # forward, norm "backward" by default
    ref = torch.from_numpy(scipy.fft.dst(x.numpy(), type=2, norm="ortho", axis=-1))
    assert rel_err(C.dst(12, dtype=torch.float64)(x), ref) <= 1e-9  # DST-II, orthonormal by default
    for call, msg in ((lambda: C.dft2(0, 4), "^n1 must be >= 1, got 0$"), (lambda: C.dft2(4, 0), "^n2 must be >= 1, got 0$"),
                      (lambda: C.toeplitz([]), r"^col must be a non-empty 1-D vector, got shape \(0,\)$"),
                      (lambda: C.toeplitz([1.0], [[1.0]]), r"^row must be a non-empty 1-D vector, got shape \(1, 1\)$"),
                      (lambda: C.toeplitz([1.0, float("inf")]), "^col must be finite$"),
                      (lambda: C.circular_convolution(torch.zeros(2, 2)),
                       r"^kernel must be a non-empty 1-D vector, got shape \(2, 2\)$"),
                      (lambda: C.circular_convolution([1.0], 0), "^n must be >= 1, got 0$"),
                      (lambda: C.circular_convolution([1.0, 2.0, 3.0], 2), "^kernel has 3 taps, more than n = 2$")):
        with pytest.raises(ValueError, match=msg):
            call()
    # complex data (in the column, the row or the kernel) gives a complex map by default
    t = C.toeplitz([1.0, 2.0, 3.0], [1.0, 1j, 2.0])
    assert t.twiddle.dtype == torch.complex64 and not t.real_output
    assert C.toeplitz(torch.tensor([1.0, 2.0])).real_output
    for kern in ([1.0, 0.5j], [1.0, 0.5j, 0.25, 2.0]):
        k = C.circular_convolution(kern, 4, dtype=torch.complex128)
        z = torch.randn(2, 4, dtype=torch.complex128, generator=torch.Generator().manual_seed(5))
        want = torch.fft.ifft(torch.fft.fft(torch.tensor(kern, dtype=torch.complex128), 4) * torch.fft.fft(z))
        assert rel_err(k(z), want) <= 1e-9
        assert not C.circular_convolution(kern, 4).real_output
    for col in ([1.0, 2j, 3.0, 4.0], [1.0, 2j, 3.0]):  # power-of-two and Toeplitz-embedded circulants
        assert C.circulant(col).twiddle.dtype == torch.complex64 and not C.circulant(col).real_output
        assert C.circulant([abs(v) for v in col]).real_output


def test_cost_table_header():
    lines = C.cost_table({"dft": C.dft(8)}).split("\n")
    assert lines[:2] == ["| stage | in | out | N | butterflies | params (K) | params (dense) | FLOPs (K) | FLOPs (dense) |",
                         "|---|---|---|---|---|---|---|---|---|"]
    m = C.dft(8)
    assert lines[2] == (f"| dft | 8 | 8 | 8 | 3 | {m.parameter_count():,} | {m.dense_parameter_count():,} "
                        f"| {m.flops():,} | {m.dense_flops():,} |") and len(lines) == 3


# ---- found by mutation testing (issue 15): nblocks, the mel layout's edges, matrix() -------------
def test_butterfly_nblocks_must_agree_with_the_twiddle():
    """``nblocks`` with a twiddle is checked against twiddle.shape[1] (it was ignored), and defaults
    to it; the constructions pass the twiddle's own count."""
    from kfrontend import Butterfly

    tw = torch.randn(1, 3, 3, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"^nblocks=4 contradicts the twiddle of shape \(1, 3, 3, 4, 2, 2\), which "
                                         r"has 3 blocks \(twiddle\.shape\[1\]\); pass nblocks=3 or leave nblocks out$"):
        Butterfly(8, 8, nblocks=4, twiddle=tw)
    assert Butterfly(8, 8, twiddle=tw).nblocks == 3 and Butterfly(8, 8, nblocks=3, twiddle=tw).nblocks == 3
    assert Butterfly(8, 8).nblocks == 1 and Butterfly(8, 8, nblocks=2).nblocks == 2
    with pytest.raises(ValueError, match="^nblocks must be a positive integer, got 0$"):
        Butterfly(8, 8, nblocks=0)
    fb = torchaudio.functional.melscale_fbanks(9, 0.0, 8000.0, 3, 16000)
    for m, blocks in ((C.dft(8), 3), (C.dft(6), 2), (C.dct(8), 2), (C.mel(fb), 2), (C.matrix(torch.ones(3, 2)), 2),
                      (C.permutation([1, 0, 2]), 2), (C.hadamard(4), 1), (C.identity(3), 1)):
        assert m.nblocks == blocks


def _triangular_bank(rng: np.random.Generator) -> np.ndarray:
    """A random bank mel() accepts: filter j is nonzero on bins [p_j, p_{j+2}) of sorted breakpoints
    (so each bin lies in at most two adjacent filters), some filters empty, positive weights."""
    n_freqs, n_mels = int(rng.integers(1, 40)), int(rng.integers(1, 12))
    pts = np.sort(rng.integers(0, n_freqs + 1, size=n_mels + 2))
    fb = np.zeros((n_freqs, n_mels))
    for j in range(n_mels):
        lo, hi = pts[j], min(pts[j + 2], n_freqs)
        if rng.random() >= 0.15 and hi > lo:
            fb[lo:hi, j] = rng.random(hi - lo) + 0.1
    return fb


def _quiet_melscale_fbanks(*args):
    import warnings

    with warnings.catch_warnings():  # torchaudio warns about its empty filters: they are the point here
        warnings.simplefilter("ignore", UserWarning)
        return torchaudio.functional.melscale_fbanks(*args)


def test_mel_exact_on_random_triangular_banks_and_edge_banks():
    """module == x @ fb, to_dense exactly fb (float64, <= 1e-12 absolute), on 150 seeded random banks
    (empty filters, filters of one bin, filters at bin 0 or at the last bin), the smallest bank (one
    bin, one filter: N = 2, the smallest butterfly), an all-zero bank, and torchaudio's 128 filters
    over 129 bins (most of them empty)."""
    rng = np.random.default_rng(15)
    banks = [_triangular_bank(rng) for _ in range(150)]
    banks += [np.array([[0.5]]), np.zeros((5, 3)), np.array([[0.0, 0.3]]), np.array([[0.2], [0.0], [0.0], [0.4]]),
              _quiet_melscale_fbanks(129, 0.0, 8000.0, 128, 16000).double().numpy()]
    for fb in banks:
        m = C.mel(fb, dtype=torch.float64)
        assert np.abs(m.to_dense().numpy().T - fb).max() <= 1e-12, fb
    one = C.mel(np.array([[0.5]]), dtype=torch.float64)
    assert one.size == 2
    assert torch.equal(one(torch.tensor([[3.0]], dtype=torch.float64)), torch.tensor([[1.5]], dtype=torch.float64))
    zero = C.mel(np.zeros((5, 3)), dtype=torch.float64)
    assert torch.equal(zero(torch.rand(2, 5, dtype=torch.float64)), torch.zeros(2, 3, dtype=torch.float64))


@pytest.mark.parametrize("n_freqs,n_mels,size,params", [(201, 40, 1024, 40960), (201, 80, 1024, 40960),
                                                         (257, 80, 1024, 40960), (513, 128, 2048, 90112),
                                                         (1025, 128, 4096, 196608)])
def test_mel_sizes_of_the_cost_table(n_freqs, n_mels, size, params):
    """N and the parameter count of docs/CONSTRUCTIONS.md's cost table (torchaudio banks, 16 kHz,
    0-8000 Hz): a layout that wastes slots doubles them."""
    m = C.mel(torchaudio.functional.melscale_fbanks(n_freqs, 0.0, 8000.0, n_mels, 16000))
    assert (m.size, m.parameter_count()) == (size, params)


def test_mel_refuses_a_filter_inside_the_previous_one_and_a_bin_in_three_filters():
    inside = np.zeros((6, 2))
    inside[2:4, 0] = 1.0
    inside[0:6, 1] = 1.0  # starts before filter 0 and ends after it
    with pytest.raises(ValueError, match=r"^fb: filter 1 \(bins 0\.\.5\) is not ordered after the previous filter "
                                         r"\(bins 2\.\.3\)"):
        C.mel(inside)
    first = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])  # bin 0 in filters 0, 1 and 2
    with pytest.raises(ValueError, match=r"^fb: filters 0 and 2 overlap \(bins 0\.\.0 and 0\.\.2\)"):
        C.mel(first)
    later = np.zeros((7, 4))
    later[0:2, 0] = later[1:4, 1] = later[2:6, 2] = later[3:7, 3] = 1.0  # bin 3 in filters 1, 2 and 3
    with pytest.raises(ValueError, match=r"^fb: filters 1 and 3 overlap \(bins 1\.\.3 and 3\.\.6\)"):
        C.mel(later)


@pytest.mark.parametrize("n_in,n_out", [(1, 1), (1, 5), (5, 1), (2, 2), (3, 5), (5, 3), (8, 8), (9, 17), (16, 3),
                                        (13, 40)])
def test_matrix_is_exactly_the_given_matrix(n_in, n_out):
    """matrix(w): to_dense() is w.T bit for bit (every product entry is one entry of w times ones),
    module(x) == x @ w (float64, <= 1e-12 of the largest output), N = P Q (P, Q the next powers of two
    of n_in (at least 2) and n_out), 2 butterflies; numpy and torch input give the same module;
    float32 keeps float32 values exactly."""
    g = torch.Generator().manual_seed(n_in * 100 + n_out)
    w = torch.randn(n_in, n_out, dtype=torch.float64, generator=g)
    m = C.matrix(w, dtype=torch.float64)
    assert torch.equal(m.to_dense(), w.T)
    x = torch.randn(4, n_in, dtype=torch.float64, generator=g)
    assert rel_err(m(x), x @ w) <= 1e-12
    p, q = max(2, 1 << (n_in - 1).bit_length()), 1 << (n_out - 1).bit_length()
    assert (m.size, m.nblocks, m.in_features, m.out_features) == (p * q, 2, n_in, n_out)
    assert m.twiddle.dtype == torch.float64 and not m.increasing_stride
    assert torch.equal(C.matrix(w.numpy(), dtype=torch.float64).twiddle, m.twiddle)
    w32 = w.float()
    m32 = C.matrix(w32)
    assert m32.twiddle.dtype == torch.float32 and torch.equal(m32.to_dense(), w32.T)


def test_matrix_refusals():
    with pytest.raises(ValueError, match=r"^w must be a 2-D \(n_in, n_out\) matrix, got shape \(3,\)$"):
        C.matrix(np.ones(3))
    with pytest.raises(ValueError, match=r"^w must be a 2-D \(n_in, n_out\) matrix, got shape \(0, 2\)$"):
        C.matrix(np.ones((0, 2)))
    with pytest.raises(ValueError, match="^w must be finite$"):
        C.matrix(torch.tensor([[1.0, float("nan")]]))


def test_tensor_data_that_requires_grad_and_widen_of_a_half_module():
    """Vectors may be tensors that require grad (a learned kernel, say): the data is read detached,
    like numpy's, and gives the same map (scipy's Toeplitz, float64, 1e-12).  widen keeps a
    half-precision module's twiddle dtype (identity blocks are exact in it) and its map."""
    col = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64, requires_grad=True)
    t = C.toeplitz(col, dtype=torch.float64)
    ref = torch.from_numpy(scipy.linalg.toeplitz(col.detach().numpy()))
    assert rel_err(t.to_dense(), ref) <= 1e-12
    m = C.hadamard(8).half()
    w = C.widen(m, 1)
    assert w.twiddle.dtype == torch.float16 and w.nblocks == 3
    assert torch.equal(w.to_dense(), m.to_dense())


def test_permutation_refuses_non_integer_indices_and_matrix_refuses_complex_values():
    """permutation([1.5, 0.0]) was read as [1, 0] (numpy's int cast truncates): float or bool
    indices are refused by name; integer numpy / torch indices of any width are taken.  matrix()
    refuses complex values (it is a real map) and reads a tensor that requires grad detached, like
    mel() (found by mutation testing)."""
    for bad, dtype in (([1.5, 0.0], "float64"), (torch.tensor([1.0, 0.0]), "float64"), ([True, False], "bool")):
        with pytest.raises(TypeError, match=f"^perm must hold integers, got dtype {dtype}$"):
            C.permutation(bad)
    x = torch.arange(3.0)[None]
    for perm in (np.array([2, 0, 1], dtype=np.int32), torch.tensor([2, 0, 1], dtype=torch.int16), [2, 0, 1]):
        assert torch.equal(C.permutation(perm)(x), x[..., [2, 0, 1]])
    with pytest.raises(ValueError, match=r"^perm must be a non-empty 1-D sequence of indices, got shape \(0,\)$"):
        C.permutation([])
    with pytest.raises(TypeError):
        C.matrix([[1.0 + 1.0j, 0.0]])
    w = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    assert torch.equal(C.matrix(w, dtype=torch.float64).to_dense(), w.detach().T)
    fb = torch.tensor([[0.5, 0.0], [0.25, 1.0]], dtype=torch.float64, requires_grad=True)
    assert torch.equal(C.mel(fb, dtype=torch.float64).to_dense(), fb.detach().T)


# ---- device placement without a GPU: the meta device stands in ---------------------------------
# On a CPU-only machine a tensor made without ``device=`` lands on the CPU like everything else, so
# dropping the argument cannot show (docs/TESTING.md, "CPU-only" survivors).  With the default
# device set to meta (``torch.device`` as a context manager: restored even when the test fails),
# code that makes its tensors on its input's device gives the same result as without the context;
# code that relies on the default device mixes meta and CPU tensors and fails.
@pytest.mark.parametrize("kind", ["dct", "random"])
def test_widen_makes_its_identity_blocks_on_the_twiddle_device(kind):
    """widen() under a meta default device, on a CPU module (a complex DCT with a real output, a
    random real butterfly): the twiddle, made of the module's and identity blocks, is the one made
    without the context, and the map is the module's, exactly."""
    from kfrontend import Butterfly

    torch.manual_seed(0)
    m = C.dct(40, 13) if kind == "dct" else Butterfly(8, 8, increasing_stride=False)
    want = C.widen(m, 2)
    with torch.device("meta"):
        w = C.widen(m, 2)
    assert torch.get_default_device() == torch.device("cpu")
    assert w.twiddle.device == torch.device("cpu") and torch.equal(w.twiddle, want.twiddle)
    assert torch.equal(w.to_dense(), m.to_dense())  # identity pairs: the same map, exactly


def test_widen_keeps_the_bias_on_the_module_device():
    """Butterfly(twiddle=t, bias=True) made its bias on the default device, not t's: widen() of a GPU
    module with a bias returned a CUDA twiddle and a CPU bias (found with the meta default device)."""
    from kfrontend import Butterfly

    m = Butterfly(8, 8, bias=True)
    with torch.no_grad():
        m.bias.copy_(torch.arange(8.0))
    with torch.device("meta"):
        w = C.widen(m, 1)
    assert w.bias.device == w.twiddle.device == torch.device("cpu")
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(w(x), m(x), rtol=1e-6, atol=1e-6)  # the same map, bias included
