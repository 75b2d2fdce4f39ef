"""A machine without a C compiler installs bptt and runs the reference: the backend's
extensions are optional, so the install succeeds with none of them, and the engine runs every
pass on ``bptt.reference``."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUN = """
import numpy as np, bptt
from bptt import kernels
assert bptt.__file__.startswith({target!r}), bptt.__file__
assert kernels.selected() == "reference" and kernels.info()["built"] == [], kernels.info()
model = bptt.LSTM(3, 4, dtype=np.float64, seed=0)
x = np.random.default_rng(0).normal(size=(9, 2, 3))
y, state, cache = model.forward(x, lengths=[9, 5])
grads, dx, dstate = model.backward(cache, np.ones_like(y))
assert type(cache.stack.caches[0][0]).__module__ == "bptt.reference" and np.isfinite(dx).all()
print("reference ran")
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the compiler is hidden through CC and PATH, as on Linux")
def test_an_install_without_a_compiler_runs_the_reference(tmp_path):
    source, target = tmp_path / "source", tmp_path / "site"
    # the sources alone: no build folder, no extension an earlier install compiled into src/
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.so", "*.egg-info",
                                                                "__pycache__", ".pytest_cache", ".hypothesis", "runs"))
    env = {**os.environ, "CC": "/nonexistent/cc", "CXX": "/nonexistent/c++", "PATH": str(pathlib.Path(sys.executable).parent)}
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(source)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr
    assert not list((target / "bptt" / "kernels").glob("_kernels_*"))  # no extension was built
    run = subprocess.run([sys.executable, "-c", RUN.format(target=str(target))], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(target), "BPTT_KERNELS": ""})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "reference ran"
