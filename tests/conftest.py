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
