"""Speed and memory of bptt beside PyTorch, measured the fair way on a small machine.

Legend: T time steps, B batch, I input features, H hidden units, K gates per cell, V vocabulary.

Method (see BENCHMARKING.md in the project notes): both libraries run in this process with the
same thread count (``threadpoolctl`` for NumPy's BLAS, ``torch.set_num_threads``, and
``bptt.kernels.use(..., threads=)`` for the compiled passes, which run on threads of their own
where they can: at B > 1). Each case is
warmed up, then every repetition runs each library once untimed and once timed, after a pause
(``pause`` seconds) that lets the other library's spinning BLAS/OpenMP threads go to sleep; the
order of the two libraries alternates between repetitions. We report medians and the median of
the per-repetition ratios bptt/torch. GFLOP/s count the matrix products only (the gate
arithmetic is not counted) and are set beside this machine's GEMM peak, a 2048 x 2048 product
measured in the same run with NumPy's BLAS. Where the environment holds OpenBLAS to narrower
vector instructions than the CPU has (``OPENBLAS_CORETYPE=Haswell`` on an AVX-512 machine),
that product is also timed in a child process without the setting, and the peak is the faster
of the two: bptt's compiled kernels (``-march=native``) and torch pick AVX-512 for themselves,
and against the held-back BLAS alone they ran at up to 155 % of "the peak".

Modes: ``forward`` keeps what backward needs (torch: autograd on); ``train`` is forward plus
backward of the whole sequence with gradients of the input and every parameter; ``inference``
is a forward pass that keeps no cache (torch: ``inference_mode``).
"""

import fnmatch
import json
import os
import platform
import subprocess
import sys
import time
import tracemalloc
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from .. import kernels
from ..pool import POOL


CELL_CLASSES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
NUM_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
DTYPES = {"f32": np.float32, "f64": np.float64}
MODES = ("forward", "train", "inference")


@dataclass(frozen=True)
class Case:
    """One timed configuration: a cell, a dtype, a mode and the sizes T, B, I, H."""

    name: str
    cell: str  # rnn, lstm, gru
    dtype: str  # f32, f64
    mode: str  # forward, train, inference
    T: int
    B: int
    I: int
    H: int
    target: float | None = None  # the ratio bptt/torch to stay at or under, where the project set one

    def flops(self):
        """Floating-point operations of the matrix products of one run."""
        forward = 2 * self.T * self.B * NUM_GATES[self.cell] * self.H * (self.I + self.H)
        # backward repeats each forward product twice: for the input side and for the weights
        return 3 * forward if self.mode == "train" else forward


# the targets of issue 14, ratio bptt/torch at 2 threads, with the defaults
TARGETS = {
    "rnn-f32-train": 0.6, "lstm-f32-train": 0.8, "gru-f32-train": 0.6,
    "rnn-f64-train": 0.5, "lstm-f64-train": 0.5, "gru-f64-train": 0.5,
    "lstm-f32-train-big": 0.9,
    "lstm-f32-train-b1": 1.2,
    "lstm-f32-inference": 1.0,
}


def default_cases():
    """Every cell, dtype and mode at T=100, B=32, I=128, H=256, and the issue's special sizes."""
    cases = []

    def add(name, cell, dtype, mode, T=100, B=32, I=128, H=256):
        cases.append(Case(name, cell, dtype, mode, T, B, I, H, TARGETS.get(name)))

    for cell in CELL_CLASSES:
        for dtype in DTYPES:
            for mode in ("forward", "train"):
                add(f"{cell}-{dtype}-{mode}", cell, dtype, mode)
    add("lstm-f32-train-big", "lstm", "f32", "train", I=256, H=512)
    add("lstm-f32-train-b1", "lstm", "f32", "train", T=200, B=1, I=64, H=128)
    add("lstm-f64-train-b1", "lstm", "f64", "train", T=200, B=1, I=64, H=128)
    for dtype in DTYPES:
        add(f"lstm-{dtype}-inference", "lstm", dtype, "inference")
    add("gru-f32-inference", "gru", "f32", "inference")
    return cases


