"""Stacks of layers and directions, parameter naming, ``batch_first``: the public
``RNN``, ``LSTM`` and ``GRU`` classes.

Legend: T time steps, B batch, I input features, H hidden units, K gates per cell,
L layers, D directions.

The classes hold configuration and parameters only. A pass in flight lives in the cache that
``forward`` returns and ``backward`` takes (or the ``.cache`` of what calling a model returns),
so several passes can be open at once.
"""

from typing import NamedTuple

import numpy as np

from . import recurrence, reference
from .cells import CELLS
from .checks import FLOAT_DTYPES, as_float_array, check_lengths, check_shape, check_state, is_integer
from .parameters import Parameters


def layer_suffix(layer, direction):
    """``l0``, ``l0_reverse``, ... as in torch's parameter names."""
    return f"l{layer}" + ("_reverse" if direction == 1 else "")


def param_shapes(cell, input_size, hidden_size, num_layers, num_directions):
    """Names and shapes of all parameters, in torch's ``state_dict`` order."""
    KH = cell.NUM_GATES * hidden_size
    shapes = {}
    for layer in range(num_layers):
        layer_input = input_size if layer == 0 else num_directions * hidden_size
        for direction in range(num_directions):
            s = layer_suffix(layer, direction)
            shapes[f"weight_ih_{s}"] = (KH, layer_input)
            shapes[f"weight_hh_{s}"] = (KH, hidden_size)
            shapes[f"bias_ih_{s}"] = (KH,)
            shapes[f"bias_hh_{s}"] = (KH,)
    return shapes


def layer_weights(params, layer, direction):
    """The :class:`recurrence.Weights` of one layer and direction, taken from ``params``."""
    s = layer_suffix(layer, direction)
    return recurrence.Weights(
        params[f"weight_ih_{s}"], params[f"weight_hh_{s}"], params[f"bias_ih_{s}"], params[f"bias_hh_{s}"]
    )


def named_grads(weight_grads, layer, direction):
    """A :class:`recurrence.Weights` of gradients under torch's parameter names."""
    s = layer_suffix(layer, direction)
    return {f"weight_ih_{s}": weight_grads.w_ih, f"weight_hh_{s}": weight_grads.w_hh,
            f"bias_ih_{s}": weight_grads.b_ih, f"bias_hh_{s}": weight_grads.b_hh}


def remember_bias(params, cell, hidden_size, amount, prefix=""):
    """``params`` with ``amount`` added to ``bias_ih`` of the gate that keeps the state
    (``cell.REMEMBER_GATE``: LSTM's forget gate, GRU's update gate) in every layer and
    direction, a common initialisation (Gers et al. 2000, Jozefowicz et al. 2015); a vanilla
    RNN has no such gate and is returned as it is. ``prefix``: of the names, e.g. ``"rnn."``.
    Returns a new dict; the arrays not changed are shared."""
    if cell.REMEMBER_GATE is None or not amount:
        return dict(params)
    block = slice(cell.REMEMBER_GATE * hidden_size, (cell.REMEMBER_GATE + 1) * hidden_size)
    biased = dict(params)
    for name, value in params.items():
        if name.startswith(prefix + "bias_ih_"):
            biased[name] = value.copy()
            biased[name][block] += amount
    return biased


class StackCache(NamedTuple):
    """What :func:`stack_forward` keeps: one engine cache per layer and direction."""

    caches: list  # L lists of D recurrence.Cache
    lengths: np.ndarray | None  # B
    dropout_masks: list | None = None  # L-1 arrays (T, B, D*H), or None without dropout


def dropout_masks(rng, p, shape, num_layers, dtype):
    """Inverted-dropout masks for the outputs of every layer but the last, as torch places them.

    Each entry is 0 with probability ``p`` and ``1 / (1 - p)`` otherwise, so that the expected
    output is unchanged. ``rng``: np.random.Generator; ``shape``: (T, B, D*H).
    Returns a list of L-1 arrays of ``shape`` and ``dtype``.
    """
    if not 0 <= p < 1:
        raise ValueError(f"expected a dropout probability in [0, 1) but got {p!r}")
    scale = np.asarray(1.0 / (1.0 - p), dtype=dtype)
    return [(rng.random(shape) >= p).astype(dtype) * scale for _ in range(num_layers - 1)]


