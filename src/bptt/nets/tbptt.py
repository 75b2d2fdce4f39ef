"""Truncated BPTT over long streams, TBPTT(k1, k2) in the sense of Williams and Peng (1990).

Legend: N stream length, B parallel streams, I input features, H hidden units, L layers,
V outputs.

Every k1 steps there is one update: the losses of the last k1 steps are backpropagated
through the last k2 steps only (k1 <= k2); the state entering those k2 steps is a constant.
Window j covers the steps

    loss steps   [j*k1, stop)          stop = min((j+1)*k1, N)
    gradient     [start, stop)         start = max(0, stop - k2)

k1 = k2 = k is the common case (windows side by side, the state carried from each to the
next); k1 < k2 makes the windows overlap, each recomputing the forward of its k2 steps from
the state stored at its start; k2 >= N reaches back to the stream's start. The loss of a
window is the network's: the mean over its loss steps (and streams) that the mask selects,
or their sum for a network with ``reduction="sum"``.

Each window runs the stack's forward in two segments cut where the next window starts, so the
state the next window needs comes out of this window's forward at no extra cost.
"""

from typing import NamedTuple

import numpy as np

from ..checks import is_integer


class Window(NamedTuple):
    """One update of TBPTT(k1, k2), in steps of the stream."""

    start: int  # the first step of the forward and backward; the state entering it is a constant
    loss_start: int  # the first step that carries a loss
    stop: int  # one past the last step


class Update(NamedTuple):
    """What :func:`tbptt` yields per window."""

    loss: float  # the network's loss of the window's loss steps: their mean (or sum)
    grads: dict  # the keys and shapes of the network's params
    state: object  # (L, B, H), for LSTM a tuple (h, c): the state after the window's last step
    next_state: object  # the state entering the next window's first step, as ``state``: what a
    # checkpoint keeps to resume there (equal to ``state`` when k1 = k2)


def _positive_int(value, name):
    if not is_integer(value, 1):
        raise ValueError(f"expected {name} to be a positive integer but got {value!r}")
    return int(value)


def windows(steps, k1, k2=None):
    """The windows of TBPTT(k1, k2) over a stream of ``steps`` steps, in order.

    Parameters
    ----------
    steps : N >= 1
    k1 : steps between updates, and the number of loss steps of each (the last window may
        have fewer when k1 does not divide N)
    k2 : steps each update backpropagates through, k2 >= k1; None for k1

    Returns
    -------
    list of Window
    """
    steps = _positive_int(steps, "the stream length")
    k1 = _positive_int(k1, "k1")
    k2 = k1 if k2 is None else _positive_int(k2, "k2")
    if k1 > k2:
        raise ValueError(f"expected k1 <= k2 (the losses of k1 steps backpropagated through k2 steps) "
                         f"but got k1={k1}, k2={k2}")
    plan = []
    for loss_start in range(0, steps, k1):
        stop = min(loss_start + k1, steps)
        plan.append(Window(max(0, stop - k2), loss_start, stop))
    return plan


def tbptt(network, x, targets, k1, k2=None, state=None, mask=None, *, params=None, start_window=0,
          dropout_rng=None):
    """Truncated BPTT(k1, k2) over B parallel streams: one (loss, grads, state) per update.

    Returns an iterator. With ``params=None`` each window reads ``network.params`` when it is
    reached, so a trainer may apply an optimizer between windows (in place or by replacing the
    dict); the next window starts from the state computed by the previous one. Pass a dict
    (e.g. ``network.state_dict()``, a copy) to evaluate every window at fixed parameters:
    ``list(tbptt(net, x, y, k1, k2, params=net.state_dict()))``. All input checks run at the
    call, before the first window.

    Parameters
    ----------
    network : a many-to-many, unidirectional :class:`bptt.nets.Network`
    x : (N, B, I) floats or (N, B) token ids; (B, N, ...) if the network is ``batch_first``
    targets : (N, B) class ids or (N, B, V) floats, laid out as ``x``
    k1, k2 : as :func:`windows`; k2=None is k1
    state : the state entering step 0: (L, B, H), for LSTM a tuple ``(h, c)``; None for zeros
    mask : (N, B) bools, laid out as ``x``: which steps carry a loss; None for all
    params : None to read ``network.params`` at each window, or a fixed dict of its names
    start_window : begin with this window of :func:`windows` (to resume a run); ``state`` is
        then the state entering that window's first step, an ``Update.next_state``
    dropout_rng : np.random.Generator for the dropout masks of every window's forward, or None
        for no dropout

    Yields
    ------
    Update(loss, grads, state): the window's loss (float), the gradient of every parameter
    (dict), and the state after the window's last step, to carry on
    """
    if network.mode != "many_to_many":
        raise ValueError('truncated BPTT over a stream needs mode="many_to_many"')
    if network.bidirectional:
        raise ValueError("truncated BPTT over a stream needs a unidirectional network: a reverse "
                         "direction would need the stream's future")
    if params is not None:
        network.check_params(params)
    x = network.check_inputs(x)  # N,B,...  time-major from here on
    N, B = x.shape[:2]
    plan = windows(N, k1, k2)
    mask = network.check_loss_mask(mask, None, N, B)
    targets = network.check_targets(targets, N, B, mask)
    state = network.check_state(state, B)
    if not is_integer(start_window, 0) or start_window >= len(plan):
        raise ValueError(f"expected start_window in [0, {len(plan)}) (the stream has {len(plan)} windows) "
                         f"but got {start_window!r}")
    return _updates(network, params, x, targets, mask, state, plan, int(start_window), dropout_rng)


def _updates(network, params, x, targets, mask, state, plan, first, dropout_rng):
    """The generator behind :func:`tbptt`, on checked, time-major arrays."""
    B = x.shape[1]
    entering = state  # the state entering plan[j].start, a constant of window j
    for j in range(first, len(plan)):
        start, loss_start, stop = plan[j]
        window_params = network.params if params is None else params
        next_start = plan[j + 1].start if j + 1 < len(plan) else stop
        cut = next_start - start  # the next window starts inside this one: start <= next_start <= stop
        boundaries = (cut,) if 0 < cut < stop - start else ()
        loss_mask = np.zeros((stop - start, B), dtype=bool)  # T_w,B
        loss_mask[loss_start - start:] = True
        if mask is not None:
            loss_mask &= mask[start:stop]
        loss, states, cache = network.forward_time_major(
            window_params, x[start:stop], targets[start:stop], entering, mask=loss_mask, boundaries=boundaries,
            dropout_rng=dropout_rng,
        )
        grads, _, _ = network.backward(cache)
        if boundaries:
            entering = states[0]
        elif cut == stop - start:
            entering = states[-1]
        # cut == 0: the next window starts where this one did, from the same state
        # a copy: the trainer may reset or refill what it gets without touching what is carried
        yield Update(loss, grads, network.public_state(tuple(s.copy() for s in states[-1])),
                     network.public_state(tuple(s.copy() for s in entering)))
