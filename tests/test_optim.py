"""Optimizers, clipping and schedules against torch.optim, in float64 at rtol 1e-12."""

import json

import numpy as np
import pytest

from bptt.training import optim

torch = pytest.importorskip("torch")

SHAPES = {"weight_ih_l0": (8, 3), "weight_hh_l0": (8, 2), "bias_ih_l0": (8,), "head.weight": (2, 2, 3)}
STEPS = 10

SETTINGS = [
    ("sgd", "SGD", {}),
    ("sgd", "SGD", {"weight_decay": 0.1}),
    ("sgd", "SGD", {"momentum": 0.9}),
    ("sgd", "SGD", {"momentum": 0.9, "nesterov": True}),
    ("sgd", "SGD", {"momentum": 0.5, "nesterov": True, "weight_decay": 0.05}),
    ("adagrad", "Adagrad", {}),
    ("adagrad", "Adagrad", {"lr_decay": 0.05, "weight_decay": 0.1, "initial_accumulator_value": 0.5}),
    ("adagrad", "Adagrad", {"eps": 1e-3}),
    ("rmsprop", "RMSprop", {}),
    ("rmsprop", "RMSprop", {"momentum": 0.9}),
    ("rmsprop", "RMSprop", {"centered": True}),
    ("rmsprop", "RMSprop", {"centered": True, "alpha": 0.3, "momentum": 0.5, "weight_decay": 0.1, "eps": 1e-4}),
    ("adam", "Adam", {}),
    ("adam", "Adam", {"weight_decay": 0.1}),
    ("adam", "Adam", {"amsgrad": True}),
    ("adam", "Adam", {"betas": (0.3, 0.6), "eps": 1e-3, "amsgrad": True, "weight_decay": 0.01}),
    ("adamw", "AdamW", {}),
    ("adamw", "AdamW", {"weight_decay": 0.2, "amsgrad": True}),
    ("adamw", "AdamW", {"betas": (0.5, 0.9), "weight_decay": 0.0}),
]


def random_params(rng, dtype=np.float64):
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in SHAPES.items()}


def random_grads(rng, dtype=np.float64):
    """Gradients whose scale changes from step to step, so that amsgrad's maximum matters."""
    return [{name: (rng.uniform(0.1, 3.0) * rng.standard_normal(shape)).astype(dtype)
             for name, shape in SHAPES.items()} for _ in range(STEPS)]


def learning_rates(base):
    return [base * (1 + 0.3 * np.sin(step)) for step in range(STEPS)]


def torch_run(torch_name, hyper, params, grads_sequence, lrs):
    """Parameters after each step, and torch's final per-parameter state."""
    tensors = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    opt = getattr(torch.optim, torch_name)(list(tensors.values()), lr=lrs[0], **hyper)
    history = []
    for grads, lr in zip(grads_sequence, lrs):
        opt.param_groups[0]["lr"] = lr
        for name, tensor in tensors.items():
            tensor.grad = torch.tensor(grads[name])
        opt.step()
        history.append({name: tensor.detach().numpy().copy() for name, tensor in tensors.items()})
    return history, {name: opt.state[tensor] for name, tensor in tensors.items()}


