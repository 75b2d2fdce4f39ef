"""Learner-style backwards with the classic slips written into them, for test_slips.py.

Written apart from the library, the way a learner writes them: the course's LSTM and RNN per
step, weights applied to ``[a_prev; x_t]``, data (n_x, m, T_x), forward from learners.py; and
a GRU in PyTorch's equations, rows of examples, data (T, B, I). Each backward takes a set of
slip names; every slip is one line of the learner's code, written wrong.
"""

import numpy as np

from learners import restarts, sigmoid

# the course's LSTM, forward in learners.lstm_forward; its cache per step:
# (a_next, c_next, a_prev, c_prev, ft, it, cct, ot, xt, parameters)

LSTM_GRADS = ("dWf", "dbf", "dWi", "dbi", "dWc", "dbc", "dWo", "dbo")


def gate_derivative(s, gate, slips):
    """A sigmoid gate's derivative: σ(1-σ), or the slip's σ (``sigmoid-<gate>``, ``sigmoid-all``)
    or nothing (``no-sigmoid-<gate>``, ``no-sigmoid-all``)."""
    if f"sigmoid-{gate}" in slips or "sigmoid-all" in slips:
        return s
    if f"no-sigmoid-{gate}" in slips or "no-sigmoid-all" in slips:
        return 1.0
    return s * (1 - s)


def bias_gradient(dgate, slips):
    if "bias-mean" in slips:
        return np.mean(dgate, axis=1, keepdims=True)
    if "bias-first" in slips:
        return dgate[:, :1]
    return np.sum(dgate, axis=1, keepdims=True)


def lstm_cell_backward(da_next, dc_next, cache, slips, ft_next):
    """One step back; ``ft_next``: the forget gate of the step after (the loop's previous step)."""
    a_next, c_next, a_prev, c_prev, ft, it, cct, ot, xt, parameters = cache
    n_a, n_x = a_next.shape[0], xt.shape[0]
    tanh_c = np.tanh(c_next)
    if "no-tanh-cell" in slips:
        dc = dc_next + da_next * ot
    elif "tanh-twice-cell" in slips:
        dc = dc_next + da_next * ot * (1 - np.tanh(tanh_c) ** 2)
    else:
        dc = dc_next + da_next * ot * (1 - tanh_c ** 2)
    dot = da_next * tanh_c * gate_derivative(ot, "o", slips)
    if "no-tanh-candidate" in slips:
        dcct = dc * it
    elif "tanh-twice-candidate" in slips:
        dcct = dc * it * (1 - np.tanh(cct) ** 2)
    else:
        dcct = dc * it * (1 - cct ** 2)
    dit = dc * cct * gate_derivative(it, "i", slips)
    dft = dc * (c_next if "time-forget" in slips else c_prev) * gate_derivative(ft, "f", slips)
    concat = np.concatenate((a_prev, xt), axis=0)
    gradients = {}
    for gate, dgate in (("f", dft), ("i", dit), ("c", dcct), ("o", dot)):
        gradients["dW" + gate] = dgate @ concat.T
        gradients["db" + gate] = bias_gradient(dgate, slips)
    pairs = [(parameters["W" + g], d) for g, d in (("f", dft), ("i", dit), ("c", dcct), ("o", dot))]
    if "swapped" in slips:  # as if the concatenation were [xt; a_prev]
        gradients["da_prev"] = sum(w[:, -n_a:].T @ d for w, d in pairs)
        gradients["dxt"] = sum(w[:, :n_x].T @ d for w, d in pairs)
    else:
        gradients["da_prev"] = sum(w[:, :n_a].T @ d for w, d in pairs)
        gradients["dxt"] = sum(w[:, n_a:].T @ d for w, d in pairs)
    gradients["dc_prev"] = dc * (ft_next if "time-dc-prev" in slips else ft)
    return gradients


def lstm_backward(da, caches, slips=(), carry_da=True, window=None, align="end"):
    """Gradients of sum(da * a) with ``slips`` (names as in :func:`lstm_cell_backward` and
    ``initial`` (a zero state entering step 0), ``not-accumulated``); ``carry_da=False``: the
    slip of not adding da_prevt; ``window``: truncated to windows (learners.restarts)."""
    T_x = da.shape[2]
    xt, parameters = caches[0][8], caches[0][9]
    grads = {name: np.zeros_like(parameters[name[1:]]) for name in LSTM_GRADS}
    dx = np.zeros(xt.shape + (T_x,))
    da_prevt = np.zeros_like(da[:, :, 0])
    dc_prevt = np.zeros_like(da_prevt)
    for t in reversed(range(T_x)):
        if restarts(t, T_x, window, align):
            da_prevt, dc_prevt = np.zeros_like(da_prevt), np.zeros_like(dc_prevt)
        cache = caches[t]
        if "initial" in slips and t == 0:  # a_prev = a[:, :, t-1] if t > 0 else zeros: a0, c0 forgotten
            cache = cache[:2] + (np.zeros_like(cache[2]), np.zeros_like(cache[3])) + cache[4:]
        ft_next = caches[min(t + 1, T_x - 1)][4]
        da_next = da[:, :, t] + da_prevt if carry_da else da[:, :, t]
        gradients = lstm_cell_backward(da_next, dc_prevt, cache, slips, ft_next)
        dx[:, :, t] = gradients["dxt"]
        for name in grads:
            if "not-accumulated" in slips:
                grads[name] = gradients[name]
            else:
                grads[name] += gradients[name]
        da_prevt, dc_prevt = gradients["da_prev"], gradients["dc_prev"]
    return {**grads, "dx": dx, "da0": da_prevt, "dc0": dc_prevt}


