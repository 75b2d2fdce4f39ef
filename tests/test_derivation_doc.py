"""docs/derivation.md agrees with the script that computes its numbers and with the code it
links to."""

import importlib.util
import pathlib

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