def select_cases(patterns=None, cases=None):
    """The cases whose names match any of the shell-style ``patterns`` (all when None)."""
    cases = default_cases() if cases is None else cases
    if not patterns:
        return list(cases)
    chosen = [c for c in cases if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
    if not chosen:
        names = ", ".join(c.name for c in cases)
        raise ValueError(f"no case matches {', '.join(patterns)}; the cases are: {names}")
    return chosen


# runners: each returns a function of no arguments that does one run


def _bptt_model(case, seed=0):
    import bptt

    model = getattr(bptt, CELL_CLASSES[case.cell])(case.I, case.H, dtype=DTYPES[case.dtype], seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case.T, case.B, case.I)).astype(DTYPES[case.dtype])
    dy = rng.standard_normal((case.T, case.B, case.H)).astype(DTYPES[case.dtype])
    return model, x, dy


def bptt_runner(case, seed=0):
    model, x, dy = _bptt_model(case, seed)
    if case.mode == "forward":
        return lambda: model.forward(x)
    if case.mode == "inference":
        return lambda: model.forward(x, keep_cache=False)

    def train():
        _, _, cache = model.forward(x)
        model.backward(cache, dy)

    return train


def torch_runner(case, seed=0):
    import torch

    model, x, dy = _bptt_model(case, seed)
    dtype = torch.float32 if case.dtype == "f32" else torch.float64
    module = getattr(torch.nn, CELL_CLASSES[case.cell])(case.I, case.H, dtype=dtype)
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.params.items()})
    parameters = list(module.parameters())
    x_t = torch.from_numpy(x).requires_grad_(case.mode == "train")
    dy_t = torch.from_numpy(dy)
    if case.mode == "forward":
        return lambda: module(x_t)
    if case.mode == "inference":
        def infer():
            with torch.inference_mode():
                module(x_t)
        return infer

    def train():
        for p in parameters:
            p.grad = None
        x_t.grad = None
        y, _ = module(x_t)
        y.backward(dy_t)

    return train


# measurement


def _timed(run):
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _busy_seconds():
    """CPU seconds used so far by every process on the machine, or None where /proc/stat is
    missing."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:8]
    except OSError:
        return None
    user, nice, system, _, _, irq, softirq = (int(v) for v in fields)
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


class LoadProbe:
    """How much CPU other processes took while we measured: the machine's busy time minus
    ours. On a 2-core machine a neighbour's burst slows a 2-thread GEMM several times over,
    so a measurement taken beside one is repeated."""

    def __init__(self):
        self.wall = time.perf_counter()
        self.busy = _busy_seconds()
        self.own = time.process_time()

    def foreign_share(self):
        """Other processes' CPU time since the probe started, per second of wall time
        (0 when quiet, 1 for one busy core); 0 where it cannot be known."""
        busy = _busy_seconds()
        if busy is None or self.busy is None:
            return 0.0
        foreign = (busy - self.busy) - (time.process_time() - self.own)
        return max(foreign, 0.0) / max(time.perf_counter() - self.wall, 1e-9)


def gemm_peak(dtype, size=2048, repeat=5):
    """GFLOP/s of a ``size``² matrix product in ``dtype``: the best of ``repeat`` runs (a
    neighbour on the machine can only slow a run down)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    a @ b
    seconds = min(_timed(lambda: a @ b) for _ in range(repeat))
    return 2 * size**3 / seconds / 1e9


# the settings that hold a library to narrower vector instructions than the CPU has
PINNING = ("OPENBLAS_CORETYPE",)

_CHILD_PEAK = """
import json, sys, time
import numpy as np
size, repeat = int(sys.argv[1]), int(sys.argv[2])
rates = {}
for name, dtype in (("f32", np.float32), ("f64", np.float64)):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    rates[name] = 2 * size**3 / best / 1e9
print(json.dumps(rates))
"""


def unpinned_gemm_peak(size=2048, threads=2, repeat=5):
    """GFLOP/s ``{"f32", "f64"}`` of :func:`gemm_peak`'s product timed in a child process on
    ``threads`` threads without the ``PINNING`` settings, so that the BLAS picks the CPU's
    widest vector instructions; None where no such setting is made or the child fails."""
    if not any(name in os.environ for name in PINNING):
        return None
    env = {name: value for name, value in os.environ.items() if name not in PINNING}
    env.update({name: str(threads) for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD_PEAK, str(size), str(repeat)], env=env,
                              capture_output=True, text=True, timeout=600, check=True)
        rates = json.loads(done.stdout)
        return {"f32": float(rates["f32"]), "f64": float(rates["f64"])}
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
        return None


