"""Exact K-matrix constructions of the linear maps an audio front end uses.

Every function returns a :class:`kfrontend.Butterfly` whose product of butterfly factors *is* the
named transform (float64 error ~1e-15), so a learnable stage can start exactly where the hand-picked
one is.  Building blocks (their costs: docs/CONSTRUCTIONS.md):

* Radix-2 FFT: decimation in frequency (DIF) is a decreasing-stride butterfly taking natural order to
  bit-reversed order; decimation in time (DIT) is an increasing-stride butterfly taking bit-reversed
  order to natural order.
* Any permutation is an increasing then a decreasing butterfly of 0/1 switches (Benes network,
  routed by the looping algorithm).
* Chirp-z / Bluestein: the first K outputs of a length-L DFT of n inputs are
  ``W^{k^2/2} sum_m (x_m W^{m^2/2}) W^{-(k-m)^2/2}``: a diagonal, a Toeplitz matrix, a diagonal.  The
  Toeplitz matrix embeds in a circulant of size M >= n + K - 1 (a power of two), and a circulant is
  ``DIT^-1 diag(DIF h) DIF``: a decreasing then an increasing butterfly, with every diagonal folded
  into the first or last factor.  So any-length DFT, the one-sided real DFT and the DCT-II are one
  ``B* B`` pair each.
* Mel filterbank: a decreasing butterfly copies every bin into both halves and spreads the copies, in
  order, into aligned dyadic slots (one per filter and side), weights folded into its last factor; an
  increasing butterfly sums each slot into its head, compacts the heads to 0..m-1 and adds the halves.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from kfrontend.functional import is_power_of_two, next_power_of_two
from kfrontend.layers import Butterfly
from kfrontend.reference import COMPLEX_OF, REAL_OF

__all__ = [
    "dft",
    "idft",
    "dft2",
    "dct",
    "matrix",
    "dst",
    "circulant",
    "toeplitz",
    "circular_convolution",
    "mel",
    "hadamard",
    "permutation",
    "identity",
    "widen",
    "cost_table",
]

_CDTYPES = REAL_OF
_RDTYPES = COMPLEX_OF


# ----------------------------------------------------------------------------------------------
# Twiddle builders (numpy complex128 / float64; shape (log2 N, N/2, 2, 2) per butterfly)
# ----------------------------------------------------------------------------------------------
def _pair_index(p: int, s: int) -> int:
    """Index of the pair (p, p+s) in a factor of stride s (see functional's conventions)."""
    return (p // (2 * s)) * s + (p % s)


def _stride(i: int, n: int, increasing: bool) -> int:
    return 1 << i if increasing else n >> (i + 1)


def _identity_twiddle(n: int, dtype=np.complex128) -> np.ndarray:
    t = np.zeros((n.bit_length() - 1, n // 2, 2, 2), dtype=dtype)
    t[..., 0, 0] = 1
    t[..., 1, 1] = 1
    return t


def _fft_twiddle(n: int, increasing: bool, sign: int) -> np.ndarray:
    """Radix-2 FFT factors with w = exp(sign * 2 pi i / size).

    increasing=True: DIT, bit-reversed input -> natural output, block [[1, w^r], [1, -w^r]].
    increasing=False: DIF, natural input -> bit-reversed output, block [[1, 1], [w^r, -w^r]].
    """
    log_n = n.bit_length() - 1
    t = np.zeros((log_n, n // 2, 2, 2), dtype=np.complex128)
    for i in range(log_n):
        s = _stride(i, n, increasing)
        r = np.arange(n // 2) % s  # pair j = g*s + r
        w = np.exp(sign * 2j * np.pi * r / (2 * s))
        if increasing:
            t[i, :, 0, 0], t[i, :, 0, 1], t[i, :, 1, 0], t[i, :, 1, 1] = 1, w, 1, -w
        else:
            t[i, :, 0, 0], t[i, :, 0, 1], t[i, :, 1, 0], t[i, :, 1, 1] = 1, 1, w, -w
    return t


def _bit_reverse(n: int) -> np.ndarray:
    bits = n.bit_length() - 1
    idx = np.arange(n)
    rev = np.zeros(n, dtype=np.int64)
    for b in range(bits):
        rev |= ((idx >> b) & 1) << (bits - 1 - b)
    return rev


def _fold_input_diag(first: np.ndarray, d: np.ndarray, n: int, increasing: bool) -> None:
    """first = factor 0 of a butterfly (N/2, 2, 2); in place: factor @ diag(d)."""
    s = _stride(0, n, increasing)
    p = _pair_positions(n, s)
    first[:, :, 0] *= d[p][:, None]
    first[:, :, 1] *= d[p + s][:, None]


def _fold_output_diag(last: np.ndarray, d: np.ndarray, n: int, increasing: bool) -> None:
    """last = final factor of a butterfly; in place: diag(d) @ factor."""
    s = _stride(n.bit_length() - 2, n, increasing)
    p = _pair_positions(n, s)
    last[:, 0, :] *= d[p][:, None]
    last[:, 1, :] *= d[p + s][:, None]


def _pair_positions(n: int, s: int) -> np.ndarray:
    """p for pair j = 0..N/2-1 of a factor with stride s."""
    j = np.arange(n // 2)
    return (j // s) * (2 * s) + (j % s)


def _benes_twiddle(perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Route ``y[perm[i]] = x[i]`` through an increasing then a decreasing butterfly of switches.

    Level b of the recursion owns stride 2**b: the increasing factor b splits each sub-network's
    elements between its two halves (positions with bit b = 0 / 1), the decreasing factor L-1-b
    merges them back; the looping algorithm 2-colours elements so that the two elements of every
    input pair, and the two elements bound for every output pair, take different halves.  The
    middle stride N/2 is switched by the increasing butterfly alone.
    """
    n = len(perm)
    log_n = n.bit_length() - 1
    inc = np.zeros((log_n, n // 2, 2, 2))
    dec = _identity_twiddle(n, np.float64)
    straight, cross = np.eye(2), np.array([[0.0, 1.0], [1.0, 0.0]])

    def route(b: int, low: int, pi: np.ndarray) -> None:
        m = len(pi)  # local positions u: global (u << b) | low
        s = 1 << b
        if m == 2:
            inc[b, _pair_index(low, s)] = straight if pi[0] == 0 else cross
            return
        inv = np.empty(m, dtype=np.int64)
        inv[pi] = np.arange(m)
        color = -np.ones(m, dtype=np.int64)
        for start in range(0, m, 2):
            if color[start] >= 0:
                continue
            u, c = start, 0
            while color[u] < 0:
                color[u] = c
                partner = inv[pi[u] ^ 1]  # shares u's output pair: other half
                color[partner] = 1 - c
                u, c = partner ^ 1, c  # shares partner's input pair: u's half again
        for v in range(m // 2):
            p = ((2 * v) << b) | low
            inc[b, _pair_index(p, s)] = straight if color[2 * v] == 0 else cross
        sub = [np.empty(m // 2, dtype=np.int64) for _ in range(2)]
        for u in range(m):
            sub[color[u]][u >> 1] = pi[u] >> 1
            if color[u] == 0:  # element leaving half 0 at output pair w goes to pi[u]
                w = pi[u] >> 1
                p = ((2 * w) << b) | low
                dec[log_n - 1 - b, _pair_index(p, s)] = straight if pi[u] & 1 == 0 else cross
        route(b + 1, low, sub[0])
        route(b + 1, low | s, sub[1])

    route(0, 0, np.asarray(perm, dtype=np.int64))
    return inc, dec


def _circulant_twiddle(h: np.ndarray, in_diag=None, out_diag=None) -> np.ndarray:
    """Twiddles (2, log2 M, M/2, 2, 2), decreasing then increasing, of
    ``diag(out_diag) C(h) diag(in_diag)`` with ``C(h)[i, j] = h[(i - j) mod M]``, M = len(h) a power
    of two: ``C(h) = DIT^-1 diag(DIF h) DIF``, every diagonal folded into an end factor."""
    size = len(h)
    h_hat = np.fft.fft(h)[_bit_reverse(size)]  # DIF output order
    dif = _fft_twiddle(size, increasing=False, sign=-1)
    if in_diag is not None:
        _fold_input_diag(dif[0], in_diag, size, increasing=False)
    _fold_output_diag(dif[-1], h_hat, size, increasing=False)
    dit = _fft_twiddle(size, increasing=True, sign=+1)
    out = np.full(size, 1.0 / size, dtype=np.complex128) if out_diag is None else out_diag / size
    _fold_output_diag(dit[-1], out, size, increasing=True)
    return np.stack((dif, dit))


def _toeplitz_twiddle(col: np.ndarray, row: np.ndarray, in_diag=None, out_diag=None) -> np.ndarray:
    """``diag(out_diag) T diag(in_diag)`` for the Toeplitz T (len(col) x len(row)) with
    ``T[i, j] = col[i - j]`` (i >= j), ``row[j - i]`` (i < j) (scipy.linalg.toeplitz; row[0]
    unused): embedded in a circulant of size M >= len(col) + len(row) - 1 (a power of two), whose
    first len(col) outputs of the first len(row) inputs are T.  The input diagonal is padded with
    zeros (padded inputs are zero anyway)."""
    n_out, n_in = len(col), len(row)
    size = max(2, next_power_of_two(n_out + n_in - 1))
    h = np.zeros(size, dtype=np.complex128)
    h[:n_out] = col
    h[size - n_in + 1:] = row[1:][::-1]  # h[-l] = row[l] for lags -(n_in - 1) .. -1

    def pad(d, k, fill):
        if d is None:
            return None
        full = np.full(size, fill, dtype=np.complex128)
        full[:k] = d
        return full

    # Dropped rows get an overall factor 1 (the circulant's 1/M undone): any value would do.
    return _circulant_twiddle(h, pad(in_diag, n_in, 0.0), pad(out_diag, n_out, float(size)))


def _unit(q, den) -> np.ndarray:
    """exp(-i pi q / den) for integer q, reduced mod 2 den in exact integers first."""
    return np.exp(-1j * np.pi * (np.asarray(q, dtype=np.int64) % (2 * den)) / den)


def _chirp_z_twiddle(n: int, k_out: int, length: int, sign: int, out_scale: np.ndarray,
                     in_scale: np.ndarray | None = None) -> np.ndarray:
    """Twiddles (2, log2 M, M/2, 2, 2), decreasing then increasing, of
    ``y_k = out_scale_k * sum_{m<n} in_scale_m x_m exp(sign 2 pi i k m / length)`` for k < k_out:
    ``exp(sign 2 pi i k m / L) = c_k c_m conj(c_{k-m})`` with the chirp ``c_j = exp(sign i pi j^2 / L)``,
    so the sum is a diagonal, a Toeplitz matrix of conj(c) at the lags, a diagonal."""
    def chirp(idx: np.ndarray) -> np.ndarray:
        # exp(sign * i pi idx^2 / length) with idx^2 reduced mod 2*length in exact integers.
        q = (idx.astype(np.int64) ** 2) % (2 * length)
        return np.exp(sign * 1j * np.pi * q / length)

    a = chirp(np.arange(n))
    if in_scale is not None:
        a = a * in_scale
    return _toeplitz_twiddle(np.conj(chirp(np.arange(k_out))), np.conj(chirp(np.arange(n))),
                             a, chirp(np.arange(k_out)) * out_scale)


def _to_torch(t: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(t))
    if dtype.is_complex:
        return x.to(torch.complex128).to(dtype)
    if np.iscomplexobj(t):
        if np.abs(t.imag).max(initial=0.0) > 0:
            raise AssertionError("internal: real construction produced complex twiddles")
        x = torch.from_numpy(np.ascontiguousarray(t.real))
    return x.to(dtype)


def _check_size(name: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    return int(n)


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype in _CDTYPES:
        return dtype
    if dtype in _RDTYPES:
        return _RDTYPES[dtype]
    raise TypeError(f"dtype must be a float or complex torch dtype, got {dtype}")


# ----------------------------------------------------------------------------------------------
# Public constructions
# ----------------------------------------------------------------------------------------------
_FFT_NORMS = ("backward", "ortho", "forward")


def _fft_scale(n: int, inverse: bool, norm: str | None) -> float:
    """torch.fft's scaling: "backward" (or None) scales the inverse by 1/n, "forward" the forward,
    "ortho" both by 1/sqrt(n)."""
    norm = "backward" if norm is None else norm
    if norm not in _FFT_NORMS:
        raise ValueError(f"norm must be one of {_FFT_NORMS} (or None), got {norm!r}")
    if norm == "ortho":
        return 1.0 / math.sqrt(n)
    return 1.0 / n if (norm == "forward") != inverse else 1.0


def dft(n: int, *, inverse: bool = False, onesided: bool = False, norm: str | None = "backward",
        dtype=torch.complex64) -> Butterfly:
    """Length-n DFT as a complex K-matrix: equals ``torch.fft.fft(x, norm=norm)`` (``ifft`` with
    ``inverse``, ``rfft`` with ``onesided``: n // 2 + 1 outputs) for real or complex input; norm is
    torch.fft's ("backward" default, "ortho", "forward"), folded into the last factor.

    Powers of two: bit reversal (Benes: increasing + decreasing butterfly) then radix-2 DIT
    (increasing): 3 butterflies of size n.  Other n: chirp-z (Bluestein), 2 butterflies of size
    ``next_pow2(n + outputs - 1)``.
    """
    n = _check_size("n", n)
    cdtype = _complex_dtype(dtype)
    k_out = n // 2 + 1 if onesided else n
    sign = 1 if inverse else -1
    scale = _fft_scale(n, inverse, norm)
    if n >= 2 and is_power_of_two(n):
        inc, dec = _benes_twiddle(_bit_reverse(n))
        dit = _fft_twiddle(n, increasing=True, sign=sign)
        if scale != 1.0:
            _fold_output_diag(dit[-1], np.full(n, scale), n, increasing=True)
        tw = np.stack((inc.astype(np.complex128), dec.astype(np.complex128), dit))
        return Butterfly(n, k_out, nblocks=3, increasing_stride=True, twiddle=_to_torch(tw, cdtype)[None])
    tw = _chirp_z_twiddle(n, k_out, n, sign, np.full(k_out, scale, dtype=np.complex128))
    size = tw.shape[-3] * 2
    return Butterfly(n, k_out, nblocks=2, size=size, increasing_stride=False, twiddle=_to_torch(tw, cdtype)[None])


def idft(n: int, *, onesided: bool = False, norm: str | None = "backward", dtype=torch.complex64) -> Butterfly:
    """The inverse DFT: equals ``torch.fft.ifft(x, norm=norm)`` (``dft(n, inverse=True, ...)``)."""
    return dft(n, inverse=True, onesided=onesided, norm=norm, dtype=dtype)


def dft2(n1: int, n2: int, *, inverse: bool = False, norm: str | None = "backward",
         dtype=torch.complex64) -> Butterfly:
    """2-D DFT of (..., n2, n1) arrays flattened row-major to (..., n2 * n1): ``module(x.flatten(-2))
    == torch.fft.fft2(x, norm=norm).flatten(-2)`` (``ifft2`` with ``inverse``).  The Kronecker
    product ``F_n2 (x) F_n1`` of the two 1-D constructions (:func:`kfrontend.combine.kronecker`), 3
    butterflies of size n1 n2; n1 and n2 must be powers of two (a Bluestein DFT pads, and padding
    does not commute with flattening)."""
    from kfrontend.combine import kronecker

    for name, v in (("n1", n1), ("n2", n2)):
        v = _check_size(name, v)
        if v < 2 or not is_power_of_two(v):
            raise ValueError(f"{name} must be a power of two >= 2 for dft2 (no padding), got {v}")
    return kronecker(dft(n2, inverse=inverse, norm=norm, dtype=dtype), dft(n1, inverse=inverse, norm=norm, dtype=dtype))


# ----------------------------------------------------------------------------------------------
# Real trigonometric transforms (DCT / DST types II-IV): one chirp-z each, real part
# ----------------------------------------------------------------------------------------------
_TRIG_NORMS = (None, "backward", "ortho", "forward")


def _trig_diagonals(kind: str, typ: int, n: int, n_out: int, norm: str | None):
    """``(in_scale, out_scale)`` with ``y_k = Re(out_k sum_m in_m x_m exp(-2 pi i k m / 2n))`` equal to
    scipy.fft's ``kind`` (dct / dst) of type ``typ`` (first n_out outputs, scipy's norms).

    Each kernel is the real part of exp(-i pi (a k + b)(c m + d) / 2n) (a sine: of i times it);
    expanding the product leaves the DFT kernel of length 2n and phases in k alone (out_scale) and
    in m alone (in_scale).  All angles are reduced in integers.
    """
    m, k = np.arange(n), np.arange(n_out)
    w_in = np.ones(n)  # relative input weights; the sums carry scipy's overall factor 2 (backward)
    if kind == "dct" and typ == 2:  # 2 sum x_m cos(pi k (2m + 1) / 2n)
        in_ph, out_ph = np.ones(n), _unit(k, 2 * n)
    elif kind == "dct" and typ == 3:  # x_0 + 2 sum_{m>0} x_m cos(pi m (2k + 1) / 2n)
        w_in[0] = 0.5
        in_ph, out_ph = _unit(m, 2 * n), np.ones(n_out)
    elif kind == "dct":  # 4: 2 sum x_m cos(pi (2m + 1)(2k + 1) / 4n)
        in_ph, out_ph = _unit(m, 2 * n), _unit(2 * k + 1, 4 * n)
    elif typ == 2:  # 2 sum x_m sin(pi (k + 1)(2m + 1) / 2n): output k + 1 is output k and an input phase
        in_ph, out_ph = _unit(m, n), 1j * _unit(k + 1, 2 * n)
    elif typ == 3:  # (-1)^k x_{n-1} + 2 sum_{m<n-1} x_m sin(pi (m + 1)(2k + 1) / 2n)
        w_in[-1] = 0.5
        in_ph, out_ph = _unit(m + 1, 2 * n), 1j * _unit(k, n)
    else:  # 4: 2 sum x_m sin(pi (2m + 1)(2k + 1) / 4n)
        in_ph, out_ph = _unit(m, 2 * n), 1j * _unit(2 * k + 1, 4 * n)
    if norm == "ortho":
        # Orthonormal (scipy's orthogonalize=True): sqrt(2/n) for the 2, and the one row (type II)
        # or column (type III) whose norm differs by a further 1/sqrt(2) (the half weight of type
        # III becomes 1/sqrt(2)).  For the DST-II that is the LAST row: the reference library
        # scales row 0, which is not orthonormal.
        c_out = np.full(n_out, math.sqrt(2.0 / n))
        edge = 0 if kind == "dct" else n - 1
        if typ == 2 and edge < n_out:
            c_out[edge] /= math.sqrt(2.0)
        if typ == 3:
            w_in[edge] = 1 / math.sqrt(2.0)
    else:
        c_out = np.full(n_out, 2.0 if norm in (None, "backward") else 1.0 / n)  # forward: 2 / 2n
    return w_in * in_ph, c_out * out_ph


def _trig_transform(kind: str, n_in: int, n_out: int | None, typ: int, norm, dtype) -> Butterfly:
    n_in = _check_size("n_in", n_in)
    n_out = n_in if n_out is None else _check_size("n_out", n_out)
    if n_out > n_in:
        raise ValueError(f"n_out ({n_out}) must be <= n_in ({n_in})")
    if typ not in (2, 3, 4):
        raise ValueError(f"type must be 2, 3 or 4 for a {kind.upper()}, got {typ!r}")
    if norm not in _TRIG_NORMS:
        raise ValueError(f"norm must be one of {_TRIG_NORMS}, got {norm!r}")
    if dtype not in _RDTYPES:
        raise TypeError(f"dtype must be torch.float32 or torch.float64 (the output is real), got {dtype}")
    in_scale, out_scale = _trig_diagonals(kind, typ, n_in, n_out, norm)
    tw = _chirp_z_twiddle(n_in, n_out, 2 * n_in, -1, out_scale, in_scale)
    return Butterfly(
        n_in, n_out, nblocks=2, size=tw.shape[-3] * 2, increasing_stride=False,
        twiddle=_to_torch(tw, _RDTYPES[dtype])[None], real_output=True,
    )


def dct(n_in: int, n_out: int | None = None, *, type: int = 2, norm: str | None = "ortho",
        dtype=torch.float32) -> Butterfly:
    """DCT of ``type`` 2 (default), 3 or 4 from n_in inputs to the first n_out coefficients, equal to
    ``scipy.fft.dct(x, type, norm=norm)[..., :n_out]`` for real x (norm None / "backward", "ortho",
    "forward"); type 2 equals ``x @ torchaudio.functional.create_dct(n_out, n_in, norm)``.

    ``y_k = Re(out_k sum_m in_m x_m exp(-2 pi i k m / 2n))``: a chirp-z transform of length 2n with
    the phases and scales folded into its first and last factors; the module returns the real part.
    """
    return _trig_transform("dct", n_in, n_out, type, norm, dtype)


def dst(n_in: int, n_out: int | None = None, *, type: int = 2, norm: str | None = "ortho",
        dtype=torch.float32) -> Butterfly:
    """DST of ``type`` 2 (default), 3 or 4, equal to ``scipy.fft.dst(x, type, norm=norm)[..., :n_out]``
    for real x; built as :func:`dct` (a sine is the real part of i times an exponential)."""
    return _trig_transform("dst", n_in, n_out, type, norm, dtype)


# ----------------------------------------------------------------------------------------------
# Circulant / Toeplitz matrices and circular convolution
# ----------------------------------------------------------------------------------------------
def _as_vector(name: str, v) -> tuple[np.ndarray, bool]:
    """(complex128 copy, whether the data is complex)."""
    a = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
    if a.ndim != 1 or len(a) < 1:
        raise ValueError(f"{name} must be a non-empty 1-D vector, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    return a.astype(np.complex128), bool(np.iscomplexobj(a))


def _structured(n_in: int, n_out: int, tw: np.ndarray, is_complex: bool, dtype) -> Butterfly:
    """A decreasing-increasing pair of complex butterflies; a real dtype keeps the real part."""
    if dtype is None:
        dtype = torch.complex64 if is_complex else torch.float32
    if is_complex and dtype in _RDTYPES:
        raise TypeError(f"dtype {dtype} is real but the data is complex; pass a complex dtype")
    return Butterfly(n_in, n_out, nblocks=2, size=tw.shape[-3] * 2, increasing_stride=False,
                     twiddle=_to_torch(tw, _complex_dtype(dtype))[None], real_output=not dtype.is_complex)


def toeplitz(col, row=None, *, dtype=None) -> Butterfly:
    """``x @ T.T`` for the Toeplitz matrix ``T = scipy.linalg.toeplitz(col, row)`` (len(col) x len(row);
    row defaults to conj(col), row[0] is ignored): a circulant of size >= len(col) + len(row) - 1.

    ``dtype`` None: float32 for real data (the module returns the real part: exact for real x),
    complex64 for complex data; a complex dtype gives a complex map (for complex x).
    """
    c, c_cplx = _as_vector("col", col)
    r, r_cplx = (np.conj(c), c_cplx) if row is None else _as_vector("row", row)
    return _structured(len(r), len(c), _toeplitz_twiddle(c, r), c_cplx or r_cplx, dtype)


def circulant(col, *, dtype=None) -> Butterfly:
    """``x @ C.T`` for the circulant ``C = scipy.linalg.circulant(col)``, ``C[i, j] = col[(i - j) mod n]``.
    A power-of-two n is one DIF / inverse-DIT pair of size n; other n a Toeplitz embedding of size
    >= 2n - 1.  ``dtype`` as :func:`toeplitz`."""
    c, is_complex = _as_vector("col", col)
    n = len(c)
    if n >= 2 and is_power_of_two(n):
        return _structured(n, n, _circulant_twiddle(c), is_complex, dtype)
    return _structured(n, n, _toeplitz_twiddle(c, np.concatenate((c[:1], c[1:][::-1]))), is_complex, dtype)


def circular_convolution(kernel, n: int | None = None, *, dtype=None) -> Butterfly:
    """Circular convolution with ``kernel`` over length n (default len(kernel)):
    ``y[i] = sum_j kernel[j] x[(i - j) mod n]``, i.e. ``torch.fft.ifft(fft(kernel, n) * fft(x))``:
    the circulant of the kernel zero-padded to n.  (``nn.Conv1d(1, 1, k, padding=(k - 1) // 2,
    padding_mode="circular")`` is a cross-correlation: its kernel is the weight flipped and rolled
    by -padding.)  ``dtype`` as :func:`toeplitz`."""
    h, is_complex = _as_vector("kernel", kernel)
    n = len(h) if n is None else _check_size("n", n)
    if len(h) > n:
        raise ValueError(f"kernel has {len(h)} taps, more than n = {n}")
    col = np.zeros(n, dtype=np.complex128)
    col[:len(h)] = h
    return circulant(col if is_complex else col.real, dtype=dtype)


def hadamard(n: int, *, normalized: bool = False, dtype=torch.float32) -> Butterfly:
    """Sylvester Hadamard matrix of size n (a power of two), as ``scipy.linalg.hadamard(n)``
    (divided by sqrt(n) when ``normalized``): one butterfly with every block [[1, 1], [1, -1]]."""
    n = _check_size("n", n)
    if n < 2 or not is_power_of_two(n):
        raise ValueError(f"n must be a power of two >= 2 for a Hadamard matrix, got {n}")
    t = np.zeros((1, n.bit_length() - 1, n // 2, 2, 2))
    t[..., 0, 0], t[..., 0, 1], t[..., 1, 0], t[..., 1, 1] = 1, 1, 1, -1
    if normalized:
        t *= 1 / math.sqrt(2)
    return Butterfly(n, n, twiddle=_to_torch(t, dtype)[None])


def permutation(perm: Sequence[int] | torch.Tensor, *, dtype=torch.float32) -> Butterfly:
    """The permutation ``y[i] = x[perm[i]]`` (as ``x[..., perm]``) for any length, as an increasing
    then a decreasing butterfly of 0/1 switches (Benes network).  Non-power-of-two lengths are
    padded with fixed points."""
    raw = np.asarray(perm.tolist() if isinstance(perm, torch.Tensor) else list(perm))
    if raw.size and raw.dtype.kind not in "iu":  # a float index would be truncated silently
        raise TypeError(f"perm must hold integers, got dtype {raw.dtype}")
    p = raw.astype(np.int64)
    if p.ndim != 1 or len(p) < 1:
        raise ValueError(f"perm must be a non-empty 1-D sequence of indices, got shape {p.shape}")
    n = len(p)
    if not np.array_equal(np.sort(p), np.arange(n)):
        raise ValueError(f"perm must be a permutation of 0..{n - 1}")
    size = max(2, next_power_of_two(n))
    dest = np.arange(size)
    dest[p] = np.arange(n)  # x[perm[i]] goes to position i
    inc, dec = _benes_twiddle(dest)
    tw = np.stack((inc, dec))
    return Butterfly(n, n, nblocks=2, size=size, increasing_stride=True, twiddle=_to_torch(tw, dtype)[None])


def identity(n: int, *, complex: bool = False, dtype=torch.float32) -> Butterfly:
    """The n x n identity as one butterfly of identity blocks."""
    n = _check_size("n", n)
    size = max(2, next_power_of_two(n))
    tw = _identity_twiddle(size, np.float64)[None, None]
    return Butterfly(n, n, size=size, twiddle=_to_torch(tw, _RDTYPES[dtype] if complex else dtype))


def widen(module: Butterfly, extra_pairs: int) -> Butterfly:
    """A copy of ``module`` with ``extra_pairs`` more B B* pairs, initialised to the identity, so the
    product (and every output) is unchanged while the layer gains capacity."""
    if not isinstance(module, Butterfly):
        raise TypeError(f"module must be a kfrontend.Butterfly, got {type(module).__name__}")
    if not isinstance(extra_pairs, int) or extra_pairs < 0:
        raise ValueError(f"extra_pairs must be an int >= 0, got {extra_pairs!r}")
    tw = module.twiddle.detach()
    ident = torch.zeros(tw.shape[:1] + (2 * extra_pairs,) + tw.shape[2:], dtype=tw.dtype, device=tw.device)
    ident[..., 0, 0] = 1
    ident[..., 1, 1] = 1
    new = Butterfly(
        module.in_features, module.out_features, bias=module.bias is not None,
        increasing_stride=module.increasing_stride, size=module.size,
        twiddle=torch.cat((tw, ident), dim=1), backend=module.backend, real_output=module.real_output,
    )
    if module.bias is not None:
        with torch.no_grad():
            new.bias.copy_(module.bias)
    return new


# ----------------------------------------------------------------------------------------------
# Mel filterbank
# ----------------------------------------------------------------------------------------------
def _route(elements, n: int, increasing: bool, key: str) -> np.ndarray:
    """0/1 routing twiddles (log2 N, N/2, 2, 2) moving each (src, dst, weight) element through one
    butterfly; the weight is folded into the last factor.

    Decreasing order fixes destination bits from the top down, increasing order from the bottom up;
    a position may hold several elements only if they carry the same value: the same source for a
    spread (``key="src"``, copies of one input), the same destination for a gather (``key="dst"``,
    partial sums being merged).  Any other collision is a routing conflict and raises.
    """
    log_n = n.bit_length() - 1
    t = np.zeros((log_n, n // 2, 2, 2))
    src = np.array([e[0] for e in elements], dtype=np.int64)
    dst = np.array([e[1] for e in elements], dtype=np.int64)
    weight = np.array([e[2] for e in elements], dtype=np.float64)
    for i in range(log_n):
        bit = log_n - 1 - i if not increasing else i
        s = 1 << bit
        if increasing:
            before = ((src >> bit) << bit) | (dst & (s - 1))
            after = ((src >> (bit + 1)) << (bit + 1)) | (dst & (2 * s - 1))
        else:
            before = ((dst >> (bit + 1)) << (bit + 1)) | (src & (2 * s - 1))
            after = ((dst >> bit) << bit) | (src & (s - 1))
        ident = dst if key == "dst" or i == log_n - 1 else src
        pairs = np.unique(np.stack((after, ident)), axis=1)
        if len(np.unique(pairs[0])) != pairs.shape[1]:
            raise AssertionError(f"internal routing conflict in factor {i}")
        p = before & ~s
        j = (p // (2 * s)) * s + (p % s)
        value = weight if i == log_n - 1 else 1.0
        t[i, j, ((after & s) > 0).astype(np.int64), ((before & s) > 0).astype(np.int64)] = value
    return t


def _mel_sides(fb: np.ndarray) -> list[tuple[int, int, int]]:
    """Per filter j: (a, split, b) so that bins [a, split) are its lower side and [split, b] its upper
    side, with lower sides disjoint and ordered across filters, and upper sides likewise."""
    n_freqs, n_mels = fb.shape
    nz = fb != 0
    sides = []
    prev_end = -1  # last bin of the previous non-empty filter
    prev_start = -1
    for j in range(n_mels):
        bins = np.flatnonzero(nz[:, j])
        if len(bins) == 0:
            sides.append((0, 0, -1))
            continue
        a, b = int(bins[0]), int(bins[-1])
        # Overlap with the previous filter goes to this filter's lower side and the previous one's
        # upper side; everything else to the upper side.
        split = max(a, prev_end + 1)
        if a < prev_start or b < prev_end or split > b + 1:
            raise ValueError(
                f"fb: filter {j} (bins {a}..{b}) is not ordered after the previous filter "
                f"(bins {prev_start}..{prev_end}); mel() needs triangular filters in increasing order"
            )
        sides.append((a, split, b))
        prev_start, prev_end = a, b
    # Each bin may lie in at most two filters, consecutive ones: a filter must not reach the one after
    # its (non-empty) neighbour, or a bin would need two lower (or two upper) sides.
    nonempty = [j for j in range(n_mels) if sides[j][2] >= 0]
    for j, k in zip(nonempty, nonempty[2:]):
        if sides[j][2] >= sides[k][0]:
            raise ValueError(
                f"fb: filters {j} and {k} overlap (bins {sides[j][0]}..{sides[j][2]} and "
                f"{sides[k][0]}..{sides[k][2]}); mel() needs each bin in at most two adjacent filters"
            )
    return sides


def _place_slots(ranges: list[tuple[int, int]]) -> tuple[list[int], list[int], int]:
    """Aligned power-of-two slots, in filter order, for source ranges [lo, hi) (possibly empty),
    keeping destination - source non-decreasing so one decreasing butterfly can spread them.
    Returns slot starts, sizes and the end of the last slot."""
    starts, sizes = [], []
    end, offset = 0, -(10**9)
    for lo, hi in ranges:
        size = next_power_of_two(max(1, hi - lo))
        start = end if hi <= lo else max(end, lo + offset)
        start = -(-start // size) * size  # align up
        if hi > lo:
            offset = start - lo
        starts.append(start)
        sizes.append(size)
        end = start + size
    return starts, sizes, end


def mel(fb, *, dtype=torch.float32) -> Butterfly:
    """A filterbank ``fb`` (n_freqs, n_mels) -- torchaudio's ``melscale_fbanks`` layout; pass
    ``librosa.filters.mel(...).T`` or Kaldi's ``get_mel_banks(...)[0].T`` (padded to n_freqs) -- as a
    real K-matrix with ``module(x) == x @ fb`` exactly.

    Works for banks whose filters are in increasing order and each bin is nonzero in at most two
    adjacent filters (triangles on any mel scale, any norm).  Two butterflies of size N = 2H, H the
    power of two holding the bins and the slots: a decreasing one (copy bins to both halves, spread
    each copy into per-filter slots for its lower / upper side, weights in the last factor) and an
    increasing one (sum each slot, compact slot heads to 0..n_mels-1, add the halves).
    """
    if isinstance(fb, torch.Tensor):
        fb_np = fb.detach().cpu().double().numpy()
    else:
        fb_np = np.asarray(fb, dtype=np.float64)
    if fb_np.ndim != 2 or min(fb_np.shape) < 1:
        raise ValueError(f"fb must be a 2-D (n_freqs, n_mels) filterbank, got shape {fb_np.shape}")
    if not np.all(np.isfinite(fb_np)):
        raise ValueError("fb must be finite")
    n_freqs, n_mels = fb_np.shape
    sides = _mel_sides(fb_np)
    lo_starts, lo_sizes, lo_end = _place_slots([(a, s) for a, s, b in sides])
    up_starts, up_sizes, up_end = _place_slots([(s, b + 1) for a, s, b in sides])
    half = next_power_of_two(max(n_freqs, lo_end, up_end, n_mels, 1))
    n = 2 * half

    spread, gather = [], []
    for j, (a, split, b) in enumerate(sides):
        for k in range(a, split):  # lower side -> lower half
            spread.append((k, lo_starts[j] + k - a, fb_np[k, j]))
        for k in range(split, b + 1):  # upper side -> upper half
            spread.append((k, half + up_starts[j] + k - split, fb_np[k, j]))
        for q in range(lo_sizes[j]):
            gather.append((lo_starts[j] + q, j, 1.0))
        for q in range(up_sizes[j]):
            gather.append((half + up_starts[j] + q, j, 1.0))
    tw = np.stack((_route(spread, n, increasing=False, key="src"), _route(gather, n, increasing=True, key="dst")))
    return Butterfly(n_freqs, n_mels, nblocks=2, size=n, increasing_stride=False, twiddle=_to_torch(tw, dtype)[None])


def matrix(w, *, dtype=torch.float32) -> Butterfly:
    """Any real (n_in, n_out) matrix ``w`` as a K-matrix with ``module(x) == x @ w``, its values
    exactly (each entry of the product is one of w's entries times ones: no rounding).  For a map
    with no cheaper exact construction, e.g. a DCT matrix rounded to float32 that a float64
    module must reproduce as it is.

    Size N = P Q (P = next power of two of n_in, at least 2; Q of n_out), index ``q P + p``: a
    decreasing butterfly copies x to every block q (the high bits), weights block q by column q of
    w in its first low-bit factor and sums each block into its head q P; an increasing butterfly
    then routes the head q P to q, bit by bit from the lowest (two heads never meet: positions
    after bit i keep q's bits 0..i and q P's bits above i, which together give q).  4 N log2 N
    twiddles: use it for small matrices.
    """
    w_np = w.detach().cpu().double().numpy() if isinstance(w, torch.Tensor) else np.asarray(w, dtype=np.float64)
    if w_np.ndim != 2 or min(w_np.shape) < 1:
        raise ValueError(f"w must be a 2-D (n_in, n_out) matrix, got shape {w_np.shape}")
    if not np.all(np.isfinite(w_np)):
        raise ValueError("w must be finite")
    n_in, n_out = w_np.shape
    p_size, q_size = max(2, next_power_of_two(n_in)), next_power_of_two(n_out)
    a, b = p_size.bit_length() - 1, q_size.bit_length() - 1
    n, c = p_size * q_size, a + b
    wp = np.zeros((p_size, q_size))
    wp[:n_in, :n_out] = w_np
    spread = np.zeros((c, n // 2, 2, 2))
    for i in range(c):  # decreasing: factor i has bit c - 1 - i
        bit = c - 1 - i
        s = 1 << bit
        if bit >= a:  # copy to the upper block
            spread[i, :, 0, 0] = spread[i, :, 1, 0] = 1.0
        elif bit < a - 1:  # sum into the lower position
            spread[i, :, 0, 0] = spread[i, :, 0, 1] = 1.0
        else:  # the first low-bit factor: weights w[p, q] and w[p + P/2, q] into position (q, p)
            for q in range(q_size):
                for p in range(p_size // 2):
                    j = _pair_index(q * p_size + p, s)
                    spread[i, j, 0, 0], spread[i, j, 0, 1] = wp[p, q], wp[p + s, q]
    route = np.zeros((c, n // 2, 2, 2))
    for q in range(q_size):
        for i in range(c):  # increasing: factor i has bit i; set bit i of the position to q's
            s = 1 << i
            pos = (q & (s - 1)) | ((q * p_size) & ~(s - 1))
            src, dst = (pos >> i) & 1, (q >> i) & 1
            route[i, _pair_index(pos & ~s, s), dst, src] = 1.0
    tw = np.stack((spread, route))
    return Butterfly(n_in, n_out, nblocks=2, size=n, increasing_stride=False, twiddle=_to_torch(tw, dtype)[None])


def cost_table(modules: dict[str, Butterfly]) -> str:
    """A text table of parameters and multiply FLOPs of K-matrix modules beside their dense matrices."""
    rows = ["| stage | in | out | N | butterflies | params (K) | params (dense) | FLOPs (K) | FLOPs (dense) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, m in modules.items():
        rows.append(
            f"| {name} | {m.in_features} | {m.out_features} | {m.size} | {m.nblocks} | {m.parameter_count():,} "
            f"| {m.dense_parameter_count():,} | {m.flops():,} | {m.dense_flops():,} |"
        )
    return "\n".join(rows)
