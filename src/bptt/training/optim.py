"""Optimizers, clipping (by global norm, by value) and learning-rate schedules, each equal to
its ``torch`` counterpart.

An optimizer is a frozen dataclass of hyperparameters with two pure methods:

    state = opt.init_state(params)
    params, state = opt.update(params, grads, state, lr)

``update`` never writes into its arguments; it returns new parameter arrays and a new state.
The state is a plain dict, ready for a checkpoint (arrays to npz, the int to json)::

    {"step": int, slot: {param name: array like the param}, ...}

``step`` counts the updates done; the slots are the optimizer's running averages, named as in
torch's ``optimizer.state`` (``exp_avg``, ``square_avg``, ...). The learning rate is an argument
of ``update``, not a hyperparameter, so that a schedule's ``lr_at(step)`` feeds it.

Each update mirrors the order of operations of torch's single-tensor (CPU) implementation, so
results agree to rounding (torch may fuse a multiply-add where NumPy rounds twice). Arithmetic
stays in the parameters' dtype: Python-float hyperparameters do not promote float32 arrays.
"""

import math
import operator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..checks import FLOAT_DTYPES, as_float_array, check_shape


def _check_grads(params, grads):
    """``grads`` as a dict with the keys, shapes and dtypes of ``params``."""
    if set(grads) != set(params):
        missing = sorted(set(params) - set(grads))
        extra = sorted(set(grads) - set(params))
        raise ValueError(f"expected gradients for exactly the parameters; missing {missing}, unexpected {extra}")
    checked = {}
    for name, param in params.items():
        if not isinstance(param, np.ndarray) or param.dtype not in FLOAT_DTYPES:
            got = f"dtype {param.dtype}" if isinstance(param, np.ndarray) else type(param).__name__
            raise TypeError(f"expected params[{name!r}] as a float32 or float64 ndarray but got {got}")
        grad = as_float_array(grads[name], f"grads[{name!r}]", param.dtype)
        check_shape(grad, f"grads[{name!r}]", param.shape, [str(n) for n in param.shape])
        checked[name] = grad
    return checked


def _lerp(start, end, weight):
    """``start + weight * (end - start)`` with torch.lerp's two-sided formula (exact at weight 1)."""
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


class _Optimizer:
    """Shared checks and the loop over parameters. A subclass gives ``name``, ``slots()`` (the
    names of its per-parameter arrays) and ``_update_one(param, grad, slots, step, lr) ->
    (new_param, new_slots)``."""

    def _slot_initial_value(self, slot):
        return 0.0

    def init_state(self, params):
        """The state before the first update: step 0 and every slot filled with its start value.

        Parameters
        ----------
        params : dict name -> float ndarray (any shapes)

        Returns
        -------
        state : {"step": 0, slot: {name: array of params[name]'s shape and dtype}}
        """
        state = {"step": 0}
        for slot in self.slots():
            start = self._slot_initial_value(slot)
            state[slot] = {name: np.full_like(param, start) for name, param in params.items()}
        return state

    def _check_state(self, state, params):
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError(f"expected a state dict with a 'step' entry (from {self.name}.init_state) but got "
                             f"{sorted(state) if isinstance(state, dict) else type(state).__name__}")
        expected = {"step", *self.slots()}
        if set(state) != expected:
            raise ValueError(f"expected the state of {self!r} with entries {sorted(expected)} "
                             f"but got {sorted(state)}")
        try:
            step = operator.index(state["step"])
        except TypeError:
            step = -1
        if step < 0:
            raise ValueError(f"expected state['step'] to be an integer >= 0 but got {state['step']!r}")
        for slot in self.slots():
            if set(state[slot]) != set(params):
                raise ValueError(f"expected state[{slot!r}] to have the parameters' names {sorted(params)} "
                                 f"but got {sorted(state[slot])}")
            for name, param in params.items():
                value = as_float_array(state[slot][name], f"state[{slot!r}][{name!r}]", param.dtype)
                check_shape(value, f"state[{slot!r}][{name!r}]", param.shape, [str(n) for n in param.shape])
        return step

    def update(self, params, grads, state, lr):
        """One optimizer step.

        Parameters
        ----------
        params : dict name -> float32 or float64 ndarray
        grads : dict with the same names, shapes and dtypes
        state : the state from ``init_state`` or the previous ``update``
        lr : float >= 0, the learning rate of this step

        Returns
        -------
        new_params : dict name -> ndarray (new arrays, same shapes and dtypes)
        new_state : dict, as ``init_state``, with ``step`` one larger
        """
        if not lr >= 0:
            raise ValueError(f"expected a learning rate >= 0 but got {lr!r}")
        lr = float(lr)
        grads = _check_grads(params, grads)
        step = self._check_state(state, params) + 1
        new_params, new_state = {}, {"step": step, **{slot: {} for slot in self.slots()}}
        for name, param in params.items():
            slots = {slot: state[slot][name] for slot in self.slots()}
            new_params[name], new_slots = self._update_one(param, grads[name], slots, step, lr)
            for slot, value in new_slots.items():
                new_state[slot][name] = value
        return new_params, new_state


