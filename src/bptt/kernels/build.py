"""Compile the kernels (``recurrence.c``, which includes ``cells.c``) once per machine and load it.

The shared library is built with the machine's C compiler (``$CC``, else ``cc``, ``gcc``,
``clang``, else the one the ``fast`` extra installs, ``python -m ziglang cc``) for this very
CPU (``-march=native``), and kept in a cache folder under a name that hashes the source, the
compiler, the flags and the CPU, so that a changed source or another machine sharing the
folder gets its own build. The build is written under a temporary name and renamed into
place: two processes building at once, or a build killed halfway, leave no broken library.
"""

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# one translation unit: the file compiled includes the other
SOURCES = (Path(__file__).with_name("recurrence.c"), Path(__file__).with_name("cells.c"))
# -ffp-contract=fast: GCC fuses a * b + c into one FMA only when told to in ISO C mode (clang
# does by default); the tile's products and the activations' polynomials are chains of them
# (an LSTM cell's step took 1.89 ns an element without, 1.54 with)
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fno-trapping-math", "-fopenmp-simd", "-std=c11", "-shared",
         "-fPIC", "-pthread")


class KernelsUnavailable(RuntimeError):
    """The compiled kernels were asked for and cannot be built or loaded here."""


def cache_dir():
    """``$BPTT_CACHE_DIR``, else ``$XDG_CACHE_HOME/bptt`` or ``~/.cache/bptt`` where that can
    be written, else a folder of this user's in the temporary directory."""
    if os.environ.get("BPTT_CACHE_DIR"):
        return Path(os.environ["BPTT_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bptt"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    if os.access(base, os.W_OK):
        return base
    return Path(tempfile.gettempdir()) / f"bptt-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def find_compiler():
    """The command that compiles C here, as a list, or None."""
    if os.environ.get("CC"):
        return os.environ["CC"].split()
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return [path]
    try:
        import ziglang  # noqa: F401  (the ``fast`` extra)
    except ImportError:
        return None
    return [sys.executable, "-m", "ziglang", "cc"]


def _cpu():
    """What identifies this CPU's instruction set: its model and flags where Linux says."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine() + platform.processor()
    keep = [line for line in lines if line.startswith(("model name", "flags"))]
    return "\n".join(keep[:2]) + platform.machine()


def library_path(compiler):
    """Where the build for this source, compiler, flags and CPU lives."""
    key = hashlib.sha256()
    parts = [source.read_bytes() for source in SOURCES] + [" ".join(compiler).encode(), " ".join(FLAGS).encode(), _cpu().encode()]
    for part in parts:
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"cells-{key.hexdigest()[:16]}.so"


def load():
    """The compiled kernels as a ``ctypes.CDLL``, built first if this machine has no build yet.

    Raises KernelsUnavailable, saying what was tried, when no compiler is found or the build
    fails.
    """
    compiler = find_compiler()
    if compiler is None:
        raise KernelsUnavailable(
            "the compiled kernels need a C compiler, and none was found ($CC, cc, gcc, clang, or the "
            "ziglang package): install one, or `pip install 'bptt[fast]'`, or use the NumPy kernels"
        )
    path = library_path(compiler)
    if not path.exists():
        _build(compiler, path)
    try:
        return ctypes.CDLL(str(path))
    except OSError as error:
        raise KernelsUnavailable(f"could not load the compiled kernels {path}: {error}") from error


def _build(compiler, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=path.stem, suffix=".so.partial", dir=path.parent)
    os.close(handle)
    command = [*compiler, *FLAGS, str(SOURCES[0]), "-o", partial]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise KernelsUnavailable(
                f"building the compiled kernels failed (exit {done.returncode}): {' '.join(command)}\n{done.stderr.strip()}"
            )
        os.replace(partial, path)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise KernelsUnavailable(f"could not run the C compiler {' '.join(compiler)}: {error}") from error
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
