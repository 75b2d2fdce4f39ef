"""Which implementation runs the cells' elementwise step: NumPy (the default) or compiled C.

``bptt.kernels.use("c")`` (or ``BPTT_KERNELS=c`` in the environment) makes the engine call
``cells.c``, compiled on first use with the machine's C compiler (see ``build.py``); every
result is the same up to rounding, and the exactness tests run both. ``use("numpy")`` goes
back. The NumPy cells in ``bptt.cells`` stay the reference the documentation derives; the C
kernels are their arithmetic fused into one pass over memory per step, which brings the
engine to or under PyTorch's time in most cases measured (docs/performance.md).
"""

import os

from .build import KernelsUnavailable
from .plan import CompiledCell

NAMES = ("numpy", "c")

# a pass of fewer steps runs the NumPy cells: planning a pass costs ~0.1 ms, more than a few
# NumPy steps (``bptt sample`` runs one step per call)
MIN_STEPS = 8
# at B = 1 the recurrent product runs in C only where W_hh fits a core's L2 cache; a larger one
# OpenBLAS's two threads read faster (K*H x H = 2048 x 512 float32: 91 against 51 us)
MAX_VECTOR_PRODUCT_BYTES = 512 * 1024

_selected = {"name": None, "library": None}


def use(name):
    """Select the kernels the engine runs from now on: ``"numpy"`` or ``"c"``.

    Selecting ``"c"`` builds and loads the library at once, so that a missing compiler is
    reported here and not in the middle of a pass. Raises KernelsUnavailable then, and
    ValueError for an unknown name.
    """
    if name not in NAMES:
        raise ValueError(f"expected kernels {' or '.join(map(repr, NAMES))} but got {name!r}")
    library = None
    if name == "c":
        from .build import load

        library = _selected["library"] or load()
    _selected.update(name=name, library=library)


def selected():
    """The name of the kernels in use, ``"numpy"`` unless ``use`` or ``BPTT_KERNELS`` chose."""
    if _selected["name"] is None:
        name = os.environ.get("BPTT_KERNELS") or "numpy"
        if name not in NAMES:
            raise ValueError(f"expected BPTT_KERNELS to be {' or '.join(map(repr, NAMES))} but got {name!r}")
        use(name)
    return _selected["name"]


def compiled(cell, dtype, steps):
    """The compiled kernels of ``cell`` (a module of ``bptt.cells``) for a pass of ``steps``
    steps in ``dtype``, or None where NumPy runs: NumPy is selected, the pass is shorter than
    ``MIN_STEPS``, or the dtype is neither float32 nor float64."""
    if selected() != "c" or steps < MIN_STEPS:
        return None
    return CompiledCell.of(_selected["library"], cell, dtype)


__all__ = ["KernelsUnavailable", "MAX_VECTOR_PRODUCT_BYTES", "MIN_STEPS", "NAMES", "compiled", "selected", "use"]
