"""A recurrent network with a loss: input code, recurrent stack, per-step linear head, loss.

Legend: T time steps, B batch, I input features of the stack, H hidden units, L layers,
D directions, V outputs (classes for cross-entropy, values for squared error), V_in input
vocabulary, E = I the embedding size.

Forward, in order (backward calls the backwards in exactly the reverse order)::

    x_in  = embedding(ids) | one_hot(ids) | x            T,B,I
    y     = stack(x_in, state0) -> state_n               T,B,D*H
    y_sel = y                          (many-to-many)    T,B,D*H
          | y[lengths_b - 1, b]        (many-to-one)     B,D*H
    out   = y_sel Wᵀ + b                                 T,B,V | B,V
    loss  = cross_entropy | mse (out, targets, mask)     the mean, or the sum (reduction)

The parameters are one dict with torch's ``state_dict`` names of an equivalent torch module
whose submodules are ``embedding`` (``nn.Embedding``), ``rnn`` (``nn.RNN/LSTM/GRU``) and
``head`` (``nn.Linear``): ``embedding.weight``, ``rnn.weight_ih_l0``, ..., ``head.weight``,
``head.bias``. The class holds these and the configuration; a pass in flight lives in the
cache that :meth:`Network.forward` returns and :meth:`Network.backward` takes.
"""

import copy
from typing import NamedTuple

import numpy as np

from .. import recurrence
from ..checks import as_float_array, check_lengths, check_shape, check_state, is_integer
from ..layers import (GRU, LSTM, RNN, dropout_generator, dropout_masks, stack_backward, stack_backward_truncated,
                      stack_forward)
from .embedding import check_ids, embedding_backward, embedding_forward, one_hot
from .head import head_backward, head_forward
from .losses import LOSSES, check_class_targets, check_value_targets
from .params import NetParameters

INPUTS = ("features", "one_hot", "embedding")
MODES = ("many_to_many", "many_to_one")
REDUCTIONS = ("mean", "sum")


def check_mask(mask, shape, name="mask"):
    """``mask`` as a bool array of ``shape``; 0/1 integers or floats are accepted as bools."""
    array = np.asarray(mask)
    if array.shape != tuple(shape):
        raise ValueError(f"expected {name} of shape {tuple(shape)} (which steps carry a loss) but got {array.shape}")
    if array.dtype == bool:
        return array
    if array.dtype.kind not in "iuf" or not np.all((array == 0) | (array == 1)):
        raise ValueError(f"expected {name} of booleans (or 0/1) but got dtype {array.dtype} with other values")
    return array.astype(bool)


def split_params(params, prefix):
    """The entries of ``params`` under ``prefix.``, with the prefix removed."""
    start = len(prefix) + 1
    return {name[start:]: value for name, value in params.items() if name.startswith(prefix + ".")}


class NetworkCache(NamedTuple):
    """What :meth:`Network.forward` keeps for :meth:`Network.backward`."""

    input: object  # EmbeddingCache, or None for one-hot codes and features
    stacks: list  # one layers.StackCache per segment of the stack's forward
    edges: list  # segment boundaries in steps: [0, s_1, ..., T]
    last: np.ndarray | None  # B  the step whose output many-to-one reads
    y_shape: tuple  # T,B,D*H
    head: object  # head.HeadCache
    loss: object  # the loss's cache
    batch_first: bool  # whether backward returns dx batch-first


RNN_CONFIGURATION = ("cell", "input_size", "hidden_size", "num_layers", "num_directions", "bidirectional",
                     "batch_first", "dtype", "dropout")


