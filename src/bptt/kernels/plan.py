"""The compiled cells as the backend's passes call them, their arguments planned.

A kernel of ``cells.c`` (or a pass of ``threaded.c``) takes one row of int64 per step, a
``step_args`` of contract.h, whose fields this module reads there by name
(:func:`contract_fields`): B, H, which arrays of the step run next to prefetch and where its row
is, then the address and the row stride (``ld``, in numbers) of each array it reads or writes,
one time step's (F, B) slice of a buffer. The passes hand a run of steps as ``(stack, index)``
pairs: ``stack`` a (n, B, F) view of a buffer whose ``stack[k]`` is a step's array as the
reference cells get it, ``index`` which k each step takes. :func:`plan` turns them into the rows
of all steps at once, with array arithmetic on the stack's strides, and checks every shape,
stride and index, so a call never touches memory outside the arrays it was given.
"""

import ctypes
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..pool import POOL


# the state a compiled cell's step cache ends with, after its CACHE_WIDTHS arrays: (its index
# in STATE_NAMES, 0 for the state entering the step, 1 for the state it leaves) (LSTM:
# c_{t-1}, GRU: h_{t-1}, RNN: h_t)
CACHE_STATE = {"lstm": (1, 0), "gru": (0, 0), "rnn_tanh": (0, 1), "rnn_relu": (0, 1)}
# which parts of dstate the step's backward overwrites with the gradient that reaches the
# previous state directly, not through W_hh (LSTM's dc_{t-1}, GRU's z * dh)
DIRECT = {"lstm": (False, True), "gru": (True,), "rnn_tanh": (False,), "rnn_relu": (False,)}
SUFFIXES = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def _address(a):
    return a.__array_interface__["data"][0]


def _steps(index, stack, count, what):
    """``index`` (an int, or ints) as plan arithmetic takes it, once checked to lie in
    ``[0, len(stack))``."""
    index = index if isinstance(index, int) else np.asarray(index, np.int64)
    first, last = (index, index) if isinstance(index, int) else (index.min(), index.max())
    if count and (first < 0 or last >= stack.shape[0]):
        raise ValueError(f"{what}: steps {first}..{last} of a stack of {stack.shape[0]}")
    return index


def plan(B, H, dtype, arrays, count, prefetch=(), step=1):
    """The argument rows (``step_args`` of contract.h) of ``count`` steps.

    ``arrays``: ``(stack, width, index)`` per kernel argument, ``stack`` (n, B, width*H) of
    ``dtype`` with B contiguous, ``index`` an int or (count,) ints in [0, n). ``prefetch``: the
    arrays each step brings into cache for the step run after it, which is the next row
    (``step=1``, forward) or the one before (``step=-1``, backward).

    Returns (count, fields of step_args) int64.
    """
    if len(arrays) > MAX_ARRAYS:
        raise ValueError(f"a kernel takes at most {MAX_ARRAYS} arrays, got {len(arrays)}")
    prefetches = np.zeros(count, np.int64)  # none for the step run last: it has no next one
    prefetches[slice(0, count - 1) if step == 1 else slice(1, count)] = sum(1 << k for k in prefetch)
    values = {"B": B, "H": H, "prefetch": prefetches, "next": step}
    for k, (stack, width, index) in enumerate(arrays):
        if stack.dtype != dtype or stack.ndim != 3 or stack.shape[1:] != (B, width * H):
            raise ValueError(f"kernel array {k}: expected (n, {B}, {width * H}) {np.dtype(dtype)}, "
                             f"got {stack.shape} {stack.dtype}")
        if (B > 1 and stack.strides[1] != stack.itemsize) or stack.strides[2] % stack.itemsize:
            raise ValueError(f"kernel array {k}: the batch must be contiguous, got strides {stack.strides}")
        index = _steps(index, stack, count, f"kernel array {k}")
        values[f"a[{k}].addr"] = _address(stack) + index * stack.strides[0]
        values[f"a[{k}].ld"] = stack.strides[2] // stack.itemsize
    return contract_rows("step_args", count, values)


def _vector_column(stack, length, index, count, what):
    """The addresses and element stride of ``stack[index]``, vectors of ``length``."""
    if stack.ndim != 2 or stack.shape[1] != length or stack.strides[1] % stack.itemsize:
        raise ValueError(f"{what}: expected (n, {length}) vectors, got {stack.shape} with strides {stack.strides}")
    index = _steps(index, stack, count, what)
    return _address(stack) + index * stack.strides[0], stack.strides[1] // stack.itemsize


