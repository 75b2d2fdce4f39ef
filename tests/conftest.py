"""Shared test setup: float64 torch, fixed seeds."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_default_dtype(torch.float64)


@pytest.fixture
def rng():
    return np.random.default_rng(20261124)
