"""bptt.check on a learner's own functions, in the course's and CS231n's signatures, cell and
sequence: right ones pass, and each slip is told where it lives."""

import json
import pathlib

import numpy as np
import pytest

import bptt
from bptt import cli
from bptt.proofs.check import FUNCTION_NAMES, SIGNATURES
import learners_course as course
import learners_cs231n as cs231n

LEARNERS = {
    "coursera-rnn": (course.rnn_forward, course.rnn_backward),
    "coursera-lstm": (course.lstm_forward, course.lstm_backward),
    "coursera-rnn-cell": (course.rnn_cell_forward, course.rnn_cell_backward),
    "coursera-lstm-cell": (course.lstm_cell_forward, course.lstm_cell_backward),
    "cs231n-rnn": (cs231n.rnn_forward, cs231n.rnn_backward),
    "cs231n-lstm": (cs231n.lstm_forward, cs231n.lstm_backward),
    "cs231n-rnn-step": (cs231n.rnn_step_forward, cs231n.rnn_step_backward),
    "cs231n-lstm-step": (cs231n.lstm_step_forward, cs231n.lstm_step_backward),
}


def test_every_layout_has_a_learner():
    assert set(LEARNERS) == set(SIGNATURES) == set(FUNCTION_NAMES) - {"coursera-char-rnn"}


@pytest.mark.parametrize("layout", list(LEARNERS))
def test_right_functions_pass(layout):
    result = bptt.check(layout, *LEARNERS[layout])
    assert result.passed, str(result)
    assert result.verdict == {"status": "correct", "depth": None, "window": None, "path": None, "slip": None, "forward": []}
    assert all(v.rel_err < 1e-12 for v in result.tensors.values())
    assert all(v.status == "correct" for v in result.forward.values()) and result.forward
    steps = {(case["T"], case["B"]) for case in result.cases}
    assert (1, 1) in steps and all(case["passed"] for case in result.cases)


def test_the_cases_have_one_step_one_example_and_a_long_batch():
    result = bptt.check("coursera-lstm", *LEARNERS["coursera-lstm"])
    assert [(c["T"], c["B"]) for c in result.cases] == [(1, 1), (1, 3), (4, 1), (7, 3)]
    assert result.steps == 7


def test_forward_storing_a_as_c_is_named():
    def lstm_forward(x, a0, parameters):
        return course.lstm_forward(x, a0, parameters, store_a_as_c=True)

    result = bptt.check("coursera-lstm", lstm_forward, course.lstm_backward)
    assert not result.passed
    assert result.verdict["forward"] == ["c"] and result.verdict["status"] == "correct"
    assert result.forward["c"].first_step == 0
    assert result.summary.startswith("Verdict: your forward is wrong (c). Your c is wrong from step 0: it holds a")


def test_forward_that_restarts_every_step_is_named():
    def rnn_forward(x, a0, parameters):
        a, y_pred, caches = course.rnn_forward(x, a0, parameters)
        for t in range(x.shape[2]):
            a[:, :, t] = course.rnn_cell_forward(x[:, :, t], a0, parameters)[0]
        return a, y_pred, caches

    result = bptt.check("coursera-rnn", rnn_forward, course.rnn_backward)
    assert result.forward["a"].first_step == 1
    assert "every step starts from the initial state" in result.summary


def test_cs231n_forward_off_by_one_is_named():
    def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
        return cs231n.lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b)

    def lstm_forward(x, h0, Wx, Wh, b):
        h, cache = cs231n.lstm_forward(x, h0, Wx, Wh, b)
        shifted = np.concatenate([h0[:, None], h[:, :-1]], axis=1)  # h[:, t] = h_(t-1)
        return shifted, cache

    result = bptt.check("cs231n-lstm", lstm_forward, cs231n.lstm_backward)
    assert "a time index off by one" in result.summary
    assert bptt.check("cs231n-lstm-step", lstm_step_forward, cs231n.lstm_step_backward).passed


@pytest.mark.parametrize("k, align", [(3, "end"), (2, "start")])
def test_chunked_truncation_through_check(k, align):
    result = bptt.check("coursera-lstm", course.lstm_forward,
                        lambda da, caches: course.lstm_backward(da, caches, window=k, align=align))
    assert result.verdict["window"] == {"k1": k, "k2": k, "align": align}
    assert f"restarts da_prev and dc_prev every {k} steps" in result.summary
    assert [case["passed"] for case in result.cases] == [True, True, k >= 4, False]