@pytest.mark.parametrize("name, torch_name, hyper", SETTINGS)
def test_optimizer_equals_torch(rng, name, torch_name, hyper):
    params = random_params(rng)
    grads_sequence = random_grads(rng)
    lrs = learning_rates(0.05)
    expected, torch_state = torch_run(torch_name, hyper, params, grads_sequence, lrs)

    opt = optim.make_optimizer(name, **hyper)
    state = opt.init_state(params)
    for step, (grads, lr) in enumerate(zip(grads_sequence, lrs)):
        params, state = opt.update(params, grads, state, lr)
        for key in SHAPES:
            np.testing.assert_allclose(params[key], expected[step][key], rtol=1e-12, atol=0,
                                       err_msg=f"{key} after step {step}")
    assert state["step"] == STEPS
    for slot in opt.slots():
        for key in SHAPES:
            np.testing.assert_allclose(state[slot][key], torch_state[key][slot].numpy(), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("name, torch_name, hyper", SETTINGS[::3])
def test_update_is_pure_and_float32_stays_float32(rng, name, torch_name, hyper):
    params = random_params(rng, np.float32)
    grads = random_grads(rng, np.float32)[0]
    before = {key: value.copy() for key, value in params.items()}
    opt = optim.make_optimizer(name, **hyper)
    state = opt.init_state(params)
    new_params, new_state = opt.update(params, grads, state, 0.01)
    new_params, new_state = opt.update(new_params, grads, new_state, 0.01)
    for key in SHAPES:
        np.testing.assert_array_equal(params[key], before[key])
        assert new_params[key].dtype == np.float32
        assert all(new_state[slot][key].dtype == np.float32 for slot in opt.slots())
    assert state["step"] == 0 and new_state["step"] == 2


@pytest.mark.parametrize("name", sorted(optim.OPTIMIZERS))
def test_state_survives_npz_and_json(rng, name, tmp_path):
    """A run cut after 4 steps, its state saved as npz + json and loaded, goes on exactly as one run."""
    opt = optim.make_optimizer(name, **({"momentum": 0.9} if name in ("sgd", "rmsprop") else {}))
    params = random_params(rng)
    grads_sequence = random_grads(rng)
    straight, state = params, opt.init_state(params)
    for grads in grads_sequence:
        straight, state = opt.update(straight, grads, state, 0.01)

    resumed, state = params, opt.init_state(params)
    for grads in grads_sequence[:4]:
        resumed, state = opt.update(resumed, grads, state, 0.01)
    arrays = {f"{slot}/{key}": state[slot][key] for slot in opt.slots() for key in SHAPES}
    np.savez(tmp_path / "state.npz", **arrays)
    (tmp_path / "state.json").write_text(json.dumps({"step": state["step"]}))
    with np.load(tmp_path / "state.npz") as arrays:
        state = {"step": json.loads((tmp_path / "state.json").read_text())["step"],
                 **{slot: {key: arrays[f"{slot}/{key}"] for key in SHAPES} for slot in opt.slots()}}
    for grads in grads_sequence[4:]:
        resumed, state = opt.update(resumed, grads, state, 0.01)
    for key in SHAPES:
        np.testing.assert_array_equal(resumed[key], straight[key])


def test_bad_inputs_are_named(rng):
    params = random_params(rng)
    grads = random_grads(rng)[0]
    adam = optim.Adam()
    state = adam.init_state(params)
    with pytest.raises(ValueError, match=r"missing \['bias_ih_l0'\]"):
        adam.update(params, {k: v for k, v in grads.items() if k != "bias_ih_l0"}, state, 0.1)
    with pytest.raises(TypeError, match="float32"):
        adam.update(params, {**grads, "bias_ih_l0": grads["bias_ih_l0"].astype(np.float32)}, state, 0.1)
    with pytest.raises(ValueError, match=r"shape \(8, 2\) but got \(2, 8\)"):
        adam.update(params, {**grads, "weight_hh_l0": grads["weight_hh_l0"].T}, state, 0.1)
    with pytest.raises(ValueError, match="exp_avg"):
        adam.update(params, grads, optim.SGD(momentum=0.9).init_state(params), 0.1)
    with pytest.raises(ValueError, match="learning rate"):
        adam.update(params, grads, state, -1.0)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam(betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD(nesterov=True)
    with pytest.raises(ValueError, match="'sgd'"):
        optim.make_optimizer("lion")


@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_by_global_norm_equals_torch(rng, max_norm):
    grads = random_grads(rng)[0]
    tensors = [torch.zeros(shape, requires_grad=True) for shape in SHAPES.values()]
    for tensor, grad in zip(tensors, grads.values()):
        tensor.grad = torch.tensor(grad)
    expected_norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm)

    clipped, total_norm = optim.clip_by_global_norm(grads, max_norm)
    np.testing.assert_allclose(total_norm, expected_norm.item(), rtol=1e-12, atol=0)
    for tensor, key in zip(tensors, SHAPES):
        np.testing.assert_allclose(clipped[key], tensor.grad.numpy(), rtol=1e-12, atol=0)
    assert max_norm < 1e3 or all(np.array_equal(clipped[key], grads[key]) for key in SHAPES)


def test_clip_keeps_float32_and_inputs(rng):
    grads = random_grads(rng, np.float32)[0]
    before = {key: value.copy() for key, value in grads.items()}
    clipped, total_norm = optim.clip_by_global_norm(grads, 0.1)
    assert all(clipped[key].dtype == np.float32 for key in SHAPES)
    assert isinstance(total_norm, float)
    joint = np.sqrt(sum(float(np.sum(value.astype(np.float64) ** 2)) for value in clipped.values()))
    np.testing.assert_allclose(joint, 0.1, rtol=1e-5)
    for key in SHAPES:
        np.testing.assert_array_equal(grads[key], before[key])
    with pytest.raises(TypeError, match="one float dtype"):
        optim.clip_by_global_norm({**grads, "bias_ih_l0": before["bias_ih_l0"].astype(np.float64)}, 1.0)
    with pytest.raises(ValueError, match="max_norm > 0"):
        optim.clip_by_global_norm(grads, 0.0)


def torch_lrs(make_scheduler, base_lr, steps=30):
    """The learning rate torch uses at each of ``steps`` updates."""
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=base_lr)
    scheduler = make_scheduler(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        param.grad = torch.zeros(1)
        opt.step()
        scheduler.step()
    return lrs


def test_constant_schedule():
    assert [optim.Constant(0.3).lr_at(step) for step in range(30)] == [0.3] * 30


@pytest.mark.parametrize("step_size, gamma", [(7, 0.3), (1, 0.9), (10, 0.5)])
def test_step_schedule_equals_steplr(step_size, gamma):
    expected = torch_lrs(lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size, gamma), 0.1)
    schedule = optim.make_schedule("step", lr=0.1, step_size=step_size, gamma=gamma)
    assert [schedule.lr_at(step) for step in range(30)] == expected


