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