def stack_forward(cell, params, x, state0, lengths, num_layers, num_directions, masks=None, keep_cache=True):
    """Run a stack of layers, each with one or two directions.

    Parameters
    ----------
    cell : module of ``bptt.cells``
    params : dict name -> ndarray, as :func:`param_shapes`
    x : (T, B, I)
    state0 : tuple of (L*D, B, H) arrays, one per ``cell.STATE_NAMES``
    lengths : (B,) ints in [1, T], or None
    masks : None, or L-1 dropout masks (T, B, D*H) (:func:`dropout_masks`): layer l's output
        is multiplied by ``masks[l]`` before it enters layer l+1
    keep_cache : False for inference: nothing is kept for backward and the cache is None

    Returns
    -------
    y : (T, B, D*H)
    state_n : tuple of (L*D, B, H)
    cache : StackCache, or None without ``keep_cache``
    """
    T = x.shape[0]
    mask = None if lengths is None else recurrence.length_mask(lengths, T)
    finals = [[] for _ in state0]
    caches = []
    layer_input = x
    for layer in range(num_layers):
        outputs, layer_caches = [], []
        for direction in range(num_directions):
            k = layer * num_directions + direction
            seq = layer_input if direction == 0 else recurrence.reverse_time(layer_input, lengths)
            y, state, cache = recurrence.forward(
                cell, layer_weights(params, layer, direction), seq, tuple(s[k] for s in state0), mask, keep_cache
            )
            outputs.append(y if direction == 0 else recurrence.reverse_time(y, lengths))
            layer_caches.append(cache)
            for final, s in zip(finals, state):
                final.append(s)
        caches.append(layer_caches)
        layer_input = outputs[0] if num_directions == 1 else np.concatenate(outputs, axis=-1)
        if masks is not None and layer < num_layers - 1:
            layer_input = layer_input * masks[layer]  # T,B,D*H  dropout between layers
    state_n = tuple(np.stack(f) for f in finals)
    return layer_input, state_n, StackCache(caches, lengths, masks) if keep_cache else None


def layer_backward(dy, dstate, cache, cut=None, edges=None):
    """BPTT of one layer and direction: the fast engine (``recurrence.backward``), or, for a cut
    path or window edges (the variants only proofs ask for), the reference engine on the same
    pass replayed (``reference.backward``). Shapes as ``recurrence.backward``."""
    if cut is None and edges is None:
        return recurrence.backward(dy, dstate, cache)
    return reference.backward(dy, dstate, reference.replay(cache), cut, edges)


def stack_backward(dy, dstate_n, cache, cut=None, edges=None):
    """Backward of :func:`stack_forward`: the layers in reverse order, each direction's BPTT.

    Parameters
    ----------
    dy : (T, B, D*H)
    dstate_n : tuple of (L*D, B, H) arrays or None entries (zero)
    cache : StackCache
    cut : None, "hidden" or "cell", a path through time to leave out (``reference.backward``)
    edges : None, or (T, B) bool, where the gradient through time restarts in every layer and
        both directions (``reference.backward``, ``recurrence.window_edges``)

    Returns
    -------
    grads : dict name -> ndarray, the keys and shapes of ``params``
    dx : (T, B, I)
    dstate0 : tuple of (L*D, B, H)
    """
    caches, lengths, masks = cache
    num_directions = len(caches[0])
    H = caches[0][0].weights.w_hh.shape[1]
    grads = {}
    dstate0 = {}
    for layer in reversed(range(len(caches))):
        dlayer_input = None
        for direction in range(num_directions):
            k = layer * num_directions + direction
            dy_dir = dy[..., direction * H:(direction + 1) * H]
            if direction == 1:
                dy_dir = recurrence.reverse_time(dy_dir, lengths)
            dstate = tuple(None if d is None else d[k] for d in dstate_n)
            edges_dir = edges if edges is None or direction == 0 else recurrence.reverse_edges(edges, lengths)
            weight_grads, dseq, dstate0[k] = layer_backward(dy_dir, dstate, caches[layer][direction], cut, edges_dir)
            if direction == 1:
                dseq = recurrence.reverse_time(dseq, lengths)
            dlayer_input = dseq if dlayer_input is None else dlayer_input + dseq
            grads.update(named_grads(weight_grads, layer, direction))
        # the layer below fed this one y_below * mask: its gradient is dx * mask
        dy = dlayer_input if masks is None or layer == 0 else dlayer_input * masks[layer - 1]
    order = sorted(dstate0)
    dstate0 = tuple(np.stack([dstate0[k][j] for k in order]) for j in range(len(dstate0[0])))
    return grads, dy, dstate0


