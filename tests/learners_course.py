"""The course's RNN and LSTM assignment as a learner writes it, with its exact signatures
(``rnn_forward(x, a0, parameters) -> a, y_pred, caches``, ``lstm_backward(da, caches) ->
gradients``, the cell functions), written apart from the library for ``bptt.check``'s tests.

Switches, each a slip a learner makes: ``window``/``align`` (the loop restarts da_prevt and
dc_prevt every ``window`` steps, counted from the last step or the first), ``carry_a=False``
(da_prevt never added), ``carry_c=False`` (dc_prevt never passed on), ``slip`` (inside the cell:
``"no-sigmoid-derivative-f"``, ``"no-sigmoid-derivative"`` (every gate),
``"no-tanh-derivative-candidate"``, ``"tanh-twice"``, ``"time-index"``) and, in the forward,
``store_a_as_c`` (``c[:, :, t] = a_next``, the cell state never stored).
"""

import numpy as np


def softmax(z):
    e = np.exp(z - np.max(z, axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


# the RNN


def rnn_cell_forward(xt, a_prev, parameters):
    Wax, Waa, Wya, ba, by = (parameters[k] for k in ("Wax", "Waa", "Wya", "ba", "by"))
    a_next = np.tanh(Waa @ a_prev + Wax @ xt + ba)
    yt_pred = softmax(Wya @ a_next + by)
    return a_next, yt_pred, (a_next, a_prev, xt, parameters)


def rnn_forward(x, a0, parameters):
    n_x, m, T_x = x.shape
    n_y, n_a = parameters["Wya"].shape
    a, y_pred, caches = np.zeros((n_a, m, T_x)), np.zeros((n_y, m, T_x)), []
    a_next = a0
    for t in range(T_x):
        a_next, yt_pred, cache = rnn_cell_forward(x[:, :, t], a_next, parameters)
        a[:, :, t], y_pred[:, :, t] = a_next, yt_pred
        caches.append(cache)
    return a, y_pred, (caches, x)


def rnn_cell_backward(da_next, cache, slip=None):
    a_next, a_prev, xt, parameters = cache
    if slip == "no-tanh-derivative":
        dtanh = da_next
    elif slip == "tanh-twice":
        dtanh = (1 - np.tanh(a_next) ** 2) * da_next
    else:
        dtanh = (1 - a_next ** 2) * da_next
    return {"dxt": parameters["Wax"].T @ dtanh, "da_prev": parameters["Waa"].T @ dtanh,
            "dWax": dtanh @ xt.T, "dWaa": dtanh @ a_prev.T, "dba": np.sum(dtanh, axis=1, keepdims=True)}


def rnn_backward(da, caches, window=None, align="end", carry_a=True, slip=None):
    caches, x = caches
    n_a, m, T_x = da.shape
    a1, a0, x1, parameters = caches[0]
    dx = np.zeros((x1.shape[0], m, T_x))
    dWax, dWaa, dba = np.zeros_like(parameters["Wax"]), np.zeros_like(parameters["Waa"]), np.zeros((n_a, 1))
    da_prevt = np.zeros((n_a, m))
    for t in reversed(range(T_x)):
        if _restarts(t, T_x, window, align):
            da_prevt = np.zeros((n_a, m))
        gradients = rnn_cell_backward(da[:, :, t] + (da_prevt if carry_a else 0), caches[t], slip)
        dx[:, :, t] = gradients["dxt"]
        dWax += gradients["dWax"]
        dWaa += gradients["dWaa"]
        dba += gradients["dba"]
        da_prevt = gradients["da_prev"]
    return {"dx": dx, "da0": da_prevt, "dWax": dWax, "dWaa": dWaa, "dba": dba}


# the LSTM


def lstm_cell_forward(xt, a_prev, c_prev, parameters):
    concat = np.concatenate((a_prev, xt), axis=0)
    ft = sigmoid(parameters["Wf"] @ concat + parameters["bf"])
    it = sigmoid(parameters["Wi"] @ concat + parameters["bi"])
    cct = np.tanh(parameters["Wc"] @ concat + parameters["bc"])
    c_next = ft * c_prev + it * cct
    ot = sigmoid(parameters["Wo"] @ concat + parameters["bo"])
    a_next = ot * np.tanh(c_next)
    yt_pred = softmax(parameters["Wy"] @ a_next + parameters["by"])
    return a_next, c_next, yt_pred, (a_next, c_next, a_prev, c_prev, ft, it, cct, ot, xt, parameters)


def lstm_forward(x, a0, parameters, store_a_as_c=False):
    n_x, m, T_x = x.shape
    n_y, n_a = parameters["Wy"].shape
    a, c, y = np.zeros((n_a, m, T_x)), np.zeros((n_a, m, T_x)), np.zeros((n_y, m, T_x))
    a_next, c_next, caches = a0, np.zeros((n_a, m)), []
    for t in range(T_x):
        a_next, c_next, yt, cache = lstm_cell_forward(x[:, :, t], a_next, c_next, parameters)
        a[:, :, t], y[:, :, t] = a_next, yt
        c[:, :, t] = a_next if store_a_as_c else c_next
        caches.append(cache)
    return a, y, c, (caches, x)


def lstm_cell_backward(da_next, dc_next, cache, slip=None):
    a_next, c_next, a_prev, c_prev, ft, it, cct, ot, xt, parameters = cache
    n_a = a_next.shape[0]
    tanh_c = np.tanh(c_next)
    if slip == "tanh-twice":
        tanh_c_derivative = 1 - np.tanh(tanh_c) ** 2
    else:
        tanh_c_derivative = 1 - tanh_c ** 2
    dc = dc_next + da_next * ot * tanh_c_derivative
    sigmoid_all = slip == "no-sigmoid-derivative"

    def d_sigmoid(gate, value):
        return 1 if sigmoid_all or slip == f"no-sigmoid-derivative-{gate}" else value * (1 - value)

    dot = da_next * tanh_c * d_sigmoid("o", ot)
    dcct = dc * it * (1 if slip == "no-tanh-derivative-candidate" else 1 - cct ** 2)
    dit = dc * cct * d_sigmoid("i", it)
    dft = dc * (c_next if slip == "time-index" else c_prev) * d_sigmoid("f", ft)
    concat = np.concatenate((a_prev, xt), axis=0)
    gradients = {}
    for gate, dgate in (("f", dft), ("i", dit), ("c", dcct), ("o", dot)):
        gradients["dW" + gate] = dgate @ concat.T
        gradients["db" + gate] = np.sum(dgate, axis=1, keepdims=True)
    pairs = [(parameters["W" + g], d) for g, d in (("f", dft), ("i", dit), ("c", dcct), ("o", dot))]
    gradients["da_prev"] = sum(w[:, :n_a].T @ d for w, d in pairs)
    gradients["dc_prev"] = dc * ft
    gradients["dxt"] = sum(w[:, n_a:].T @ d for w, d in pairs)
    return gradients


def lstm_backward(da, caches, window=None, align="end", carry_a=True, carry_c=True, slip=None):
    caches, x = caches
    n_a, m, T_x = da.shape
    parameters = caches[0][9]
    grads = {"dW" + g: np.zeros_like(parameters["W" + g]) for g in "fico"}
    grads.update({"db" + g: np.zeros((n_a, 1)) for g in "fico"})
    dx = np.zeros((x.shape[0], m, T_x))
    da_prevt, dc_prevt = np.zeros((n_a, m)), np.zeros((n_a, m))
    for t in reversed(range(T_x)):
        if _restarts(t, T_x, window, align):
            da_prevt, dc_prevt = np.zeros((n_a, m)), np.zeros((n_a, m))
        gradients = lstm_cell_backward(da[:, :, t] + (da_prevt if carry_a else 0), dc_prevt if carry_c else 0,
                                       caches[t], slip)
        dx[:, :, t] = gradients["dxt"]
        for name in grads:
            grads[name] += gradients[name]
        da_prevt, dc_prevt = gradients["da_prev"], gradients["dc_prev"]
    return {"dx": dx, "da0": da_prevt, **grads}


def _restarts(t, T_x, window, align):
    """Whether the loop resets its carried gradients before step t (windows of ``window``)."""
    if window is None or t == T_x - 1:
        return False
    return (T_x - 1 - t) % window == 0 if align == "end" else (t + 1) % window == 0
