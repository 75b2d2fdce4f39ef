"""Learner-style code for the CS231n tests, written apart from the library.

The RNN and LSTM of CS231n's assignment (``rnn_layers.py``) as a student writes them, in NumPy
with the assignment's names, signatures and caches: batch first, row vectors, ``x`` (N, T, D),
``h0`` (N, H), ``Wx`` (D, K*H), ``Wh`` (H, K*H), ``b`` (K*H,), LSTM gates i, f, o, g. The
backwards take keyword switches for the slips learners make:

- ``carry=False``: dh[:, t] alone, without the dprev_h of step t+1;
- ``carry_c=False`` (LSTM): no dprev_c passed on (dnext_c is zero at every step);
- ``slip``: a wrong derivative inside a step, one of ``RNN_SLIPS`` or ``LSTM_SLIPS``;
- ``window=k``: dprev_h and dprev_c restarted every k steps, the windows counted from the
  last step (``window_align="end"``: windows end at T, T-k, ...) or from the first
  (``"start"``: windows [0, k), [k, 2k), ...).
"""

import numpy as np

RNN_SLIPS = (None, "tanh-twice")  # 1 - tanh(next_h)**2, next_h being tanh already
LSTM_SLIPS = (
    None,
    "no-sigmoid-derivative",  # σ' left out on all three gates
    "no-tanh-derivative-candidate",  # 1 - g**2 left out on g
    "tanh-twice",  # 1 - tanh(tanh(next_c))**2 on the cell path
    "time-index",  # next_c where prev_c belongs in df
)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


# the vanilla RNN


def rnn_step_forward(x, prev_h, Wx, Wh, b):
    next_h = np.tanh(x @ Wx + prev_h @ Wh + b)  # N,H
    return next_h, (x, prev_h, Wx, Wh, next_h)


def rnn_step_backward(dnext_h, cache, slip=None):
    x, prev_h, Wx, Wh, next_h = cache
    tanh_grad = 1 - np.tanh(next_h) ** 2 if slip == "tanh-twice" else 1 - next_h**2
    da = dnext_h * tanh_grad  # N,H  next_h = tanh(a)
    return da @ Wx.T, da @ Wh.T, x.T @ da, prev_h.T @ da, da.sum(axis=0)


def rnn_forward(x, h0, Wx, Wh, b):
    h, cache = np.zeros((x.shape[0], x.shape[1], h0.shape[1]), x.dtype), []  # N,T,H
    prev_h = h0
    for t in range(x.shape[1]):
        prev_h, step_cache = rnn_step_forward(x[:, t], prev_h, Wx, Wh, b)
        h[:, t] = prev_h
        cache.append(step_cache)
    return h, cache


def rnn_backward(dh, cache, carry=True, slip=None, window=None, window_align="end"):
    _check(slip, RNN_SLIPS, window_align)
    T = dh.shape[1]
    dx = np.zeros(dh.shape[:2] + (cache[0][0].shape[1],), dh.dtype)  # N,T,D
    dWx, dWh, db = np.zeros_like(cache[0][2]), np.zeros_like(cache[0][3]), np.zeros_like(dh[0, 0])
    dprev_h = np.zeros_like(dh[:, 0])
    for t in reversed(range(T)):
        if _restarts(t, T, window, window_align):
            dprev_h = np.zeros_like(dprev_h)
        dnext_h = dh[:, t] + dprev_h if carry else dh[:, t]
        dx[:, t], dprev_h, dWx_t, dWh_t, db_t = rnn_step_backward(dnext_h, cache[t], slip)
        dWx, dWh, db = dWx + dWx_t, dWh + dWh_t, db + db_t
    return dx, dprev_h, dWx, dWh, db


# the LSTM


def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    H = prev_h.shape[1]
    a = x @ Wx + prev_h @ Wh + b  # N,4H  blocks i, f, o, g
    i, f, o, g = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), sigmoid(a[:, 2 * H:3 * H]), np.tanh(a[:, 3 * H:])
    next_c = f * prev_c + i * g
    next_h = o * np.tanh(next_c)
    return next_h, next_c, (x, prev_h, prev_c, Wx, Wh, i, f, o, g, next_c)


def lstm_step_backward(dnext_h, dnext_c, cache, slip=None):
    x, prev_h, prev_c, Wx, Wh, i, f, o, g, next_c = cache

    def dsigmoid(s):  # σ' = σ(1 - σ)
        return 1.0 if slip == "no-sigmoid-derivative" else s * (1 - s)

    tanh_c = np.tanh(next_c)
    tanh_c_path = np.tanh(tanh_c) if slip == "tanh-twice" else tanh_c
    dc = dnext_c + dnext_h * o * (1 - tanh_c_path**2)  # next_h = o * tanh(next_c)
    di = dc * g * dsigmoid(i)  # next_c = f * prev_c + i * g
    df = dc * (next_c if slip == "time-index" else prev_c) * dsigmoid(f)
    do = dnext_h * tanh_c * dsigmoid(o)
    dg = dc * i * (1.0 if slip == "no-tanh-derivative-candidate" else 1 - g**2)
    da = np.concatenate((di, df, do, dg), axis=1)  # N,4H
    return da @ Wx.T, da @ Wh.T, dc * f, x.T @ da, prev_h.T @ da, da.sum(axis=0)


def lstm_forward(x, h0, Wx, Wh, b, c0=None):
    h, cache = np.zeros((x.shape[0], x.shape[1], h0.shape[1]), x.dtype), []  # N,T,H
    prev_h, prev_c = h0, np.zeros_like(h0) if c0 is None else c0
    for t in range(x.shape[1]):
        prev_h, prev_c, step_cache = lstm_step_forward(x[:, t], prev_h, prev_c, Wx, Wh, b)
        h[:, t] = prev_h
        cache.append(step_cache)
    return h, cache


def lstm_backward(dh, cache, carry=True, carry_c=True, slip=None, window=None, window_align="end"):
    _check(slip, LSTM_SLIPS, window_align)
    T = dh.shape[1]
    dx = np.zeros(dh.shape[:2] + (cache[0][0].shape[1],), dh.dtype)  # N,T,D
    dWx, dWh, db = np.zeros_like(cache[0][3]), np.zeros_like(cache[0][4]), np.zeros_like(cache[0][3][0])
    dprev_h = dprev_c = np.zeros_like(dh[:, 0])
    for t in reversed(range(T)):
        if _restarts(t, T, window, window_align):
            dprev_h = dprev_c = np.zeros_like(dprev_h)
        dnext_h = dh[:, t] + dprev_h if carry else dh[:, t]
        dnext_c = dprev_c if carry_c else np.zeros_like(dprev_c)
        dx[:, t], dprev_h, dprev_c, dWx_t, dWh_t, db_t = lstm_step_backward(dnext_h, dnext_c, cache[t], slip)
        dWx, dWh, db = dWx + dWx_t, dWh + dWh_t, db + db_t
    return dx, dprev_h, dWx, dWh, db


def _restarts(t, steps, window, align):
    """Whether step t is the last of a window, where the gradient from the future is dropped."""
    if window is None:
        return False
    return (steps - 1 - t) % window == 0 if align == "end" else (t + 1) % window == 0


def _check(slip, slips, window_align):
    if slip not in slips or window_align not in ("end", "start"):
        raise ValueError(
            f"expected slip in {slips} and window_align 'end' or 'start' but got {slip!r}, {window_align!r}"
        )