def test_a_slip_in_the_loop_with_the_cell_right():
    result = bptt.check("coursera-lstm", course.lstm_forward,
                        lambda da, caches: course.lstm_backward(da, caches, carry_a=False),
                        cell=(course.lstm_cell_forward, course.lstm_cell_backward))
    assert result.verdict["path"] == "hidden"
    assert result.summary.startswith("Your cell functions are right")
    assert result.cell_check.passed
    assert json.loads(result.to_json())["cell"]["verdict"]["status"] == "correct"


def test_a_slip_in_the_cell():
    def lstm_cell_backward(da_next, dc_next, cache):
        return course.lstm_cell_backward(da_next, dc_next, cache, slip="time-index")

    def lstm_backward(da, caches):
        return course.lstm_backward(da, caches, slip="time-index")

    result = bptt.check("coursera-lstm", course.lstm_forward, lstm_backward,
                        cell=(course.lstm_cell_forward, lstm_cell_backward))
    assert not result.cell_check.passed
    assert result.summary.startswith("Your cell backward is already wrong")


def test_the_learners_error_is_reported_with_its_line():
    def rnn_backward(da, caches):
        raise KeyError("dWax")

    result = bptt.check("coursera-rnn", course.rnn_forward, rnn_backward)
    assert result.verdict["status"] == "error" and not result.passed
    assert "your backward rnn_backward raised KeyError: 'dWax' at" in result.summary
    assert "test_check.py" in result.error


def test_a_forward_of_another_form_is_named():
    result = bptt.check("coursera-lstm", lambda x, a0, p: course.lstm_forward(x, a0, p)[:3], course.lstm_backward)
    assert "expected the forward to return (a, y, c, cache) but got a tuple of 3" in result.summary
    result = bptt.check("cs231n-rnn", cs231n.rnn_forward, lambda dh, cache: {"dx": 0})
    assert "expected the backward to return (dx, dh0, dWx, dWh, db) but got dict" in result.summary


def test_unknown_layout_and_cell_without_a_sequence():
    with pytest.raises(ValueError, match="unknown layout 'keras' for bptt.check"):
        bptt.check("keras", None, None)
    with pytest.raises(ValueError, match="goes with a sequence layout"):
        bptt.check("coursera-lstm-cell", *LEARNERS["coursera-lstm-cell"], cell=LEARNERS["coursera-lstm-cell"])


def test_html_text_and_json():
    result = bptt.check("coursera-lstm", course.lstm_forward,
                        lambda da, caches: course.lstm_backward(da, caches, carry_c=False))
    page = result._repr_html_()
    assert page.startswith("<table>") and "<td>dWf</td>" in page and "<td>c (forward)</td>" in page
    assert "without the cell-state path" in page
    text = str(result)
    assert text.splitlines()[1].split()[:4] == ["dx", "path-cut", "-", "cell"]
    as_json = json.loads(result.to_json())
    assert set(as_json) == {"verdict", "tensors", "forward", "cases", "summary"}
    assert as_json["forward"]["c"] == {"status": "correct", "rel_err": as_json["forward"]["c"]["rel_err"],
                                       "first_step": None, "worst": [], "problem": None}


SOLUTION = '''
import numpy as np
import learners_course as course

lstm_forward = course.lstm_forward
lstm_cell_forward = course.lstm_cell_forward
lstm_cell_backward = course.lstm_cell_backward

def lstm_backward(da, caches):
    return course.lstm_backward(da, caches, window=2)
'''


