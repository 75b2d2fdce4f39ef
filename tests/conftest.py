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


@pytest.fixture(params=["reference", "c", "c-threads"])
def each_kernels(request):
    """Runs a test on the reference, on the compiled passes with one thread, and on three
    threads (so that they split H unevenly)."""
    from bptt import kernels
    from bptt.kernels.library import choose

    if request.param != "reference" and choose() is None:
        pytest.skip("the compiled kernels were not built at install (no C compiler then)")
    name, threads = ("reference", 1) if request.param == "reference" else ("c", 3 if request.param == "c-threads" else 1)
    before = kernels.selected(), kernels.threads()
    kernels.use(name, threads=threads)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(kernels, "MIN_STEPS", 1)  # short test sequences run the compiled path too
            yield request.param
    finally:
        kernels.use(before[0], threads=before[1])  # the defaults the other tests run with
