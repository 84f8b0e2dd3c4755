"""Combining K-matrix modules into one: products, Kronecker products, diagonal scalings.

Each function returns a new :class:`kfrontend.Butterfly` (twiddles copied, detached) whose map is
exactly the combination, so a chain of fixed or learned stages can be fused into one layer and
trained on from there.  Unsupported combinations (where padding, truncation, stacking, a bias or a
real part would make the result differ) raise a ValueError naming the argument.
"""
from __future__ import annotations

import torch

from kfrontend.constructions import _fold_input_diag, _fold_output_diag
from kfrontend.functional import block_is_increasing
from kfrontend.layers import Butterfly

__all__ = ["product", "kronecker", "scale"]


def _check_module(name: str, m) -> None:
    if not isinstance(m, Butterfly):
        raise TypeError(f"{name} must be a kfrontend Butterfly / Kaleidoscope, got {type(m).__name__}")


def _identity_blocks(like: torch.Tensor, nblocks: int) -> torch.Tensor:
    """``nblocks`` identity butterflies shaped like ``like`` (nstacks, *, log2 N, N/2, 2, 2)."""
    t = torch.zeros(like.shape[:1] + (nblocks,) + like.shape[2:], dtype=like.dtype, device=like.device)
    t[..., 0, 0] = 1
    t[..., 1, 1] = 1
    return t


def _new(template: Butterfly, in_f: int, out_f: int, tw: torch.Tensor, increasing: bool, real_output: bool,
         bias: torch.Tensor | None) -> Butterfly:
    m = Butterfly(in_f, out_f, bias=bias is not None, increasing_stride=increasing, nblocks=tw.shape[1],
                  size=tw.shape[-3] * 2, twiddle=tw, backend=template.backend, real_output=real_output)
    if bias is not None:
        with torch.no_grad():
            m.bias.copy_(bias)
    return m


def product(first: Butterfly, second: Butterfly) -> Butterfly:
    """One module equal to ``second(first(x))``: the twiddles concatenated along the blocks (with an
    identity block between them when ``second`` starts in the stride order ``first`` ends in, so the
    orders keep alternating).

    Needs ``first`` square on its size with no padding or truncation between the two
    (``first.in_features <= first.size == first.out_features == second.in_features == second.size``;
    ``first`` one stack, ``second`` any number), no bias on ``first`` (``second``'s is kept), and no
    real part taken in between (``first.real_output`` with complex twiddles).
    """
    _check_module("first", first)
    _check_module("second", second)
    n = first.size
    if not (first.out_features == n == second.in_features == second.size):
        raise ValueError(
            "product needs first.out_features == first.size == second.in_features == second.size (no "
            "truncation or padding between the two); got first (in, out, size) = "
            f"({first.in_features}, {first.out_features}, {first.size}), second = "
            f"({second.in_features}, {second.out_features}, {second.size})"
        )
    if first.bias is not None:
        raise ValueError("product: first has a bias, which cannot be folded into twiddles; build it with bias=False")
    if first.real_output and first.is_complex:
        raise ValueError("product: first takes the real part of a complex K-matrix (real_output), which is "
                         "not a K-matrix step; fold it last instead")
    t1, t2 = first.twiddle.detach(), second.twiddle.detach()
    dtype = torch.promote_types(t1.dtype, t2.dtype)
    t1, t2 = t1.to(dtype), t2.to(dtype)
    nstacks = t2.shape[0]
    last_increasing = block_is_increasing(t1.shape[1] - 1, first.increasing_stride)
    parts = [t1.expand(nstacks, *t1.shape[1:])]
    if second.increasing_stride == last_increasing:
        parts.append(_identity_blocks(t2, 1))
    tw = torch.cat(parts + [t2], dim=1)
    bias = None if second.bias is None else second.bias.detach()
    return _new(second, first.in_features, second.out_features, tw, first.increasing_stride,
                second.real_output, bias)


