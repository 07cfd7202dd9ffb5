"""``benchmarks/multidigits.py``: the canvases hold the two digits where the protocol puts them,
Δm% and the Pareto front are right on hand-made numbers, and ``--quick`` runs end to end (a
few steps of one method and the single-task baselines), writing the table and the PNG."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("sklearn", reason="the MultiDigits benchmark needs scikit-learn (the bench extra)")

from benchmarks import multidigits


def test_a_canvas_is_the_left_digit_and_the_shifted_right_digit_under_a_max():
    images = torch.rand(3, 8, 8)
    split = multidigits.compose(images, torch.arange(3), 2, torch.Generator().manual_seed(0))
    canvas, right = split["x"][4, 0], images[split["right"][4]]
    left = torch.zeros(10, 10)
    left[:8, :8] = images[1]
    shifted = torch.zeros(10, 10)
    shifted[2:, 2:] = right
    torch.testing.assert_close(canvas, torch.maximum(left, shifted))
    assert split["left"][4] == 1 and split["sum"][4] == (1 + split["right"][4]) / 18.0


def test_delta_m_and_the_pareto_front():
    single = {"left": 0.8, "right": 0.5, "sum": 2.0}
    better = {"left": 0.88, "right": 0.5, "sum": 1.0}  # +10% accuracy, -50% error
    assert multidigits.delta_m(better, single) == pytest.approx(-20.0)
    points = {"a": (0.9, 0.5), "b": (0.8, 0.8), "c": (0.7, 0.7), "d": (0.9, 0.4)}
    assert sorted(multidigits.pareto(points)) == ["a", "b"]


def test_the_quick_run_writes_the_table_and_the_png(tmp_path, capsys):
    multidigits.main(["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| upgrad |" in out and "| single-task left |" in out and "Pareto front" in out
    assert (tmp_path / "pareto.png").stat().st_size > 0 and (tmp_path / "results.json").exists()
