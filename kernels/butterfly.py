"""Fused Triton kernels for butterfly products, their backward, and the ``torch.library`` op.

Design (where it sits in the package: docs/DESIGN.md; its GPU figures: docs/BENCHMARKS.md, GPU):

* **Coefficients per position, in tile order.**  The factor ``(b, f)`` of stride ``S`` maps
  ``y_p = d_p x_p + o_p x_{p^S}`` with ``d_p = t[j, bit, bit]`` and ``o_p = t[j, bit, 1-bit]``
  (``bit`` = bit ``log2 S`` of ``p``, ``j`` its pair).  Each call gathers the twiddle into this
  layout (``K`` = 2 arrays real, 4 complex: ``d_re, d_im, o_re, o_im``) and, per launch, into the
  order of the tile positions, ``(column blocks, steps, K, T)``: a few kB to MB, and the kernels
  load a step's coefficients at the tile position alone (no frame-position arithmetic per stage;
  it cost registers).  Coefficient gradients come back in the same order.
* **Tiles.**  A program holds ``BLOCK_M x T`` values in registers (``T`` fixed per kernel, see
  :data:`CONFIGS`) and applies every step of its launch before storing.  ``N <= T``: each tile row
  packs ``T / N`` whole frames and one launch applies all ``nblocks * log2 N`` factors.
  ``N > T``: FFT-style split into launches over the strides ``< T`` (tiles of ``T`` contiguous
  positions) and the strides ``>= T`` (``N / T`` positions ``T`` apart, ``T^2 / N`` neighbouring
  columns per tile for coalescing); consecutive steps of one kind share a launch.
* **Steps.**  A launch gets a run-time list of ``(log2 tile stride, 0)``, one per step.  A stage is
  ``tl.reshape`` to ``(rows, groups, 2, stride)``, ``tl.permute``, ``tl.split``, 2x2 products,
  ``tl.join`` and back, with the stride a compile-time constant: a static switch over the
  ``log2 T`` possible strides picks the body.  So one compiled kernel serves every N, block count
  and stride order (few specialisations, short compile), and the backward can recompute with
  loops.  (A run-time-stride ``tl.gather`` was tried first: Triton makes it warp-local and emits
  ``elements_per_thread^2`` shuffles per stage; at T = 4096 it did not compile in 10 minutes.)
* **Backward.**  The steps are cut into chunks of at most ``BWD_CHUNK`` steps (and by geometry).
  Chunk inputs are recomputed with the forward kernel in fp32; each chunk then runs backwards in
  one launch that recomputes the input of every step from the chunk input (O(chunk^2) on-chip
  work, nothing stored per stage), applies the transposed factor, and sums the coefficient
  gradients over its rows.  Programs are persistent over row blocks and add their sums into their
  own slice of a ``(programs, ...)`` buffer (a CTA barrier orders the read-modify-write); the slices
  are then summed with ``torch.sum``.  No atomics: bitwise deterministic, run to run, always
  (``torch.use_deterministic_algorithms`` needs nothing else).
* **Registration.**  ``torch.library.custom_op`` (``kfrontend::butterfly_multiply`` and
  ``kfrontend::butterfly_multiply_backward``) with fake implementations and ``register_autograd``.
  The ops take real tensors (complex data as ``torch.view_as_real`` views); the complex and dtype
  plumbing is in :func:`butterfly_multiply_triton`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kfrontend.kernels import supports
from kfrontend.reference import block_is_increasing, check_butterfly_args, output_dtype, stride_of

__all__ = [
    "butterfly_multiply_triton",
    "butterfly_multiply_op",
    "butterfly_multiply_backward_op",
    "CONFIGS",
    "GPU_CONFIGS",
    "BWD_CHUNK",
    "launch_plan",
]


@dataclass(frozen=True)
class KernelConfig:
    T: int  # positions per tile row (power of two)
    BLOCK_M: int  # tile rows per program
    num_warps: int
    # Packed launches (N < T) use tiles max(N, min_packed_T) wide and proportionally more rows
    # (same values per program, so the same registers): a tile row then holds fewer frames, and
    # each coefficient load, a vector of the tile's width broadcast over its rows, serves more of
    # them.  A step loads K * T coefficients against 2 * BLOCK_M * T values of data read and
    # written once per launch, so rows per tile set how far coefficient traffic (L1 / L2) exceeds
    # HBM traffic: at N = 512, T = 1024, 27 steps, 1 complex row, 27x.  None: tiles stay T wide.
    min_packed_T: int | None = None

    def tile(self, n: int) -> tuple[int, int]:
        """(T, BLOCK_M) of a launch on frames of size n."""
        if self.min_packed_T is None or n >= self.T:
            return self.T, self.BLOCK_M
        t = max(n, self.min_packed_T)
        return t, self.BLOCK_M * self.T // t


# (kind, complex) -> tile shape.  Chosen on the CPU machine by the registers and spills ptxas
# reports for sm_90 (cuobjdump --dump-resource-usage of the compile check's cubins):
#   fwd real    T=1024 BLOCK_M=2 8 warps: 128 registers, no spills (T=2048/1/8: 124; 4096/1/16: 128 + 16 B)
#   fwd complex T=1024 BLOCK_M=1 8 warps: 188 registers, no spills (512/2/8: 180; 1024/2/8 spills)
#   bwd real    T=512  BLOCK_M=2 4 warps: 164 registers, no spills (512/4/8: 128 + 80 B)
#   bwd complex T=256  BLOCK_M=1 4 warps: 155 registers, no spills (512/1/8: 199; 512/1/4 spills)
# and, narrowed for packed launches (min_packed_T): fwd real 512/4 117, 256/8 125; fwd complex
# 512/2 180, 256/4 124; bwd real 256/4 121 registers, no spills.  Candidates with twice the rows
# per tile at the same warps per SM (one 16-warp program instead of two 8-warp ones): fwd real
# 1024/4/16: 115 registers, no spills; fwd complex 1024/2/16: 128 + 48 B spilled.  To try on a GPU.
# Wider tiles run bigger N in one launch; more rows per tile share each coefficient load.  They
# are yet to be tuned on a GPU (benchmarks/bench_kernel.py); nothing else depends on them: the
# compile check enumerates whatever the dispatcher launches.
GPU_CONFIGS = {
    ("fwd", False): KernelConfig(T=1024, BLOCK_M=2, num_warps=8, min_packed_T=256),
    ("fwd", True): KernelConfig(T=1024, BLOCK_M=1, num_warps=8, min_packed_T=256),
    ("bwd", False): KernelConfig(T=512, BLOCK_M=2, num_warps=4, min_packed_T=256),
    ("bwd", True): KernelConfig(T=256, BLOCK_M=1, num_warps=4, min_packed_T=256),
}
# The interpreter's cost is per operation, not per element: wide tiles, few programs.  Same
# kernels; the narrow-tile paths (low/high geometry, backward chunks) are tested there with
# narrow configs set explicitly (tests/test_kernel.py), the GPU configs by the sm_90 compile check
# and tests/test_cuda.py.
INTERPRETER_CONFIGS = {
    ("fwd", False): KernelConfig(T=4096, BLOCK_M=8, num_warps=1),
    ("fwd", True): KernelConfig(T=4096, BLOCK_M=8, num_warps=1),
    ("bwd", False): KernelConfig(T=4096, BLOCK_M=8, num_warps=1),
    ("bwd", True): KernelConfig(T=4096, BLOCK_M=8, num_warps=1),
}
# Backward: at most this many steps per launch (its on-chip recompute grows with the square).
BWD_CHUNK = 8
# Persistent backward programs per SM (GPU); the interpreter uses a fixed small count.
_BWD_PROGRAMS_PER_SM = 2

# Test / compile-check hook: when set, launches are handed to it instead of being run.
_LAUNCH_HOOK = None


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


# The step functions switch statically on the run-time stride (lg_st = log2 of the tile stride):
# each body has its stride S = 1 << i as a compile-time constant, so the reshapes are static.
# Bodies are written inline (no nested @triton.jit calls): the interpreter re-patches
# triton.language on every nested call, which made it several times slower.  (Nor can a body
# name S as a constexpr: reassigning one inside tl.static_range is a GPU compile error.)
#
# Stage at stride S: view a tile row as (groups, 2, S); x0 = [:, 0, :] and x1 = [:, 1, :] are the
# pair members at tile positions t0 = g * 2S + r and t0 + S (frame positions e0, e1).  Forward:
# y0 = d0 x0 + o0 x1, y1 = o1 x0 + d1 x1 with d/o the per-position coefficients.  A real tile is
# (rows, T); a complex one (rows, T, 2), (re, im) innermost as in memory, split only for the
# arithmetic.  (Carrying real and imaginary parts as two (rows, T) tiles crashed Triton 3.6's
# TritonGPURemoveLayoutConversions pass for more than one row per program.)


@triton.jit
def _fwd_step(h, cptr, sp, T: tl.constexpr, LOGT: tl.constexpr, BLOCK_M: tl.constexpr,
              IS_COMPLEX: tl.constexpr):
    # cptr: this step's coefficients in tile order, K arrays of T; sp -> (log2 tile stride, 0).
    # The 0, read from memory, enters the position arithmetic so that the compiler cannot hoist
    # the LOGT bodies' loop-invariant index tensors out of the step loop (all live at once, they
    # spilled: 2.5 kB of stack per thread at T = 4096).
    lg_st = tl.load(sp)
    zero = tl.load(sp + 1)
    for i in tl.static_range(LOGT):
        if lg_st == i:
            t0 = ((tl.arange(0, T >> (i + 1)) ^ zero) * (2 << i))[:, None] + (tl.arange(0, 1 << i) ^ zero)[None, :]
            c0 = cptr + t0
            c1 = c0 + (1 << i)
            if IS_COMPLEX:
                x0, x1 = tl.split(tl.permute(tl.reshape(h, (BLOCK_M, T >> (i + 1), 2, 1 << i, 2)),
                                             (0, 1, 3, 4, 2)))
                x0r, x0i = tl.split(x0)
                x1r, x1i = tl.split(x1)
                d0r = tl.load(c0)[None]
                d0i = tl.load(c0 + T)[None]
                o0r = tl.load(c0 + 2 * T)[None]
                o0i = tl.load(c0 + 3 * T)[None]
                d1r = tl.load(c1)[None]
                d1i = tl.load(c1 + T)[None]
                o1r = tl.load(c1 + 2 * T)[None]
                o1i = tl.load(c1 + 3 * T)[None]
                y0 = tl.join(d0r * x0r - d0i * x0i + o0r * x1r - o0i * x1i,
                             d0r * x0i + d0i * x0r + o0r * x1i + o0i * x1r)
                y1 = tl.join(o1r * x0r - o1i * x0i + d1r * x1r - d1i * x1i,
                             o1r * x0i + o1i * x0r + d1r * x1i + d1i * x1r)
                h = tl.reshape(tl.permute(tl.join(y0, y1), (0, 1, 4, 2, 3)), (BLOCK_M, T, 2))
            else:
                x0, x1 = tl.split(tl.permute(tl.reshape(h, (BLOCK_M, T >> (i + 1), 2, 1 << i)), (0, 1, 3, 2)))
                d0 = tl.load(c0)[None]
                o0 = tl.load(c0 + T)[None]
                d1 = tl.load(c1)[None]
                o1 = tl.load(c1 + T)[None]
                h = tl.reshape(tl.permute(tl.join(d0 * x0 + o0 * x1, o1 * x0 + d1 * x1), (0, 1, 3, 2)),
                               (BLOCK_M, T))
    return h


@triton.jit
def _bwd_step(h, g, cptr, sp, pbase, T: tl.constexpr, LOGT: tl.constexpr, BLOCK_M: tl.constexpr,
              IS_COMPLEX: tl.constexpr):
    # h: input of the step, g: gradient at its output.  Adds the row sums of the coefficient
    # gradients to pbase[k * T + t] (k: coefficient array d_re, (d_im,) o_re, (o_im); t: tile
    # position) and returns the gradient at the input: the transposed (complex: conjugate-
    # transposed) 2x2 blocks, gx0 = d0* g0 + o1* g1, gx1 = o0* g0 + d1* g1.  The gradient of a
    # coefficient w that multiplies x into output gradient g is sum_rows g * conj(x).
    lg_st = tl.load(sp)
    zero = tl.load(sp + 1)
    for i in tl.static_range(LOGT):
        if lg_st == i:
            t0 = ((tl.arange(0, T >> (i + 1)) ^ zero) * (2 << i))[:, None] + (tl.arange(0, 1 << i) ^ zero)[None, :]
            c0 = cptr + t0
            c1 = c0 + (1 << i)
            p0 = pbase + t0
            p1 = pbase + t0 + (1 << i)
            if IS_COMPLEX:
                x0, x1 = tl.split(tl.permute(tl.reshape(h, (BLOCK_M, T >> (i + 1), 2, 1 << i, 2)),
                                             (0, 1, 3, 4, 2)))
                g0, g1 = tl.split(tl.permute(tl.reshape(g, (BLOCK_M, T >> (i + 1), 2, 1 << i, 2)),
                                             (0, 1, 3, 4, 2)))
                x0r, x0i = tl.split(x0)
                x1r, x1i = tl.split(x1)
                g0r, g0i = tl.split(g0)
                g1r, g1i = tl.split(g1)
                tl.store(p0, tl.load(p0) + tl.sum(g0r * x0r + g0i * x0i, axis=0))  # d at t0
                tl.store(p0 + T, tl.load(p0 + T) + tl.sum(g0i * x0r - g0r * x0i, axis=0))
                tl.store(p1, tl.load(p1) + tl.sum(g1r * x1r + g1i * x1i, axis=0))  # d at t1
                tl.store(p1 + T, tl.load(p1 + T) + tl.sum(g1i * x1r - g1r * x1i, axis=0))
                tl.store(p0 + 2 * T, tl.load(p0 + 2 * T) + tl.sum(g0r * x1r + g0i * x1i, axis=0))  # o at t0
                tl.store(p0 + 3 * T, tl.load(p0 + 3 * T) + tl.sum(g0i * x1r - g0r * x1i, axis=0))
                tl.store(p1 + 2 * T, tl.load(p1 + 2 * T) + tl.sum(g1r * x0r + g1i * x0i, axis=0))  # o at t1
                tl.store(p1 + 3 * T, tl.load(p1 + 3 * T) + tl.sum(g1i * x0r - g1r * x0i, axis=0))
                d0r = tl.load(c0)[None]
                d0i = tl.load(c0 + T)[None]
                o0r = tl.load(c0 + 2 * T)[None]
                o0i = tl.load(c0 + 3 * T)[None]
                d1r = tl.load(c1)[None]
                d1i = tl.load(c1 + T)[None]
                o1r = tl.load(c1 + 2 * T)[None]
                o1i = tl.load(c1 + 3 * T)[None]
                q0 = tl.join(d0r * g0r + d0i * g0i + o1r * g1r + o1i * g1i,
                             d0r * g0i - d0i * g0r + o1r * g1i - o1i * g1r)
                q1 = tl.join(o0r * g0r + o0i * g0i + d1r * g1r + d1i * g1i,
                             o0r * g0i - o0i * g0r + d1r * g1i - d1i * g1r)
                g = tl.reshape(tl.permute(tl.join(q0, q1), (0, 1, 4, 2, 3)), (BLOCK_M, T, 2))
            else:
                x0, x1 = tl.split(tl.permute(tl.reshape(h, (BLOCK_M, T >> (i + 1), 2, 1 << i)), (0, 1, 3, 2)))
                g0, g1 = tl.split(tl.permute(tl.reshape(g, (BLOCK_M, T >> (i + 1), 2, 1 << i)), (0, 1, 3, 2)))
                tl.store(p0, tl.load(p0) + tl.sum(g0 * x0, axis=0))
                tl.store(p1, tl.load(p1) + tl.sum(g1 * x1, axis=0))
                tl.store(p0 + T, tl.load(p0 + T) + tl.sum(g0 * x1, axis=0))
                tl.store(p1 + T, tl.load(p1 + T) + tl.sum(g1 * x0, axis=0))
                d0 = tl.load(c0)[None]
                o0 = tl.load(c0 + T)[None]
                d1 = tl.load(c1)[None]
                o1 = tl.load(c1 + T)[None]
                g = tl.reshape(tl.permute(tl.join(d0 * g0 + o1 * g1, o0 * g0 + d1 * g1), (0, 1, 3, 2)),
                               (BLOCK_M, T))
    return g


@triton.jit
def _tile(pid_ab, rb, M, lg_n, lg_cbb, lg_bb, lg_b, lg_nbb, cb, T: tl.constexpr, BLOCK_M: tl.constexpr,
          IS_COMPLEX: tl.constexpr):
    # Geometry of a tile: (column block a, b-block b0) from pid_ab; tile row r holds frames
    # (rb * BLOCK_M + r) * R + t // (C*BB), R = T / (C*BB); tile position t is frame position
    # a_off + c * B + b0 + column with t mod C*BB = (c, column).  Returns the element offsets
    # (complex: (rows, T, 2) offsets of the interleaved floats) and the mask.
    a_off = (pid_ab >> lg_nbb) * cb
    b0 = (pid_ab & ((1 << lg_nbb) - 1)) << lg_bb
    cbb_mask = (1 << lg_cbb) - 1
    bb_mask = (1 << lg_bb) - 1
    t = tl.arange(0, T)
    frames = (rb * BLOCK_M + tl.arange(0, BLOCK_M))[:, None] * (T >> lg_cbb) + (t >> lg_cbb)[None, :]
    tt = t & cbb_mask
    pos = a_off + ((tt >> lg_bb) << lg_b) + b0 + (tt & bb_mask)
    offs = (frames.to(tl.int64) << lg_n) + pos[None, :]
    mask = frames < M
    if IS_COMPLEX:
        offs = offs[:, :, None] * 2 + tl.arange(0, 2)[None, None, :]
        mask = mask[:, :, None]
    return offs, mask


_RUNTIME_INTS = ["M", "nsteps", "n_row_progs", "lg_n", "lg_cbb", "lg_bb", "lg_b", "lg_nbb", "cb"]


@triton.jit(do_not_specialize=_RUNTIME_INTS[:2] + _RUNTIME_INTS[3:])
def _bfly_fwd_kernel(x_ptr, y_ptr, coef_ptr, steps_ptr, M, nsteps, lg_n, lg_cbb, lg_bb, lg_b, lg_nbb, cb,
                     T: tl.constexpr, LOGT: tl.constexpr, BLOCK_M: tl.constexpr,
                     IS_COMPLEX: tl.constexpr, K: tl.constexpr):
    offs, mask = _tile(tl.program_id(1), tl.program_id(0), M, lg_n, lg_cbb, lg_bb, lg_b, lg_nbb, cb, T, BLOCK_M,
                       IS_COMPLEX)
    h = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    cbase = coef_ptr + tl.program_id(1).to(tl.int64) * nsteps * (K * T)
    for k in range(nsteps):
        h = _fwd_step(h, cbase + k * (K * T), steps_ptr + 2 * k, T, LOGT, BLOCK_M, IS_COMPLEX)
    tl.store(y_ptr + offs, h.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=_RUNTIME_INTS)
def _bfly_bwd_kernel(x_ptr, g_ptr, gx_ptr, coef_ptr, part_ptr, steps_ptr, M, nsteps, n_row_progs, lg_n,
                     lg_cbb, lg_bb, lg_b, lg_nbb, cb,
                     T: tl.constexpr, LOGT: tl.constexpr, BLOCK_M: tl.constexpr,
                     IS_COMPLEX: tl.constexpr, K: tl.constexpr):
    # x: input of the launch's first step; g: gradient at the output of its last step.  Writes gx,
    # the gradient at x, and adds coefficient gradients into part[pid_p, pid_ab, step, k, t].
    pid_p = tl.program_id(0)
    pid_ab = tl.program_id(1)
    slice_base = part_ptr + (pid_p * tl.num_programs(1) + pid_ab).to(tl.int64) * nsteps * (K * T)
    cbase = coef_ptr + pid_ab.to(tl.int64) * nsteps * (K * T)
    num_rb = tl.cdiv(M, BLOCK_M * (T >> lg_cbb))
    for rb in range(pid_p, num_rb, n_row_progs):
        offs, mask = _tile(pid_ab, rb, M, lg_n, lg_cbb, lg_bb, lg_b, lg_nbb, cb, T, BLOCK_M, IS_COMPLEX)
        a = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        for kk in range(nsteps):
            k = nsteps - 1 - kk
            # Recompute the input of step k from the launch input (nothing stored per stage).
            h = a
            for j in range(k):
                h = _fwd_step(h, cbase + j * (K * T), steps_ptr + 2 * j, T, LOGT, BLOCK_M, IS_COMPLEX)
            g = _bwd_step(h, g, cbase + k * (K * T), steps_ptr + 2 * k, slice_base + k * (K * T),
                          T, LOGT, BLOCK_M, IS_COMPLEX)
        tl.store(gx_ptr + offs, g.to(gx_ptr.dtype.element_ty), mask=mask)
        # The next row block reads back sums that other threads of this program stored: a CTA
        # barrier orders those global memory accesses.
        tl.debug_barrier()


# --------------------------------------------------------------------------------------------
# Planning: which launches, with which geometry and steps
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """One kernel launch: a run of consecutive steps on one tile geometry.

    kind: ``"packed"`` (N <= T: whole frames, T / N per tile row), ``"low"`` (N > T, strides < T:
    tiles of T contiguous positions) or ``"high"`` (N > T, strides >= T: C = N / T positions T
    apart, BB = T / C neighbouring columns per tile).  steps: ``(factor index, stride)``.
    """

    kind: str
    n: int
    T: int
    steps: tuple

    @property
    def geometry(self):
        """(C, B, BB): tile = C chunk positions (B apart) x BB neighbouring columns."""
        if self.kind == "packed":
            return self.n, 1, 1
        if self.kind == "low":
            return self.T, 1, 1
        c = self.n // self.T
        return c, self.T, self.T // c

    def tile_stride(self, s: int) -> int:
        _, b, bb = self.geometry
        return (s // b) * bb

    @property
    def n_ab(self) -> int:
        c, b, bb = self.geometry
        return (self.n // (c * b)) * (b // bb)

    @property
    def frames_per_row(self) -> int:
        c, _, bb = self.geometry
        return self.T // (c * bb)


def _lg(v: int) -> int:
    return v.bit_length() - 1


def all_steps(n: int, nblocks: int, increasing_stride: bool) -> list[tuple[int, int]]:
    """``(factor index b * log2 N + f, stride)`` in the order the factors are applied."""
    log_n = _lg(n)
    return [
        (b * log_n + f, stride_of(f, n, block_is_increasing(b, increasing_stride)))
        for b in range(nblocks)
        for f in range(log_n)
    ]


def launch_plan(steps, n: int, T: int, max_steps: int | None = None) -> list[Launch]:
    """Cut a step sequence into launches: by geometry, and into at most ``max_steps`` each."""
    if n > T * T:
        raise ValueError(f"the Triton kernel supports N up to {T * T} (tile width {T}); got N = {n}")
    launches: list[Launch] = []
    for cidx, s in steps:
        kind = "packed" if n <= T else ("low" if s < T else "high")
        if launches and launches[-1].kind == kind and (max_steps is None or len(launches[-1].steps) < max_steps):
            launches[-1] = Launch(kind, n, T, launches[-1].steps + ((cidx, s),))
        else:
            launches.append(Launch(kind, n, T, ((cidx, s),)))
    return launches


_CACHE: dict = {}


def _steps_tensor(launch: Launch, device) -> torch.Tensor:
    key = ("steps", launch, str(device))
    if key not in _CACHE:
        rows = [(_lg(launch.tile_stride(s)), 0) for _, s in launch.steps]
        _CACHE[key] = torch.tensor(rows, dtype=torch.int32, device=device).reshape(-1)
    return _CACHE[key]


def _tile_positions(launch: Launch, device) -> torch.Tensor:
    """(n_ab, T) frame position of every tile position of every column block (as the kernel's
    ``_tile`` computes it)."""
    key = ("pos", launch.kind, launch.n, launch.T, str(device))
    if key not in _CACHE:
        c, b, bb = launch.geometry
        t = torch.arange(launch.T) % (c * bb)
        ab = torch.arange(launch.n_ab)[:, None]
        a_off = (ab // (b // bb)) * (c * b)
        b0 = (ab % (b // bb)) * bb
        _CACHE[key] = (a_off + (t // bb) * b + b0 + t % bb).to(device)
    return _CACHE[key]


def _tile_coefficients(coef: torch.Tensor, launch: Launch) -> torch.Tensor:
    """The launch's coefficients in tile order, (n_ab, steps, K, T): the kernels load them with
    the tile position alone, no frame-position arithmetic per stage."""
    key = ("cidx", launch.steps, str(coef.device))
    if key not in _CACHE:
        _CACHE[key] = torch.tensor([c for c, _ in launch.steps], device=coef.device)
    cidx = _CACHE[key]
    pos = _tile_positions(launch, coef.device)
    return coef[cidx][:, :, pos].permute(2, 0, 1, 3).contiguous()


def _geometry_args(launch: Launch):
    c, b, bb = launch.geometry
    return (_lg(launch.n), _lg(c * bb), _lg(bb), _lg(b), _lg(b // bb), c * b)


def _coef_index(n: int, nblocks: int, increasing_stride: bool, device):
    """Index (nblocks * log2 N, 2N) into a factor's flattened (N/2, 2, 2) twiddle giving
    ``[d_0 .. d_{N-1}, o_0 .. o_{N-1}]``, and its inverse permutation."""
    key = ("coef", n, nblocks, increasing_stride, str(device))
    if key not in _CACHE:
        log_n = _lg(n)
        p = torch.arange(n)
        rows = []
        for b in range(nblocks):
            for f in range(log_n):
                s = stride_of(f, n, block_is_increasing(b, increasing_stride))
                bit = (p // s) % 2
                j = (p // (2 * s)) * s + p % s
                rows.append(torch.cat([4 * j + 3 * bit, 4 * j + 1 + bit]))
        idx = torch.stack(rows)
        _CACHE[key] = (idx.to(device), torch.argsort(idx, dim=1).to(device))
    return _CACHE[key]


def _coef_from_twiddle(tw: torch.Tensor, increasing_stride: bool, is_complex: bool) -> torch.Tensor:
    nblocks, log_n, half = tw.shape[:3]
    n = 2 * half
    idx, _ = _coef_index(n, nblocks, increasing_stride, tw.device)
    if is_complex:
        flat = tw.reshape(nblocks * log_n, 2 * n, 2)
        c = flat.gather(1, idx[:, :, None].expand(-1, -1, 2)).reshape(-1, 2, n, 2)
        return c.permute(0, 1, 3, 2).reshape(-1, 4, n).contiguous()
    return tw.reshape(nblocks * log_n, 2 * n).gather(1, idx).reshape(-1, 2, n).contiguous()


def _twiddle_grad_from_coef(dcoef: torch.Tensor, shape, increasing_stride: bool, is_complex: bool):
    nblocks, log_n, half = shape[:3]
    n = 2 * half
    _, inv = _coef_index(n, nblocks, increasing_stride, dcoef.device)
    if is_complex:
        flat = dcoef.reshape(-1, 2, 2, n).permute(0, 1, 3, 2).reshape(-1, 2 * n, 2)
        return flat.gather(1, inv[:, :, None].expand(-1, -1, 2)).reshape(shape)
    return dcoef.reshape(-1, 2 * n).gather(1, inv).reshape(shape)


# --------------------------------------------------------------------------------------------
# Launching
# --------------------------------------------------------------------------------------------


def _is_interpreted() -> bool:
    return not isinstance(_bfly_fwd_kernel, triton.runtime.JITFunction)


# The tile shapes in use: GPU_CONFIGS when compiled, INTERPRETER_CONFIGS under the interpreter.
CONFIGS = dict(INTERPRETER_CONFIGS if _is_interpreted() else GPU_CONFIGS)


def _fix_interpreter_scalars():
    """Triton 3.6's interpreter holds scalars as 1-element arrays and converts them with
    ``int(array)``, which NumPy >= 2.4 refuses ("only 0-dimensional arrays can be converted"), so
    ``for k in range(runtime_int)`` fails there.  Re-patch ``tensor.__index__`` per launch to take
    the single element.  Only under the interpreter, and only when NumPy needs it."""
    import numpy as np
    from triton.runtime import interpreter

    try:
        int(np.zeros(1, dtype=np.int32))
        return
    except TypeError:
        pass
    original = interpreter._patch_lang_tensor
    if getattr(original, "_kfrontend_scalar_fix", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._kfrontend_scalar_fix = True
    interpreter._patch_lang_tensor = patched


if _is_interpreted():
    _fix_interpreter_scalars()


def _device_guard(t: torch.Tensor):
    """Launches go to the current CUDA device: make it the tensors' own (cuda:1 tensors from a
    cuda:0 context would otherwise be read by a kernel on the wrong device)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def max_size(kind: str, is_complex: bool) -> int:
    """Largest N the ``kind`` ("fwd" / "bwd") kernels take: one tile row's width squared."""
    return CONFIGS[(kind, is_complex)].T ** 2


