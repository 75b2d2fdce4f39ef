"""docs/tutorial.ipynb runs from top to bottom and still says what its prose says: the slip
named, then "Verdict: correct", the truncation named, and every output short."""

import html
import importlib.util
import json
import pathlib
import re
import sys

import pytest

nbclient = pytest.importorskip("nbclient", reason="executing the tutorial needs nbclient, from the test extra")
import nbformat  # noqa: E402 (nbclient's dependencies, like jupyter_client)
from jupyter_client import kernelspec  # noqa: E402
from jupyter_client.manager import AsyncKernelManager  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"
CELL_TIMEOUT_S = 120
MAX_OUTPUT_CHARS = 2000  # per cell: what a reader sees, so that no output grows into a wall of text


def shown_text(output):
    """The text a notebook shows for one output: a stream's text, an error's, or the richest
    representation of a result (HTML with its tags taken out, else plain text)."""
    if output.output_type == "stream":
        return output.text
    if output.output_type == "error":
        return "\n".join(output.traceback)
    data = output.get("data", {})
    if "text/html" in data:
        return html.unescape(re.sub(r"<[^>]*>", " ", data["text/html"]))
    return data.get("text/plain", "")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook run by a python3 kernel of this interpreter, in the repository root."""
    assert importlib.util.find_spec("ipykernel"), f"the kernel needs ipykernel (the test extra) in {sys.executable}"
    kernels = tmp_path_factory.mktemp("kernels")
    (kernels / "python3").mkdir()
    # a kernel spec of our own: a python3 spec installed for the user could start another Python
    (kernels / "python3" / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python",
    }))
    specs = kernelspec.KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)
    kernel = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, km=kernel, timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(ROOT)}})
    # raises CellExecutionError, with the cell and its traceback, if a cell raises; cleanup_kc: the
    # client shuts down a kernel whose manager it was given only when told to
    client.execute(cleanup_kc=True)
    return notebook


def outputs_of(notebook):
    """The text of every code cell's outputs, in order, one string per cell."""
    texts = []
    for cell in notebook.cells:
        if cell.cell_type == "code":
            parts = [shown_text(output) for output in cell.outputs]
            texts.append("".join(part if part.endswith("\n") else part + "\n" for part in parts))
    return texts


def test_the_stored_notebook_is_valid_and_cleared():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code), \
        "store docs/tutorial.ipynb with its outputs cleared"


def test_every_cell_runs_and_its_output_is_short(executed):
    for number, text in enumerate(outputs_of(executed), 1):
        assert len(text) < MAX_OUTPUT_CHARS, f"code cell {number} shows {len(text)} characters:\n{text[:500]}"


def position(text, phrase, start=0):
    """Where ``phrase`` first appears in ``text`` after ``start``; fails the test if it does not."""
    found = text.find(phrase, start)
    assert found >= 0, f"the outputs do not say {phrase!r} after what came before it"
    return found


def test_the_check_names_the_slip_then_passes_then_names_the_truncation(executed):
    text = "\n".join(outputs_of(executed))
    slip = position(text, "Verdict: BPTT with the cell path cut")
    assert "Your cell functions are right" in text[:slip] and "'path': 'cell'" in text[slip:]
    fixed = position(text, "Verdict: correct", slip)
    truncated = position(text, "Verdict: truncated BPTT on windows of 3 (counted from the last step)", fixed)
    position(text, "'window': {'k1': 3, 'k2': 3, 'align': 'end'}", truncated)


def test_the_answers_hold(executed):
    text = "\n".join(outputs_of(executed))
    off_by = re.search(r"dWo without the gradient from later steps is off by ([\d.]+)%", text)
    assert off_by and float(off_by.group(1)) > 1, "the terms from later steps should not be zero"
    assert "every tensor passes against F_w (rel err <= 1e-7): True" in text
    asymmetry = dict(re.findall(r"^(windows of 3|full BPTT)\s*:.*asymmetry (\S+)$", text, re.MULTILINE))
    assert float(asymmetry["windows of 3"]) > 0.1 and float(asymmetry["full BPTT"]) < 1e-8
    statuses = dict(re.findall(r"^(d\w+)\s+(correct|wrong)\s+rel err", text, re.MULTILINE))
    assert statuses["dWf"] == statuses["dbf"] == "wrong" and statuses["dWo"] == statuses["dc_prev"] == "correct"