def stack_backward_truncated(dy, dstate_n, cache, depth, cut=None):
    """Backward of :func:`stack_forward` where each loss term's gradient flows back at most
    ``depth`` steps: the term at step t reaches steps t-depth+1 .. t and no further, in every
    layer. ``depth=1`` is no gradient through time; ``depth >= T`` is exact BPTT. It is
    TBPTT(1, depth) (:func:`stack_backward_window`), unidirectional stacks only.

    Shapes as :func:`stack_backward`.
    """
    return stack_backward_window(dy, dstate_n, cache, recurrence.Window(1, depth), cut)


def stack_backward_window(dy, dstate_n, cache, window, cut=None):
    """Backward of :func:`stack_forward` truncated as ``window`` (a :class:`recurrence.Window`)
    says, in every layer, within each sequence's own length.

    Windows (``k1 == k2``) are one backward whose gradient through time restarts at each
    window's edge, in both directions. Otherwise (unidirectional stacks only) the chunks are
    walked back one at a time, counted from each sequence's last: pass p takes the losses of
    every sequence's p-th chunk from the end (and, for p = 0, the final state's gradient) over
    the steps they reach, ``window.reach(start)`` onwards, with the gradient dropped where that
    reach begins; the passes add up. A pass with nothing to carry is skipped.

    Shapes as :func:`stack_backward`.
    """
    T, B = dy.shape[:2]
    lengths = cache.lengths
    if window.k1 == window.k2:
        edges = recurrence.window_edges(window, T, lengths)
        return stack_backward(dy, dstate_n, cache, cut, edges if edges.any() else None)
    if len(cache.caches[0]) != 1:
        raise ValueError(f"expected a unidirectional stack for TBPTT({window.k1}, {window.k2}) with k2 > k1 "
                         f"but got {len(cache.caches[0])} directions")
    chunks = [window.chunks(T if lengths is None else int(lengths[b]))[::-1] for b in range(B)]  # last first
    total = None
    for p in range(max(map(len, chunks))):
        bounds = [per_example[p] if p < len(per_example) else None for per_example in chunks]
        reach = np.array([T if chunk is None else window.reach(chunk[0]) for chunk in bounds])  # B
        losses = np.zeros((T, B, 1), bool)  # T,B,1  the steps whose losses this pass carries
        for b, chunk in enumerate(bounds):
            if chunk is not None:
                losses[chunk[0]:chunk[1], b] = True
        dy_pass = dy * losses
        dstate = dstate_n if p == 0 else (None,) * len(dstate_n)
        if p > 0 and not dy_pass.any():
            continue
        # pass 0 runs to the end, where the final state leaves (carried past each sequence's end)
        start = int(reach.min())
        stop = T if p == 0 else max(chunk[1] for chunk in bounds if chunk is not None)
        edges = np.zeros((stop - start, B), bool)  # restart where each sequence's reach begins
        for b in np.flatnonzero((reach > start) & (reach < stop)):
            edges[reach[b] - start, b] = True
        part = cache._replace(
            caches=[[recurrence.slice_cache(one, start, stop) for one in layer] for layer in cache.caches],
            dropout_masks=None if cache.dropout_masks is None else [m[start:stop] for m in cache.dropout_masks],
        )
        # without an edge inside the slice, the fast engine runs it
        grads, dx_part, dstate0 = stack_backward(dy_pass[start:stop], dstate, part, cut, edges if edges.any() else None)
        if total is None:
            total = grads
            dx = np.zeros((T, B) + dx_part.shape[2:], dy.dtype)
            dstate0_total = tuple(np.zeros_like(d) for d in dstate0)
        else:
            for name, g in grads.items():
                total[name] += g
        dx[start:stop] += dx_part
        # only a reach that begins at step 0 reaches the initial state
        at_zero = (reach == 0)[:, None].astype(dy.dtype)  # B,1
        dstate0_total = tuple(a + d * at_zero for a, d in zip(dstate0_total, dstate0))
    return total, dx, dstate0_total


