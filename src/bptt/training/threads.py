"""The thread policy of training with the compiled kernels, in the library so that a
:class:`~bptt.training.trainer.Trainer` driven from Python gets it as ``bptt train`` does.

Between the compiled passes a training step calls BLAS (the output layer, the embedding's
gradient), and OpenBLAS's workers keep spinning after each call, taking the cores from the
passes' threads: 60 updates of ``bptt train``'s default model took 5.3 s on one thread, 5.7 s
on two, 3.6 s on two with BLAS on one. So while the passes run on more than one thread, BLAS is
held to one (threadpoolctl; without it BLAS keeps its threads).
"""

import contextlib
import functools
import os

from .. import kernels


def training_threads(requested=None):
    """Set the compiled passes' threads for a training process: ``requested``, else
    ``$BPTT_THREADS``, else every CPU this process may use where threadpoolctl can hold BLAS to
    one thread meanwhile, else one (its workers kept off the caller's CPU: the process is the
    trainer's). Returns a context manager that holds BLAS to one thread
    for the whole of a training loop, and a line saying where the passes run; ``(nullcontext,
    None)`` on the reference.

    Raises ValueError for a count that is not a positive integer, or one given with the reference
    kernels selected.
    """
    if requested is not None and requested < 1:
        raise ValueError(f"expected --threads to be a positive integer but got {requested}")
    if kernels.selected() != "c":
        if requested is not None:
            raise ValueError("--threads sets the threads of the compiled passes: give --kernels c with it")
        return contextlib.nullcontext(), None
    controller = _controller()
    if requested is not None:
        threads = requested
    elif controller is None and not os.environ.get("BPTT_THREADS"):
        threads = 1  # BLAS cannot be held: its spinning workers would take the cores from the passes
    else:
        threads = kernels.threads()  # $BPTT_THREADS, else every CPU
    kernels.use("c", threads=threads, pin=True)
    if threads == 1:
        return contextlib.nullcontext(), "compiled passes on 1 thread"
    if controller is None:
        return contextlib.nullcontext(), (f"compiled passes on {threads} threads; BLAS keeps its own, which take "
                                          "the cores from them (pip install threadpoolctl holds it to one)")
    return controller.limit(limits=1), f"compiled passes on {threads} threads, BLAS on 1"


def step_blas():
    """The context a training step runs in: BLAS held to one thread while the compiled passes
    run on more than one (where threadpoolctl is installed), else nothing."""
    controller = _controller()
    if controller is None or kernels.selected() != "c" or kernels.threads() < 2:
        return contextlib.nullcontext()
    return controller.limit(limits=1)


@functools.lru_cache(maxsize=1)
def _controller():
    """threadpoolctl's view of the thread pools loaded (found once: finding them again cost
    0.26 ms a step, limiting through it 0.007 ms), or None without threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()
