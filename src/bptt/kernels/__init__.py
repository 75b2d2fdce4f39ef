"""The fast backend, and which implementation runs: the C the install compiled (``"c"``, the
default where it built kernels this CPU runs) or the readable reference (``"reference"``:
``bptt.cells`` with ``bptt.reference``).

``bptt.kernels.use("reference")`` (or ``BPTT_KERNELS=reference``, ``--kernels reference``) runs
the reference; ``use("c")`` goes back. The C is ``recurrence.c`` with the templates it includes
once per element type (``cells.c``, ``threaded.c``), compiled when bptt was installed, for the
best instruction set this CPU has (``library.py``; ``isa()`` says which); ``passes.py`` plans
its whole passes and says which passes it takes (``passes.supports``). Every result is the same
up to rounding, and the exactness tests run both.

At B > 1 a pass (with or without lengths) runs its steps in one call on ``threads()`` threads
(the default: every CPU this process may use; ``use("c", threads=n)``, ``BPTT_THREADS=n``):
the caller and workers started on first use and kept (kept off the caller's CPU only where
asked, ``use(..., pin=True)``), each with its share of the hidden units and of the weights,
which it packs at the pass's start, and with each step's products in its own tile kernel
instead of BLAS (``threaded.c``): forward, the input projection and the recurrent product,
each tile handed to the cell while it is in cache; backward, the recurrent product and dx, and
after the steps the parameter gradients, each thread those of its units. A training step of a
layer then calls no BLAS at all. One pass at a time uses the workers; a pass started
meanwhile from another Python thread runs on its own thread.

In a loop that also calls BLAS between passes (a model's output layer, the optimizer),
OpenBLAS's workers spin for about 0.1 s after each multithreaded call and take a core from
these threads on a 2-core machine: 60 updates of ``bptt train`` took 5.7 s on 2 threads with
BLAS left alone, 3.6 s with BLAS on one thread, which is what a ``Trainer`` step, ``bptt
train`` and ``bptt task`` do (``bptt.training.threads``); in your own loop,
``threadpoolctl.threadpool_limits(1)`` or ``OPENBLAS_NUM_THREADS=1``. docs/performance.md has
the measurements.
"""

import ctypes
import os

from ..checks import is_integer
from .library import KernelsUnavailable
from .plan import CompiledCell

NAMES = ("reference", "c")

# a pass of fewer steps runs on the reference: planning a pass costs ~0.1 ms, more than a few
# of its steps (``bptt sample`` runs one step per call)
MIN_STEPS = 8

_selected = {"name": None, "library": None, "isa": None, "threads": None, "pin": False}


def use(name, threads=None, pin=None):
    """Select the implementation the engine runs from now on: ``"reference"`` or ``"c"``, and, where
    ``threads`` is given, how many threads the compiled passes run on (see :func:`threads`).
    ``pin=True`` lets the passes' worker threads change their CPU affinity, to keep off the
    caller's CPU (after an idle spell Linux at times wakes a worker onto the caller's CPU, and
    the two share it until one is moved); off by default, since a library does not touch its
    user's threads unasked (``bptt train`` and ``bptt task`` ask: they own their process).
    ``pin=False`` gives the workers back every CPU of the process at the next pass.

    Selecting ``"c"`` loads the library at once, so that kernels the install could not build
    are reported here and not in the middle of a pass. Raises KernelsUnavailable then, and
    ValueError for an unknown name or a thread count that is not a positive integer.
    """
    if name not in NAMES:
        raise ValueError(f"expected kernels {' or '.join(map(repr, NAMES))} but got {name!r}")
    if threads is not None:
        _selected["threads"] = _thread_count(threads, "threads")
    library, isa_loaded = None, None
    if name == "c":
        from .library import load

        library, isa_loaded = (_selected["library"], _selected["isa"]) if _selected["library"] else load()
    if pin is not None:
        _selected["pin"] = bool(pin)
    if library is not None:
        library.set_pinning(ctypes.c_int64(_selected["pin"]))
    _selected.update(name=name, library=library, isa=isa_loaded)


def pinned():
    """Whether the compiled passes' workers may be kept off the caller's CPU (``use(pin=)``)."""
    return _selected["pin"]


def isa():
    """The instruction set of the compiled kernels in use (``"avx512"``, ``"avx2"``,
    ``"portable"``), or None while the reference runs."""
    return _selected["isa"] if selected() == "c" else None


def selected():
    """The name of the implementation in use: as ``use`` or ``BPTT_KERNELS`` chose, else ``"c"``
    where the install built compiled kernels this CPU runs, else ``"reference"``."""
    if _selected["name"] is None:
        from .library import choose

        name = os.environ.get("BPTT_KERNELS") or ("c" if choose() is not None else "reference")
        if name not in NAMES:
            raise ValueError(f"expected BPTT_KERNELS to be {' or '.join(map(repr, NAMES))} but got {name!r}")
        use(name)
    return _selected["name"]


def _thread_count(value, what, shown=None):
    """``value`` as a thread count, or a ValueError that shows ``shown`` (else ``value``)."""
    if not is_integer(value, 1):
        raise ValueError(f"expected {what} to be a positive integer but got {value if shown is None else shown!r}")
    return int(value)


def threads():
    """The threads of the compiled passes at B > 1: as :func:`use` set it, else
    ``$BPTT_THREADS``, else every CPU this process may use."""
    if _selected["threads"] is None:
        text = os.environ.get("BPTT_THREADS") or str(cpus())
        value = int(text) if text.strip().isdigit() else text
        _selected["threads"] = _thread_count(value, "BPTT_THREADS", shown=text)
    return _selected["threads"]


def cpus():
    """The CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def info():
    """What runs here: ``{"kernels", "isa", "built", "runnable", "threads", "cpus"}``: the
    kernels selected, the instruction set of the compiled ones loaded (None with the reference), the
    variants the install built and those this CPU runs, the threads of the compiled passes, and
    the CPUs this process may use."""
    from . import library

    name = selected()
    return {
        "kernels": name,
        "isa": isa(),
        "built": library.built(),
        "runnable": [variant for variant in library.built() if library.runnable(variant)],
        "threads": threads(),
        "cpus": cpus(),
    }


def compiled(cell, dtype, steps):
    """The compiled kernels of ``cell`` (a module of ``bptt.cells``) for a pass of ``steps``
    steps in ``dtype``, or None where the reference runs: it is selected, the pass is shorter
    than ``MIN_STEPS``, or the dtype is neither float32 nor float64."""
    if selected() != "c" or steps < MIN_STEPS:
        return None
    return CompiledCell.of(_selected["library"], cell, dtype)


__all__ = ["KernelsUnavailable", "MIN_STEPS", "NAMES", "compiled", "info", "isa", "pinned", "selected",
           "threads", "use"]
