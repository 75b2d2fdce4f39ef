"""Learner-style code for the interop and diagnose tests, written apart from the library.

The course's RNN and LSTM, per step in NumPy with the course's names and layout (weights
applied to ``[a_prev; x_t]``, data (n_x, m, T_x)), and a backward with a switch for each common
slip; and Keras's equations in torch, batch first, for autograd to differentiate.
"""

import numpy as np

# the course's vanilla RNN


def rnn_cell_forward(xt, a_prev, parameters):
    a_next = np.tanh(parameters["Wax"] @ xt + parameters["Waa"] @ a_prev + parameters["ba"])  # n_a,m
    return a_next, (a_next, a_prev, xt, parameters)


def rnn_forward(x, a0, parameters):
    """x (n_x, m, T_x), a0 (n_a, m) -> a (n_a, m, T_x), caches."""
    a = np.zeros(a0.shape + (x.shape[2],), x.dtype)
    caches = []
    a_next = a0
    for t in range(x.shape[2]):
        a_next, cache = rnn_cell_forward(x[:, :, t], a_next, parameters)
        a[:, :, t] = a_next
        caches.append(cache)
    return a, caches


def rnn_cell_backward(da_next, cache):
    a_next, a_prev, xt, parameters = cache
    dtanh = (1 - a_next**2) * da_next  # a_next = tanh(z)
    return {
        "dxt": parameters["Wax"].T @ dtanh,
        "da_prev": parameters["Waa"].T @ dtanh,
        "dWax": dtanh @ xt.T,
        "dWaa": dtanh @ a_prev.T,
        "dba": dtanh.sum(axis=1, keepdims=True),
    }


def restarts(t, T_x, window, align):
    """Whether a learner's loop that truncates to windows of ``window`` steps resets da_prevt
    (and dc_prevt) before step t: ``align="end"`` counts the windows from the last step (a
    loop from T_x - 1 down that resets every ``window`` steps), ``"start"`` from the first
    (chunks [0, window), [window, 2 window), ... of the forward)."""
    if window is None or t == T_x - 1:
        return False
    return (T_x - 1 - t) % window == 0 if align == "end" else (t + 1) % window == 0


def rnn_backward(da, caches, carry=True, window=None, align="end"):
    """Gradients of sum(da * a). ``carry=False``: the slip of not adding da_prevt to da[:, :, t];
    ``window``: truncated to windows of that many steps (:func:`restarts`)."""
    _, a0, x1, parameters = caches[0]
    T_x = da.shape[2]
    grads = {name: np.zeros_like(parameters[name[1:]]) for name in ("dWax", "dWaa", "dba")}
    dx = np.zeros(x1.shape + (T_x,), da.dtype)
    da_prevt = np.zeros_like(a0)
    for t in reversed(range(T_x)):
        if restarts(t, T_x, window, align):
            da_prevt = np.zeros_like(da_prevt)
        gradients = rnn_cell_backward(da[:, :, t] + da_prevt if carry else da[:, :, t], caches[t])
        dx[:, :, t] = gradients["dxt"]
        for name in grads:
            grads[name] += gradients[name]
        da_prevt = gradients["da_prev"]
    return {**grads, "dx": dx, "da0": da_prevt}


# the course's LSTM


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def lstm_cell_forward(xt, a_prev, c_prev, parameters):
    concat = np.concatenate((a_prev, xt), axis=0)  # n_a+n_x,m
    ft = sigmoid(parameters["Wf"] @ concat + parameters["bf"])
    it = sigmoid(parameters["Wi"] @ concat + parameters["bi"])
    cct = np.tanh(parameters["Wc"] @ concat + parameters["bc"])
    c_next = ft * c_prev + it * cct
    ot = sigmoid(parameters["Wo"] @ concat + parameters["bo"])
    a_next = ot * np.tanh(c_next)
    return a_next, c_next, (a_next, c_next, a_prev, c_prev, ft, it, cct, ot, xt, parameters)


def lstm_forward(x, a0, parameters, c0=None):
    """x (n_x, m, T_x), a0 (n_a, m) -> a, c (n_a, m, T_x), caches."""
    a = np.zeros(a0.shape + (x.shape[2],), x.dtype)
    c = np.zeros_like(a)
    caches = []
    a_next, c_next = a0, np.zeros_like(a0) if c0 is None else c0
    for t in range(x.shape[2]):
        a_next, c_next, cache = lstm_cell_forward(x[:, :, t], a_next, c_next, parameters)
        a[:, :, t], c[:, :, t] = a_next, c_next
        caches.append(cache)
    return a, c, caches


LSTM_GRADS = ("dWf", "dbf", "dWi", "dbi", "dWc", "dbc", "dWo", "dbo")


def lstm_cell_backward(da_next, dc_next, cache, slip=None):
    """One step back. ``slip``: None, ``"sigmoid"`` (σ' taken as σ in the forget gate) or
    ``"time_index"`` (c_next where the forget gate needs c_prev)."""
    a_next, c_next, a_prev, c_prev, ft, it, cct, ot, xt, parameters = cache
    n_a = a_next.shape[0]
    tanh_c = np.tanh(c_next)
    dc = dc_next + da_next * ot * (1 - tanh_c**2)  # both paths into c_next
    dot = da_next * tanh_c * ot * (1 - ot)
    dcct = dc * it * (1 - cct**2)
    dit = dc * cct * it * (1 - it)
    if slip == "sigmoid":
        dft = dc * c_prev * ft
    elif slip == "time_index":
        dft = dc * c_next * ft * (1 - ft)
    else:
        dft = dc * c_prev * ft * (1 - ft)
    concat = np.concatenate((a_prev, xt), axis=0)
    gradients = {}
    for gate, dgate in (("f", dft), ("i", dit), ("c", dcct), ("o", dot)):
        gradients["dW" + gate] = dgate @ concat.T
        gradients["db" + gate] = dgate.sum(axis=1, keepdims=True)
    pairs = [(parameters["W" + g], d) for g, d in (("f", dft), ("i", dit), ("c", dcct), ("o", dot))]
    gradients["da_prev"] = sum(w[:, :n_a].T @ d for w, d in pairs)
    gradients["dxt"] = sum(w[:, n_a:].T @ d for w, d in pairs)
    gradients["dc_prev"] = dc * ft
    return gradients