def matvec_plan(w, v, out, count):
    """The argument rows of ``count`` products ``out = wᵀ v``.

    ``w``: (M, N) with contiguous rows; ``v``, ``out``: ``(stack, index)`` pairs of (n, length)
    vector stacks, M and N long.
    """
    M, N = w.shape
    if w.ndim != 2 or w.strides[1] != w.itemsize:
        raise ValueError(f"matvec: expected a matrix with contiguous rows, got strides {w.strides}")
    if any(a.dtype != w.dtype for a in (v[0], out[0])):
        raise ValueError(f"matvec: every array must be {w.dtype}")
    values = {"M": M, "N": N, "w.addr": _address(w), "w.ld": w.strides[0] // w.itemsize}
    for name, (stack, index), length in (("v", v, M), ("out", out, N)):
        values[f"{name}.addr"], values[f"{name}.ld"] = _vector_column(stack, length, index, count, f"matvec {name}")
    return contract_rows("matvec_args", count, values)


def _plan_row_major(rows, k, stack, index, count, shape, dtype, what):
    """Array ``k`` of the ``count`` rows ``rows`` (:func:`plan`'s) set to ``stack[index]``,
    ``shape`` (B, F) matrices whose rows are contiguous (the forward's h_t as the backward's sums
    over time read it, x, dy, dx), with their row stride, in place of plan's (F, B) slices."""
    if stack.dtype != dtype or stack.ndim != 3 or stack.shape[1:] != shape or stack.strides[2] != stack.itemsize:
        raise ValueError(f"{what}: expected (n, {shape[0]}, {shape[1]}) {np.dtype(dtype)} with contiguous rows, "
                         f"got {stack.shape} {stack.dtype} with strides {stack.strides}")
    index = _steps(index, stack, count, what)
    rows[:, column("step_args", f"a[{k}].addr")] = _address(stack) + index * stack.strides[0]
    rows[:, column("step_args", f"a[{k}].ld")] = stack.strides[1] // stack.itemsize


CONTRACT = Path(__file__).with_name("contract.h")  # the structs Python fills, read by name


@lru_cache(maxsize=None)
def _contract_text():
    """contract.h without its comments, and the values of its ``#define``s."""
    text = re.sub(r"/\*.*?\*/", "", CONTRACT.read_text(), flags=re.S)
    return text, {name: int(value) for name, value in re.findall(r"#define\s+(\w+)\s+(\d+)", text)}


@lru_cache(maxsize=None)
def contract_fields(struct):
    """The int64 fields of ``struct`` (a typedef of contract.h), in their order: an int64_t
    field is its name, an ``array_arg`` field ``name`` is ``name.addr`` and ``name.ld``, an
    array ``name[N]`` of them ``name[k].addr`` and ``name[k].ld`` for each k < N."""
    text, defines = _contract_text()
    found = re.search(r"typedef struct \{([^}]*)\}\s*" + re.escape(struct) + r"\s*;", text)
    if found is None:
        raise ValueError(f"contract.h defines no struct {struct}")
    fields = []
    for declaration in filter(None, (part.strip() for part in found.group(1).split(";"))):
        kind, _, names = declaration.partition(" ")
        if kind not in ("int64_t", "array_arg"):
            raise ValueError(f"contract.h: {struct} holds {declaration!r}; every field must be an int64_t or array_arg")
        for name in (name.strip() for name in names.split(",")):
            if kind == "int64_t":
                fields.append(name)
                continue
            array = re.fullmatch(r"(\w+)\[(\w+)\]", name)
            count = array and (int(array.group(2)) if array.group(2).isdigit() else defines[array.group(2)])
            for element in [f"{array.group(1)}[{k}]" for k in range(count)] if array else [name]:
                fields += [f"{element}.addr", f"{element}.ld"]
    return tuple(fields)


@lru_cache(maxsize=None)
def column(struct, field):
    """Where ``field`` lies in a row of ``struct`` (:func:`contract_fields`)."""
    return contract_fields(struct).index(field)


def contract_rows(struct, count, values):
    """``count`` rows of ``struct``: each field that ``values`` (a dict by field name) names gets
    its value (a number, or ``count`` numbers, one per row), the others zero (arrays a kernel
    does not take)."""
    rows = np.zeros((count, len(contract_fields(struct))), np.int64)
    for field, value in values.items():
        rows[:, column(struct, field)] = value
    return rows


MAX_ARRAYS = _contract_text()[1]["MAX_ARRAYS"]  # the arrays of a step_args
# every struct of contract.h, each of whose compiled size is checked against its fields
CONTRACT_STRUCTS = ("step_args", "matvec_args", "add_args", "pass_args", "gradient_args")


def contract_row(struct, **values):
    """The int64 row of ``struct`` with each field's value given by name: a field missing or
    unknown is a ValueError, so a field added to or removed from contract.h cannot be filled
    by position by mistake."""
    fields = contract_fields(struct)
    missing, unknown = [f for f in fields if f not in values], [v for v in values if v not in fields]
    if missing or unknown:
        raise ValueError(f"{struct}: missing {missing}, unknown {unknown} (fields of contract.h: {', '.join(fields)})")
    return np.array([values[field] for field in fields], np.int64)


def gradient_args(dpre_h, dpre_x, h_rows, x_rows, dw_hh_1, dw_ih, db_ih, accumulate):
    """The ``gradient_args`` of ``threaded.c``: the sums over the steps of a threaded backward
    pass, ``[dW_hh | db_hh] (+)= Σ_k dpre_h[:, k] [h_rows[k] | 1]``, ``dW_ih (+)= Σ_k
    dpre_x[:, k] x_rows[k]`` and, unless ``db_ih`` is None, ``db_ih (+)= Σ_k dpre_x[:, k]``,
    over k = step x B + b, added to what the outputs hold with ``accumulate``, else written.

    ``dpre_h``, ``dpre_x``: (steps, K*H, B) C-contiguous, as the steps wrote them; ``h_rows``
    (steps x B, H) and ``x_rows`` (steps x B, I) C-contiguous; ``dw_hh_1`` (K*H, H+1),
    ``dw_ih`` (K*H, I) with contiguous rows; ``db_ih`` (K*H,) contiguous or None.

    Returns the row of int64 and the arrays it points into, which must outlive the pass.
    """
    steps, KH, B = dpre_h.shape
    H, I = h_rows.shape[1], x_rows.shape[1]
    shapes = {"dpre_h": (dpre_h, (steps, KH, B)), "dpre_x": (dpre_x, (steps, KH, B)),
              "h_rows": (h_rows, (steps * B, H)), "x_rows": (x_rows, (steps * B, I)),
              "dw_hh_1": (dw_hh_1, (KH, H + 1)), "dw_ih": (dw_ih, (KH, I))}
    for name, (a, shape) in shapes.items():
        contiguous = a.flags.c_contiguous if name in ("dpre_h", "dpre_x", "h_rows", "x_rows") else a.strides[1] == a.itemsize
        if a.dtype != dpre_h.dtype or a.shape != shape or not contiguous:
            raise ValueError(f"gradients {name}: expected {shape} {dpre_h.dtype} with contiguous rows, "
                             f"got {a.shape} {a.dtype} with strides {a.strides}")
    if db_ih is not None and (db_ih.dtype != dpre_h.dtype or db_ih.shape != (KH,) or not db_ih.flags.c_contiguous):
        raise ValueError(f"gradients db_ih: expected ({KH},) {dpre_h.dtype}, got {db_ih.shape} {db_ih.dtype}")
    item = dpre_h.itemsize
    row = contract_row(
        "gradient_args", steps=steps, B=B, dpre_h=_address(dpre_h), dpre_x=_address(dpre_x),
        h_rows=_address(h_rows), x_rows=_address(x_rows), I=I, dw_hh=_address(dw_hh_1),
        ld_dw_hh=dw_hh_1.strides[0] // item, dw_ih=_address(dw_ih), ld_dw_ih=dw_ih.strides[0] // item,
        db_ih=0 if db_ih is None else _address(db_ih), accumulate=int(bool(accumulate)))
    return row, (dpre_h, dpre_x, h_rows, x_rows, dw_hh_1, dw_ih, db_ih)


def add_plan(n, dtype, x, y, count):
    """The argument rows of ``count`` sums ``y += x`` of ``n`` numbers: ``x``, ``y`` are
    ``(stack, index)`` pairs of (k, n) vector stacks of ``dtype``."""
    if x[0].dtype != dtype or y[0].dtype != dtype:
        raise ValueError(f"add: every array must be {np.dtype(dtype)}")
    values = {"n": n}
    for name, (stack, index) in (("x", x), ("y", y)):
        values[f"{name}.addr"], values[f"{name}.ld"] = _vector_column(stack, n, index, count, f"add {name}")
    return contract_rows("add_args", count, values)


class Steps:
    """A planned run of steps of one kernel: ``steps(i)`` runs the i-th row of the plan."""

    __slots__ = ("_function", "_rows", "_arrays", "_first", "_row_bytes")

    def __init__(self, function, rows, arrays):
        self._function = function
        self._rows = rows
        self._arrays = arrays  # what the rows point into, alive as long as they are
        self._first = _address(rows)
        self._row_bytes = rows.strides[0]

    def __call__(self, i):
        self._function(self._first + i * self._row_bytes)

    def row(self, i):
        """The address of row ``i`` and the width of a row in int64."""
        return self._first + i * self._row_bytes, self._rows.shape[1]


class Threaded(Steps):
    """Planned recurrent products on threads: the rows of :class:`Steps` (never called one by
    one), the packed weights and scratch they point into, the row of ``pass_args`` of
    ``threaded.c`` and the hidden units H of the layer."""

    __slots__ = ("pass_args", "units")

    def __init__(self, rows, pass_args, arrays, units):
        super().__init__(None, rows, (arrays, pass_args))
        self.pass_args = (_address(pass_args), len(pass_args))
        self.units = units

    def check(self, steps, start, count):
        """That ``steps``, the cells' plan of a pass (rows of B, H, ...), go with these
        products for steps ``start`` to ``start + count - 1``: the threads size what they
        read and write by the cells' B and H."""
        if start < 0 or start + count > len(self._rows) or count > len(steps._rows):
            raise ValueError(f"threaded pass: steps {start}..{start + count - 1} of {len(self._rows)} products and "
                             f"{len(steps._rows)} cell steps")
        at_b, at_h = column("step_args", "B"), column("step_args", "H")
        cells = (int(steps._rows[0, at_b]), int(steps._rows[0, at_h]))
        products = (int(self._rows[0, at_b]), self.units)
        if cells != products:
            raise ValueError(f"threaded pass: the cells' steps have B, H = {cells}, the products {products}")


def _sized(function, arguments):
    """A size function of the library (int64 arguments, an int64 back)."""
    function.argtypes = [ctypes.c_int64] * arguments
    function.restype = ctypes.c_int64
    return function


@lru_cache(maxsize=None)
def _function(library, name, arguments=1):
    """A kernel of ``library``: one row's address, or (the passes) ``arguments - 1`` values
    that are (table address, row width) pairs, then a count."""
    function = getattr(library, name)
    tables = (arguments - 1) // 2
    function.argtypes = [ctypes.c_void_p] if arguments == 1 else [ctypes.c_void_p, ctypes.c_int64] * tables + [ctypes.c_int64]
    function.restype = None
    return function


class CompiledCell:
    """The compiled step and step_back of one cell for one dtype."""

    def __init__(self, library, cell, dtype):
        self.cell = cell
        self.dtype = np.dtype(dtype)
        name = cell.__name__.rsplit(".", 1)[-1]
        suffix = SUFFIXES[self.dtype]
        self._step = _function(library, f"{name}_step_{suffix}")
        self._step_back = _function(library, f"{name}_step_back_{suffix}")
        self._matvec_t = _function(library, f"matvec_t_{suffix}")
        self._forward_pass = _function(library, f"{name}_forward_pass_{suffix}", 5)
        self._backward_pass = _function(library, f"{name}_backward_pass_{suffix}", 9)
        self._forward_threads = _function(library, f"{name}_forward_threads_{suffix}", 7)
        self._backward_threads = _function(library, f"{name}_backward_threads_{suffix}", 9)
        for struct in CONTRACT_STRUCTS:  # the compiled structs are the header's
            size = getattr(library, f"sizeof_{struct}")()
            if size != 8 * len(contract_fields(struct)):
                raise ValueError(f"the compiled kernels' {struct} is {size} bytes, contract.h's fields "
                                 f"{8 * len(contract_fields(struct))}: the library was built from another contract.h")
        self._panel_rows = library.panel_rows()
        self._wake = library.wake_workers
        self._wake.argtypes, self._wake.restype = [], None
        # the scratch of each thread of a pass, sized by C, which lays it out
        self._forward_scratch = _sized(library.forward_scratch, 6)
        self._backward_scratch = _sized(library.backward_scratch, 4)
        self.cache_state = CACHE_STATE[name]
        self._direct = DIRECT[name]

    def wake(self):
        """Wakes the threaded passes' sleeping workers before a pass is planned, so that the
        pass finds them awake (recurrence.c: wake_workers)."""
        self._wake()

    @classmethod
    def of(cls, library, cell, dtype):
        """The compiled cell, or None for a dtype the kernels do not take."""
        return cls(library, cell, dtype) if np.dtype(dtype) in SUFFIXES else None

    def forward_steps(self, B, H, pre_x, pre_h, states_in, states_out, kept, count):
        """``count`` steps of the forward. Each argument is a ``(stack, index)`` pair (a tuple
        of them for the state and the cache arrays), in the order of the kernel's arrays:
        ``pre_x``, ``pre_h`` (K*H wide), the state entering and the state leaving the step
        (H wide each), the arrays of ``CACHE_WIDTHS``."""
        K = self.cell.NUM_GATES
        arrays = [(pre_x[0], K, pre_x[1]), (pre_h[0], K, pre_h[1])]
        arrays += [(stack, 1, index) for stack, index in (*states_in, *states_out)]
        arrays += [(stack, width, index) for (stack, index), width in zip(kept, self.cell.CACHE_WIDTHS)]
        return Steps(self._step, plan(B, H, self.dtype, arrays, count, prefetch=(0,)), arrays)

    def backward_steps(self, B, H, dstate, step_cache, dpre, count):
        """``count`` steps of the backward, in the order of the kernel's arrays: the parts
        of ``dstate`` (H wide), the step cache (the ``CACHE_WIDTHS`` arrays, then the state
        ``cache_state`` names), and ``dpre_x`` (and ``dpre_h`` where the cell has one), K*H."""
        K = self.cell.NUM_GATES
        widths = (*self.cell.CACHE_WIDTHS, 1)
        arrays = [(stack, 1, index) for stack, index in dstate]
        arrays += [(stack, width, index) for (stack, index), width in zip(step_cache, widths)]
        arrays += [(stack, K, index) for stack, index in dpre]
        cache = range(len(dstate), len(dstate) + len(step_cache))
        return Steps(self._step_back, plan(B, H, self.dtype, arrays, count, prefetch=cache, step=-1), arrays)

    def product_steps(self, w, v, out, count):
        """``count`` recurrent products at B = 1, ``out = wᵀ v``, in place of BLAS; arguments
        as :func:`matvec_plan` takes them."""
        return Steps(self._matvec_t, matvec_plan(w, v, out, count), (w, v, out))

    def _weights_and_room(self, w, transpose):
        """``w`` with contiguous rows, and room for its panels, which the pass's threads pack:
        forward ``w`` (K*H, n), panels of the K gates of units; backward (``transpose``) the
        rows of ``wᵀ``."""
        if w.dtype != self.dtype or w.ndim != 2:
            raise ValueError(f"threaded weights: expected a matrix of {self.dtype}, got {w.shape} {w.dtype}")
        w = w if w.strides[1] == w.itemsize else np.ascontiguousarray(w)
        K = self.cell.NUM_GATES
        rows, n = (w.shape[1], w.shape[0]) if transpose else w.shape
        units, panel_units = (rows, self._panel_rows) if transpose else (rows // K, self._panel_rows // K)
        return w, POOL.empty((-(-units // panel_units), n, self._panel_rows), self.dtype)

    def _threaded(self, rows, weights, units, scratch_numbers, threads, *, direct=False, input_n, gradients=None,
                  discard=0, arrays, lengths=None, first_step=0):
        """The :class:`Threaded` pass of the product table ``rows``: ``weights`` (W_hh's and
        W_ih's, as :meth:`_weights_and_room` checks them) of a layer of ``units``; ``lengths``
        (B,) int64, or None, and the time step of row 0, ``first_step`` (see pass_args)."""
        K = self.cell.NUM_GATES
        (w, packed), (w_x, packed_x) = weights
        if w_x.shape[0] != w.shape[0]:
            raise ValueError(f"threaded weights: W_ih has {w_x.shape[0]} rows, W_hh {w.shape[0]}")
        B, parts = int(rows[0, column("step_args", "B")]), len(self.cell.STATE_NAMES)
        kept = None
        if lengths is not None:
            lengths = np.ascontiguousarray(lengths, np.int64)
            if lengths.shape != (B,):
                raise ValueError(f"threaded pass: expected lengths of shape ({B},), got {lengths.shape}")
            kept = POOL.empty((parts, units, B), self.dtype)
        scratch = POOL.empty((threads, scratch_numbers), self.dtype)
        pass_args = contract_row(
            "pass_args", threads=threads, n=packed.shape[1], gates=K, packed=_address(packed), direct=direct,
            scratch=_address(scratch), scratch_numbers=scratch_numbers, input_n=input_n,
            input_packed=_address(packed_x), gradients=0 if gradients is None else _address(gradients[0]),
            weights=_address(w), ld_weights=w.strides[0] // w.itemsize, input_weights=_address(w_x),
            ld_input_weights=w_x.strides[0] // w_x.itemsize, discard=discard,
            lengths=0 if lengths is None else _address(lengths), first_step=first_step, states=parts,
            kept=0 if kept is None else _address(kept))
        return Threaded(rows, pass_args, (weights, scratch, arrays, gradients, lengths, kept), units)

    def threaded_forward(self, w, w_x, h_prev, x, h_t, h_rows, count, threads, keep_cache=True, lengths=None):
        """The products and cells of ``count`` forward steps at B > 1 on ``threads`` threads,
        in place of BLAS and a call per step: ``pre_h = w [h_{t-1}; 1]`` with ``w`` [W_hh | b]
        (K*H, n), and ``pre_x = w_x [x_t; 1]`` with ``w_x`` [W_ih | b] (K*H, I+1), each tile of
        them handed to the cell while it is in cache.

        ``(stack, index)`` pairs, for each step: ``h_prev``, h_{t-1} (n = H, or H+1 with a row of
        ones below), of an (m, B, n) stack with its B contiguous and its rows close (one step's
        rows far apart cost a TLB entry each); ``h_t``, where the cell writes h_t (m, B, n),
        which each step copies into ``h_rows``, (m, B, H) with contiguous rows; ``x``, x_t of an
        (m, B, I) stack with contiguous rows, which each thread transposes for its tiles, a row
        of ones below. Without ``keep_cache`` (inference) the threads write the cell's cache into
        their scratch. With ``lengths`` ((B,) ints, a right-padded batch) each sequence's state
        is carried through the steps past its end."""
        K, H = self.cell.NUM_GATES, w.shape[0] // self.cell.NUM_GATES
        weights = self._weights_and_room(w, False), self._weights_and_room(w_x, False)
        if w.shape[0] != K * H:
            raise ValueError(f"threaded weights: expected K*H = {K} x H rows of W_hh, got {w.shape}")
        n, n_x = w.shape[1], w_x.shape[1]
        B = h_prev[0].shape[1]
        arrays = [(h_prev[0], n, h_prev[1]), (h_t[0], n, h_t[1])]
        rows = plan(B, 1, self.dtype, arrays, count)
        for k, (what, pair, shape) in enumerate((("h_rows", h_rows, (B, H)), ("x", x, (B, n_x - 1))), len(arrays)):
            _plan_row_major(rows, k, *pair, count, shape, self.dtype, what)
        # the step's arrays: pre_x, pre_h, the states entering and leaving, the cache
        first_cache = 2 + 2 * len(self.cell.STATE_NAMES)
        kept = () if keep_cache else range(first_cache, first_cache + len(self.cell.CACHE_WIDTHS))
        discard = sum(1 << k for k in kept)
        scratch = self._forward_scratch(self.dtype.itemsize, n, n_x, B, K * H, discard)
        return self._threaded(rows, weights, H, scratch, threads, input_n=n_x, discard=discard,
                              arrays=(arrays, h_rows, x), lengths=lengths)

    def threaded_backward(self, w, w_x, dpre_h, dh_prev, dpre_x, dx, count, threads, gradients, lengths=None,
                          first_step=0):
        """The products of ``count`` backward steps at B > 1 on ``threads`` threads, in place
        of BLAS: ``dh_{t-1} = wᵀ dpre_h`` with ``w`` W_hh (K*H, H) and ``dx_t = dpre_xᵀ w_x``
        with ``w_x`` W_ih (K*H, I); then the sums over the steps that ``gradients``
        (:func:`gradient_args`) describes.

        ``dpre_h``, ``dpre_x``: ``(stack, index)`` pairs of (m, B, K*H) stacks; ``dh_prev``: of
        an (m, B, H) view of an (m, H, B) stack; ``dx``: of an (m, B, I) stack with contiguous
        rows, which the threads write in that layout. With
        ``lengths`` ((B,) ints, a right-padded batch; row 0 is time step ``first_step``) each
        part of the state's gradient passes the steps past a sequence's end unchanged."""
        weights = self._weights_and_room(w, True), self._weights_and_room(w_x, True)
        KH, (H, I) = w.shape[0], (w.shape[1], w_x.shape[1])
        B = dpre_h[0].shape[1]
        arrays = [(dpre_h[0], KH, dpre_h[1]), (dh_prev[0], H, dh_prev[1]), (dpre_x[0], KH, dpre_x[1])]
        rows = plan(B, 1, self.dtype, arrays, count)
        _plan_row_major(rows, 3, *dx, count, (B, I), self.dtype, "dx")
        scratch = self._backward_scratch(self.dtype.itemsize, KH, H, I)
        return self._threaded(rows, weights, H, scratch, threads, direct=bool(self._direct[0]), input_n=I,
                              gradients=gradients, arrays=arrays, lengths=lengths, first_step=first_step)

    def forward_pass(self, products, steps, start, count):
        """Steps ``start`` to ``start + count - 1`` in one call at B = 1: row ``start + i`` of
        ``products`` (the recurrent products of the whole pass, :meth:`product_steps`), then row
        ``i`` of ``steps`` (the cells of these steps, :meth:`forward_steps`). At B > 1,
        ``products`` are :meth:`threaded_forward` and the steps run on its threads."""
        if isinstance(products, Threaded):
            products.check(steps, start, count)
            self._forward_threads(*products.row(start), *steps.row(0), *products.pass_args, count)
        else:
            self._forward_pass(*products.row(start), *steps.row(0), count)

    def backward_pass(self, steps, products, dy, dh, parity, count):
        """Steps ``count - 1`` down to 0 of a chunk in one call: ``dy`` (chunk, B, H), with
        contiguous rows, adds row i, the output's gradient, to ``dh[parity[i]]`` (of the two
        (H, B) buffers of h's gradient, the one step i reads); then row i of ``steps``
        (:meth:`backward_steps`) and of ``products`` (:meth:`product_steps` at B = 1,
        :meth:`threaded_backward` at B > 1, with ``transpose``, into the other buffer); and
        where the cell has a direct path to h_{t-1} (GRU), it is added to that buffer."""
        if isinstance(products, Threaded):
            products.check(steps, 0, count)
            B, H = dh.shape[2], dh.shape[1]
            B_products = int(products._rows[0, column("step_args", "B")])
            if (B, H) != (B_products, products.units):
                raise ValueError(f"threaded pass: dh is (H, B) = {(H, B)}, the products' B, H = "
                                 f"{(B_products, products.units)}")
            before = plan(B, H, self.dtype, [(dh.transpose(0, 2, 1), 1, parity)], count)
            _plan_row_major(before, 1, dy, np.arange(count), count, (B, H), self.dtype, "dy")
            self._backward_threads(_address(before), before.shape[1], *steps.row(0), *products.row(0),
                                   *products.pass_args, count)
            return
        dy, dh = dy[:, 0], dh[:, :, 0]
        H = dh.shape[1]
        before = add_plan(H, self.dtype, (dy, np.arange(count)), (dh, parity), count)
        after = add_plan(H, self.dtype, (dh, parity), (dh, 1 - parity), count) if self._direct[0] else None
        after_table = (0, 0) if after is None else (_address(after), after.shape[1])
        self._backward_pass(_address(before), before.shape[1], *steps.row(0), *products.row(0), *after_table, count)

