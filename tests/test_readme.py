"""The README's example runs as written."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_the_pytorch_example_runs():
    pytest.importorskip("torch")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(block for block in blocks if "load_state_dict(torch_lstm" in block)
    assert len(example.strip().splitlines()) <= 14
    exec(compile(example, str(README), "exec"), {})


def _table(marker):
    text = README.read_text()
    block = text[text.index(f"<!-- {marker} -->"):text.index(f"<!-- /{marker} -->")]
    rows = [line.strip("|").split("|") for line in block.splitlines() if line.startswith("| `")]
    return {cells[0].strip().strip("`"): [cell.strip() for cell in cells[1:]] for cells in rows}


def _shapes(cell_text, sizes):
    """``{name: shape}`` of a README cell like "`Wf`, `Wi` (H, H+I), `bf` (H, 1)", the letters
    evaluated with ``sizes``; names followed by "optional" are marked with a trailing "?"."""
    shapes = {}
    for names, shape, optional in re.findall(r"((?:`\w+`,? ?)+)\(([^)]*)\)( optional)?", cell_text):
        parts = [re.sub(r"(\d)([A-Z])", r"\1*\2", part) for part in shape.split(",") if part.strip()]  # 4H: 4*H
        value = tuple(eval(part, {}, sizes) for part in parts)  # noqa: S307
        for name in re.findall(r"`(\w+)`", names):
            shapes[name + ("?" if optional else "")] = value
    return shapes


def test_the_layout_keys_table_is_what_the_layouts_take():
    from bptt.interop import LAYOUTS

    sizes = {"I": 3, "H": 5, "B": 2, "T": 4, "KH": 20}
    table = _table("layout-keys")
    assert set(table) == set(LAYOUTS)
    for name, (params, inputs) in table.items():
        layout = LAYOUTS[name]
        if params.startswith("as `"):
            params = table[params[4:-1]][0]
        cell = "lstm" if "lstm" in name or name in ("keras", "torch") else "rnn_tanh"
        assert _shapes(params, sizes) == {
            k: tuple(v) for k, v in layout.param_shapes(cell, sizes["I"], sizes["H"]).items()}, name
        steps = 1 if hasattr(layout, "SEQUENCE") else sizes["T"]
        names = layout.DATA_NAMES
        expected = {names["x"]: layout.sequence_shape(steps, sizes["B"], sizes["I"]),
                    names["h0"]: layout.state_shape(sizes["B"], sizes["H"]),
                    names["dy"]: layout.sequence_shape(steps, sizes["B"], sizes["H"])}
        if cell == "lstm":
            expected[names["c0"] + ("" if "dc_n" in names else "?")] = layout.state_shape(sizes["B"], sizes["H"])
            if "dc_n" in names:
                expected[names["dc_n"] + "?"] = layout.state_shape(sizes["B"], sizes["H"])
        assert _shapes(inputs, sizes) == expected, name


def test_the_check_example_runs(monkeypatch):
    import sys

    import learners_course

    monkeypatch.setitem(sys.modules, "my_solution", learners_course)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(block for block in blocks if "bptt.check(" in block)
    scope = {}
    exec(compile(example, str(README), "exec"), scope)
    assert scope["result"].passed
    assert set(scope["result"].verdict) == {"status", "depth", "window", "path", "slip", "forward"}


def test_the_diagnose_output_shown_is_what_diagnose_prints(rng):
    """The README's excerpt of a diagnosis is the real one, line for line (the table's rows and
    the verdict, rewrapped), for the learner of tests/test_diagnose.py without da_prev."""
    from bptt import diagnose
    from learners import lstm_backward
    from test_diagnose import course_lstm

    params, inputs, caches = course_lstm(rng)
    printed = str(diagnose("coursera-lstm", params, inputs, lstm_backward(inputs["da"], caches, "no_da_prev")))
    text = README.read_text()
    start = text.index("A course-style LSTM backward that forgets to add `da_prev` gets")
    shown = re.search(r"```\n(.*?)```", text[start:], flags=re.S).group(1)
    table, verdict = shown.split("...\n", 1)[0], shown.split("...\n", 1)[1]
    for line in table.splitlines():
        assert line in printed.splitlines()
    summary = " ".join(printed[printed.index("Verdict:"):].split())
    assert summary.startswith(" ".join(verdict.split()).removesuffix("...").rstrip(" ,"))


def test_the_encoder_decoder_table_is_the_docs():
    """scripts/seq2seq_table.py writes one table into README.md and docs/seq2seq.md: they agree."""
    docs = (README.parent / "docs" / "seq2seq.md").read_text()

    def block(text):
        return text[text.index("<!-- seq2seq-table -->"):text.index("<!-- /seq2seq-table -->")]

    assert block(README.read_text()) == block(docs)
    assert "| reverse (1–8 digits) | LSTM |" in block(docs)
