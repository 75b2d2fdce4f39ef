"""docs/derivation.md agrees with the script that computes its numbers and with the code it
links to."""

import importlib.util
import os
import pathlib
import platform
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("derivation_numbers", ROOT / "scripts" / "derivation_numbers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_numbers_and_code_links_are_current(capsys):
    status = _script().main(["--check"])
    assert status == 0, capsys.readouterr().err


def test_a_stale_number_or_link_is_caught(tmp_path, capsys):
    script = _script()
    text = (ROOT / "docs" / "derivation.md").read_text()
    stale_number = tmp_path / "number.md"
    stale_number.write_text(text.replace("| **sum** | **", "| **sum** | **9", 1))
    assert script.main(["--check", str(stale_number)]) == 1
    assert "dwo-sum" in capsys.readouterr().err
    stale_link = tmp_path / "link.md"
    stale_link.write_text(text.replace("cells/lstm.py#L", "cells/lstm.py#L1", 1))
    assert script.main(["--check", str(stale_link)]) == 1
    assert "code links" in capsys.readouterr().err


def test_a_link_to_a_comment_or_a_docstring_is_caught(tmp_path, capsys):
    script = _script()
    text = (ROOT / "docs" / "derivation.md").read_text()
    for quoted in ("h = o * tanh(c)", "c_t = f * c_{t-1} + i * g"):
        # the first is the comment on `do = dh * tanh_c`, the second a line of lstm.py's docstring
        linked = text.replace("[`dc_prev = dc * f`]", f"[`{quoted}`]", 1)
        assert linked != text
        doc = tmp_path / "comment.md"
        doc.write_text(linked)
        assert script.main(["--check", str(doc)]) == 1
        assert "no line of code holds it" in capsys.readouterr().err


def test_code_text_keeps_code_and_drops_comments_and_docstrings():
    source = 'def f(a):\n    """a = 1"""\n    b = a  # a = 1\n    return "a = 1"\n'
    assert _script().code_text(source) == ["def f(a):", "", "    b = a  ", '    return "a = 1"']


def test_every_table_has_a_caption_naming_its_block():
    text = (ROOT / "docs" / "derivation.md").read_text()
    names = re.findall(r"<!-- numbers:([\w-]+) -->", text)
    assert set(names) == set(_script().BLOCKS)
    for name in names:
        before = text[:text.index(f"<!-- numbers:{name} -->")].rstrip("\n")
        caption = before[before.rfind("\n\n") + 2:]
        assert f"block `{name}`)" in caption, f"block {name}: no caption right above it"


def test_the_course_cell_path_formula_is_quoted_whole():
    text = (ROOT / "docs" / "derivation.md").read_text()
    assert "dc_prev = (dc_next + da_next * ot * (1 - tanh²(c_next))) * ft" in text
    # the short form appears only as the slip it is
    for line in text.splitlines():
        if "`dc_prev = dc_next * ft`" in line:
            assert "literally" in line


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="OpenBLAS's core names are x86's")
def test_numbers_do_not_depend_on_the_kernels_that_round_them():
    """Another BLAS kernel or NumPy without its dispatched SIMD loops sums in another order; every
    printed digit must survive that (a chaotic row would not: the doc says why it has none)."""
    umath = pytest.importorskip("numpy._core._multiarray_umath" if int(np.__version__.split(".")[0]) >= 2 else
                                "numpy.core._multiarray_umath")
    no_simd = " ".join(umath.__cpu_dispatch__)
    generic = {"OPENBLAS_CORETYPE": "Prescott", "NPY_DISABLE_CPU_FEATURES": no_simd}
    for setting in ({"OPENBLAS_CORETYPE": "Haswell"}, generic):
        run = subprocess.run([sys.executable, str(ROOT / "scripts" / "derivation_numbers.py"), "--check"],
                             env=dict(os.environ, **setting), capture_output=True, text=True)
        assert run.returncode == 0, f"{setting}: {run.stderr}"