def _gemm_rates(size, threads):
    """The GEMM rates of :func:`run`'s report: ``{"this_process": {"f32", "f64"}}`` and, where
    the environment pins the BLAS, ``"unpinned"`` too."""
    rates = {"this_process": {"f32": gemm_peak(np.float32, size), "f64": gemm_peak(np.float64, size)}}
    unpinned = unpinned_gemm_peak(size, threads)
    if unpinned is not None:
        rates["unpinned"] = unpinned
    return rates


def _measure(run, pause, pausing, max_load, retries):
    """Pause, run once untimed, time one run; repeat while other processes were busy.
    Returns (seconds, foreign share, attempts)."""
    for attempt in range(1, retries + 2):
        probe = LoadProbe()
        if pausing:
            time.sleep(pause)
        run()  # untimed: brings the weights and buffers back into cache
        seconds = _timed(run)
        share = probe.foreign_share()
        if share <= max_load:
            break
    return seconds, share, attempt


def time_case(case, repeat=7, pause=0.25, torch_available=True, warmup=2, max_load=0.1, retries=8):
    """Interleaved timing of one case; returns a dict of medians (ms) and the ratio.

    A repetition during which other processes used more than ``max_load`` of a core is taken
    again, up to ``retries`` times; ``noisy_runs`` counts those kept anyway.
    """
    runners = {"bptt": bptt_runner(case)}
    if torch_available:
        runners["torch"] = torch_runner(case)
    for run in runners.values():
        for _ in range(warmup):
            run()
    seconds = {name: [] for name in runners}
    attempts = noisy = 0
    order = list(runners)
    for rep in range(repeat):
        for name in order if rep % 2 == 0 else order[::-1]:
            s, share, tries = _measure(runners[name], pause, len(runners) > 1, max_load, retries)
            seconds[name].append(s)
            attempts += tries - 1
            noisy += share > max_load
    result = {name: 1e3 * float(np.median(s)) for name, s in seconds.items()}
    row = {"bptt_ms": result["bptt"], "bptt_runs_ms": [1e3 * s for s in seconds["bptt"]],
           "retried_runs": attempts, "noisy_runs": noisy}
    if "torch" in result:
        ratios = np.array(seconds["bptt"]) / np.array(seconds["torch"])
        row.update(
            torch_ms=result["torch"],
            torch_runs_ms=[1e3 * s for s in seconds["torch"]],
            ratio=float(np.median(ratios)),
            ratio_of_medians=result["bptt"] / result["torch"],
        )
    return row


# memory


def _arrays(obj, found):
    if isinstance(obj, np.ndarray):
        found.append(obj)
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            _arrays(item, found)


def _owner(array):
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def cache_bytes(cache, exclude=()):
    """Bytes held by the arrays of a cache, each buffer counted once, leaving out ``exclude``
    (the weights and the input, which exist without the cache)."""
    found = []
    _arrays(cache, found)
    skip = {id(_owner(a)) for a in exclude}
    owners = {id(_owner(a)): _owner(a) for a in found}
    return sum(a.nbytes for key, a in owners.items() if key not in skip)


def cache_per_step(cell, T=50, B=32, I=128, H=256, dtype="f32"):
    """Bytes that one step adds to the cache of ``cell`` (everything the cache holds, the copy
    of the input included, the weights left out), and the same in numbers per hidden unit and
    sequence."""
    case = Case("memory", cell, dtype, "forward", T, B, I, H)
    model, x, _ = _bptt_model(case)
    _, _, cache = model.forward(x)
    per_step = cache_bytes(cache, exclude=list(model.params.values())) / T
    return {"cell": cell, "dtype": dtype, "B": B, "H": H, "bytes_per_step": per_step,
            "numbers_per_unit": per_step / (B * H * np.dtype(DTYPES[dtype]).itemsize)}


def peak_memory(T=2000, B=32, I=128, H=256, cell="lstm", dtype="f32"):
    """Peak bytes NumPy allocates (tracemalloc) for a long sequence, input excluded:
    a forward that keeps no cache, a forward that keeps one, and forward plus backward."""
    case = Case("peak", cell, dtype, "train", T, B, I, H)
    model, x, dy = _bptt_model(case)

    def peak(run):
        POOL.clear()  # a pooled buffer would be reused, not allocated, and tracemalloc miss it
        tracemalloc.start()
        try:
            run()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def train():
        _, _, cache = model.forward(x)
        model.backward(cache, dy)

    return {
        "cell": cell, "dtype": dtype, "T": T, "B": B, "I": I, "H": H,
        "inference_bytes": peak(lambda: model.forward(x, keep_cache=False)),
        "forward_bytes": peak(lambda: model.forward(x)),
        "train_bytes": peak(train),
    }


