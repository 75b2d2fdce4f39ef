"""A gradient check of truncated BPTT passes against the objective it differentiates, and
fails against the full loss by the truncation bias."""

import pytest

from bptt import cli
from bptt.proofs.truncation import truncation_report


@pytest.mark.parametrize("cell_name", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("num_layers, depth", [(1, 1), (2, 3)])
def test_truncated_gradients_pass_against_the_truncated_objective_only(cell_name, num_layers, depth):
    rows = truncation_report(cell_name, depth, num_layers=num_layers, steps=6, max_entries=8)
    for row in rows:
        assert row.rel_err_truncated < 1e-7, row
        assert row.rel_err_full > 1e-3, row
        assert row.bias > 1e-3, row


@pytest.mark.parametrize("cell_name", ["rnn_tanh", "lstm", "gru"])
def test_depth_of_the_whole_sequence_is_full_bptt(cell_name):
    rows = truncation_report(cell_name, depth=6, steps=6, max_entries=8)
    for row in rows:
        assert row.rel_err_truncated < 1e-7
        assert row.rel_err_full < 1e-7
        assert row.bias < 1e-13


def test_cli_truncate(capsys):
    assert cli.main(["gradcheck", "--truncate", "2", "--entries", "4"]) == 0
    out = capsys.readouterr().out
    assert out.count("truncated at depth 2") == 3
    assert "every tensor passes" in out
    assert cli.main(["gradcheck", "--truncate", "0"]) == 2
    assert "K >= 1 but got 0" in capsys.readouterr().err
