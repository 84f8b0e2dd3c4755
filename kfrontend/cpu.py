"""Fast CPU paths for butterfly and K-matrix products (the ``"blocked"`` and ``"dense"`` backends).

Stage-by-stage PyTorch ops stream the whole batch through memory once per factor, so the reference
is many times slower than a dense matmul (docs/BENCHMARKS.md, "Figures behind code choices"). Here
the ``log2 N`` index bits are split into a low group ``[0, s)`` and a high group ``[s, log2 N)``.
Every maximal run of consecutive factors (across block boundaries: ``B B*`` ends and starts on the
same bits) that touches only one group is multiplied out into ``N / K`` dense ``K x K`` matrices
(``K = 2**s`` or ``2**(log2 N - s)``, one per value of the other group's bits), built from the
twiddles differentiably (``_all_pass_matrices``: one gather and one batched doubling per block
size), so gradients reach the twiddles. A 3-block DFT of size 1024 becomes 4
batched matmuls with 32 x 32 blocks.

Layout: each chunk of rows is kept transposed, ``(outer group, inner group, rows)``, rows contiguous.
Either group is then a valid BLAS operand with no copy: the inner one as ``(batch=outer, K, rows)``,
the outer one as ``(batch=inner, K, rows)`` with row stride ``inner * rows``; a pass on the outer
group writes ``(inner, outer, rows)``, so groups simply swap places.  Rows are processed in chunks
that stay in cache, and the chunk height is not a power of two: with power-of-two row strides all K
rows of a ``(K, rows)`` operand fall into the same cache sets (slower; docs/BENCHMARKS.md).

``"dense"`` multiplies the (in x out) matrix out once per call (the blocked path applied to an
identity of ``in`` rows) and does one matmul; for real input and complex weights it multiplies by
``[Re W | Im W]`` interleaved (one real GEMM, half the work of a complex one).  ``choose_backend`` and
``kmatrix_backend`` pick between them with a small cost model calibrated by
``benchmarks/bench_cpu.py`` on a 2-core AMD EPYC (see docs/BENCHMARKS.md).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import torch

from kfrontend._contract import in_functorch
from kfrontend.reference import (
    block_is_increasing,
    butterfly_multiply_reference,
    check_butterfly_args,
    compute_dtype,
    output_dtype,
    stride_of,
)

__all__ = [
    "butterfly_multiply_blocked",
    "butterfly_multiply_dense",
    "choose_backend",
    "kmatrix_multiply_cpu",
    "kmatrix_backend",
    "kmatrix_rows",
    "plan_passes",
    "keep_freed_memory",
]

# Rows per chunk: ~1.6 MB of complex64 at N = 1024, and 8 mod 16 (see the module docstring).
_CHUNK_ELEMS = 200 * 1024

# Cost model (units: one real multiply-add in a large GEMM), fitted by eye to bench_cpu.py and
# per-split timings (the figures: docs/BENCHMARKS.md, "Figures behind code choices").  A multiply-add in
# the small batched GEMMs costs more than a large GEMM's; every pass also streams its chunk
# (transposes, small-op overheads); a backward costs a multiple of its forward (blocked: recompute,
# two GEMMs per pass, the copies); a reference stage costs far more per element than a GEMM.
_BMM_EFF = 1.3
_PASS_COST = 16.0
_BWD_BLOCKED = 4.5
_BWD_DENSE = 2.0
_REF_COST = 100.0


# ----------------------------------------------------------------------------------------------
# Planning
# ----------------------------------------------------------------------------------------------
def _stage_bits(n: int, nblocks: int, increasing_stride: bool) -> list[tuple[int, int, int]]:
    """(block, factor, bit) for every factor in the order applied; bit = log2(stride)."""
    log_n = n.bit_length() - 1
    return [
        (b, i, stride_of(i, n, block_is_increasing(b, increasing_stride)).bit_length() - 1)
        for b in range(nblocks)
        for i in range(log_n)
    ]


def plan_passes(n: int, nblocks: int, increasing_stride: bool, split: int) -> list[tuple[int, list]]:
    """Maximal runs of consecutive factors on one bit group: ``[(group, [(block, factor, bit)])]``
    with group 0 = bits ``[0, split)`` and 1 = ``[split, log2 N)``.  Consecutive runs alternate."""
    runs: list[tuple[int, list]] = []
    for st in _stage_bits(n, nblocks, increasing_stride):
        g = 0 if st[2] < split else 1
        if runs and runs[-1][0] == g:
            runs[-1][1].append(st)
        else:
            runs.append((g, [st]))
    return runs


def _extents(n: int, split: int, in_features: int, out_features: int) -> tuple[int, int]:
    """Values of the high bits that the input / output actually touch (zero padding, kept rows)."""
    k_lo = 1 << split
    return math.ceil(in_features / k_lo), math.ceil(out_features / k_lo)


def _blocked_cost(n, nblocks, increasing_stride, split, in_f, out_f, complex_w, real_x):
    """(per-row cost, one-off matrix build cost) of the blocked path at this split."""
    log_n = n.bit_length() - 1
    runs = plan_passes(n, nblocks, increasing_stride, split)
    k = (1 << split, 1 << (log_n - split))
    e_in, e_out = _extents(n, split, in_f, out_f)
    per_row = build = 0.0
    for idx, (g, stages) in enumerate(runs):
        # Work of the pass: (#matrices) x rows-out x cols-in, with the first/last truncations.
        rows_out, cols_in, batches = k[g], k[g], k[1 - g]
        if idx == 0:
            if g == 1:
                cols_in = e_in
            else:
                batches = e_in
        elif idx == 1 and g == 1:
            cols_in = e_in
        if idx == len(runs) - 1:
            if g == 1:
                rows_out = e_out
            else:
                batches = min(batches, e_out)
        mult = 4.0 if complex_w and not (real_x and idx == 0) else (2.0 if complex_w else 1.0)
        per_row += _BMM_EFF * mult * batches * rows_out * cols_in + _PASS_COST * batches * k[g]
        build += len(stages) * n * k[g] * (4.0 if complex_w else 1.0) * 3.0
    return per_row, build


def _best_split(n, nblocks, increasing_stride, in_f, out_f, complex_w, real_x) -> int:
    log_n = n.bit_length() - 1
    if log_n == 1:
        return 1  # a single group: the 2 x 2 product itself
    best = None
    for s in range(1, log_n):
        per_row, _ = _blocked_cost(n, nblocks, increasing_stride, s, in_f, out_f, complex_w, real_x)
        if best is None or per_row < best[0]:
            best = (per_row, s)
    return best[1]


# ----------------------------------------------------------------------------------------------
# Pass matrices
# ----------------------------------------------------------------------------------------------
def _sweeps(stages) -> list[list]:
    """Maximal runs of consecutive stages from the same butterfly block."""
    out: list[list] = []
    for st in stages:
        if out and out[-1][-1][0] == st[0]:
            out[-1].append(st)
        else:
            out.append([st])
    return out


def _pass_matrices(tw, n, nblocks, increasing_stride, split, in_f, out_f, real_first=False):
    """Matrices (batch, K_out, K_in) of every pass of the blocked plan, differentiable w.r.t. tw and
    contiguous (the blocked path's BLAS operands); ``real_first`` stacks [Re M; Im M] for the first."""
    spec = (n, nblocks, increasing_stride, split, in_f, out_f, real_first)
    return [m.contiguous() for m in _all_pass_matrices(tw, spec)]


def _product_2x2(tw: torch.Tensor) -> torch.Tensor:
    """The 2 x 2 matrix M (y = M x) of a product of size 2 (one factor per block, block 0 first)."""
    m = tw[0, 0, 0]
    for b in range(1, tw.shape[0]):
        m = tw[b, 0, 0] @ m
    return m


# ----------------------------------------------------------------------------------------------
# Every pass's matrices at once (the multiplied-out stages: one build per training step)
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _sweep_layout(n: int, nblocks: int, increasing_stride: bool, split: int, flip: bool = False):
    """How ``_all_pass_matrices`` builds every pass: ``(runs, jobs, index, inverse)``.

    ``jobs``: one per doubling, ``(count, sweeps)``, ``sweeps`` being (pass index, decreasing?) in
    plan order; the two bit groups share one doubling when their blocks have the same size.
    ``index``: positions in ``tw.flatten()`` (real or complex entries) of every job's twiddles, jobs
    one after the other, each in the layout ``_doubling`` takes: (sweeps, k, K / 2, 2, 2, batch),
    factors in increasing bit order.  A decreasing sweep F_0 ... F_{k-1} (F_{k-1} applied first) is
    (F_{k-1}^T ... F_0^T)^T: an increasing sweep of the transposed 2 x 2 blocks, whose product is
    transposed back.  Every twiddle is used once, so ``index`` is a permutation and
    ``inverse`` its inverse (the gather's backward is a gather too).  ``flip``: positions in the
    twiddle of the transposed product instead (``transposed_twiddle``: blocks and factors reversed,
    2 x 2 blocks transposed), read from the original's, so no transposed copy is made.
    """
    log_n = n.bit_length() - 1
    runs = plan_passes(n, nblocks, increasing_stride, split)
    oi = torch.arange(4).view(2, 2)
    groups = []
    for grp in (0, 1):
        a, k = (0, split) if grp == 0 else (split, log_n - split)
        kk, ll = 1 << k, 1 << a
        hh = n // (kk * ll)
        sweeps, factors = [], []
        for pidx, (g, stages) in enumerate(runs):
            if g != grp:
                continue
            for sweep in _sweeps(stages):
                decreasing = [bit - a for _, _, bit in sweep] != list(range(k))
                sweeps.append((pidx, decreasing))
                factors.append((sweep[::-1] if decreasing else sweep, decreasing))
        # pair index of (h, c', l) in a factor's (N/2, 2, 2) twiddles: (h K/2 + c') L + l
        h = torch.arange(hh).view(hh, 1, 1)
        c = torch.arange(kk // 2).view(1, 1, kk // 2)
        l_ = torch.arange(ll).view(1, ll, 1)
        pair = ((h * (kk // 2) + c) * ll + l_).reshape(hh * ll, kk // 2)
        index = torch.empty(len(sweeps), k, kk // 2, 2, 2, hh * ll, dtype=torch.long)
        for si, (sweep, decreasing) in enumerate(factors):
            for j, (b, f, _) in enumerate(sweep):
                if flip:
                    b, f = nblocks - 1 - b, log_n - 1 - f
                pos = ((b * log_n + f) * (n // 2) + pair)[..., None, None] * 4 + (oi.t() if decreasing != flip else oi)
                index[si, j] = pos.permute(1, 2, 3, 0)
        if sweeps:
            groups.append((sweeps, index))
    if len(groups) == 2 and groups[0][1].shape[1:] == groups[1][1].shape[1:]:
        groups = [(groups[0][0] + groups[1][0], torch.cat((groups[0][1], groups[1][1])))]
    index = torch.cat([i.reshape(-1) for _, i in groups])
    inverse = torch.empty_like(index)
    inverse[index] = torch.arange(index.numel())
    # (the check reads the data, which torch.compile cannot trace; the layout is the same there)
    if not torch.compiler.is_compiling() and (
            index.numel() != nblocks * log_n * n * 2 or not torch.equal(index[inverse], torch.arange(index.numel()))):
        raise AssertionError("the pass layout must use every twiddle entry exactly once")  # pragma: no cover
    jobs = [(i.shape, sweeps) for sweeps, i in groups]
    return runs, jobs, index, inverse


class _PermuteFn(torch.autograd.Function):
    """``flat[index]`` for a permutation ``index``; the backward is the gather by its inverse (not
    a zero fill and an accumulating scatter)."""

    @staticmethod
    def forward(ctx, flat, index, inverse):
        ctx.save_for_backward(index, inverse)
        return flat[index]

    @staticmethod
    def backward(ctx, g):
        index, inverse = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph
            return _PermuteFn.apply(g, inverse, index), None, None
        return g[inverse], None, None


def _doubling_levels(t: torch.Tensor, keep: list | None, plain: bool = False) -> torch.Tensor:
    """The products of a stack of sweeps, batch last: t (S, k, K / 2, 2, 2, B) -> (S, K, K, B), the
    sweep's factor j acting on local bit j (stride 2^j), applied in that order, for each of the B
    values of the other bits.  By doubling from the identity: after the factors of strides 1..s the
    matrix is block diagonal with (2s, 2s) blocks ``[[t00 A, t01 B], [t10 A, t11 B]]``, A and B the
    (s, s) blocks below and the twiddles scaling rows; so a sweep costs ~2 N K products in k
    broadcast multiplies (applying its factors one by one to the identity costs k N K).  With the
    batch innermost every product has a long contiguous inner loop (batch first, the inner loops
    would be 1, 2, 4, ... entries long); ``keep`` collects each level's input for the backward.
    ``plain``: differentiable ops (each product allocated by the op, not written ``out=``)."""
    s_, k, b_ = t.shape[0], t.shape[1], t.shape[-1]
    kk = 2 * t.shape[2]
    z = torch.ones(s_, kk, 1, 1, b_, dtype=t.dtype, device=t.device)
    s = 1
    for j in range(k):
        g = kk // (2 * s)
        tj = t[:, j].reshape(s_, g, s, 2, 2, b_)  # [.., g, r, o, i, B]
        sub = z.reshape(s_, g, 2, s, s, b_)  # [.., g, i, r, c, B]: the two (s, s) blocks
        if keep is not None:
            keep.append(z)
        a, b = tj.permute(0, 1, 3, 2, 4, 5).unsqueeze(5), sub.permute(0, 1, 3, 2, 4, 5).unsqueeze(2)
        if plain:
            new = a * b
        else:
            new = torch.empty(s_, g, 2, s, 2, s, b_, dtype=t.dtype, device=t.device)  # [.., g, o, r, i, c, B]
            torch.mul(a, b, out=new)
        z = new.reshape(s_, g, 2 * s, 2 * s, b_)
        s *= 2
    return z.reshape(s_, kk, kk, b_)


class _DoublingFn(torch.autograd.Function):
    """(S, B, K, K) products of S x B sweeps from their twiddles t (S, k, K / 2, 2, 2, B) (factor j
    on local bit j, applied in that order), forward and backward by hand: each level is one
    broadcast product, and its backward two products and two sums, all batch-innermost, so a
    stage's build and its gradient cost a few dozen ops (autograd through the same products costs
    several times more: broadcast reductions and layout copies per level)."""

    @staticmethod
    def forward(ctx, t):
        keep: list = []
        z = _doubling_levels(t, keep)
        ctx.keep = keep
        ctx.save_for_backward(t)
        return z.permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def backward(ctx, gz):
        (t,) = ctx.saved_tensors
        keep = ctx.keep  # kept until the graph goes: a repeated backward (retain_graph) is the same
        if torch.is_grad_enabled():  # create_graph (second-order gradients): the plain product
            return torch.autograd.grad(_doubling_reference(t), t, gz, create_graph=True)[0]
        s_, k, b_ = t.shape[0], t.shape[1], t.shape[-1]
        kk = 2 * t.shape[2]
        g_t = torch.empty_like(t)
        g = gz.permute(0, 2, 3, 1).contiguous()  # (S, K, K, B)
        for j in range(k - 1, -1, -1):
            s = 1 << j
            gc = kk // (2 * s)
            gn = g.view(s_, gc, 2, s, 2, s, b_)  # [.., g, o, r, i, c, B]
            sub = keep[j].view(s_, gc, 2, s, s, b_).conj()  # [.., g, i, r, c, B]
            tj = t[:, j].view(s_, gc, s, 2, 2, b_).conj()  # [.., g, r, o, i, B]
            # d t[g, r, o, i] = sum_c gn[g, o, r, i, c] sub[g, i, r, c]
            prod = torch.empty(s_, gc, s, 2, 2, s, b_, dtype=g.dtype, device=g.device)  # [.., g, r, o, i, c, B]
            torch.mul(gn.permute(0, 1, 3, 2, 4, 5, 6), sub.permute(0, 1, 3, 2, 4, 5).unsqueeze(3), out=prod)
            torch.sum(prod, dim=5, out=g_t[:, j].view(s_, gc, s, 2, 2, b_))
            if j:
                # d sub[g, i, r, c] = sum_o gn[g, o, r, i, c] t[g, r, o, i]
                prod = torch.empty(s_, gc, 2, s, 2, s, b_, dtype=g.dtype, device=g.device)  # [.., g, i, r, o, c, B]
                torch.mul(gn.permute(0, 1, 4, 3, 2, 5, 6), tj.permute(0, 1, 4, 2, 3, 5).unsqueeze(5), out=prod)
                g = prod.sum(4)  # [.., g, i, r, c, B] = the previous level's (S, 2 g, s, s, B)
        return g_t


def _doubling_reference(t: torch.Tensor) -> torch.Tensor:
    """``_DoublingFn`` as plain differentiable ops (torch.func transforms, second-order gradients)."""
    return _doubling_levels(t, None, plain=True).permute(0, 3, 1, 2)


def _doubling(t: torch.Tensor) -> torch.Tensor:
    if in_functorch():
        return _doubling_reference(t)
    if torch.is_grad_enabled() and t.requires_grad:
        return _DoublingFn.apply(t)
    return _doubling_levels(t, None).permute(0, 3, 1, 2)


def _all_pass_matrices(tw: torch.Tensor, spec, flip: bool = False) -> list[torch.Tensor]:
    """The matrices (batch, K_out, K_in) of every pass of the plan ``spec``, cut to the blocks the
    (zero-padded) input touches and the kept outputs read (``_truncate_pass``), in a few batched
    ops: one gather of every twiddle into the doubling's layout, one doubling per block size, a
    matmul per further sweep of a pass; so a stage's build costs tens of ops instead of hundreds
    (differentiable; the front end runs it once per training step).
    ``flip``: the passes of the transposed product (``transposed_twiddle(tw)``, whose stride order
    ``spec`` gives), read from ``tw`` itself."""
    n, nblocks, increasing_stride, split, in_f, out_f, real_first = spec
    # Dynamo traces through an lru_cache (and warns that it does): call the function itself there
    layout = _sweep_layout.__wrapped__ if torch.compiler.is_compiling() else _sweep_layout
    runs, jobs, index, inverse = layout(n, nblocks, increasing_stride, split, flip)
    flat = tw.reshape(-1)
    if in_functorch() or flat.device != index.device:
        gathered = flat[index.to(flat.device)]
    else:
        gathered = _PermuteFn.apply(flat, index, inverse)
    per_pass: list[list[torch.Tensor]] = [[] for _ in runs]
    offset = 0
    for shape, sweeps in jobs:
        size = math.prod(shape)
        z = _doubling(gathered[offset: offset + size].view(shape))
        offset += size
        for si, (pidx, decreasing) in enumerate(sweeps):
            per_pass[pidx].append(z[si].transpose(-1, -2) if decreasing else z[si])
    e_in, e_out = _extents(n, split, in_f, out_f)
    mats = []
    for idx, ((g, _), sweep_mats) in enumerate(zip(runs, per_pass)):
        m = sweep_mats[0]
        for s_m in sweep_mats[1:]:
            m = torch.matmul(s_m, m)
        mats.append(_truncate_pass(m, g, idx, len(runs), e_in, e_out, real_first))
    return mats


def _truncate_pass(m, g: int, idx: int, count: int, e_in: int, e_out: int, real_first: bool):
    """A pass's matrices (batch, K_out, K_in) cut to the blocks the (zero-padded) input touches and
    the kept outputs read."""
    if g == 0 and idx == 0:
        m = m[:e_in]
    if g == 1 and idx <= 1:
        m = m[:, :, :e_in]
    if idx == count - 1:
        m = m[:, :e_out] if g == 1 else m[:e_out]
    if idx == 0 and real_first:
        m = torch.cat((m.real, m.imag), dim=1)
    return m


# ----------------------------------------------------------------------------------------------
# The blocked multiply
# ----------------------------------------------------------------------------------------------
class _Plan(NamedTuple):
    """Static shape information of one blocked multiply."""

    n: int
    k_lo: int
    e_in: int  # high-bit values the (zero-padded) input touches
    e_out: int  # high-bit values the kept outputs touch
    out_f: int
    groups: tuple  # group (0 low, 1 high) of each pass
    real_first: bool  # real input, complex weights: pass 0 is one real bmm by [Re M; Im M]


def _run_chunk(plan: _Plan, xc: torch.Tensor, mats, keep: list | None = None) -> torch.Tensor:
    """All passes on one chunk of rows xc (r, e_in * K_lo); returns (r, e_out, K_lo), a view.
    With ``keep``, appends each pass's right operand (batch, K_in, r) and its kind, then the final
    (outer, inner) order, for the backward (and skips the last matmul)."""
    r = xc.shape[0]
    m0 = mats[0]
    if plan.groups[0] == 0:
        # Low bits first: the chunk read transposed in place, (e_in, K_lo, r) strides (K_lo, 1, in).
        xv = xc.view(r, plan.e_in, plan.k_lo).permute(1, 2, 0)
        order = (1, 0)  # (outer, inner) group of the (outer, inner, rows) layout
    else:
        xv = xc.t().contiguous().view(plan.e_in, plan.k_lo, r).transpose(0, 1)
        order = (0, 1)
    y = torch.bmm(m0, xv)
    if keep is not None:
        keep.append((xv, "first"))
    if plan.real_first:
        half = m0.shape[1] // 2
        y = torch.complex(y[:, :half], y[:, half:])
    for g, m in zip(plan.groups[1:], mats[1:]):
        if g == order[1]:  # inner group: (batch = outer, K, r), rows contiguous
            v, kind = y.view(-1, m.shape[2], r)[: m.shape[0]], "inner"
        else:  # outer group: (batch = inner, K, r) with row stride inner * r; groups swap places
            v, kind = y.view(m.shape[2], -1, r).transpose(0, 1)[: m.shape[0]], "outer"
            order = (order[1], order[0])
        if keep is not None:
            keep.append((v, kind))
            if len(keep) == len(mats):  # the backward needs the last pass's input, not its output
                keep.append(order)
                return None
        y = torch.bmm(m, v)
    if keep is not None:
        keep.append(order)
    return y.permute(2, 0, 1) if order == (1, 0) else y.permute(2, 1, 0)  # (r, hi, lo)


def _chunk_backward(plan: _Plan, xc, mats, mats_h, gy, grad_xc, grad_m) -> None:
    """Gradients of one chunk: recompute its passes (cheap, in cache), then for each pass backwards
    ``grad_M += g @ in^H`` (accumulated in place) and ``g_in = M^H @ g`` put back in the layout the
    previous pass wrote.  ``gy`` (r, out_f); ``grad_xc`` (r, e_in * K_lo) or None."""
    r = xc.shape[0]
    ins: list = []
    _run_chunk(plan, xc, mats, ins)
    order = ins.pop()
    kout = plan.e_out * plan.k_lo
    g = torch.nn.functional.pad(gy, (0, kout - plan.out_f)) if kout > plan.out_f else gy
    g = g.reshape(r, plan.e_out, plan.k_lo)
    # The (outer, inner, r) layout of the last pass's output, as a strided view: every gradient
    # below is a BLAS operand with one unit stride, so only the pads and grad_x cost copies.
    g = g.permute(1, 2, 0) if order == (1, 0) else g.permute(2, 1, 0)
    for p in range(len(mats) - 1, -1, -1):
        mh, (v, kind) = mats_h[p], ins[p]
        if p == 0 and plan.real_first:
            g = torch.cat((g.real, g.imag), dim=1)
        if grad_m[p] is not None:
            grad_m[p].baddbmm_(g, v.transpose(1, 2).conj())
        if p == 0 and grad_xc is None:
            break
        gin = torch.bmm(mh, g)  # (batch, K_in, r), the gradient of v
        if p == 0:
            if plan.groups[0] == 0:  # v = xc viewed (e_in, K_lo, r)
                grad_xc.view(r, plan.e_in, plan.k_lo).copy_(gin.permute(2, 0, 1))
            else:  # v = xc.t() viewed (e_in, K_lo, r).transpose(0, 1)
                grad_xc.view(r, plan.e_in, plan.k_lo).copy_(gin.permute(2, 1, 0))
            break
        prev_shape = (ins[p - 1][0].shape[0], mats[p - 1].shape[1], r)  # previous output (outer, inner, r)
        if plan.real_first and p == 1:
            prev_shape = (prev_shape[0], prev_shape[1] // 2, r)
        if kind == "inner":  # v = prev.view(-1, K, r)[:b]
            full = prev_shape[0] * prev_shape[1] // v.shape[1]
            if v.shape[0] < full:
                gin = torch.nn.functional.pad(gin, (0, 0, 0, 0, 0, full - v.shape[0]))
            g = gin.reshape(prev_shape)
        else:  # outer-group pass: v = prev.view(K, -1, r).transpose(0, 1)[:b]
            full = prev_shape[0] * prev_shape[1] // v.shape[1]
            if v.shape[0] < full:
                gin = torch.nn.functional.pad(gin, (0, 0, 0, 0, 0, full - v.shape[0]))
            g = gin.transpose(0, 1)  # (outer, inner, r) of the previous output, strided


def _chunk_rows(n: int) -> int:
    r = max(24, min(2000, _CHUNK_ELEMS // n))
    return r - (r % 16) + 8


# Worker threads run single-threaded ops, each on its own chunks: no barrier per op, so a core
# taken by another process stalls one worker, not every op (docs/BENCHMARKS.md, CPU). Each Python
# thread that calls in gets its own pool (sized by its own torch.get_num_threads(); shut down when
# that thread ends), so concurrent callers never queue behind each other. torch.set_num_threads(1)
# runs once in each worker, for that worker; the process default it also writes (what new threads
# start with) is put back at once by the caller, once per pool. The caller's own thread count is
# never changed.
_tls = threading.local()


class _Pool:
    def __init__(self, nthreads: int):
        self.nthreads, self.pid = nthreads, os.getpid()
        ready = threading.Barrier(nthreads)

        def init():
            torch.set_num_threads(1)

        self.executor = ThreadPoolExecutor(nthreads, thread_name_prefix="kfrontend-cpu", initializer=init)
        # Start every worker now (the barrier needs them all), then restore the process default.
        list(self.executor.map(lambda _: ready.wait(), range(nthreads)))
        torch.set_num_threads(nthreads)
        weakref.finalize(self, self.executor.shutdown, wait=False)


def _thread_pool(nthreads: int) -> _Pool:
    pool = getattr(_tls, "pool", None)
    # A pool inherited through fork (DataLoader workers) has no threads: make a new one.
    if pool is None or pool.nthreads != nthreads or pool.pid != os.getpid():
        pool = _tls.pool = _Pool(nthreads)
    return pool


def _map_chunks(fn, starts):
    nthreads = torch.get_num_threads()
    if nthreads <= 1:
        return [fn(i) for i in starts]
    if torch.is_inference_mode_enabled():
        # Inference mode is thread-local and workers do not inherit it: a worker writing into a
        # buffer the caller made under inference_mode would be an in-place update of an inference
        # tensor outside inference mode (an error), so the workers enter it too.
        inner = fn

        def fn(i):
            with torch.inference_mode():
                return inner(i)
    return list(_thread_pool(nthreads).executor.map(fn, starts))


def _on_worker(fn):
    """``fn()`` (small ops, no autograd) on a single-threaded worker: with other processes on the
    cores, a 2-thread op on a few thousand elements waits for a descheduled thread
    (docs/BENCHMARKS.md, "Figures behind code choices").  Inline when the caller is single-threaded."""

    def run(_):
        with torch.no_grad():
            return fn()

    return _map_chunks(run, [0])[0]


def _blocked_forward(plan: _Plan, x2: torch.Tensor, mats) -> torch.Tensor:
    rows = x2.shape[0]
    step = _chunk_rows(plan.n)
    out = torch.empty(rows, plan.out_f, dtype=mats[-1].dtype, device=x2.device)
    full, rem = divmod(plan.out_f, plan.k_lo)

    def chunk(i):
        with torch.no_grad():
            y = _run_chunk(plan, x2[i : i + step], mats)
            dst = out[i : i + step]
            if full:
                dst[:, : full * plan.k_lo].view(-1, full, plan.k_lo).copy_(y[:, :full])
            if rem:
                dst[:, full * plan.k_lo :].copy_(y[:, full, :rem])

    _map_chunks(chunk, range(0, rows, step))
    return out


class _BlockedFn(torch.autograd.Function):
    """Chunked blocked multiply.  Backward recomputes each chunk's passes (they are in cache) and
    runs the matmul gradients by hand, chunk by chunk in the worker threads; only x and the small
    matrices are kept between forward and backward (autograd through the chunk loop kept every
    intermediate and spent most of its time zero-filling and copying view gradients)."""

    @staticmethod
    def forward(ctx, plan, x2, *mats):
        ctx.plan = plan
        ctx.save_for_backward(x2, *mats)
        return _blocked_forward(plan, x2, mats)

    @staticmethod
    def backward(ctx, grad):
        plan = ctx.plan
        x2, *mats = ctx.saved_tensors
        need_x = ctx.needs_input_grad[1]
        need_m = ctx.needs_input_grad[2:]
        if torch.is_grad_enabled():  # create_graph (second order): differentiate the plain ops
            ins = [t for t, need in zip([x2, *mats], ctx.needs_input_grad[1:]) if need]
            got = iter(torch.autograd.grad(_blocked_plain(plan, x2, mats), ins, grad, create_graph=True))
            return (None, *(next(got) if need else None for need in ctx.needs_input_grad[1:]))
        rows = x2.shape[0]
        step = _chunk_rows(plan.n)
        grad_x = torch.empty_like(x2) if need_x else None
        accs: dict[int, list] = {}  # per worker thread: running sums of the matrix gradients
        mats_h = _on_worker(lambda: [m.transpose(1, 2).conj().contiguous() for m in mats])  # M^H, once

        def chunk(i):
            acc = accs.get(threading.get_ident())
            if acc is None:
                acc = accs[threading.get_ident()] = [torch.zeros_like(m) if nm else None for m, nm in zip(mats, need_m)]
            gx = grad_x[i : i + step] if need_x else None
            with torch.no_grad():  # grad mode is per thread: the workers' is on
                _chunk_backward(plan, x2[i : i + step], mats, mats_h, grad[i : i + step], gx, acc)

        _map_chunks(chunk, range(0, rows, step))

        def total():
            grad_m = [None] * len(mats)
            for acc in accs.values():
                for p, a in enumerate(acc):
                    if a is not None:
                        grad_m[p] = a if grad_m[p] is None else grad_m[p] + a
            return grad_m

        return (None, grad_x, *_on_worker(total))


def _blocked_plain(plan: _Plan, x2: torch.Tensor, mats) -> torch.Tensor:
    """The blocked multiply as plain differentiable torch ops on all rows at once: what torch.func
    transforms and second-order gradients differentiate (no threads, no custom Function)."""
    return _run_chunk(plan, x2, mats).reshape(x2.shape[0], -1)[:, : plan.out_f]


def _blocked_2d(x2, tw, increasing_stride, out_f, split=None):
    """x2 (R, in_features) with in_features <= N, tw (nblocks, log2 N, N/2, 2, 2) already in the
    compute dtype; returns (R, out_f) = (K-matrix applied to x2 zero-padded)[:, :out_f]."""
    nblocks, log_n = tw.shape[0], tw.shape[1]
    n = 1 << log_n
    rows, in_f = x2.shape
    cdtype = tw.dtype
    real_x = not x2.is_complex()
    # Real input with complex weights stays real (the first pass is a real GEMM), in matching precision.
    x2 = x2.to(tw.real.dtype if real_x else cdtype)
    if rows == 0:
        return x2.new_zeros((0, out_f), dtype=cdtype)
    if log_n == 1:
        m = _product_2x2(tw)
        return _matmul_right(x2, m[:out_f, :in_f].transpose(0, 1))
    if split is None:
        split = _best_split(n, nblocks, increasing_stride, in_f, out_f, cdtype.is_complex, real_x)
    k_lo = 1 << split
    e_in, e_out = _extents(n, split, in_f, out_f)
    real_first = real_x and cdtype.is_complex
    mats = _pass_matrices(tw, n, nblocks, increasing_stride, split, in_f, out_f, real_first)
    groups = tuple(g for g, _ in plan_passes(n, nblocks, increasing_stride, split))
    plan = _Plan(n, k_lo, e_in, e_out, out_f, groups, real_first)
    in_pad = e_in * k_lo - in_f
    # Zero padding only up to the next multiple of K_lo; rows must be contiguous for the views.
    x2 = torch.nn.functional.pad(x2, (0, in_pad)) if in_pad else x2.contiguous()
    if in_functorch():
        return _blocked_plain(plan, x2, mats)
    if torch.is_grad_enabled() and (x2.requires_grad or any(m.requires_grad for m in mats)):
        return _BlockedFn.apply(plan, x2, *mats)
    return _blocked_forward(plan, x2, mats)


def _matmul_right(x2: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x2 @ w``; for real x2 and complex w one real GEMM with [Re w | Im w] interleaved."""
    if w.is_complex() and not x2.is_complex():
        wr = torch.view_as_real(w).reshape(w.shape[0], 2 * w.shape[1])
        y = x2.to(wr.dtype) @ wr
        return torch.view_as_complex(y.view(x2.shape[0], w.shape[1], 2))
    return x2.to(w.dtype) @ w


def butterfly_multiply_blocked(x, twiddle, increasing_stride=True, split=None):
    """``butterfly_multiply`` with groups of factors multiplied into small dense blocks (see module
    docstring).  ``split`` (1 .. log2 N - 1) overrides the cost model's choice of group boundary."""
    n, log_n, _ = check_butterfly_args(x, twiddle)
    if split is not None and not (isinstance(split, int) and 1 <= split <= max(1, log_n - 1)):
        raise ValueError(f"split must be an int in [1, {max(1, log_n - 1)}] for N = {n}, got {split!r}")
    dtype = compute_dtype(x, twiddle)
    x2 = x.reshape(-1, n)
    if x2.dtype in (torch.float16, torch.bfloat16):
        x2 = x2.to(torch.float32)
    y = _blocked_2d(x2, twiddle.to(dtype), increasing_stride, n, split)
    return y.reshape(x.shape).to(output_dtype(x, twiddle))


# ----------------------------------------------------------------------------------------------
# Multiplying a K-matrix out (the front end's stages, the "dense" method)
# ----------------------------------------------------------------------------------------------
# Costs of ``kmatrix_rows``, in multiply-adds of the passes' matmuls: building the pass matrices
# (per entry and factor, N x K entries a factor) and each entry of the (rows, N) intermediate a pass
# writes and differentiates.  With these the model picks, for the front end's stages, a split and
# orientation within 6% of the fastest measured (docs/BENCHMARKS.md, "Figures behind code choices").
_BUILD_PER_ENTRY = 500.0
_ROWS_PER_ENTRY = 30.0


def _rows_cost(n: int, nblocks: int, increasing_stride: bool, rows: int, stop: int, out_f: int) -> tuple[float, int]:
    """(cost, best split) of ``kmatrix_rows`` for ``rows`` rows: the pass matrices' build, the
    matmuls of the passes after the first two, and the (rows, N) intermediate every pass writes
    (with its gradient: allocation, broadcasts, layout copies)."""
    log_n = n.bit_length() - 1
    best = None
    for s in range(1, log_n):
        runs = plan_passes(n, nblocks, increasing_stride, s)
        k = (1 << s, 1 << (log_n - s))
        e_out = _extents(n, s, stop, out_f)[1]
        cost = sum(len(stages) * n * k[g] for g, stages in runs) * _BUILD_PER_ENTRY
        for idx, (g, _) in enumerate(runs[2:], start=2):
            batches, outs = (k[1], k[0]) if g == 0 else (k[0], k[1])
            if idx == len(runs) - 1:  # the last pass keeps e_out high blocks (or rows)
                batches, outs = (e_out, outs) if g == 0 else (batches, e_out)
            cost += rows * batches * outs * k[g]
        cost += _ROWS_PER_ENTRY * len(runs) * rows * n
        if best is None or cost < best[0]:
            best = (cost, s)
    return best



def kmatrix_rows(tw: torch.Tensor, increasing_stride: bool, out_f: int, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of the (N, out_f) matrix W with ``kmatrix(x) == x @ W`` (tw (nblocks,
    log2 N, N/2, 2, 2) for one stack, or (nstacks, nblocks, ...) for a stacked K-matrix, out_f <=
    nstacks N): the K-matrix applied to identity rows, differentiable w.r.t. tw (any device).  The
    one way the package multiplies a butterfly or K-matrix out: the dense backend,
    ``Butterfly.to_dense`` and the front end's matrix path all call it.

    An identity row e_j has one nonzero, so the first two passes of the blocked plan need no
    matmul: with j = (h_j, l_j) (high, low bits), a first pass on the low bits leaves
    ``M0[h_j][:, l_j]`` in block h_j, and a second pass on the high bits spreads it to
    ``y[h, l] = M1[l][h, h_j] * M0[h_j][l, l_j]``: one broadcast product per row, O(N).  Only the
    passes after these are batched matmuls, in an (high, low, rows) layout.  The first pass is
    truncated to the blocks that rows < stop touch, the last to the kept outputs.

    The front end calls this once per training step for every stage, so its backward is written by
    hand (``_KmatrixRowsFn``): the broadcasts and matmuls are differentiated directly, and the pass
    matrices' graphs from the forward are kept (one per pass, differentiated in the worker threads)
    instead of being rebuilt.  Under torch.func transforms and for second-order gradients the same
    computation runs as plain differentiable ops.
    """
    if tw.dim() == 6:
        n = 2 * tw.shape[-3]
        if not 1 <= out_f <= tw.shape[0] * n:
            raise ValueError(f"kmatrix_rows needs 1 <= out_f <= nstacks * N = {tw.shape[0] * n}; got out_f={out_f}")
        parts = [kmatrix_rows(tw[k], increasing_stride, min(n, out_f - k * n), start, stop)
                 for k in range(math.ceil(out_f / n))]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    nblocks, log_n = tw.shape[0], tw.shape[1]
    n = 1 << log_n
    if not (0 <= start < stop <= n and 1 <= out_f <= n):
        raise ValueError(f"kmatrix_rows needs 0 <= start < stop <= N = {n} and 1 <= out_f <= N; got "
                         f"start={start}, stop={stop}, out_f={out_f}")
    rows = stop - start
    if log_n == 1:
        return _product_2x2(tw)[:out_f, start:stop].transpose(0, 1)
    # Fewer outputs than rows (a mel or DCT stage; the DFT's 201 bins of 400 samples): multiply the
    # transposed K-matrix out instead, whose rows are these outputs: every intermediate is (rows, N),
    # so this divides the work by rows / out_f.
    cost, split = _rows_cost(n, nblocks, increasing_stride, rows, stop, out_f)
    last_increasing = block_is_increasing(nblocks - 1, increasing_stride)
    cost_t, split_t = _rows_cost(n, nblocks, not last_increasing, out_f, out_f, stop)
    if cost_t < cost:
        # the transposed product's twiddle (transposed_twiddle) is read from tw by the pass layout
        spec = (n, nblocks, not last_increasing, split_t, out_f, stop, False)
        return _kmatrix_rows_spec(tw, spec, 0, out_f, flip=True)[:, start:stop].transpose(0, 1)
    return _kmatrix_rows_spec(tw, (n, nblocks, increasing_stride, split, stop, out_f, False), start, stop)


def _kmatrix_rows_spec(tw: torch.Tensor, spec, start: int, stop: int, flip: bool = False) -> torch.Tensor:
    if not (torch.is_grad_enabled() and tw.requires_grad):
        with torch.no_grad():
            return _rows_apply(_all_pass_matrices(tw, spec, flip), spec, start, stop, [])[0]
    if in_functorch():  # custom Functions cannot run under torch.func transforms: plain ops
        return _rows_apply(_all_pass_matrices(tw, spec, flip), spec, start, stop)[0]
    return _KmatrixRowsFn.apply(tw, spec, start, stop, flip)


def _rows_apply(mats, spec, start: int, stop: int, saved: list | None = None):
    """(rows, out_f) from the pass matrices: the first two passes as one broadcast product, the
    others as batched matmuls.  Plain torch ops (differentiable when ``mats`` are); with ``saved``
    (a list, no autograd) the operands that ``_rows_backward`` needs are appended to it."""
    n, _, increasing_stride, split, _, out_f, _ = spec
    groups = [g for g, _ in plan_passes(n, spec[1], increasing_stride, split)]
    z = _identity_passes(mats[0], mats[1], groups[0], plain=saved is None)
    # z: (high, low, E K_lo) with E K_lo >= stop; the entry (h, l) of row j is output h K_lo + l.
    z = z[:, :, start:stop]
    for g, m in zip(groups[2:], mats[2:]):
        if saved is not None:
            saved.append(z)
        if g == 0:  # m (high batch, K_lo', K_lo)
            z = torch.bmm(m, z[: m.shape[0]])
        else:  # m (low batch, K_hi', K_hi): the high bits act, batched over the low ones
            z = torch.bmm(m, z.transpose(0, 1)).transpose(0, 1)
    hi, lo = z.shape[0], z.shape[1]
    return z.permute(2, 0, 1).reshape(stop - start, hi * lo)[:, :out_f], groups


def _identity_operands(m0, m1, first_group: int):
    """The two broadcast operands of the first two passes on identity rows, shaped so that their
    product is z[h, l, h_j, l_j] (high, low of the output; high, low of the row), the last index
    contiguous in both (a vectorised inner loop; the small matrices are copied, not the product)."""
    if first_group == 0:  # m0 (E, K_lo, K_lo) [h_j, l, l_j]; m1 (K_lo, K_hi', E) [l, h, h_j]
        a = m1.permute(1, 0, 2).unsqueeze(-1)  # [h, l, h_j, 1]
        b = m0.permute(1, 0, 2).contiguous().unsqueeze(0)  # [1, l, h_j, l_j]
    else:  # m0 (K_lo, K_hi, E) [l_j, h, h_j]; m1 (K_hi', K_lo, K_lo) [h, l, l_j]
        a = m1.unsqueeze(2)  # [h, l, 1, l_j]
        b = m0.permute(1, 2, 0)[: m1.shape[0]].contiguous().unsqueeze(1)  # [h, 1, h_j, l_j]
    return a, b


def _identity_passes(m0, m1, first_group: int, plain: bool) -> torch.Tensor:
    a, b = _identity_operands(m0, m1, first_group)
    shape = torch.broadcast_shapes(a.shape, b.shape)
    if plain:
        z = (a * b).contiguous()
    else:
        z = torch.empty(shape, dtype=torch.promote_types(a.dtype, b.dtype), device=a.device)
        torch.mul(a, b, out=z)
    return z.flatten(2)


def _rows_backward(mats, spec, groups, start: int, stop: int, saved: list, gy: torch.Tensor):
    """Gradients of ``_rows_apply``'s output w.r.t. every pass matrix (complex: autograd's
    conjugate convention), from the operands it saved."""
    n, _, _, split, _, out_f, _ = spec
    grads = [None] * len(mats)
    last = mats[-1]
    hi = last.shape[0] if groups[-1] == 0 else last.shape[1]  # output high blocks kept
    lo = last.shape[1] if groups[-1] == 0 else last.shape[0]
    rows = stop - start
    if gy.shape[1] < hi * lo:
        gy = torch.nn.functional.pad(gy, (0, hi * lo - gy.shape[1]))
    gz = gy.reshape(rows, hi, lo).permute(1, 2, 0)  # (high, low, rows), logical
    for idx in range(len(mats) - 1, 1, -1):
        m, zi = mats[idx], saved[idx - 2]
        if groups[idx] == 0:
            x = zi[: m.shape[0]]
            grads[idx] = torch.bmm(gz, x.transpose(1, 2).conj())
            gx = torch.bmm(m.transpose(1, 2).conj(), gz)
            if x.shape[0] < zi.shape[0]:
                gx = torch.cat((gx, gx.new_zeros((zi.shape[0] - x.shape[0],) + gx.shape[1:])))
            gz = gx
        else:
            x, go = zi.transpose(0, 1), gz.transpose(0, 1)
            grads[idx] = torch.bmm(go, x.transpose(1, 2).conj())
            gz = torch.bmm(m.transpose(1, 2).conj(), go).transpose(0, 1)
    # The broadcast product of the first two passes, over the rows start:stop of its E K_lo.
    m0, m1 = mats[0], mats[1]
    a, b = _identity_operands(m0, m1, groups[0])
    shape = torch.broadcast_shapes(a.shape, b.shape)
    g4 = torch.nn.functional.pad(gz, (start, shape[2] * shape[3] - stop)).view(shape)
    if groups[0] == 0:  # a [h, l, h_j, 1], b [1, l, h_j, l_j]
        ga = (g4 * b.conj()).sum(-1)  # [h, l, h_j] -> m1 (l, h, h_j)
        gb = (g4 * a.conj()).sum(0)  # [l, h_j, l_j] -> m0 (h_j, l, l_j)
        grads[1] = ga.permute(1, 0, 2)
        grads[0] = gb.permute(1, 0, 2)
    else:  # a [h, l, 1, l_j], b [h, 1, h_j, l_j]
        ga = (g4 * b.conj()).sum(2)  # [h, l, l_j] -> m1
        gb = (g4 * a.conj()).sum(1)  # [h, h_j, l_j] -> m0 (l_j, h, h_j), zero beyond m1's high blocks
        grads[1] = ga
        g0 = gb.permute(2, 0, 1)
        if g0.shape[1] < m0.shape[1]:
            g0 = torch.cat((g0, g0.new_zeros((g0.shape[0], m0.shape[1] - g0.shape[1], g0.shape[2]))), dim=1)
        grads[0] = g0
    return [g if m.is_complex() or not g.is_complex() else g.real for g, m in zip(grads, mats)]


class _KmatrixRowsFn(torch.autograd.Function):
    """``kmatrix_rows`` with a hand-written backward (see there).  Second-order gradients
    (``create_graph=True``) rebuild the product as plain differentiable ops."""

    @staticmethod
    def forward(ctx, tw, spec, start, stop, flip):
        def run():
            with torch.enable_grad():  # the pass matrices' graph is kept for the backward
                leaf = tw.detach().requires_grad_()
                graph = _all_pass_matrices(leaf, spec, flip)
            with torch.no_grad():
                mats = [m.detach() for m in graph]
                saved: list = []
                y, groups = _rows_apply(mats, spec, start, stop, saved)
            return y, (graph, leaf, mats, saved, groups)

        y, state = _single_threaded(run, tw)
        ctx.graph, ctx.leaf, ctx.mats, ctx.saved, ctx.groups = state
        ctx.args = (spec, start, stop, flip)
        ctx.save_for_backward(tw)
        return y

    @staticmethod
    def backward(ctx, gy):
        spec, start, stop, flip = ctx.args
        if torch.is_grad_enabled():
            # create_graph: the gradient must itself be differentiable, so the plain ops again
            (tw,) = ctx.saved_tensors
            y = _rows_apply(_all_pass_matrices(tw, spec, flip), spec, start, stop)[0]
            return torch.autograd.grad(y, tw, gy, create_graph=True)[0], None, None, None, None
        # The forward's tensors stay with ctx until the graph goes (a repeated backward through a
        # retained graph gives the same numbers); they are a few MB at most.
        mats, groups, saved, graph, leaf = ctx.mats, ctx.groups, ctx.saved, ctx.graph, ctx.leaf

        def run():
            with torch.no_grad():
                gmats = _rows_backward(mats, spec, groups, start, stop, saved, gy.contiguous())
            return torch.autograd.grad(graph, leaf, gmats, retain_graph=True)[0]

        return _single_threaded(run, gy), None, None, None, None


def _use_workers(like: torch.Tensor) -> bool:
    """Whether work on ``like``'s device goes to the calling thread's single-threaded workers: CPU
    tensors, more than one thread, and neither torch.compile nor a torch.func transform tracing."""
    return (not torch.compiler.is_compiling() and like.device.type == "cpu" and not in_functorch()
            and torch.get_num_threads() > 1)


def run_parallel(fns, like: torch.Tensor) -> list:
    """``[f() for f in fns]``, the calls side by side on the calling thread's single-threaded workers
    when it runs more than one thread on CPU tensors (the front end's stages are multiplied out
    concurrently: each is a few dozen small ops, better one per core than each op split over the
    cores).  The caller's grad mode (and inference mode) hold in the workers.  Inline under
    torch.compile, torch.func transforms, on other devices or with one thread."""
    if len(fns) < 2 or not _use_workers(like):
        return [f() for f in fns]
    grad = torch.is_grad_enabled()

    def call(f):
        with torch.set_grad_enabled(grad):
            return f()

    return _map_chunks(call, fns)


def _single_threaded(fn, like: torch.Tensor):
    """``fn()`` on one of the calling thread's single-threaded workers when it runs more than one
    thread (CPU tensors only): a stage's product is a few dozen small ops, and a multi-threaded small
    op waits for every thread, which another process on the cores can stall (docs/BENCHMARKS.md,
    "Figures behind code choices").  Inline otherwise (``_use_workers``), and inside a worker already."""
    if not _use_workers(like):
        return fn()
    return _map_chunks(lambda _: fn(), [0])[0]


def butterfly_multiply_dense(x, twiddle, increasing_stride=True):
    """Multiply the product out to an N x N matrix (differentiable), then one matmul."""
    n, _, _ = check_butterfly_args(x, twiddle)
    dtype = compute_dtype(x, twiddle)
    x2 = x.reshape(-1, n)
    if x2.dtype in (torch.float16, torch.bfloat16):
        x2 = x2.to(torch.float32)
    w = kmatrix_rows(twiddle.to(dtype), increasing_stride, n, 0, n)
    return _matmul_right(x2, w).reshape(x.shape).to(output_dtype(x, twiddle))


# ----------------------------------------------------------------------------------------------
# Backend choice (cost model) and the K-matrix entry point
# ----------------------------------------------------------------------------------------------
def _costs(rows, n, nblocks, increasing_stride, in_f, out_f, complex_w, real_x, grad=False) -> dict[str, float]:
    """Estimated cost of each CPU method for one stack (units: large-GEMM multiply-adds)."""
    log_n = n.bit_length() - 1
    split = _best_split(n, nblocks, increasing_stride, in_f, out_f, complex_w, real_x)
    per_row, build = _blocked_cost(n, nblocks, increasing_stride, split, in_f, out_f, complex_w, real_x)
    bwd_b = 1.0 + _BWD_BLOCKED * grad
    bwd_d = 1.0 + _BWD_DENSE * grad
    blocked = (build + rows * per_row) * bwd_b
    # Dense: W built by the blocked path on in_f identity rows (real), then one GEMM.
    per_row_id, build_id = _blocked_cost(n, nblocks, increasing_stride, split, in_f, out_f, complex_w, True)
    mult = (2.0 if real_x else 4.0) if complex_w else 1.0
    dense = (build_id + in_f * per_row_id) * bwd_b + rows * mult * in_f * out_f * bwd_d
    ref = _REF_COST * (1.0 if complex_w else 0.4)
    torch_ref = (rows * nblocks * log_n * n * ref + nblocks * log_n * 2e4) * bwd_d
    return {"blocked": blocked, "dense": dense, "torch": torch_ref}


def kmatrix_backend(x: torch.Tensor, twiddle: torch.Tensor, out_features: int, increasing_stride: bool = True) -> str:
    """The cheapest CPU method ("torch", "blocked", "dense") for ``kmatrix_multiply`` by the cost
    model; a backward pass is counted when autograd will need one."""
    n = twiddle.shape[-3] * 2
    rows = max(1, x.numel() // max(1, x.shape[-1]))
    grad = torch.is_grad_enabled() and (x.requires_grad or twiddle.requires_grad)
    c = _costs(
        rows, n, twiddle.shape[-5], increasing_stride, x.shape[-1], min(out_features, n),
        twiddle.is_complex(), not x.is_complex(), grad,
    )
    return min(c, key=c.get)


def choose_backend(x: torch.Tensor, twiddle: torch.Tensor, increasing_stride: bool = True) -> str:
    """Backend for ``butterfly_multiply(x, twiddle, backend="auto")`` on CPU (N x N product)."""
    n = x.shape[-1]
    return kmatrix_backend(x, twiddle.unsqueeze(0), n, increasing_stride)


def kmatrix_multiply_cpu(
    x: torch.Tensor, twiddle: torch.Tensor, out_features: int, increasing_stride: bool = True, method: str = "auto"
) -> torch.Tensor:
    """``kmatrix_multiply`` on CPU without padding x to N: ``method`` "blocked" (truncated first and
    last passes), "dense" (materialise the (in x out) matrix, one matmul), "torch" or "auto"."""
    n = twiddle.shape[-3] * 2
    in_f = x.shape[-1]
    dtype = compute_dtype(x, twiddle)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, in_f)
    if x2.dtype in (torch.float16, torch.bfloat16):
        x2 = x2.to(torch.float32)
    if x2.is_complex() or not dtype.is_complex:
        x2 = x2.to(dtype)
    tw = twiddle.to(dtype)
    if method == "auto":
        method = kmatrix_backend(x, twiddle, out_features, increasing_stride)
    outs = []
    for k in range(math.ceil(out_features / n)):
        out_k = min(n, out_features - k * n)
        if method == "dense":
            outs.append(_matmul_right(x2, kmatrix_rows(tw[k], increasing_stride, out_k, 0, in_f)))
        elif method == "blocked":
            outs.append(_blocked_2d(x2, tw[k], increasing_stride, out_k))
        elif method == "torch":
            xp = torch.nn.functional.pad(x2, (0, n - in_f)) if in_f < n else x2
            outs.append(butterfly_multiply_reference(xp, tw[k], increasing_stride)[:, :out_k])
        else:
            raise ValueError(f"method must be 'auto', 'blocked', 'dense' or 'torch', got {method!r}")
    y = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
    return y.reshape(*lead, out_features).to(output_dtype(x, twiddle))


# ----------------------------------------------------------------------------------------------
# The C allocator (a process setting, for training programs)
# ----------------------------------------------------------------------------------------------
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the OS (mallopt:
    trim and mmap thresholds raised to ``limit`` bytes).  Returns False where the C library is not
    glibc (nothing is changed).

    Why: PyTorch's CPU allocator has no cache, so every tensor is a malloc.  A training step with the
    learnable front end allocates and frees MB-sized temporaries (the stage products and their
    gradients), and with glibc's defaults a free at the top of the heap returns the pages to the OS,
    which the next step then faults back in, zero-filled: about 10,000 page faults per step of the
    recipe's small model (40 MB), 4 ms of system time for the n_fft 512 DFT stage alone
    (docs/BENCHMARKS.md).  The price is a resident size that stays at its peak, as GPU caching
    allocators do.  Same effect as ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_`` in the
    environment, or LD_PRELOAD of jemalloc / tcmalloc.  The TIMIT recipe calls it for CPU
    training; a library import never does (it is the program's choice).
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # glibc only  # noqa: B018
    except (OSError, AttributeError):
        return False
    ok = libc.mallopt(_M_TRIM_THRESHOLD, int(limit)) == 1
    # glibc may refuse an mmap threshold above its maximum (32 MB on 64-bit builds); keep that then.
    ok &= libc.mallopt(_M_MMAP_THRESHOLD, int(limit)) == 1 or libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1
    return bool(ok)