# sampling


def sampling(chars=300, hidden=512, layers_=2, vocab=65, repeat=3, pause=0.25, torch_available=True):
    """Characters per second of a character model sampled one step at a time (B=1): one-hot
    input, a ``layers_``-layer LSTM of ``hidden`` units, a linear head, softmax sampling."""
    import bptt

    rng = np.random.default_rng(0)
    model = bptt.LSTM(vocab, hidden, layers_, dtype=np.float32, seed=0)
    head_w = (rng.standard_normal((vocab, hidden)) / np.sqrt(hidden)).astype(np.float32)  # V,H
    head_b = np.zeros(vocab, np.float32)
    eye = np.eye(vocab, dtype=np.float32)

    def sample_bptt():
        state = (np.zeros((layers_, 1, hidden), np.float32),) * 2
        char, draw = 0, np.random.default_rng(1)
        for _ in range(chars):
            y, state, _ = model.forward(eye[char][None, None, :], state, keep_cache=False)
            logits = y[0, 0] @ head_w.T + head_b  # V
            p = np.exp(logits - logits.max())
            char = min(int(np.searchsorted(np.cumsum(p), draw.random() * p.sum())), vocab - 1)

    runners = {"bptt": sample_bptt}
    if torch_available:
        import torch

        lstm = torch.nn.LSTM(vocab, hidden, layers_)
        lstm.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.params.items()})
        head = torch.nn.Linear(hidden, vocab)
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(head_w))
            head.bias.zero_()
        eye_t = torch.eye(vocab)

        def sample_torch():
            generator = torch.Generator().manual_seed(1)
            with torch.inference_mode():
                state, char = None, 0
                for _ in range(chars):
                    y, state = lstm(eye_t[char].view(1, 1, vocab), state)
                    p = torch.softmax(head(y[0, 0]), dim=-1)
                    char = int(torch.multinomial(p, 1, generator=generator))

        def sample_torch_no_onednn():
            # oneDNN's LSTM reorders the weights on every call, which dominates at T=1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a note about TF32 on Intel GPUs
                with torch.backends.mkldnn.flags(enabled=False):
                    sample_torch()

        runners["torch"] = sample_torch
        runners["torch_no_onednn"] = sample_torch_no_onednn
    for run in runners.values():
        run()
    seconds = {name: [] for name in runners}
    for _ in range(repeat):
        for name, run in runners.items():
            if len(runners) > 1:
                time.sleep(pause)
            seconds[name].append(_timed(run))
    out = {"chars": chars, "hidden": hidden, "layers": layers_, "vocab": vocab}
    for name, s in seconds.items():
        out[f"{name}_chars_per_s"] = chars / float(np.median(s))
    for name in ("torch", "torch_no_onednn"):
        if name in seconds:
            out[f"ratio_{name}"] = float(np.median(np.array(seconds["bptt"]) / np.array(seconds[name])))
    return out


# the machine