def kronecker(a: Butterfly, b: Butterfly) -> Butterfly:
    """The Kronecker product ``A (x) B`` (``torch.kron(A, B)``) as one module: for x of shape
    (..., n_a, n_b), ``kronecker(a, b)(x.flatten(-2)) == b`` applied along the last axis and ``a``
    along the one before, flattened.  B's factors act on the low index bits and A's on the high
    ones: an increasing block is B's factors then A's (a decreasing one the reverse), with B's
    twiddle repeated for every high index and A's for every low one.

    Needs both square on their size (no padding: it does not commute with flattening), one stack,
    no bias, the same ``increasing_stride`` and no ``real_output``; a shorter one is padded with
    identity blocks to the other's block count.
    """
    _check_module("a", a)
    _check_module("b", b)
    for name, m in (("a", a), ("b", b)):
        if not (m.in_features == m.out_features == m.size):
            raise ValueError(f"kronecker needs {name} square on its size (in_features == out_features == size), "
                             f"got ({m.in_features}, {m.out_features}, {m.size})")
        if m.bias is not None or m.real_output:
            raise ValueError(f"kronecker: {name} has a bias or real_output, which do not factor; build it without")
    if a.increasing_stride != b.increasing_stride:
        raise ValueError(f"kronecker needs the same increasing_stride, got a: {a.increasing_stride}, "
                         f"b: {b.increasing_stride}")
    ta, tb = a.twiddle.detach(), b.twiddle.detach()
    dtype = torch.promote_types(ta.dtype, tb.dtype)
    ta, tb = ta.to(dtype), tb.to(dtype)
    nb = max(ta.shape[1], tb.shape[1])
    ta = torch.cat((ta, _identity_blocks(ta, nb - ta.shape[1])), 1)
    tb = torch.cat((tb, _identity_blocks(tb, nb - tb.shape[1])), 1)
    na_, nb_ = a.size, b.size
    low = tb.repeat(1, 1, 1, na_, 1, 1)  # pair j = i_a * (n_b / 2) + j_b
    high = ta.repeat_interleave(nb_, dim=3)  # pair j = j_a * n_b + i_b
    blocks = []
    for k in range(nb):
        inc = block_is_increasing(k, a.increasing_stride)
        pair = (low[:, k], high[:, k]) if inc else (high[:, k], low[:, k])
        blocks.append(torch.cat(pair, dim=1))
    tw = torch.stack(blocks, dim=1)
    return _new(a, na_ * nb_, na_ * nb_, tw, a.increasing_stride, False, None)


def scale(module: Butterfly, input: torch.Tensor | None = None, output: torch.Tensor | None = None) -> Butterfly:
    """``diag(output) W diag(input)`` (and the bias scaled by ``output``) as one module: ``input``
    (in_features,) folded into the columns of every stack's first factor, ``output``
    (out_features,) into the rows of each stack's last factor.  Complex diagonals need a module
    without ``real_output`` (the real part does not commute with them)."""
    _check_module("module", module)
    tw = module.twiddle.detach().clone()
    n, nstacks = module.size, tw.shape[0]
    for name, d, length in (("input", input, module.in_features), ("output", output, module.out_features)):
        if d is None:
            continue
        if not isinstance(d, torch.Tensor) or d.shape != (length,):
            raise ValueError(f"{name} must be a tensor of shape ({length},), got "
                             f"{tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__}")
        if d.is_complex() and module.real_output:
            raise ValueError(f"{name} is complex but the module takes the real part (real_output)")
        tw = tw.to(torch.promote_types(tw.dtype, d.dtype))
    last_inc = block_is_increasing(tw.shape[1] - 1, module.increasing_stride)
    for k in range(nstacks):
        if input is not None:
            d = torch.ones(n, dtype=tw.dtype, device=tw.device)
            d[:module.in_features] = input
            _fold_input_diag(tw[k, 0, 0], d, n, module.increasing_stride)
        if output is not None:
            d = torch.ones(n, dtype=tw.dtype, device=tw.device)
            seg = output[k * n:(k + 1) * n]
            d[:len(seg)] = seg
            _fold_output_diag(tw[k, -1, -1], d, n, last_inc)
    bias = None if module.bias is None else module.bias.detach() * (1 if output is None else output)
    return _new(module, module.in_features, module.out_features, tw, module.increasing_stride,
                module.real_output, bias)
