"""CUDA checks of the Triton butterfly kernel (skipped without a GPU; run by benchmarks/gpu_check.sh).

Same tolerance as tests/test_kernel.py: max |kernel - reference| <= 1e-4 * max |reference| for
fp32 / complex64 outputs and both gradients; the reference is the stage-by-stage PyTorch
implementation run in float64 on the same device.
"""
from __future__ import annotations

import pytest
import torch

from helpers import deterministic_twiddle_grads
from kfrontend.functional import butterfly_multiply, butterfly_multiply_reference
from kfrontend.layers import twiddle_init

pytestmark = pytest.mark.cuda
RTOL = 1e-4
DEV = "cuda"


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def make(n, nblocks, complex_, batch, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    tw = twiddle_init((nblocks, n.bit_length() - 1, n // 2, 2, 2), "randn", complex_, generator=gen)
    x = torch.randn(*batch, n, generator=gen)
    if complex_:
        x = torch.complex(x, torch.randn(x.shape, generator=gen))
    return x.to(DEV, torch.complex64 if complex_ else dtype), tw.to(DEV)


def check(x, tw, inc, backend="triton", rtol=RTOL):
    x = x.detach().requires_grad_()
    tw = tw.detach().requires_grad_()
    y = butterfly_multiply(x, tw, inc, backend=backend)
    x64 = x.detach().to(torch.complex128 if x.is_complex() else torch.float64).requires_grad_()
    tw64 = tw.detach().to(torch.complex128 if tw.is_complex() else torch.float64).requires_grad_()
    ref = butterfly_multiply_reference(x64, tw64, inc)
    assert y.device.type == "cuda"
    assert rel_err(y.to(ref.dtype), ref) <= rtol
    g = torch.randn(y.shape, dtype=y.dtype, device=DEV)
    gx, gtw = torch.autograd.grad(y, (x, tw), g)
    rx, rtw = torch.autograd.grad(ref, (x64, tw64), g.to(ref.dtype))
    assert rel_err(gx.to(rx.dtype), rx) <= rtol
    assert rel_err(gtw.to(rtw.dtype), rtw) <= rtol


@pytest.mark.parametrize("n", [2**k for k in range(1, 14)])  # 2 .. 8192 (8192 chunks)
@pytest.mark.parametrize("complex_", [False, True])
def test_matches_reference(n, complex_):
    for nblocks, inc in [(1, True), (2, False), (3, True), (4, False)]:
        batch = (2, 333) if n <= 1024 else (37,)
        x, tw = make(n, nblocks, complex_, batch, seed=n + nblocks)
        check(x, tw, inc)


@pytest.mark.parametrize("complex_", [False, True])
def test_public_auto_backend(complex_):
    """butterfly_multiply(..., backend="auto") on CUDA tensors (the multiplied-out product and a
    cuBLAS matmul until kfrontend.kernels.CUDA_VERIFIED, then the Triton kernel)."""
    for n in (16, 512, 4096):
        x, tw = make(n, 2, complex_, (3, 50), seed=n)
        check(x, tw, True, backend="auto")


def test_auto_does_not_launch_the_unverified_kernel(monkeypatch):
    from kfrontend import kernels
    from kfrontend.kernels import butterfly as kb

    if kernels.CUDA_VERIFIED:
        pytest.skip("the kernel is verified: auto uses it")

    def refuse(*a):
        raise AssertionError("backend='auto' launched the Triton kernel")

    monkeypatch.setattr(kb, "_LAUNCH_HOOK", refuse)
    x, tw = make(512, 2, True, (4,), seed=3)
    check(x, tw, True, backend="auto")
    from kfrontend import KaleidoscopeFrontend

    fe = KaleidoscopeFrontend.from_melspectrogram(n_fft=400, hop_length=160, n_mels=40).to(DEV)
    fe(torch.randn(2, 4000, device=DEV)).sum().backward()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_kernel_runs_on_the_tensors_device():
    """Launched from a cuda:0 context on cuda:1 tensors: the device guard sends it to cuda:1."""
    with torch.cuda.device(0):
        x, tw = make(256, 2, True, (8,), seed=4)
        check(x.to("cuda:1"), tw.to("cuda:1"), True)


def test_noncontiguous_and_unaligned():
    x, tw = make(256, 2, False, (64,), seed=1)
    wide = torch.randn(64, 512, device=DEV)
    check(wide[:, ::2], tw, True)  # strided columns
    check(wide.t()[:256].t(), tw, False)  # column-major rows
    flat = torch.randn(64 * 256 + 1, device=DEV)
    check(flat[1:].view(64, 256), tw, True)  # storage offset of 4 bytes: not 16-byte aligned
    xc, twc = make(256, 1, True, (3, 64), seed=2)
    check(xc.transpose(0, 1), twc, False)


def test_bfloat16():
    for n in (64, 1024, 8192):
        x, tw = make(n, 2, False, (5, 40), seed=n, dtype=torch.bfloat16)
        x.requires_grad_()
        tw.requires_grad_()
        y = butterfly_multiply(x, tw, True, backend="triton")
        assert y.dtype == torch.bfloat16
        ref = butterfly_multiply_reference(x.detach().double(), tw.detach().double(), True)
        assert rel_err(y.double(), ref) <= 2**-8
        y.float().sum().backward()
        assert x.grad.dtype == torch.bfloat16 and tw.grad.dtype == torch.float32


def test_large_batch():
    x, tw = make(512, 2, True, (200_000,), seed=7)
    y = butterfly_multiply(x, tw, False, backend="triton")
    ref = butterfly_multiply_reference(x, tw, False)
    assert rel_err(y, ref) <= RTOL


def test_deterministic():
    x, tw = make(1024, 2, True, (20_000,), seed=3)
    g = torch.randn(x.shape, dtype=x.dtype, device=DEV)
    grads = deterministic_twiddle_grads(x, tw, g, 3)
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[0], grads[2])


@pytest.mark.parametrize("complex_", [False, True])
def test_opcheck(complex_):
    from kfrontend.kernels import butterfly as kb

    x, tw = make(64, 2, complex_, (7,), seed=2)
    if complex_:
        x, tw = torch.view_as_real(x), torch.view_as_real(tw)
    torch.library.opcheck(kb.butterfly_multiply_op, (x.requires_grad_(), tw.requires_grad_(), True))


def test_torch_compile_inductor():
    x, tw = make(512, 2, True, (8, 100), seed=9)

    def f(x, tw):
        return (butterfly_multiply(x, tw, True).abs() ** 2).sum()

    compiled = torch.compile(f, fullgraph=True)
    t1, t2 = tw.clone().requires_grad_(), tw.clone().requires_grad_()
    l1, l2 = compiled(x, t1), f(x, t2)
    l1.backward()
    l2.backward()
    assert rel_err(l1, l2) <= RTOL and rel_err(t1.grad, t2.grad) <= RTOL