# the environment variables that choose the vector instructions of NumPy's BLAS and of torch
ISA_SETTINGS = ("OPENBLAS_CORETYPE", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


def machine():
    """CPU model, cores and the versions of the libraries that set the speed."""
    info = {"python": platform.python_version(), "numpy": np.__version__, "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info["cpu"] = fields.get("model name", "unknown")
        info["cpu_family_model"] = f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}"
        flags = fields.get("flags", "").split()
        info["simd"] = " ".join(f for f in ("avx2", "fma", "avx512f") if f in flags)
    except OSError:
        info["cpu"] = platform.processor() or "unknown"
    try:
        from threadpoolctl import threadpool_info

        blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        info["blas"] = ", ".join(
            f"{p['internal_api']} {p.get('version')} ({p.get('architecture')})" for p in blas
        )
    except ImportError:
        info["blas"] = "unknown (threadpoolctl not installed)"
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_onednn"] = bool(torch.backends.mkldnn.is_available())
        # the vector instructions torch's kernels run (oneDNN picks its own unless
        # ONEDNN_MAX_CPU_ISA caps it); beside the BLAS architecture above, it says whether the
        # two libraries computed with the same vector width
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except ImportError:
        info["torch"] = None
    info["isa_settings"] = {name: os.environ[name] for name in ISA_SETTINGS if name in os.environ}
    return info


def torch_importable():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def run(cases=None, threads=2, repeat=7, pause=0.25, vs_torch=True, memory=True, sample=True,
        max_load=0.1, retries=8, progress=None, peak_size=2048):
    """Time ``cases`` (default: all of :func:`default_cases`) and return the report as a dict
    (its keys: docs/json.md, ``bptt bench --json``).

    ``max_load`` and ``retries``: see :func:`time_case`. ``progress``, when given, is called
    with each finished row (the CLI prints them). ``peak_size``: the side of the square GEMM
    whose rate is the peak (smaller only to check the harness quickly).
    """
    torch_available = vs_torch and torch_importable()
    cases = default_cases() if cases is None else cases
    report = {"machine": machine(), "kernels": kernels.selected(), "threads": threads, "repeat": repeat,
              "pause_s": pause, "max_load": max_load, "vs_torch": torch_available, "gemm_size": peak_size}
    if torch_available:
        import torch

        torch.set_num_threads(threads)
    threads_before = kernels.threads()
    # the library's defaults but the thread count, which both libraries get: the workers are not
    # pinned (bptt train pins them, as it owns its process), as a user's script finds them
    kernels.use(kernels.selected(), threads=threads)
    try:
        return _measure_cases(report, cases, threads, repeat, pause, torch_available, memory, sample, max_load,
                              retries, progress, peak_size)
    finally:
        kernels.use(kernels.selected(), threads=threads_before)


def _best_rates(rates):
    """The peak of each dtype: the fastest of the GEMM rates measured."""
    return {dtype: max(measured[dtype] for measured in rates.values()) for dtype in ("f32", "f64")}


def _measure_cases(report, cases, threads, repeat, pause, torch_available, memory, sample, max_load, retries,
                   progress, peak_size):
    """:func:`run`'s measurements, into ``report``, with the thread counts set."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        report["gemm_gflops"] = _gemm_rates(peak_size, threads)
        report["gemm_peak_gflops"] = _best_rates(report["gemm_gflops"])
        rows = []
        for case in cases:
            row = asdict(case)
            row.update(time_case(case, repeat, pause, torch_available, max_load=max_load, retries=retries))
            peak = report["gemm_peak_gflops"][case.dtype]
            for name in ("bptt", "torch"):
                if f"{name}_ms" in row:
                    gflops = case.flops() / (row[f"{name}_ms"] / 1e3) / 1e9
                    row[f"{name}_gflops"] = gflops
                    row[f"{name}_peak_fraction"] = gflops / peak
            if case.target is not None and "ratio" in row:
                # met only when both summaries are at or under the target
                row["target_met"] = bool(max(row["ratio"], row["ratio_of_medians"]) <= case.target)
            rows.append(row)
            if progress is not None:
                progress(row)
        report["cases"] = rows
        # the rates again at the end; the better of the two, since a neighbour only slows them
        for where, rates in _gemm_rates(peak_size, threads).items():
            if where in report["gemm_gflops"]:
                before = report["gemm_gflops"][where]
                report["gemm_gflops"][where] = {dtype: max(before[dtype], rates[dtype]) for dtype in before}
        report["gemm_peak_gflops"] = _best_rates(report["gemm_gflops"])
        for row in rows:
            for name in ("bptt", "torch"):
                if f"{name}_gflops" in row:
                    row[f"{name}_peak_fraction"] = row[f"{name}_gflops"] / report["gemm_peak_gflops"][row["dtype"]]
        if memory:
            report["cache_per_step"] = [cache_per_step(cell) for cell in CELL_CLASSES]
            report["peak_memory"] = peak_memory()
        if sample:
            report["sampling"] = sampling(pause=pause, torch_available=torch_available)
    return report


# text


def format_row(row):
    """One case as a line of the table."""
    line = (f"{row['name']:<22} {row['T']:>4} {row['B']:>3} {row['I']:>4} {row['H']:>4} "
            f"{row['bptt_ms']:>9.2f} {row['bptt_gflops']:>7.1f} {100 * row['bptt_peak_fraction']:>5.0f}%")
    if "torch_ms" in row:
        line += (f" {row['torch_ms']:>9.2f} {row['torch_gflops']:>7.1f} {100 * row['torch_peak_fraction']:>5.0f}%"
                 f" {row['ratio']:>6.2f} {row['ratio_of_medians']:>6.2f}")
        if row.get("target") is not None:
            line += f"  <= {row['target']:.1f} {'met' if row['target_met'] else 'MISSED'}"
    if row.get("noisy_runs"):
        line += f"  ({row['noisy_runs']} noisy)"
    return line


def table_header(vs_torch):
    head = f"{'case':<22} {'T':>4} {'B':>3} {'I':>4} {'H':>4} {'bptt ms':>9} {'GFLOP/s':>7} {'peak':>6}"
    if vs_torch:
        head += f" {'torch ms':>9} {'GFLOP/s':>7} {'peak':>6} {'ratio':>6} {'r(med)':>6}  target"
    return head


def _peak_source(report):
    """Where the peak came from, when a child process without the BLAS's pinning measured it."""
    rates = report.get("gemm_gflops", {})
    if "unpinned" not in rates:
        return ""
    pinned = ", ".join(f"{name}={value}" for name, value in report["machine"].get("isa_settings", {}).items()
                       if name in PINNING)
    held = rates["this_process"]
    return (f" (the faster of NumPy's BLAS without {pinned or 'its pinning'}, timed in a child process, and in "
            f"this process, where it is held back: {held['f32']:.0f} and {held['f64']:.0f})")


def format_report(report):
    """The report as text: the machine, the peak, the table, memory and sampling."""
    m = report["machine"]
    torch_isa = f" ({m['torch_cpu_capability']})" if m.get("torch_cpu_capability") else ""
    settings = "".join(f"; {name}={value}" for name, value in m.get("isa_settings", {}).items())
    kernels_used = report.get("kernels", "reference")
    if kernels_used == "c" and report["threads"] > 1:  # run() gives the passes its thread count
        kernels_used += f", passes on {report['threads']} threads"
    peak = report["gemm_peak_gflops"]
    size = report.get("gemm_size", 2048)
    lines = [
        f"machine: {m.get('cpu')} ({m.get('cores')} cores, {m.get('simd', '')}); numpy {m['numpy']}, "
        f"BLAS {m.get('blas')}; torch {m.get('torch')}{torch_isa}{settings}",
        f"bptt kernels: {kernels_used}; threads: {report['threads']}, repetitions: {report['repeat']}, "
        f"pause: {report['pause_s']} s; GEMM peak {size}²: {peak['f32']:.0f} GFLOP/s float32, {peak['f64']:.0f} "
        f"float64" + _peak_source(report),
        "",
        table_header(report["vs_torch"]),
    ]
    lines += [format_row(row) for row in report["cases"]]
    if report["vs_torch"]:
        lines.append("ratio: median of per-repetition bptt/torch; r(med): ratio of the medians")
        if report.get("kernels", "reference") != "c" and any(row.get("target") is not None for row in report["cases"]):
            lines.append("the targets are set for the compiled kernels (the default: bptt bench --vs torch); these "
                         "rows ran the readable reference, which is not meant to meet them")
    if "cache_per_step" in report:
        lines.append("")
        lines.append("cache per step (float32, B=32, I=128, H=256; the copy of x included, the weights not):")
        for c in report["cache_per_step"]:
            lines.append(f"  {c['cell']:<5} {c['bytes_per_step'] / 1024:8.1f} KiB  "
                         f"({c['numbers_per_unit']:.1f} numbers per hidden unit and sequence)")
        p = report["peak_memory"]
        lines.append(f"peak memory, {p['cell']} T={p['T']} B={p['B']} I={p['I']} H={p['H']} {p['dtype']}: "
                     f"inference {p['inference_bytes'] / 2**20:.1f} MiB, forward with cache "
                     f"{p['forward_bytes'] / 2**20:.1f} MiB, forward+backward {p['train_bytes'] / 2**20:.1f} MiB")
    if "sampling" in report:
        s = report["sampling"]
        line = (f"sampling, {s['layers']}-layer {s['hidden']}-unit LSTM, V={s['vocab']}, B=1: "
                f"bptt {s['bptt_chars_per_s']:.0f} chars/s")
        if "torch_chars_per_s" in s:
            line += (f", torch {s['torch_chars_per_s']:.0f} chars/s (time ratio {s['ratio_torch']:.2f}), "
                     f"torch without oneDNN {s['torch_no_onednn_chars_per_s']:.0f} chars/s "
                     f"(time ratio {s['ratio_torch_no_onednn']:.2f})")
        lines.append(line)
    return "\n".join(lines)