def _check_nonnegative(owner, **values):
    for key, value in values.items():
        if not value >= 0:
            raise ValueError(f"expected {owner} {key} >= 0 but got {value!r}")


@dataclass(frozen=True)
class SGD(_Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD`` with ``dampening=0``.

    g = grad + weight_decay * p
    buf = momentum * buf + g                      (buf starts at 0, so the first buf is g)
    g = g + momentum * buf if nesterov else buf   (only when momentum != 0)
    p = p - lr * g
    """

    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    name: ClassVar[str] = "sgd"

    def __post_init__(self):
        _check_nonnegative("SGD", momentum=self.momentum, weight_decay=self.weight_decay)
        if self.nesterov and self.momentum == 0:
            raise ValueError("expected momentum > 0 for SGD with nesterov=True but got momentum=0")

    def slots(self):
        return ("momentum_buffer",) if self.momentum != 0 else ()

    def _update_one(self, param, grad, slots, step, lr):
        if self.weight_decay != 0:
            grad = grad + self.weight_decay * param
        if self.momentum == 0:
            return param + (-lr) * grad, {}
        buf = slots["momentum_buffer"] * self.momentum + grad
        if self.nesterov:
            grad = grad + self.momentum * buf
        else:
            grad = buf
        return param + (-lr) * grad, {"momentum_buffer": buf}


@dataclass(frozen=True)
class Adagrad(_Optimizer):
    """Adagrad, as ``torch.optim.Adagrad``.

    g = grad + weight_decay * p
    clr = lr / (1 + (step - 1) * lr_decay)
    sum = sum + g * g                             (sum starts at initial_accumulator_value)
    p = p - clr * g / (sqrt(sum) + eps)
    p = p - clr * g / sqrt(sum + eps)             (eps_inside_sqrt: min-char-rnn.py's Adagrad,
                                                   ``param -= lr * dparam / np.sqrt(mem + 1e-8)``)
    """

    lr_decay: float = 0.0
    weight_decay: float = 0.0
    initial_accumulator_value: float = 0.0
    eps: float = 1e-10
    eps_inside_sqrt: bool = False
    name: ClassVar[str] = "adagrad"

    def __post_init__(self):
        _check_nonnegative("Adagrad", lr_decay=self.lr_decay, weight_decay=self.weight_decay,
                           initial_accumulator_value=self.initial_accumulator_value, eps=self.eps)

    def slots(self):
        return ("sum",)

    def _slot_initial_value(self, slot):
        return self.initial_accumulator_value

    def _update_one(self, param, grad, slots, step, lr):
        if self.weight_decay != 0:
            grad = grad + self.weight_decay * param
        clr = lr / (1 + (step - 1) * self.lr_decay)
        state_sum = slots["sum"] + grad * grad
        std = np.sqrt(state_sum + self.eps) if self.eps_inside_sqrt else np.sqrt(state_sum) + self.eps
        return param + (-clr) * (grad / std), {"sum": state_sum}


@dataclass(frozen=True)
class RMSprop(_Optimizer):
    """RMSProp, as ``torch.optim.RMSprop``.

    g = grad + weight_decay * p
    square_avg = alpha * square_avg + (1 - alpha) * g * g
    centered:  grad_avg = lerp(grad_avg, g, 1 - alpha);  avg = sqrt(square_avg - grad_avg**2) + eps
    otherwise: avg = sqrt(square_avg) + eps
    momentum > 0: buf = momentum * buf + g / avg;  p = p - lr * buf
    otherwise:    p = p - lr * g / avg
    """

    alpha: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    centered: bool = False
    name: ClassVar[str] = "rmsprop"

    def __post_init__(self):
        _check_nonnegative("RMSprop", alpha=self.alpha, eps=self.eps, weight_decay=self.weight_decay,
                           momentum=self.momentum)

    def slots(self):
        return ("square_avg",) + (("momentum_buffer",) if self.momentum > 0 else ()) + (
            ("grad_avg",) if self.centered else ())

    def _update_one(self, param, grad, slots, step, lr):
        if self.weight_decay != 0:
            grad = grad + self.weight_decay * param
        square_avg = slots["square_avg"] * self.alpha + (1 - self.alpha) * grad * grad
        new_slots = {"square_avg": square_avg}
        if self.centered:
            grad_avg = _lerp(slots["grad_avg"], grad, 1 - self.alpha)
            avg = np.sqrt(square_avg - grad_avg * grad_avg)
            new_slots["grad_avg"] = grad_avg
        else:
            avg = np.sqrt(square_avg)
        avg = avg + self.eps
        if self.momentum > 0:
            buf = slots["momentum_buffer"] * self.momentum + grad / avg
            new_slots["momentum_buffer"] = buf
            return param + (-lr) * buf, new_slots
        return param + (-lr) * (grad / avg), new_slots


@dataclass(frozen=True)
class Adam(_Optimizer):
    """Adam, as ``torch.optim.Adam`` (L2 weight decay added to the gradient).

    g = grad + weight_decay * p                   (AdamW instead: p = p * (1 - lr * weight_decay))
    exp_avg = lerp(exp_avg, g, 1 - beta1)
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g
    amsgrad: max_exp_avg_sq = max(max_exp_avg_sq, exp_avg_sq), used below in exp_avg_sq's place
    denom = sqrt(exp_avg_sq) / sqrt(1 - beta2**step) + eps
    p = p - lr / (1 - beta1**step) * exp_avg / denom
    """

    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False
    name: ClassVar[str] = "adam"
    decoupled_weight_decay: ClassVar[bool] = False

    def __post_init__(self):
        betas = tuple(float(beta) for beta in self.betas)
        if len(betas) != 2 or not all(0 <= beta < 1 for beta in betas):
            raise ValueError(f"expected {type(self).__name__} betas as two numbers in [0, 1) "
                             f"but got {self.betas!r}")
        object.__setattr__(self, "betas", betas)
        _check_nonnegative(type(self).__name__, eps=self.eps, weight_decay=self.weight_decay)

    def slots(self):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.amsgrad else ())

    def _update_one(self, param, grad, slots, step, lr):
        beta1, beta2 = self.betas
        if self.weight_decay != 0:
            if self.decoupled_weight_decay:
                param = param * (1 - lr * self.weight_decay)
            else:
                grad = grad + self.weight_decay * param
        exp_avg = _lerp(slots["exp_avg"], grad, 1 - beta1)
        exp_avg_sq = slots["exp_avg_sq"] * beta2 + (1 - beta2) * grad * grad
        new_slots = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        if self.amsgrad:
            second_moment = np.maximum(slots["max_exp_avg_sq"], exp_avg_sq)
            new_slots["max_exp_avg_sq"] = second_moment
        else:
            second_moment = exp_avg_sq
        denom = np.sqrt(second_moment) / bias_correction2_sqrt + self.eps
        return param + (-step_size) * (exp_avg / denom), new_slots


@dataclass(frozen=True)
class AdamW(Adam):
    """AdamW, as ``torch.optim.AdamW``: Adam with decoupled weight decay (default 0.01),
    ``p = p * (1 - lr * weight_decay)`` before the Adam step."""

    weight_decay: float = 0.01
    name: ClassVar[str] = "adamw"
    decoupled_weight_decay: ClassVar[bool] = True


OPTIMIZERS = {cls.name: cls for cls in (SGD, Adagrad, RMSprop, Adam, AdamW)}


def make_optimizer(name, **hyperparameters):
    """The optimizer called ``name`` (a key of ``OPTIMIZERS``) with the given hyperparameters."""
    if name not in OPTIMIZERS:
        raise ValueError(f"expected an optimizer name in {sorted(OPTIMIZERS)} but got {name!r}")
    return OPTIMIZERS[name](**hyperparameters)


def global_norm(grads):
    """The joint 2-norm of all gradients, accumulated in float64: the figure to log and to
    check for finiteness (``clip_by_global_norm`` computes torch's, in the gradients' dtype).

    ``grads``: dict name -> float ndarray. Returns a float.
    """
    return math.sqrt(sum(float(np.sum(np.square(grad, dtype=np.float64))) for grad in grads.values()))


def clip_by_global_norm(grads, max_norm):
    """Scale all gradients together so that their joint 2-norm is at most ``max_norm``,
    as ``torch.nn.utils.clip_grad_norm_``.

    total_norm = || (||g_1||, ..., ||g_n||) ||
    coef = min(max_norm / (total_norm + 1e-6), 1);  every g_i becomes coef * g_i

    Like torch, every gradient is multiplied by ``coef`` even when it is 1, and a non-finite norm
    is passed through (the caller decides what a NaN means).

    Parameters
    ----------
    grads : dict name -> float ndarray, all of one dtype
    max_norm : float > 0

    Returns
    -------
    clipped : dict name -> new ndarray, same shapes and dtype
    total_norm : float, the norm before clipping
    """
    if not max_norm > 0:
        raise ValueError(f"expected max_norm > 0 but got {max_norm!r}")
    if not grads:
        raise ValueError("expected at least one gradient to clip but got an empty dict")
    dtypes = {name: np.asarray(grad).dtype for name, grad in grads.items()}
    dtype = next(iter(dtypes.values()))
    if dtype not in FLOAT_DTYPES or any(d != dtype for d in dtypes.values()):
        raise TypeError(f"expected gradients of one float dtype but got {dtypes}")
    norms = np.array([np.linalg.norm(np.ravel(grad)) for grad in grads.values()], dtype=dtype)  # n
    total_norm = np.linalg.norm(norms)  # a scalar of ``dtype``
    coef = np.minimum(max_norm / (total_norm + 1e-6), 1.0)
    return {name: np.asarray(grad) * coef for name, grad in grads.items()}, float(total_norm)


def clip_by_value(grads, clip_value):
    """Every gradient entry clipped to ``[-clip_value, clip_value]``, as
    ``torch.nn.utils.clip_grad_value_`` (and min-char-rnn.py's ``np.clip(dparam, -5, 5)``).
    A NaN stays NaN (the caller decides what it means).

    Parameters
    ----------
    grads : dict name -> float ndarray
    clip_value : float > 0

    Returns
    -------
    clipped : dict name -> new ndarray, same shapes and dtypes
    """
    if not clip_value > 0:
        raise ValueError(f"expected clip_value > 0 but got {clip_value!r}")
    return {name: np.clip(grad, -clip_value, clip_value) for name, grad in grads.items()}


@dataclass(frozen=True)
class Constant:
    """The same learning rate at every step."""

    lr: float
    name: ClassVar[str] = "constant"

    def __post_init__(self):
        _check_nonnegative("the schedule's", lr=self.lr)

    def lr_at(self, step):
        """The learning rate of update number ``step`` (0 for the first update)."""
        return float(self.lr)


@dataclass(frozen=True)
class StepDecay:
    """``lr * gamma ** (step // step_size)``, as ``torch.optim.lr_scheduler.StepLR``.

    The power is taken by repeated multiplication, as StepLR does step by step, so the values
    are bitwise those of torch.
    """

    lr: float
    step_size: int
    gamma: float = 0.1
    name: ClassVar[str] = "step"

    def __post_init__(self):
        _check_nonnegative("the schedule's", lr=self.lr, gamma=self.gamma)
        if int(self.step_size) != self.step_size or self.step_size < 1:
            raise ValueError(f"expected step_size as an integer >= 1 but got {self.step_size!r}")

    def lr_at(self, step):
        """The learning rate of update number ``step`` (0 for the first update)."""
        lr = float(self.lr)
        for _ in range(int(step) // int(self.step_size)):
            lr = lr * self.gamma
        return lr


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warm-up, then a cosine from ``lr`` down to ``min_lr`` at ``total_steps``.

    lr_at(step) = lr * factor(step), as ``LambdaLR(optimizer, factor)`` computes it, with
        factor(step) = (step + 1) / warmup_steps                          if step < warmup_steps
        factor(step) = m + (1 - m) * (1 + cos(pi * progress)) / 2         otherwise
        m = min_lr / lr,  progress = min(1, (step - warmup_steps) / (total_steps - warmup_steps))
    The same values (to rounding) as torch's ``SequentialLR`` of ``LinearLR(start_factor=
    1/warmup_steps, total_iters=warmup_steps - 1)`` and ``CosineAnnealingLR(T_max=total_steps -
    warmup_steps, eta_min=min_lr)``; after ``total_steps`` it stays at ``min_lr``.
    """

    lr: float
    total_steps: int
    warmup_steps: int = 0
    min_lr: float = 0.0
    name: ClassVar[str] = "cosine"

    def __post_init__(self):
        _check_nonnegative("the schedule's", lr=self.lr, min_lr=self.min_lr, warmup_steps=self.warmup_steps)
        if self.min_lr > self.lr:
            raise ValueError(f"expected min_lr <= lr but got min_lr={self.min_lr!r}, lr={self.lr!r}")
        if not self.warmup_steps < self.total_steps:
            raise ValueError(f"expected warmup_steps < total_steps but got warmup_steps={self.warmup_steps!r}, "
                             f"total_steps={self.total_steps!r}")

    def factor(self, step):
        """The multiplier of ``lr`` at update number ``step``."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        min_ratio = self.min_lr / self.lr if self.lr > 0 else 0.0
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return min_ratio + (1 - min_ratio) * (1 + math.cos(math.pi * progress)) / 2

    def lr_at(self, step):
        """The learning rate of update number ``step`` (0 for the first update)."""
        return float(self.lr) * self.factor(step)


SCHEDULES = {cls.name: cls for cls in (Constant, StepDecay, WarmupCosine)}


def make_schedule(name, **settings):
    """The schedule called ``name`` (a key of ``SCHEDULES``) with the given settings."""
    if name not in SCHEDULES:
        raise ValueError(f"expected a schedule name in {sorted(SCHEDULES)} but got {name!r}")
    return SCHEDULES[name](**settings)