def _launch(kernel, grid, args, meta):
    if _LAUNCH_HOOK is not None:
        _LAUNCH_HOOK(kernel, grid, args, meta)
    else:
        kernel[grid](*args, **meta)


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """Contiguous and 16-byte aligned: the kernels are compiled for aligned pointers only (one
    specialisation per dtype), so a view with an odd storage offset is copied."""
    t = t.contiguous()
    return t if t.data_ptr() % 16 == 0 else t.clone()


def _meta(kind: str, is_complex: bool, n: int):
    """(T, BLOCK_M, the kernel's meta-parameters) for frames of size n."""
    cfg = CONFIGS[(kind, is_complex)]
    t, block_m = cfg.tile(n)
    return t, block_m, dict(T=t, LOGT=_lg(t), BLOCK_M=block_m, IS_COMPLEX=is_complex,
                            K=4 if is_complex else 2, num_warps=cfg.num_warps)


def _run_forward(x: torch.Tensor, coef: torch.Tensor, steps, n: int, m: int, is_complex: bool,
                 out_dtype: torch.dtype) -> torch.Tensor:
    """Apply ``steps`` to the m frames in x (contiguous (m, n) or (m, n, 2)); out has out_dtype."""
    t, block_m, meta = _meta("fwd", is_complex, n)
    launches = launch_plan(steps, n, t)
    # Several launches: everything in fp32 (one kernel per dtype pair: fp32->fp32, bf16->bf16).
    final_dtype = out_dtype if len(launches) == 1 else torch.float32
    if x.dtype != final_dtype:
        x = x.float()
    cur = x
    for i, ln in enumerate(launches):
        if cur is not x:
            out = cur  # in place on our own fp32 intermediate: each program reads its tile first
        else:
            out = torch.empty(x.shape, dtype=final_dtype, device=x.device)
        rows = -(-m // ln.frames_per_row)
        grid = (triton.cdiv(rows, block_m), ln.n_ab)
        _launch(_bfly_fwd_kernel, grid,
                (cur, out, _tile_coefficients(coef, ln), _steps_tensor(ln, x.device), m, len(ln.steps),
                 *_geometry_args(ln)), meta)
        cur = out
    if cur.dtype != out_dtype:
        cur = cur.to(out_dtype)
    return cur


def _bwd_programs(device, rows_blocks: int, n_ab: int) -> int:
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        target = _BWD_PROGRAMS_PER_SM * sms
    else:
        target = 4
    return max(1, min(rows_blocks, -(-target // n_ab)))


def _part_to_coef(part: torch.Tensor, ln: Launch) -> torch.Tensor:
    """(programs, n_ab, steps, K, T) partial sums -> (steps, K, N) coefficient gradients."""
    s = part.sum(0)
    n_ab, nsteps, k, t = s.shape
    n = ln.n
    if ln.kind == "packed":
        return s[0].reshape(nsteps, k, t // n, n).sum(2)
    if ln.kind == "low":
        return s.permute(1, 2, 0, 3).reshape(nsteps, k, n)
    c, _, bb = ln.geometry
    return s.reshape(n_ab, nsteps, k, c, bb).permute(1, 2, 3, 0, 4).reshape(nsteps, k, n)


def _run_backward(grad, x, coef, steps, n: int, m: int, is_complex: bool):
    """Gradients at x and at the coefficients (steps order: (len(steps), K, N))."""
    t, block_m, meta = _meta("bwd", is_complex, n)
    kdim = meta["K"]
    chunks = launch_plan(steps, n, t, BWD_CHUNK)
    x_dtype = x.dtype
    if len(chunks) > 1 and x.dtype != torch.float32:
        x, grad = x.float(), grad.float()  # intermediates are fp32: one kernel per dtype
    acts = [x]
    for ch in chunks[:-1]:
        acts.append(_run_forward(acts[-1], coef, ch.steps, n, m, is_complex, torch.float32))
    g = grad
    per_chunk = []
    for i in range(len(chunks) - 1, -1, -1):
        ch = chunks[i]
        gx = torch.empty(x.shape, dtype=x.dtype if i == 0 else torch.float32, device=x.device)
        rows = -(-m // ch.frames_per_row)
        rblocks = triton.cdiv(rows, block_m)
        progs = _bwd_programs(x.device, rblocks, ch.n_ab)
        part = torch.zeros((progs, ch.n_ab, len(ch.steps), kdim, t), dtype=torch.float32, device=x.device)
        _launch(_bfly_bwd_kernel, (progs, ch.n_ab),
                (acts[i], g, gx, _tile_coefficients(coef, ch), part, _steps_tensor(ch, x.device), m,
                 len(ch.steps), progs,
                 *_geometry_args(ch)), meta)
        per_chunk.append(_part_to_coef(part, ch))
        g = gx
    dsteps = torch.cat(per_chunk[::-1])
    if g.dtype != x_dtype:
        g = g.to(x_dtype)
    return g, dsteps


def _check_op_args(x: torch.Tensor, twiddle: torch.Tensor):
    is_complex = twiddle.dim() == 6
    if is_complex:
        if x.dim() != 3 or x.shape[-1] != 2 or x.dtype != torch.float32 or twiddle.dtype != torch.float32:
            raise ValueError(
                "kfrontend::butterfly_multiply with a complex twiddle (nblocks, log2 N, N/2, 2, 2, 2) "
                f"(view_as_real) needs x of shape (M, N, 2) float32; got x {tuple(x.shape)} {x.dtype}, "
                f"twiddle {twiddle.dtype}")
    else:
        if x.dim() != 2 or x.dtype not in (torch.float32, torch.bfloat16) or twiddle.dtype != torch.float32:
            raise ValueError(
                "kfrontend::butterfly_multiply with a real twiddle (nblocks, log2 N, N/2, 2, 2) float32 "
                f"needs x of shape (M, N) float32 or bfloat16; got x {tuple(x.shape)} {x.dtype}, "
                f"twiddle {tuple(twiddle.shape)} {twiddle.dtype}")
    n = x.shape[1]
    if twiddle.dim() < 5 or 2 * twiddle.shape[2] != n or twiddle.shape[1] != _lg(n) or n < 2 or n & (n - 1):
        raise ValueError(f"twiddle {tuple(twiddle.shape)} does not match x {tuple(x.shape)}")
    return n, is_complex


# --------------------------------------------------------------------------------------------
# torch.library ops
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("kfrontend::butterfly_multiply", mutates_args=())
def butterfly_multiply_op(x: torch.Tensor, twiddle: torch.Tensor, increasing_stride: bool) -> torch.Tensor:
    """Butterfly product of real tensors.  x: (M, N) float32/bfloat16 with twiddle
    (nblocks, log2 N, N/2, 2, 2) float32, or complex as view_as_real: x (M, N, 2), twiddle
    (nblocks, log2 N, N/2, 2, 2, 2), both float32.  Returns x's shape and dtype."""
    n, is_complex = _check_op_args(x, twiddle)
    m = x.shape[0]
    if m == 0:
        return torch.empty_like(x, memory_format=torch.contiguous_format)
    with _device_guard(x):
        coef = _coef_from_twiddle(twiddle.detach(), increasing_stride, is_complex)
        steps = all_steps(n, twiddle.shape[0], increasing_stride)
        return _run_forward(_aligned(x), coef, steps, n, m, is_complex, x.dtype)


@butterfly_multiply_op.register_fake
def _(x, twiddle, increasing_stride):
    _check_op_args(x, twiddle)
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("kfrontend::butterfly_multiply_backward", mutates_args=())
def butterfly_multiply_backward_op(
    grad: torch.Tensor, x: torch.Tensor, twiddle: torch.Tensor, increasing_stride: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of :func:`butterfly_multiply_op` at x (x's dtype) and at twiddle (float32)."""
    n, is_complex = _check_op_args(x, twiddle)
    m = x.shape[0]
    if m == 0:
        return torch.zeros_like(x), torch.zeros_like(twiddle)
    nblocks = twiddle.shape[0]
    with _device_guard(x):
        coef = _coef_from_twiddle(twiddle.detach(), increasing_stride, is_complex)
        steps = all_steps(n, nblocks, increasing_stride)
        gx, dsteps = _run_backward(_aligned(grad.to(x.dtype)), _aligned(x), coef, steps, n, m, is_complex)
        # Steps are in application order; their factor indices are 0..nblocks*log2N-1 in that order.
        dtw = _twiddle_grad_from_coef(dsteps, twiddle.shape, increasing_stride, is_complex)
    return gx, dtw


@butterfly_multiply_backward_op.register_fake
def _(grad, x, twiddle, increasing_stride):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(twiddle, memory_format=torch.contiguous_format))


def _setup_context(ctx, inputs, output):
    x, twiddle, increasing_stride = inputs
    ctx.save_for_backward(x, twiddle)
    ctx.increasing_stride = increasing_stride


def _backward(ctx, grad):
    x, twiddle = ctx.saved_tensors
    gx, gtw = butterfly_multiply_backward_op(grad, x, twiddle, ctx.increasing_stride)
    return gx, gtw, None


butterfly_multiply_op.register_autograd(_backward, setup_context=_setup_context)


def _no_double_backward(ctx, *grads):
    raise RuntimeError(
        "second-order gradients through the Triton butterfly kernel are not implemented: use "
        "backend='torch', 'blocked' or 'dense' (plain torch ops on any device) for gradient penalties, "
        "MAML and other double backward passes")


def _setup_nothing(ctx, inputs, output):
    pass


# Without this the backward op's outputs would carry no graph and a double backward would see the
# input as unused (or, with allow_unused=True, return None): refuse it where it happens instead.
butterfly_multiply_backward_op.register_autograd(_no_double_backward, setup_context=_setup_nothing)


# --------------------------------------------------------------------------------------------
# Public entry point (complex / dtype plumbing around the real-valued op)
# --------------------------------------------------------------------------------------------


def butterfly_multiply_triton(x: torch.Tensor, twiddle: torch.Tensor, increasing_stride: bool = True):
    """``butterfly_multiply(..., backend="triton")``: same conventions, dtypes and results."""
    n, _, _ = check_butterfly_args(x, twiddle)
    if not supports(x, twiddle):
        raise TypeError(
            "backend='triton' computes in float32: x must be float32, bfloat16, float16 or complex64 "
            f"and twiddle float32 or complex64; got x {x.dtype}, twiddle {twiddle.dtype} "
            "(use backend='torch' for double precision)")
    if x.device.type != "cuda" and not (_is_interpreted() or _LAUNCH_HOOK is not None):
        raise ValueError(
            f"backend='triton' needs CUDA tensors (x is on {x.device}); on CPU it runs only under the "
            "Triton interpreter (TRITON_INTERPRET=1 set before kfrontend.kernels is imported)")
    is_complex = x.is_complex() or twiddle.is_complex()
    if (torch.is_grad_enabled() and (x.requires_grad or twiddle.requires_grad)
            and n > max_size("bwd", is_complex)):
        # Refused here, not at .backward(): the backward tiles are narrower than the forward's.
        raise ValueError(
            f"backend='triton' backward supports N up to {max_size('bwd', is_complex)} "
            f"({'complex' if is_complex else 'real'}); got N = {n} with gradients wanted: use "
            f"backend='dense' or 'torch', or run under torch.no_grad() (forward up to "
            f"N = {max_size('fwd', is_complex)})")
    batch_shape = x.shape[:-1]
    out_dtype = output_dtype(x, twiddle)
    # Conjugate / negative views (x.conj(), .imag of one) are lazy bits the raw kernel would not
    # see, and view_as_real refuses them: materialise them first.
    x, twiddle = x.resolve_conj().resolve_neg(), twiddle.resolve_conj().resolve_neg()
    if is_complex:
        xc = x.to(torch.complex64).reshape(-1, n)
        y = butterfly_multiply_op(torch.view_as_real(xc), torch.view_as_real(twiddle.to(torch.complex64)),
                                  increasing_stride)
        y = torch.view_as_complex(y)
    else:
        xr = x.reshape(-1, n)
        if xr.dtype == torch.float16:
            xr = xr.float()  # bfloat16 is native; float16 goes through float32
        y = butterfly_multiply_op(xr, twiddle, increasing_stride)
    return y.to(out_dtype).reshape(*batch_shape, n)