# the course's RNN, forward in learners.rnn_forward; its cache per step: (a_next, a_prev, xt, parameters)


def rnn_cell_backward(da_next, cache, slips):
    a_next, a_prev, xt, parameters = cache
    n_a, n_x = a_next.shape[0], xt.shape[0]
    if "no-tanh-hidden" in slips:
        dtanh = da_next
    elif "tanh-twice-hidden" in slips:
        dtanh = (1 - np.tanh(a_next) ** 2) * da_next
    else:
        dtanh = (1 - a_next ** 2) * da_next
    W = np.concatenate((parameters["Waa"], parameters["Wax"]), axis=1)  # n_a,n_a+n_x  applied to [a_prev; xt]
    if "swapped" in slips:  # as if the concatenation were [xt; a_prev]
        da_prev, dxt = W[:, -n_a:].T @ dtanh, W[:, :n_x].T @ dtanh
    else:
        da_prev, dxt = W[:, :n_a].T @ dtanh, W[:, n_a:].T @ dtanh
    return {
        "dxt": dxt,
        "da_prev": da_prev,
        "dWax": -(dtanh @ xt.T) if "sign" in slips else dtanh @ xt.T,  # the step -dW returned as the gradient
        "dWaa": a_prev @ dtanh.T if "transposed" in slips else dtanh @ a_prev.T,
        "dba": bias_gradient(dtanh, slips),
    }


def rnn_backward(da, caches, slips=(), carry=True, window=None, align="end"):
    """Gradients of sum(da * a) with ``slips`` (:func:`rnn_cell_backward`'s, ``initial``,
    ``not-accumulated``); ``carry``, ``window`` as in :func:`lstm_backward`."""
    _, a0, x1, parameters = caches[0]
    T_x = da.shape[2]
    grads = {name: np.zeros_like(parameters[name[1:]]) for name in ("dWax", "dWaa", "dba")}
    dx = np.zeros(x1.shape + (T_x,))
    da_prevt = np.zeros_like(a0)
    for t in reversed(range(T_x)):
        if restarts(t, T_x, window, align):
            da_prevt = np.zeros_like(da_prevt)
        cache = caches[t]
        if "initial" in slips and t == 0:  # a_prev = a[:, :, t-1] if t > 0 else zeros: a0 forgotten
            cache = (cache[0], np.zeros_like(cache[1])) + cache[2:]
        gradients = rnn_cell_backward(da[:, :, t] + da_prevt if carry else da[:, :, t], cache, slips)
        dx[:, :, t] = gradients["dxt"]
        for name in grads:
            if "not-accumulated" in slips:
                grads[name] = gradients[name]
            else:
                grads[name] += gradients[name]
        da_prevt = gradients["da_prev"]
    return {**grads, "dx": dx, "da0": da_prevt}


# a GRU in PyTorch's equations and names, rows of examples: x (T, B, I), h0 (B, H)


def gru_forward(params, x, h0):
    """-> h (T+1, B, H) (h[t] enters step t), per step (r, z, n, pre_h_n)."""
    w_ih, w_hh, b_ih, b_hh = (params[name] for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"))
    H = h0.shape[1]
    h, steps = [h0], []
    for t in range(x.shape[0]):
        gx = x[t] @ w_ih.T + b_ih
        gh = h[t] @ w_hh.T + b_hh
        r = sigmoid(gx[:, :H] + gh[:, :H])
        z = sigmoid(gx[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
        h.append((1 - z) * n + z * h[t])
        steps.append((r, z, n, gh[:, 2 * H:]))
    return np.stack(h), steps


def gru_backward(params, x, h, steps, dy, slips=()):
    """Gradients of sum(dy * h[1:]): torch names, ``x``, ``h0`` (1, B, H). ``slips``: the
    sigmoid ones (``sigmoid-r``, ``sigmoid-z``, ``sigmoid-all``, ``no-sigmoid-...``),
    ``no-tanh-candidate``, ``tanh-twice-candidate``, ``initial``."""
    w_ih, w_hh = params["weight_ih_l0"], params["weight_hh_l0"]
    H = h.shape[2]
    grads = {name: np.zeros_like(value) for name, value in params.items()}
    dx = np.zeros_like(x)
    dh_next = np.zeros_like(h[0])
    for t in reversed(range(x.shape[0])):
        r, z, n, gh_n = steps[t]
        h_prev = h[t]
        if "initial" in slips and t == 0:
            h_prev = np.zeros_like(h_prev)
            gh_n = h_prev @ w_hh[2 * H:].T + params["bias_hh_l0"][2 * H:]  # recomputed from the (zero) h_prev
        dh = dy[t] + dh_next
        dn = dh * (1 - z)
        dz = dh * (h_prev - n)
        if "no-tanh-candidate" in slips:
            dgn = dn
        elif "tanh-twice-candidate" in slips:
            dgn = dn * (1 - np.tanh(n) ** 2)
        else:
            dgn = dn * (1 - n ** 2)
        dgr = dgn * gh_n * gate_derivative(r, "r", slips)
        dgz = dz * gate_derivative(z, "z", slips)
        dgx = np.concatenate([dgr, dgz, dgn], axis=1)  # B,3H
        dgh = np.concatenate([dgr, dgz, dgn * r], axis=1)
        grads["weight_ih_l0"] += dgx.T @ x[t]
        grads["weight_hh_l0"] += dgh.T @ h_prev
        grads["bias_ih_l0"] += dgx.sum(axis=0)
        grads["bias_hh_l0"] += dgh.sum(axis=0)
        dx[t] = dgx @ w_ih
        dh_next = dgh @ w_hh + dh * z
    return {**grads, "x": dx, "h0": dh_next[None]}
