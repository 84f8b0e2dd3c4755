"""Test configuration.

Without a GPU the Triton kernels run in the interpreter: ``TRITON_INTERPRET`` must be set before any
``@triton.jit`` function is created, i.e. before ``kfrontend.kernels`` is imported, so it is set here.
"""
import os
import random
from pathlib import Path

import numpy as np
import pytest

try:
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except Exception:  # pragma: no cover
    _HAS_CUDA = False

if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATA = SHARED / "data"
TIMIT_SAMPLE = SHARED_DATA / "timit-sample"
SPHERE_DIR = SHARED_DATA / "sphere"


@pytest.fixture
def timit_sample() -> Path:
    """The real TIMIT sample in ``../shared/data`` (skipped cleanly where it is absent)."""
    if not TIMIT_SAMPLE.is_dir():
        pytest.skip(f"real TIMIT sample not found at {TIMIT_SAMPLE}")
    return TIMIT_SAMPLE


@pytest.fixture
def sphere_dir() -> Path:
    if not SPHERE_DIR.is_dir():
        pytest.skip(f"NIST SPHERE sample not found at {SPHERE_DIR}")
    return SPHERE_DIR


SEED = 0


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Seed torch's, numpy's and Python's global generators before each test *and its fixtures* are
    set up (a fixture or test that draws without its own generator -- ``torch.randn(...)``,
    a module's random init -- then sees the same numbers whether it runs alone, in the whole suite
    or in another order, so a failure is reproducible).  Tests that need independent draws pass
    their own ``torch.Generator``."""
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    random.seed(SEED)


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        # the marker, not ``"cuda" in item.keywords``: keywords also hold parametrize ids, so a
        # CPU case with the id "cuda" (a device name as data) was skipped silently
        if item.get_closest_marker("cuda") is not None and not _HAS_CUDA:
            item.add_marker(skip_cuda)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for modules of many small matmuls: on a loaded 2-core machine two BLAS
    threads contend with the other jobs and run them 3-5x slower than one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