def lstm_backward(da, caches, slip=None, window=None, align="end"):
    """Gradients of sum(da * a), the course's loop, truncated to windows of ``window`` steps
    if given (:func:`restarts`). ``slip``:

    - None: full BPTT;
    - ``"no_da_prev"``: da[:, :, t] alone, without da_prevt (dc_prevt still carried);
    - ``"no_dc_prev"``: da_prevt carried, dc_prevt never passed on;
    - ``"current_only"``: neither carried, each step on its own da[:, :, t];
    - ``"sigmoid"``, ``"time_index"``: a wrong derivative inside the cell.
    """
    T_x = da.shape[2]
    xt, parameters = caches[0][8], caches[0][9]
    grads = {name: np.zeros_like(parameters[name[1:]]) for name in LSTM_GRADS}
    dx = np.zeros(xt.shape + (T_x,), da.dtype)
    da_prevt = np.zeros_like(da[:, :, 0])
    dc_prevt = np.zeros_like(da_prevt)
    for t in reversed(range(T_x)):
        if restarts(t, T_x, window, align):
            da_prevt, dc_prevt = np.zeros_like(da_prevt), np.zeros_like(dc_prevt)
        da_next = da[:, :, t] if slip in ("no_da_prev", "current_only") else da[:, :, t] + da_prevt
        dc_next = np.zeros_like(dc_prevt) if slip in ("no_dc_prev", "current_only") else dc_prevt
        gradients = lstm_cell_backward(da_next, dc_next, caches[t], slip)
        dx[:, :, t] = gradients["dxt"]
        for name in grads:
            grads[name] += gradients[name]
        da_prevt, dc_prevt = gradients["da_prev"], gradients["dc_prev"]
    return {**grads, "dx": dx, "da0": gradients["da_prev"], "dc0": gradients["dc_prev"]}


def lstm_backward_truncated(da, caches, depth):
    """Gradients where the loss at step t is backpropagated through steps t, t-1, ..., t-depth+1."""
    T_x = da.shape[2]
    xt, parameters = caches[0][8], caches[0][9]
    grads = {name: np.zeros_like(parameters[name[1:]]) for name in LSTM_GRADS}
    dx = np.zeros(xt.shape + (T_x,), da.dtype)
    da0 = np.zeros_like(da[:, :, 0])
    dc0 = np.zeros_like(da0)
    for t in range(T_x):
        da_next, dc_next = da[:, :, t], np.zeros_like(da0)
        for s in range(t, max(t - depth, -1), -1):
            gradients = lstm_cell_backward(da_next, dc_next, caches[s])
            dx[:, :, s] += gradients["dxt"]
            for name in grads:
                grads[name] += gradients[name]
            da_next, dc_next = gradients["da_prev"], gradients["dc_prev"]
        if t - depth < 0:  # the window reached step 0: what it sends back is the initial state's
            da0 += da_next
            dc0 += dc_next
    return {**grads, "dx": dx, "da0": da0, "dc0": dc0}


# Keras's equations, in torch


def keras_forward(cell, params, x, h0, c0=None, detach_h=False, restart=()):
    """A Keras layer with ``return_sequences=True``: x (B, T, I) -> y (B, T, H), torch tensors.

    ``params``: ``kernel`` (I, K*H), ``recurrent_kernel`` (H, K*H), ``bias``; gates LSTM i, f, c, o,
    GRU z, r, h with ``reset_after=True``. ``detach_h``: no gradient through the hidden state
    carried to the next step (for LSTM the cell state still carries one). ``restart``: the
    steps before which the whole state is detached (truncated BPTT on windows).
    """
    import torch  # only the tests that skip without torch call this

    kernel, recurrent, bias = params["kernel"], params["recurrent_kernel"], params["bias"]
    H = recurrent.shape[0]
    h, c, ys = h0, c0, []
    for t in range(x.shape[1]):
        if t in restart:
            h, c = h.detach(), None if c is None else c.detach()
        if cell == "lstm":
            z = x[:, t] @ kernel + h @ recurrent + bias
            i, f = torch.sigmoid(z[:, :H]), torch.sigmoid(z[:, H:2 * H])
            g, o = torch.tanh(z[:, 2 * H:3 * H]), torch.sigmoid(z[:, 3 * H:])
            c = f * c + i * g
            h = o * torch.tanh(c)
        elif cell == "gru":
            from_x = x[:, t] @ kernel + bias[0]
            from_h = h @ recurrent + bias[1]
            z = torch.sigmoid(from_x[:, :H] + from_h[:, :H])
            r = torch.sigmoid(from_x[:, H:2 * H] + from_h[:, H:2 * H])
            hh = torch.tanh(from_x[:, 2 * H:] + r * from_h[:, 2 * H:])
            h = z * h + (1 - z) * hh
        else:
            h = torch.tanh(x[:, t] @ kernel + h @ recurrent + bias)
        ys.append(h)
        if detach_h:
            h = h.detach()
    return torch.stack(ys, dim=1)