def test_cli_check_finds_the_courses_names_and_writes_nothing(tmp_path, capsys):
    solution = tmp_path / "solution.py"
    solution.write_text(SOLUTION)
    assert cli.main(["check", str(solution), "--layout", "coursera-lstm", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"]["window"] == {"k1": 2, "k2": 2, "align": "end"}
    assert out["cell"]["verdict"]["status"] == "correct"
    assert "Your cell functions are right" in out["summary"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["solution.py"]  # no __pycache__
    assert cli.main(["check", str(solution), "--layout", "coursera-rnn"]) == 2
    assert "defines no rnn_forward or rnn_backward" in capsys.readouterr().err
    assert cli.main(["check", str(tmp_path / "none.py"), "--layout", "coursera-rnn"]) == 2
    assert "no such file" in capsys.readouterr().err
    broken = tmp_path / "broken.py"
    broken.write_text("import nowhere_to_be_found\n")
    assert cli.main(["check", str(broken), "--layout", "coursera-rnn"]) == 2
    assert "raised ModuleNotFoundError when run" in capsys.readouterr().err


def test_cli_check_help_lists_the_function_names(capsys):
    with pytest.raises(SystemExit):
        cli.main(["check", "--help"])
    out = capsys.readouterr().out
    for forward, backward in FUNCTION_NAMES.values():
        assert forward in out and backward in out


def test_the_learner_files_are_the_courses_signatures():
    """The learner code the tests hand to check keeps the course's names (a drift would make the
    tests check something a learner never writes)."""
    source = pathlib.Path(course.__file__).read_text()
    for name in ("def rnn_forward(x, a0, parameters)", "def lstm_forward(x, a0, parameters",
                 "def lstm_cell_backward(da_next, dc_next, cache", "def rnn_cell_forward(xt, a_prev, parameters)"):
        assert name in source


def test_arrays_in_a_cell_layout_and_every_missing_key_at_once(tmp_path):
    from bptt.interop import LayoutError
    from bptt.proofs.diagnose import load_npz

    from bptt.proofs.check import Case, random_case

    params, _ = random_case(SIGNATURES["coursera-lstm-cell"], Case(1, 2, 0))
    with pytest.raises(LayoutError, match="inputs: missing xt, a_prev, da_next"):
        bptt.diagnose("coursera-lstm-cell", params, {}, {})
    np.savez(tmp_path / "G.npz", {"dWf": np.zeros(3)})  # the dict, not its arrays
    with pytest.raises(LayoutError, match=r"holds a pickled object.*np.savez\(path, \*\*grads\)"):
        load_npz(tmp_path / "G.npz", "grads")


def _slipped(backward, **switches):
    def learner_backward(*upstream_and_cache):
        return backward(*upstream_and_cache, **switches)
    return learner_backward


@pytest.mark.parametrize("layout, forward, backward, switches, slip, path", [
    ("coursera-lstm", course.lstm_forward, course.lstm_backward, {"slip": "no-sigmoid-derivative-f"},
     {"id": "missing-sigmoid-derivative", "gate": "f", "factor": "none"}, None),
    ("coursera-lstm", course.lstm_forward, course.lstm_backward, {"slip": "no-tanh-derivative-candidate"},
     {"id": "missing-tanh-derivative", "where": "candidate"}, None),
    ("coursera-lstm", course.lstm_forward, course.lstm_backward, {"slip": "tanh-twice"},
     {"id": "tanh-applied-twice", "where": "cell"}, None),
    ("coursera-lstm", course.lstm_forward, course.lstm_backward, {"slip": "time-index"},
     {"id": "wrong-time-index", "where": "forget-gate"}, None),
    ("coursera-lstm", course.lstm_forward, course.lstm_backward, {"slip": "no-sigmoid-derivative", "carry_a": False},
     {"id": "missing-sigmoid-derivative", "gate": "all", "factor": "none"}, "hidden"),
    ("coursera-rnn", course.rnn_forward, course.rnn_backward, {"slip": "no-tanh-derivative"},
     {"id": "missing-tanh-derivative", "where": "hidden"}, None),
    ("coursera-rnn", course.rnn_forward, course.rnn_backward, {"slip": "tanh-twice"},
     {"id": "tanh-applied-twice", "where": "hidden"}, None),
    ("cs231n-lstm", cs231n.lstm_forward, cs231n.lstm_backward, {"slip": "no-sigmoid-derivative"},
     {"id": "missing-sigmoid-derivative", "gate": "all", "factor": "none"}, None),
    ("cs231n-lstm", cs231n.lstm_forward, cs231n.lstm_backward, {"slip": "time-index", "carry_c": False},
     {"id": "wrong-time-index", "where": "forget-gate"}, "cell"),
    ("cs231n-rnn", cs231n.rnn_forward, cs231n.rnn_backward, {"slip": "tanh-twice"},
     {"id": "tanh-applied-twice", "where": "hidden"}, None),
])
def test_a_classic_slip_is_named(layout, forward, backward, switches, slip, path):
    result = bptt.check(layout, forward, _slipped(backward, **switches))
    assert result.verdict["slip"] == slip, result.summary
    assert result.verdict["path"] == path
    assert f"match the slip {slip['id']}" in result.summary
    assert json.loads(result.to_json())["verdict"]["slip"] == slip


def test_a_slip_in_a_cell_is_named_with_the_cell_s_names():
    result = bptt.check("coursera-lstm-cell", course.lstm_cell_forward, _slipped(course.lstm_cell_backward,
                                                                               slip="time-index"))
    assert result.verdict["slip"] == {"id": "wrong-time-index", "where": "forget-gate"}
    assert "dc * c_prev * ft * (1 - ft), not dc * c_next" in result.summary


def test_sign_and_transpose_are_named_per_tensor():
    def rnn_backward(da, caches):
        gradients = course.rnn_backward(da, caches)
        return {**gradients, "dWaa": gradients["dWaa"].T, "dba": -gradients["dba"]}

    result = bptt.check("coursera-rnn", course.rnn_forward, rnn_backward)
    assert result.tensors["dWaa"].to_dict()["slip"] == {"id": "transposed"}
    assert result.tensors["dba"].to_dict()["slip"] == {"id": "sign"}
    assert result.tensors["dWax"].status == "correct"


def test_the_char_language_model_whole():
    import learners_char as char

    result = bptt.check("coursera-char-rnn", char.rnn_forward, char.rnn_backward)
    assert result.passed, str(result)
    assert set(result.tensors) == {"dWax", "dWaa", "db", "dWya", "dby"}
    assert "The output layer's dWya and dby match" in result.summary
    assert [case["T"] for case in result.cases] == [1, 4, 9]


@pytest.mark.parametrize("switch, wrong, says", [
    ({"previous_a": True}, {"dWya"}, "a_t, not a_(t-1)"),
    ({"dy_without_target": True}, {"dWax", "dWaa", "db", "dWya", "dby"}, "dz_t = ŷ_t - y_t"),
    ({"carry": False}, {"dWax", "dWaa", "db"}, "truncated to 1 step"),
])
def test_the_char_language_model_slips(switch, wrong, says):
    import learners_char as char

    result = bptt.check("coursera-char-rnn", char.rnn_forward, _slipped(char.rnn_backward, **switch))
    assert {name for name, v in result.tensors.items() if v.status != "correct"} == wrong
    assert says in result.summary


def test_the_char_language_model_loss_is_checked():
    import learners_char as char

    def rnn_forward(X, Y, a0, parameters, vocab_size=27):
        loss, cache = char.rnn_forward(X, Y, a0, parameters, vocab_size)
        return loss / len(X), cache  # a mean where the course sums

    result = bptt.check("coursera-char-rnn", rnn_forward, char.rnn_backward)
    assert result.verdict["forward"] == ["loss"]
    assert result.summary.startswith("Verdict: your forward's loss is wrong")


def test_the_char_language_models_reference_gradients_are_central_differences():
    """The output layer's gradients the check holds learners to (dz_t = ŷ_t - y_t, summed over
    t) and the da it hands the recurrent part are the derivatives of the summed loss."""
    from bptt.proofs.check_model import _problem, reference

    params, X, Y, a0 = _problem(6, 3)
    loss, head, x, da = reference(params, X, Y, a0)
    result = bptt.gradcheck(lambda p: reference(p, X, Y, a0)[0], params, {"Wya": head["dWya"], "by": head["dby"]})
    assert result.passed, str(result)
    # da: the loss's gradient with respect to every a_t, through the head alone, checked on a
    # model whose recurrence is cut (Waa = 0, so that a_t reaches only the head of step t)
    cut = {**params, "Waa": np.zeros_like(params["Waa"])}
    _, _, _, da_cut = reference(cut, X, Y, a0)
    pre = np.einsum("hv,vbt->hbt", cut["Wax"], x) + cut["b"][:, :, None]  # H,1,T; a_t = tanh(pre_t)
    dpre = da_cut * (1 - np.tanh(pre) ** 2)
    check = bptt.gradcheck(lambda p: reference({**cut, "b": p["b"]}, X, Y, a0)[0], {"b": cut["b"]},
                           {"b": dpre.sum(axis=2)})
    assert check.passed, str(check)
    assert np.isfinite(loss) and loss > 0
