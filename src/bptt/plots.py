"""Figures, drawn with matplotlib (an optional extra: ``pip install bptt[plot]``).

This module imports nothing of bptt: it draws arrays and dicts that the caller computed.
Every function writes one image file and returns its path.
"""

import os

import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("plots need matplotlib: pip install 'bptt[plot]'") from error
    matplotlib.use("Agg")  # files only, no screen needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    """Write atomically: a figure is either complete or not there."""
    plt = _pyplot()
    directory = os.path.dirname(os.path.abspath(path))
    root, ext = os.path.splitext(os.path.basename(path))
    temporary = os.path.join(directory, f".{root}.partial{ext or '.png'}")
    fig.savefig(temporary, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(temporary, path)
    return path


def plot_reach(curves, path, title, ylabel="mean ||dL_T / dh_{T-k}||"):
    """Gradient norm against steps back, log scale, one line per entry of ``curves``.

    ``curves``: dict label -> (T,) array, entry k the norm k steps back; entries of 0 (an LSTM's
    cell state at k = 0, which a loss on h does not read) are left out of the log scale.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, values in curves.items():
        values = np.asarray(values, dtype=float)
        ax.semilogy(range(len(values)), np.where(values > 0, values, np.nan), label=label, linewidth=1.8)
    ax.set_xlabel("k, steps back from the loss")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_curves(curves, path, title, ylabel):
    """Lines against a shared x axis: ``curves`` dict label -> (xs, ys) sequences."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, (xs, ys) in curves.items():
        if len(xs):
            ax.plot(xs, ys, label=label, linewidth=1.6, marker="o" if len(xs) < 20 else None)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save(fig, path)
