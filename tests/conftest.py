"""Shared test setup: torch in float64 where it is installed, fixed seeds."""

import numpy as np
import pytest

try:
    import torch
except ImportError:  # the tests that need torch import it with pytest.importorskip
    torch = None
else:
    torch.set_default_dtype(torch.float64)


@pytest.fixture
def rng():
    return np.random.default_rng(20261124)


@pytest.fixture(params=["numpy", "c"])
def each_kernels(request):
    """Runs a test once with the NumPy cells and once with the compiled ones (bptt.kernels)."""
    from bptt import kernels
    from bptt.kernels.build import find_compiler

    if request.param == "c" and find_compiler() is None:
        pytest.skip("no C compiler here for the compiled kernels")
    kernels.use(request.param)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(kernels, "MIN_STEPS", 1)  # short test sequences run the compiled path too
            yield request.param
    finally:
        kernels.use("numpy")
