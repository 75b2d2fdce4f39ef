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
