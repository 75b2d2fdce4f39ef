"""The course's character-level language model (one sequence of indices at a time, the
output layer and the loss in the loop), written as a learner writes it, with switches for the
slips of its output layer: ``dy_without_target`` (dy = ŷ, the one-hot target not subtracted),
``previous_a`` (dWya from a_(t-1)) and ``carry=False`` (da_next not carried)."""

import numpy as np


def softmax(z):
    e = np.exp(z - np.max(z))
    return e / e.sum(axis=0)


def rnn_step_forward(parameters, a_prev, x):
    a_next = np.tanh(parameters["Wax"] @ x + parameters["Waa"] @ a_prev + parameters["b"])
    return a_next, softmax(parameters["Wya"] @ a_next + parameters["by"])


def rnn_forward(X, Y, a0, parameters, vocab_size=27):
    x, a, y_hat = {}, {-1: np.copy(a0)}, {}
    loss = 0
    for t in range(len(X)):
        x[t] = np.zeros((vocab_size, 1))
        if X[t] is not None:
            x[t][X[t]] = 1
        a[t], y_hat[t] = rnn_step_forward(parameters, a[t - 1], x[t])
        loss -= np.log(y_hat[t][Y[t], 0])
    return loss, (y_hat, a, x)


def rnn_step_backward(dy, gradients, parameters, x, a, a_prev, previous_a=False, carry=True):
    gradients["dWya"] += dy @ (a_prev if previous_a else a).T
    gradients["dby"] += dy
    da = parameters["Wya"].T @ dy + (gradients["da_next"] if carry else 0)
    daraw = (1 - a * a) * da
    gradients["db"] += daraw
    gradients["dWax"] += daraw @ x.T
    gradients["dWaa"] += daraw @ a_prev.T
    gradients["da_next"] = parameters["Waa"].T @ daraw
    return gradients


def rnn_backward(X, Y, parameters, cache, dy_without_target=False, previous_a=False, carry=True):
    y_hat, a, x = cache
    gradients = {"d" + name: np.zeros_like(value) for name, value in parameters.items()}
    gradients["da_next"] = np.zeros_like(a[0])
    for t in reversed(range(len(X))):
        dy = np.copy(y_hat[t])
        if not dy_without_target:
            dy[Y[t]] -= 1
        gradients = rnn_step_backward(dy, gradients, parameters, x[t], a[t], a[t - 1], previous_a, carry)
    return gradients, a