class Network(NetParameters):
    """Input code, recurrent stack, per-step linear head and loss, with hand-written BPTT.

    Parameters
    ----------
    rnn : a ``bptt.RNN``, ``bptt.LSTM`` or ``bptt.GRU``: its configuration (cell, sizes,
        layers, directions, ``batch_first``, dtype) and a copy of its parameters are taken;
        the network does not keep the instance
    output_size : V, the number of classes (cross-entropy) or of regression outputs (mse)
    input : ``"features"`` (x of floats, (T, B, I)), ``"one_hot"`` (x of token ids in
        [0, I), (T, B), coded one-hot; no parameters) or ``"embedding"`` (x of token ids in
        [0, V_in), (T, B), looked up in ``embedding.weight`` (V_in, I))
    vocab_size : V_in, for ``input="embedding"`` only
    loss : ``"cross_entropy"`` (targets: class ids) or ``"mse"`` (targets: floats)
    mode : ``"many_to_many"`` (a loss at every step the mask selects) or ``"many_to_one"``
        (a loss only at each sequence's last valid step)
    reduction : ``"mean"`` (the loss is the mean over the positions that carry one, as
        torch's losses by default) or ``"sum"`` (their sum, torch's ``reduction="sum"``: the
        mean times the number of positions, squared errors summed over the V outputs too)
    seed : seeds the initialisation of the embedding (N(0, 1), as torch) and the head
        (uniform in ±1/sqrt(D*H), as torch)

    Token ids (integers) need ``input="embedding"`` (with ``vocab_size``) or ``"one_hot"``;
    ``input="features"`` takes floats. A stack with ``dropout > 0`` needs, in every pass that
    keeps a cache (:meth:`forward`, :meth:`loss_and_grads`, ``bptt.nets.tbptt``), either
    ``dropout_rng=np.random.default_rng(seed)`` (training) or ``dropout_rng=False`` (no
    dropout); :meth:`predict` never drops. ``parameters()`` and ``named_parameters()`` iterate
    over ``params`` as torch's do.
    """

    def __init__(self, rnn, output_size, *, input="features", vocab_size=None, loss="cross_entropy",
                 mode="many_to_many", reduction="mean", seed=None):
        if not isinstance(rnn, (RNN, LSTM, GRU)):
            raise TypeError(f"expected rnn to be a bptt.RNN, bptt.LSTM or bptt.GRU but got {type(rnn).__name__}")
        if not is_integer(output_size, 1):
            raise ValueError(f"expected output_size to be a positive integer but got {output_size!r}")
        if input not in INPUTS:
            raise ValueError(f"expected input one of {', '.join(INPUTS)} but got {input!r}")
        if loss not in LOSSES:
            raise ValueError(f"expected loss one of {', '.join(LOSSES)} but got {loss!r}")
        if mode not in MODES:
            raise ValueError(f"expected mode one of {', '.join(MODES)} but got {mode!r}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"expected reduction one of {', '.join(REDUCTIONS)} but got {reduction!r}")
        if input == "embedding":
            if not is_integer(vocab_size, 1):
                raise ValueError(f'expected vocab_size, a positive integer, with input="embedding" but got {vocab_size!r}')
        elif input == "one_hot":
            if vocab_size is not None and vocab_size != rnn.input_size:
                raise ValueError(
                    f'with input="one_hot" the vocabulary is rnn.input_size ({rnn.input_size}) but got vocab_size={vocab_size}'
                )
            vocab_size = rnn.input_size
        elif vocab_size is not None:
            raise ValueError('vocab_size is for input="embedding" or "one_hot", not for input="features"')
        # the network holds its recurrent stack for its configuration; the stack's parameters
        # are the network's own "rnn.*", so the copy it holds keeps none
        self.rnn = copy.copy(rnn)
        self.rnn.params = {}
        self.output_size = int(output_size)
        self.input = input
        self.vocab_size = None if vocab_size is None else int(vocab_size)
        self.loss = loss
        self.mode = mode
        self.reduction = reduction
        rng = np.random.default_rng(seed)
        params = {}
        if input == "embedding":
            params["embedding.weight"] = rng.standard_normal((self.vocab_size, self.input_size)).astype(self.dtype)
        for name, value in rnn.params.items():
            params[f"rnn.{name}"] = value.copy()
        width = self.num_directions * self.hidden_size
        bound = 1.0 / np.sqrt(width)
        params["head.weight"] = rng.uniform(-bound, bound, (self.output_size, width)).astype(self.dtype)
        params["head.bias"] = rng.uniform(-bound, bound, (self.output_size,)).astype(self.dtype)
        self.params = params

    def __getattr__(self, name):
        """The recurrent stack's configuration, read through: ``cell``, ``input_size``,
        ``hidden_size``, ``num_layers``, ``num_directions``, ``bidirectional``,
        ``batch_first``, ``dtype``, ``dropout``."""
        if name in RNN_CONFIGURATION and "rnn" in vars(self):
            return getattr(self.rnn, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def rnn_type(self):
        """``"RNN"``, ``"LSTM"`` or ``"GRU"``: the class of the recurrent stack."""
        return type(self.rnn).__name__

    def _torch_repr(self):
        rnn = f"{self.rnn_type}({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        rnn += ", bidirectional=True" if self.bidirectional else ""
        rnn += ", batch_first=True" if self.batch_first else ""
        vocab = f", vocab_size={self.vocab_size}" if self.input == "embedding" else ""
        reduction = f", reduction={self.reduction!r}" if self.reduction != "mean" else ""
        return (f"Network({rnn}), {self.output_size}, input={self.input!r}{vocab}, loss={self.loss!r}, "
                f"mode={self.mode!r}{reduction}, dtype={self.dtype.name})")

    # input checks: everything public is checked here, before any arithmetic

    def check_inputs(self, x, name="x"):
        """``x`` time-major: (T, B, I) floats, or (T, B) token ids; batch-first input is transposed."""
        if self.input == "features":
            if np.asarray(x).dtype.kind in "iu":
                layout = "B, T" if self.batch_first else "T, B"
                raise TypeError(
                    f'expected {name} of floats ({layout}, {self.input_size}) for input="features" but got '
                    f'{np.asarray(x).dtype} token ids: integer ids need Network(rnn, V, input="embedding", '
                    f'vocab_size=V_in) or input="one_hot"'
                )
            x = as_float_array(x, name, self.dtype)
            letters = ("B", "T", "I") if self.batch_first else ("T", "B", "I")
            check_shape(x, name, (None, None, self.input_size), letters)
        else:
            x = check_ids(x, name, self.vocab_size, (None, None))
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"expected {name} with at least one step and one sequence but got shape {x.shape}")
        return np.ascontiguousarray(x.swapaxes(0, 1)) if self.batch_first else x

    def check_state(self, state, batch, name="state"):
        """``state`` (None, an (L*D, B, H) array, or LSTM's pair) as a tuple of arrays."""
        names = self.cell.STATE_NAMES
        shape = (self.num_layers * self.num_directions, batch, self.hidden_size)
        if state is None:
            return tuple(np.zeros(shape, self.dtype) for _ in names)
        return check_state(state, name, [f"{name} {part}" for part in names], shape, self.dtype, listed=names)

    def check_targets(self, targets, T, B, mask):
        """``targets`` time-major, checked against the mode and the loss."""
        positions = (T, B) if self.mode == "many_to_many" else (B,)
        if self.batch_first and self.mode == "many_to_many":
            targets = np.asarray(targets)
            expected = (B, T) + (() if self.loss == "cross_entropy" else (self.output_size,))
            if targets.shape != expected:
                raise ValueError(f"expected targets of shape {expected} (batch first) but got {targets.shape}")
            targets = targets.swapaxes(0, 1)
        if self.loss == "cross_entropy":
            return check_class_targets(targets, positions, self.output_size, mask)
        return check_value_targets(targets, positions + (self.output_size,), self.dtype)

    def check_loss_mask(self, mask, lengths, T, B):
        """The (T, B) bool mask of the steps that carry a loss (many-to-many), or None for all:
        the user's mask, and only steps within each sequence's length."""
        if mask is not None:
            if self.mode == "many_to_one":
                raise ValueError('a mask is for mode="many_to_many"; many-to-one reads each sequence\'s last step')
            mask = check_mask(mask, (B, T) if self.batch_first else (T, B))
            if self.batch_first:
                mask = mask.T
        if lengths is not None and self.mode == "many_to_many":
            within = recurrence.length_mask(lengths, T)[:, :, 0]  # T,B
            mask = within if mask is None else mask & within
        return mask

    def public_state(self, state):
        """A tuple of state arrays as users see it: the array alone, LSTM's pair as a tuple."""
        return state if len(state) > 1 else state[0]

    # the pass, time-major, on checked inputs

    def forward_time_major(self, params, x, targets, state0, lengths=None, mask=None, boundaries=(),
                           dropout_rng=None):
        """The pass of :meth:`forward` on checked, time-major inputs.

        Parameters
        ----------
        params : dict, the network's names and shapes
        x : (T, B, I) floats or (T, B) int64 ids
        targets : (T, B) | (T, B, V) | (B,) | (B, V), as the loss and the mode ask
        state0 : tuple of (L*D, B, H) arrays, one per state of the cell
        lengths : (B,) int64 or None
        mask : (T, B) bool or None (many-to-many only)
        boundaries : increasing steps 0 < s < T at which the stack's forward is run as separate
            segments, so that the state after s steps is returned too (truncated BPTT needs the
            state where its next window starts). Gradients flow across the cuts unchanged.
        dropout_rng : np.random.Generator for the dropout masks between layers (training), or
            False for no dropout; None only for a stack without dropout (:func:`bptt.layers.dropout_generator`)

        Returns
        -------
        loss : float, the mean or the sum (``reduction``)
        states : list of tuples of (L*D, B, H): the state after each segment; the last is state_n
        cache : NetworkCache
        """
        out, states, cache = self._outputs(params, x, state0, lengths, boundaries, dropout_rng)
        loss_forward = LOSSES[self.loss][0]
        loss, loss_cache = loss_forward(out, targets, mask if self.mode == "many_to_many" else None)
        return loss * self._loss_scale(loss_cache), states, cache._replace(loss=loss_cache)

    def _loss_scale(self, loss_cache):
        """The network's loss over the mean the loss function computes: 1, or for the sum the
        count the mean divides by (positions, times V for squared errors)."""
        return float(loss_cache.count) if self.reduction == "sum" else 1.0

    def _outputs(self, params, x, state0, lengths, boundaries, dropout_rng=None, keep_cache=True):
        """Forward up to the head's output; the cache has no loss yet (and is of no use for
        backward without ``keep_cache``, which saves the stack's caches)."""
        T, B = x.shape[:2]
        dropout_rng = dropout_generator(self.dropout, dropout_rng, keep_cache, f"this {self.rnn_type} network")
        input_cache = None
        if self.input == "embedding":
            x, input_cache = embedding_forward(split_params(params, "embedding"), x)  # T,B,I
        elif self.input == "one_hot":
            x = one_hot(x, self.vocab_size, self.dtype)  # T,B,I
        edges = [0, *boundaries, T]
        if lengths is not None and len(edges) > 2:
            raise ValueError("the stack's forward can be cut in segments only without lengths")
        rnn_params = split_params(params, "rnn")
        ys, states, stacks = [], [], []
        state = state0
        for start, stop in zip(edges[:-1], edges[1:]):
            masks = None
            if dropout_rng is not None:
                shape = (stop - start, B, self.num_directions * self.hidden_size)
                masks = dropout_masks(dropout_rng, self.dropout, shape, self.num_layers, self.dtype)
            y, state, stack = stack_forward(self.cell, rnn_params, x[start:stop], state, lengths,
                                            self.num_layers, self.num_directions, masks, keep_cache)
            ys.append(y)
            states.append(state)
            stacks.append(stack)
        y = ys[0] if len(ys) == 1 else np.concatenate(ys)  # T,B,D*H
        last = None
        if self.mode == "many_to_one":
            last = np.full(B, T - 1) if lengths is None else lengths - 1  # B
            y_sel = y[last, np.arange(B)]  # B,D*H
        else:
            y_sel = y
        out, head_cache = head_forward(split_params(params, "head"), y_sel)  # T,B,V | B,V
        return out, states, NetworkCache(input_cache, stacks, edges, last, y.shape, head_cache, None, False)

    # public passes

    def predict(self, x, state=None, lengths=None, *, params=None):
        """The head's output: logits (cross-entropy) or predictions (mse), and the final state.

        Parameters
        ----------
        x : (T, B, I) floats or (T, B) token ids; (B, T, ...) with ``batch_first``
        state : (L*D, B, H), for LSTM a tuple ``(h, c)``; None for zeros
        lengths : B ints in [1, T], or None
        params : None for ``self.params``, or a dict of the same names and shapes

        Returns
        -------
        out : (T, B, V), (B, T, V) with ``batch_first``; (B, V) many-to-one
        state_n : (L*D, B, H), for LSTM a tuple
        """
        params = self.check_params(params)
        x = self.check_inputs(x)
        T, B = x.shape[:2]
        state0 = self.check_state(state, B)
        lengths = None if lengths is None else check_lengths(lengths, B, T)
        out, states, _ = self._outputs(params, x, state0, lengths, (), keep_cache=False)
        if self.batch_first and self.mode == "many_to_many":
            out = out.swapaxes(0, 1)
        return out, self.public_state(states[-1])

    def forward(self, x, targets, state=None, lengths=None, mask=None, *, params=None, dropout_rng=None):
        """The loss of a batch.

        Parameters
        ----------
        x : (T, B, I) floats (``input="features"``) or (T, B) token ids; (B, T, ...) with
            ``batch_first``
        targets : many-to-many: (T, B) class ids in [0, V) or (T, B, V) floats (mse), (B, T, ...)
            with ``batch_first``; many-to-one: (B,) class ids or (B, V) floats. Read only where a
            step carries a loss.
        state : (L*D, B, H), for LSTM a tuple ``(h, c)``; None for zeros
        lengths : B ints in [1, T] for a right-padded batch, or None. Steps past a sequence's
            end carry no loss; many-to-one reads step ``lengths[b] - 1``.
        mask : (T, B) bools, (B, T) with ``batch_first``: which steps carry a loss (many-to-many)
        params : None for ``self.params``, or a dict of the same names and shapes
        dropout_rng : np.random.Generator to draw the dropout masks from (training), or False
            for no dropout (evaluation); may be None only when the stack has ``dropout=0``

        Returns
        -------
        loss : float, the mean over the steps that carry a loss (many-to-one: over B), or
            their sum with ``reduction="sum"``
        state_n : (L*D, B, H), for LSTM a tuple; each sequence's state at its last step
        cache : NetworkCache, for :meth:`backward`
        """
        params = self.check_params(params)
        x = self.check_inputs(x)
        T, B = x.shape[:2]
        state0 = self.check_state(state, B)
        lengths = None if lengths is None else check_lengths(lengths, B, T)
        mask = self.check_loss_mask(mask, lengths, T, B)
        targets = self.check_targets(targets, T, B, mask)
        # the cache must not share memory with the caller's arrays, which the caller may refill
        # (the next batch) before this pass's backward
        x, targets, state0 = x.copy(), targets.copy(), tuple(s.copy() for s in state0)
        mask = None if mask is None else mask.copy()
        loss, states, cache = self.forward_time_major(params, x, targets, state0, lengths, mask,
                                                      dropout_rng=dropout_rng)
        return loss, self.public_state(states[-1]), cache._replace(batch_first=self.batch_first)

    def backward(self, cache, *, depth=None):
        """Gradients of the loss of :meth:`forward` (its gradient is 1) by BPTT.

        Parameters
        ----------
        cache : the NetworkCache of :meth:`forward` (or of :meth:`forward_time_major`)
        depth : None for exact BPTT, or an int k >= 1: each loss term's gradient flows back at
            most k steps through time (k = 1: none); unidirectional, without lengths

        Returns
        -------
        grads : dict, the keys and shapes of ``params``
        dx : the shape of ``x`` for float features; None for token ids
        dstate0 : (L*D, B, H), for LSTM a tuple ``(dh0, dc0)``
        """
        if not isinstance(cache, NetworkCache):
            raise TypeError(f"expected the cache returned by forward but got {type(cache).__name__}")
        if depth is not None:
            if not is_integer(depth, 1):
                raise ValueError(f"expected depth to be a positive integer but got {depth!r}")
            if self.bidirectional or cache.stacks[0].lengths is not None or len(cache.stacks) > 1:
                raise ValueError("truncation by depth needs a unidirectional network, no lengths and one segment")
        grads = {}
        # loss = scale * mean(out, targets): the sum's upstream gradient is the count, so that
        # the mean's 1/count cancels exactly (count / count is 1.0)
        dout = LOSSES[self.loss][1](self._loss_scale(cache.loss), cache.loss)
        # out = y_sel Wᵀ + b
        head_grads, dy_sel = head_backward(dout, cache.head)
        # y_sel = y, or y[last_b, b]: the other steps of y get no gradient
        if cache.last is None:
            dy = dy_sel  # T,B,D*H
        else:
            dy = np.zeros(cache.y_shape, self.dtype)  # T,B,D*H
            dy[cache.last, np.arange(cache.y_shape[1])] = dy_sel
        # y, state_n = stack(x_in, state0), segment by segment in reverse; state_n has no loss
        dstate = (None,) * len(self.cell.STATE_NAMES)
        dx_parts = []
        edges = cache.edges
        for k in reversed(range(len(cache.stacks))):
            dy_segment = dy[edges[k]:edges[k + 1]]
            if depth is None:
                rnn_grads, dx_segment, dstate = stack_backward(dy_segment, dstate, cache.stacks[k])
            else:
                rnn_grads, dx_segment, dstate = stack_backward_truncated(dy_segment, dstate, cache.stacks[k], int(depth))
            dx_parts.append(dx_segment)
            for name, g in rnn_grads.items():
                grads[f"rnn.{name}"] = g if f"rnn.{name}" not in grads else grads[f"rnn.{name}"] + g
        dx = dx_parts[0] if len(dx_parts) == 1 else np.concatenate(dx_parts[::-1])  # T,B,I
        # x_in = embedding(ids): ids have no gradient, the table does
        if self.input == "embedding":
            grads = {"embedding.weight": embedding_backward(dx, cache.input)["weight"], **grads}
        grads["head.weight"], grads["head.bias"] = head_grads["weight"], head_grads["bias"]
        if self.input == "features":
            dx = dx.swapaxes(0, 1) if cache.batch_first else dx
        else:
            dx = None
        grads = {name: grads[name] for name in self.params}  # the order of params
        return grads, dx, self.public_state(dstate)

    def loss_and_grads(self, x, targets, state=None, lengths=None, mask=None, *, depth=None, params=None,
                       dropout_rng=None):
        """The loss of a batch, the gradient of every parameter, and the final state: one
        :meth:`forward` and its :meth:`backward`.

        Arguments as :meth:`forward`, and ``depth`` as :meth:`backward`.

        Returns
        -------
        loss : float, the mean of the loss over the steps that carry one (many-to-one: over
            the B sequences), or their sum with ``reduction="sum"``
        grads : dict name -> ndarray, the gradient of ``loss`` for every parameter: the keys,
            order and shapes of ``params`` (``embedding.weight``, ``rnn.*``, ``head.weight``,
            ``head.bias``)
        state_n : (L*D, B, H), for LSTM a tuple ``(h_n, c_n)``: each sequence's state after its
            last step, to pass as ``state`` of the next batch of the same streams (no gradient
            flows through it into this batch)
        """
        loss, state_n, cache = self.forward(x, targets, state, lengths, mask, params=params, dropout_rng=dropout_rng)
        grads, _, _ = self.backward(cache, depth=depth)
        return loss, grads, state_n
