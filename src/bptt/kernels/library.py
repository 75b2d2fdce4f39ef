"""Load the compiled kernels that the install built, for the best instruction set this CPU has.

``pip install`` (``setup.py``) compiles ``recurrence.c`` (which includes the templates
``cells.c`` and ``threaded.c`` once per element type) once per instruction set into
``_kernels_<variant>`` next to this file: ``avx512`` (x86-64-v4), ``avx2`` (x86-64-v3, with FMA)
and ``portable`` (the compiler's baseline, which also builds on ARM). Each is optional: without
a compiler at install, or for a variant the compiler cannot target, nothing is built and the
reference runs. Nothing is compiled at run time.

``$BPTT_ISA`` (a variant name) asks for one variant: to compare them, or to step down from
the CPU's best.
"""

import ctypes
import os
import platform
import sysconfig
from pathlib import Path

VARIANTS = ("avx512", "avx2", "portable")  # best first
# what each variant's -march assumes of the CPU, as Linux names the flags in /proc/cpuinfo
REQUIRES = {
    "avx512": {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx2", "fma", "bmi2"},
    "avx2": {"avx2", "fma", "bmi1", "bmi2", "f16c", "movbe"},
    "portable": set(),
}


class KernelsUnavailable(RuntimeError):
    """The compiled kernels were asked for and are not built or cannot run here."""


def path_of(variant):
    """Where the install puts the library of ``variant``."""
    return Path(__file__).with_name(f"_kernels_{variant}{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}")


def cpu_flags():
    """The instruction-set flags of this CPU as Linux reports them; empty elsewhere."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return set()
    for line in lines:
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def runnable(variant, flags=None):
    """Whether this CPU runs ``variant``: its flags, and x86 for the x86 variants."""
    if variant == "portable":
        return True
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return REQUIRES[variant] <= (cpu_flags() if flags is None else flags)


def built():
    """The variants the install built, best first."""
    return [variant for variant in VARIANTS if path_of(variant).exists()]


def choose(flags=None):
    """The variant to load: ``$BPTT_ISA`` if set, else the best built one this CPU runs, or
    None. Raises KernelsUnavailable for a ``$BPTT_ISA`` that is unknown, not built, or not
    runnable here."""
    asked = os.environ.get("BPTT_ISA")
    if asked:
        if asked not in VARIANTS:
            raise KernelsUnavailable(f"expected $BPTT_ISA to be one of {', '.join(VARIANTS)} but got {asked!r}")
        if not path_of(asked).exists():
            raise KernelsUnavailable(f"$BPTT_ISA={asked}: that variant was not built when bptt was installed "
                                     f"(built: {', '.join(built()) or 'none'})")
        if not runnable(asked, flags):
            raise KernelsUnavailable(f"$BPTT_ISA={asked}: this CPU lacks its instructions")
        return asked
    return next((variant for variant in built() if runnable(variant, flags)), None)


def load():
    """The compiled kernels as a ``ctypes.CDLL`` and the variant loaded.

    Raises KernelsUnavailable, saying why, where none was built or none runs here.
    """
    variant = choose()
    if variant is None:
        raise KernelsUnavailable(
            "the compiled kernels were not built when bptt was installed (no C compiler then, or none that "
            "could build them): install a C compiler and reinstall bptt, or use the reference (--kernels reference)"
        )
    try:
        return ctypes.CDLL(str(path_of(variant))), variant
    except OSError as error:
        raise KernelsUnavailable(f"could not load the compiled kernels {path_of(variant)}: {error}") from error