def check_window(window):
    """``window`` (a :class:`recurrence.Window` or a tuple ``(k1, k2[, align])``) as a
    Window, or a ValueError naming what is expected."""
    try:
        window = recurrence.Window(*window)
    except TypeError:
        raise ValueError(f"expected window as (k1, k2) or (k1, k2, align) but got {window!r}") from None
    if not (is_integer(window.k1, 1) and is_integer(window.k2, 1)) or window.k2 < window.k1:
        raise ValueError(f"expected window integers 1 <= k1 <= k2 but got k1={window.k1!r}, k2={window.k2!r}")
    if window.align not in recurrence.ALIGNS:
        raise ValueError(f"expected window align 'start' or 'end' but got {window.align!r}")
    return recurrence.Window(int(window.k1), int(window.k2), window.align)


def stack_backward_by_depth(dy, dstate_n, cache):
    """:func:`stack_backward_truncated` at every depth k = 1 .. T at once, in O(T²) one-step
    backwards instead of O(T³) (``recurrence.backward_by_depth``); one layer, one direction.

    Shapes as :func:`stack_backward`. Returns T tuples ``(grads, dx, dstate0)``, for k = 1 .. T.
    """
    if len(cache.caches) != 1 or len(cache.caches[0]) != 1:
        raise ValueError(f"expected a stack of one layer and one direction but got {len(cache.caches)} layers "
                         f"and {len(cache.caches[0])} directions")
    dstate = tuple(None if d is None else d[0] for d in dstate_n)
    return [
        (named_grads(weight_grads, 0, 0), dx, tuple(d[None] for d in dstate0))  # 1,B,H each
        for weight_grads, dx, dstate0 in recurrence.backward_by_depth(dy, dstate, cache.caches[0][0])
    ]


def dropout_generator(dropout, dropout_rng, keep_cache, owner):
    """The generator that draws a pass's dropout masks, or None for a pass without dropout.

    Parameters
    ----------
    dropout : the model's dropout probability
    dropout_rng : a ``np.random.Generator`` (dropout on, for training), ``False`` (dropout off,
        for evaluation: what ``model.eval()`` does in torch), or None, which means "off" only
        where nothing is ambiguous: a model without dropout, or a pass that keeps no cache
    keep_cache : whether the pass keeps a cache for backward (a training pass)
    owner : what the error names, as its ``str``: the model (``LSTM(3, 4, num_layers=2, dropout=0.5,
        ...)``, written only when the error is), or a phrase

    Dropout that is configured but silently off while training is refused: a model with
    ``dropout > 0`` in a pass that keeps a cache, without a generator, is a ValueError that says
    how to pass one and how to evaluate without dropout.
    """
    if dropout_rng is False:
        return None
    if dropout_rng is None:
        if dropout and keep_cache:
            raise ValueError(
                f"{owner} has dropout={dropout:g} but the pass got no dropout_rng: pass "
                "dropout_rng=np.random.default_rng(seed) to train with dropout, or dropout_rng=False to run "
                "without it (evaluation, what model.eval() does in torch); keep_cache=False (inference) "
                "runs without dropout too"
            )
        return None
    if not isinstance(dropout_rng, np.random.Generator):
        raise TypeError("expected dropout_rng to be a np.random.Generator, False (no dropout) or None but got "
                        f"{type(dropout_rng).__name__}")
    return dropout_rng if dropout else None


