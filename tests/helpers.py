"""Small helpers shared by the test modules (tests/ is on sys.path under pytest's rootdir conftest)."""
import contextlib

import torch


@contextlib.contextmanager
def default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def deterministic_twiddle_grads(x, tw, g, runs: int) -> list:
    """Twiddle gradients of ``runs`` Triton butterfly products of x (output gradient g) under
    ``torch.use_deterministic_algorithms(True)``, for run-to-run comparison."""
    from kfrontend.functional import butterfly_multiply

    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        grads = []
        for _ in range(runs):
            t = tw.clone().requires_grad_()
            butterfly_multiply(x, t, True, backend="triton").backward(g)
            grads.append(t.grad)
    finally:
        torch.use_deterministic_algorithms(prev)
    return grads