@pytest.mark.parametrize("warmup_steps, total_steps, min_lr", [(5, 30, 0.0), (0, 25, 0.01), (3, 20, 0.002)])
def test_cosine_schedule_equals_torch(warmup_steps, total_steps, min_lr):
    base = 0.1

    def factor(step):  # the documented formula, written out again
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
        return min_lr / base + (1 - min_lr / base) * (1 + np.cos(np.pi * progress)) / 2

    expected = torch_lrs(lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor), base, steps=35)
    schedule = optim.make_schedule("cosine", lr=base, warmup_steps=warmup_steps, total_steps=total_steps,
                                   min_lr=min_lr)
    got = [schedule.lr_at(step) for step in range(35)]
    np.testing.assert_allclose(got, expected, rtol=1e-15, atol=0)
    assert got[total_steps - 1] > min_lr and got[-1] == pytest.approx(min_lr, abs=1e-15)
    if warmup_steps:
        assert got[warmup_steps - 1] == pytest.approx(base, rel=1e-15)

        def built_in(opt):
            warmup = torch.optim.lr_scheduler.LinearLR(opt, 1 / warmup_steps, 1.0, total_iters=warmup_steps - 1)
            cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total_steps - warmup_steps, eta_min=min_lr)
            return torch.optim.lr_scheduler.SequentialLR(opt, [warmup, cosine], milestones=[warmup_steps])

        built_in_lrs = torch_lrs(built_in, base, total_steps)
        np.testing.assert_allclose(got[:total_steps], built_in_lrs, rtol=1e-10, atol=1e-15)


def test_schedule_settings_are_checked():
    with pytest.raises(ValueError, match="warmup_steps < total_steps"):
        optim.WarmupCosine(0.1, total_steps=5, warmup_steps=5)
    with pytest.raises(ValueError, match="min_lr <= lr"):
        optim.WarmupCosine(0.1, total_steps=5, min_lr=0.2)
    with pytest.raises(ValueError, match="step_size"):
        optim.StepDecay(0.1, step_size=0)
    with pytest.raises(ValueError, match="'constant'"):
        optim.make_schedule("linear", lr=0.1)