class ForwardCache(NamedTuple):
    """The cache of a public ``forward``: the stack's cache and the layout to undo."""

    stack: StackCache
    x_shape: tuple  # T,B,I  time-major
    batch_first: bool  # y, dy and dx batch-first
    unbatched: bool = False  # x was (T, I): dy, dx and the states have no batch axis


class Output(tuple):
    """What calling a model returns: ``(y, h_n)``, as a torch module call does (for LSTM
    ``(y, (h_n, c_n))``), carrying the pass's cache as ``.cache`` for :meth:`_Recurrent.backward`
    (None for a pass with ``keep_cache=False``).

    It is a tuple of two, so ``y, h_n = model(x)`` unpacks as in torch; the cache is held by
    this result, never by the model.
    """

    def __new__(cls, y, h_n, cache):
        result = super().__new__(cls, (y, h_n))
        result.cache = cache
        return result

    def __getnewargs__(self):  # copy and pickle rebuild it through __new__
        return self[0], self[1], self.cache

    @property
    def y(self):
        return self[0]

    @property
    def h_n(self):
        return self[1]


class _Recurrent(Parameters):
    """Shared body of :class:`RNN`, :class:`LSTM` and :class:`GRU`.

    Two ways to run a model, one pass each:

    - ``y, h_n, cache = model.forward(x, h0, lengths)`` and
      ``grads, dx, dh0 = model.backward(cache, dy, dh_n)``: the library's explicit pair, the
      cache of the pass handed from one to the other by the caller.
    - ``out = model(x, h0, lengths)``, as a torch module is called: ``out`` unpacks as torch's
      ``(y, h_n)`` (LSTM: ``(y, (h_n, c_n))``) and carries the same cache as ``out.cache``, so
      ``model.backward(out.cache, dy)`` follows. It is :meth:`forward`, with the same options.

    Either way the model keeps nothing of a pass: it holds parameters and configuration only,
    and several passes may be open at once.

    Input with a batch axis is ``(T, B, I)`` (``(B, T, I)`` with ``batch_first``); one sequence
    without it is ``(T, I)`` whatever ``batch_first`` says, with states ``(L*D, H)``, as in torch.

    Dropout (``dropout > 0``) is on in a pass given ``dropout_rng=np.random.default_rng(seed)``
    and off with ``dropout_rng=False`` (torch's ``model.eval()``); a pass that keeps a cache
    (training) without either is refused rather than silently run without dropout.

    ``parameters()`` and ``named_parameters()`` iterate over ``params`` in ``state_dict`` order,
    as torch's do; the arrays are the model's own, not copies.
    """

    def __init__(self, cell_name, input_size, hidden_size, num_layers=1, *, bidirectional=False,
                 batch_first=False, dropout=0.0, dtype=np.float32, seed=None):
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not is_integer(value, 1):
                raise ValueError(f"expected {name} to be a positive integer but got {value!r}")
        if isinstance(dropout, bool) or not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
            raise ValueError(f"expected dropout, a probability in [0, 1), but got {dropout!r}")
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"expected dtype float32 or float64 but got {dtype}")
        self.cell = CELLS[cell_name]
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.dtype = dtype
        # torch's default initialisation: every parameter uniform in ±1/sqrt(H)
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(hidden_size)
        self.params = {
            name: rng.uniform(-bound, bound, size=shape).astype(dtype)
            for name, shape in self.shapes().items()
        }

    def shapes(self):
        """Parameter names and shapes, in torch's ``state_dict`` order."""
        return param_shapes(self.cell, self.input_size, self.hidden_size, self.num_layers, self.num_directions)

    def _torch_repr(self):
        extra = "".join([
            f", num_layers={self.num_layers}" if self.num_layers != 1 else "",
            ", bidirectional=True" if self.bidirectional else "",
            ", batch_first=True" if self.batch_first else "",
            f", dropout={self.dropout:g}" if self.dropout else "",
        ])
        return f"{type(self).__name__}({self.input_size}, {self.hidden_size}{extra}, dtype={self.dtype.name})"

    # input checks

    def _check_x(self, x):
        """``x`` as an array of the model's dtype: (T, B, I), (B, T, I) with ``batch_first``,
        or (T, I) for one unbatched sequence."""
        x = as_float_array(x, "x", self.dtype)
        if x.ndim == 2:
            check_shape(x, "unbatched x", (None, self.input_size), ("T", "I"))
            if x.shape[0] == 0:
                raise ValueError(f"expected x with at least one step but got shape {x.shape}")
            return x
        letters = ("B", "T", "I") if self.batch_first else ("T", "B", "I")
        try:
            check_shape(x, "x", (None, None, self.input_size), letters)
        except ValueError as error:
            if x.ndim == 3:
                raise
            raise ValueError(f"{error}; one unbatched sequence is (T, {self.input_size})") from None
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"expected x with at least one step and one sequence but got shape {x.shape}")
        return x

    def _check_state(self, state, name, batch):
        """``state`` (a user's h0 or dh_n) as a tuple with one (L*D, B, H) array per state part;
        None for all zeros. Parts of dh_n may be None, parts of h0 may not. ``batch``: B, or None
        for unbatched input, whose states are (L*D, H) and come back with a batch axis of 1."""
        # the name of each part: h0 -> (h0, c0), dh_n -> (dh_n, dc_n)
        part_names = [name.replace("h", state_name, 1) for state_name in self.cell.STATE_NAMES]
        if state is None:
            return (None,) * len(part_names)
        LD, H = self.num_layers * self.num_directions, self.hidden_size
        if batch is not None:
            return check_state(state, name, part_names, (LD, batch, H), self.dtype, allow_none=name != "h0")
        try:
            parts = check_state(state, name, part_names, (LD, H), self.dtype, allow_none=name != "h0")
        except ValueError as error:
            raise ValueError(f"{error} (x is one unbatched sequence, (T, I): its states have no batch "
                             "axis, as in torch)") from None
        return tuple(None if part is None else part[:, None, :] for part in parts)  # L*D,1,H

    def _public_state(self, state):
        return state if len(state) > 1 else state[0]

    # passes

    def __call__(self, x, h0=None, lengths=None, *, dropout_rng=None, keep_cache=True):
        """:meth:`forward` as torch's module call: ``y, h_n = model(x)`` (LSTM:
        ``y, (h_n, c_n) = model(x)``). Arguments as :meth:`forward`.

        Returns
        -------
        Output : a tuple ``(y, h_n)`` with the pass's cache as ``.cache`` for :meth:`backward`
        """
        y, h_n, cache = self.forward(x, h0, lengths, dropout_rng=dropout_rng, keep_cache=keep_cache)
        return Output(y, h_n, cache)

    def forward(self, x, h0=None, lengths=None, *, dropout_rng=None, keep_cache=True):
        """Run the network over a batch of sequences, or over one sequence without a batch axis.

        Parameters
        ----------
        x : (T, B, I), or (B, T, I) with ``batch_first``; or (T, I), one unbatched sequence
            (whatever ``batch_first`` says, as in torch)
        h0 : (L*D, B, H), for LSTM a tuple ``(h0, c0)``; (L*D, H) each for unbatched x; None
            for zeros
        lengths : B ints in [1, T] for a right-padded batch, or None (always None unbatched)
        dropout_rng : np.random.Generator to draw dropout masks from (training), or False for
            no dropout (evaluation, torch's ``model.eval()``); None is no dropout where the model
            has ``dropout=0`` or ``keep_cache=False``, and an error for a model with
            ``dropout > 0`` in a pass that keeps a cache (:func:`dropout_generator`)
        keep_cache : False for inference and sampling: nothing is kept for backward (less
            memory, a little faster) and the returned cache is None

        Returns
        -------
        y : (T, B, D*H), or (B, T, D*H) with ``batch_first``, (T, D*H) unbatched; zero past
            each sequence's end
        h_n : (L*D, B, H), (L*D, H) unbatched; for LSTM a tuple ``(h_n, c_n)``; each
            sequence's state at its last step
        cache : ForwardCache, for :meth:`backward`; None without ``keep_cache``
        """
        x = self._check_x(x)
        unbatched = x.ndim == 2
        batch_first = self.batch_first and not unbatched
        if unbatched:
            if lengths is not None:
                raise ValueError(f"expected no lengths for one unbatched sequence x of shape {x.shape} (T, I) "
                                 f"but got lengths={lengths!r}; for a padded batch give x a batch axis")
            x = x[:, None, :]  # T,1,I
        elif batch_first:
            x = x.transpose(1, 0, 2)
        T, B = x.shape[:2]
        state0 = self._check_state(h0, "h0", None if unbatched else B)
        shape = (self.num_layers * self.num_directions, B, self.hidden_size)
        # x (for a cache) and h0 are copied: the cache must not share memory with arrays that the
        # caller may refill (the next batch) before this pass's backward
        state0 = tuple(np.zeros(shape, self.dtype) if s is None else s.copy() for s in state0)
        if lengths is not None:
            lengths = check_lengths(lengths, B, T)
        masks = None
        rng = dropout_generator(self.dropout, dropout_rng, keep_cache, self)
        if rng is not None:
            shape = (T, B, self.num_directions * self.hidden_size)
            masks = dropout_masks(rng, self.dropout, shape, self.num_layers, self.dtype)
        y, state_n, cache = stack_forward(
            self.cell, self.params, np.array(x, order="C") if keep_cache else np.ascontiguousarray(x), state0, lengths,
            self.num_layers, self.num_directions, masks, keep_cache,
        )
        if unbatched:
            y, state_n = y[:, 0], tuple(s[:, 0] for s in state_n)  # T,D*H and L*D,H
        elif batch_first:
            y = y.transpose(1, 0, 2)
        if not keep_cache:
            return y, self._public_state(state_n), None
        return y, self._public_state(state_n), ForwardCache(cache, x.shape, batch_first, unbatched)

    def backward(self, cache, dy, dh_n=None, *, depth=None, window=None, cut=None):
        """Exact BPTT: gradients of every parameter, of the input and of the initial state.

        Parameters
        ----------
        cache : the ForwardCache returned by :meth:`forward` (the ``.cache`` of a model call)
        dy : gradient of the loss w.r.t. ``y``, (T, B, D*H) or (B, T, D*H) with ``batch_first``;
            (T, D*H) for unbatched x
        dh_n : gradient w.r.t. ``h_n``, (L*D, B, H), (L*D, H) for unbatched x; for LSTM a tuple
            ``(dh_n, dc_n)`` whose entries may be None; None for zero
        depth : None for exact BPTT, or an int k >= 1: each loss term's gradient flows back at
            most k steps (unidirectional models only); the same as ``window=Window(1, k)``
        window : None, or a ``bptt.Window(k1, k2, align)`` (or a tuple of those): truncated
            BPTT on chunks of each sequence (``bptt.recurrence.Window``); windows (k1 == k2)
            for any model, k2 > k1 for unidirectional ones
        cut : None, ``"hidden"`` or ``"cell"``: leave out one path through time (the slips
            that ``bptt.diagnose`` recognises); see ``bptt.reference.backward``

        Returns
        -------
        grads : dict name -> ndarray, the keys and shapes of ``params``
        dx : the shape of ``x``
        dh0 : (L*D, B, H), (L*D, H) for unbatched x; for LSTM a tuple ``(dh0, dc0)``
        """
        if isinstance(cache, Output):
            raise TypeError("expected the cache returned by forward but got the whole result of a model call: "
                            "pass its .cache, as in model.backward(out.cache, dy)")
        if not isinstance(cache, ForwardCache):
            raise TypeError(f"expected the cache returned by forward but got {type(cache).__name__}")
        T, B, _ = cache.x_shape
        dy = as_float_array(dy, "dy", self.dtype)
        out = self.num_directions * self.hidden_size
        if cache.unbatched:
            check_shape(dy, "dy", (T, out), ("T", "D*H"))
            dy = dy[:, None, :]  # T,1,D*H
        elif cache.batch_first:
            check_shape(dy, "dy", (B, T, out), ("B", "T", "D*H"))
            dy = dy.transpose(1, 0, 2)
        else:
            check_shape(dy, "dy", (T, B, out), ("T", "B", "D*H"))
        dstate_n = self._check_state(dh_n, "dh_n", None if cache.unbatched else B)
        if cut not in (None,) + recurrence.PATHS:
            raise ValueError(f"expected cut None, 'hidden' or 'cell' but got {cut!r}")
        if depth is not None and window is not None:
            raise ValueError(f"expected depth or window, not both, but got depth={depth!r}, window={window!r}")
        if depth is not None:
            if not is_integer(depth, 1):
                raise ValueError(f"expected depth to be a positive integer but got {depth!r}")
            window = recurrence.Window(1, int(depth))
        if window is None:
            grads, dx, dstate0 = stack_backward(dy, dstate_n, cache.stack, cut)
        else:
            window = check_window(window)
            if window.k2 > window.k1 and self.bidirectional:
                what = f"truncation by depth {window.k2}" if depth is not None else \
                    f"TBPTT({window.k1}, {window.k2}) with k2 > k1"
                raise ValueError(f"expected a unidirectional model for {what} but got bidirectional=True "
                                 "(windows, k1 == k2, restart both directions)")
            grads, dx, dstate0 = stack_backward_window(dy, dstate_n, cache.stack, window, cut)
        if cache.unbatched:
            dx, dstate0 = dx[:, 0], tuple(d[:, 0] for d in dstate0)  # T,I and L*D,H
        elif cache.batch_first:
            dx = dx.transpose(1, 0, 2)
        # the stack fills grads from the last layer down; give them the order of params, so
        # that zip(params.values(), grads.values()) pairs each parameter with its gradient
        grads = {name: grads[name] for name in self.params}
        return grads, dx, self._public_state(dstate0)


class RNN(_Recurrent):
    """Elman RNN, ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` (or relu), as ``torch.nn.RNN``.

    ``y, h_n = rnn(x)`` as in torch, the result's ``.cache`` going to :meth:`backward`; or
    ``y, h_n, cache = rnn.forward(x)``. Usage, unbatched input and dropout: :class:`_Recurrent`.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, *, nonlinearity="tanh", **options):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f'expected nonlinearity "tanh" or "relu" but got {nonlinearity!r}')
        self.nonlinearity = nonlinearity
        super().__init__(f"rnn_{nonlinearity}", input_size, hidden_size, num_layers, **options)


class LSTM(_Recurrent):
    """Long short-term memory, as ``torch.nn.LSTM`` (gates i, f, g, o); state ``(h, c)``.

    ``y, (h_n, c_n) = lstm(x)`` as in torch, the result's ``.cache`` going to :meth:`backward`;
    or ``y, (h_n, c_n), cache = lstm.forward(x)``. Usage, unbatched input and dropout:
    :class:`_Recurrent`.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, **options):
        super().__init__("lstm", input_size, hidden_size, num_layers, **options)


class GRU(_Recurrent):
    """Gated recurrent unit, as ``torch.nn.GRU`` (gates r, z, n; r scales ``W_hn h + b_hn``).

    ``y, h_n = gru(x)`` as in torch, the result's ``.cache`` going to :meth:`backward`; or
    ``y, h_n, cache = gru.forward(x)``. Usage, unbatched input and dropout: :class:`_Recurrent`.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, **options):
        super().__init__("gru", input_size, hidden_size, num_layers, **options)


KINDS = ("lstm", "gru", "rnn", "rnn_relu")


def make_rnn(kind, input_size, hidden_size, num_layers=1, **options):
    """The recurrent stack named ``kind``: ``"lstm"``, ``"gru"``, ``"rnn"`` (tanh) or
    ``"rnn_relu"``; ``options`` as the classes take them."""
    if kind not in KINDS:
        raise ValueError(f"expected a cell among {', '.join(KINDS)} but got {kind!r}")
    if kind in ("rnn", "rnn_relu"):
        return RNN(input_size, hidden_size, num_layers, nonlinearity="relu" if kind == "rnn_relu" else "tanh",
                   **options)
    return {"lstm": LSTM, "gru": GRU}[kind](input_size, hidden_size, num_layers, **options)

