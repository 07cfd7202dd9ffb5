"""Smoke test of examples/multitask.py: each weighting, and an aggregation of each mode, trains."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("weighting", ["uncertainty", "dwa", "gradnorm", "none"])
def test_multitask_example(weighting, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import multitask

    metrics = multitask.main(["--weighting", weighting, "--epochs", "2", "--quiet", "--out", str(tmp_path)])
    assert Path(metrics["curves"]).is_file()
    assert {"train/loss/depth_epoch", "train/loss/cls_epoch"} <= set(metrics)
    if weighting != "none":
        assert {"train/weight/depth", "train/weight/cls"} <= set(metrics)
    # the raw values the table in docs/multitask.md quotes: each task's own loss, beside the weighted one
    assert {"val/raw/cls", "val/raw/depth", "val/loss/cls"} <= set(metrics)
    assert metrics["first_step/raw/depth"] > 1e4  # the regression task's scale, from the first step
    if weighting == "none":
        assert metrics["val/raw/cls"] == pytest.approx(metrics["val/loss/cls"])


@pytest.mark.parametrize("aggregation", ["upgrad", "aligned_mtl"])
def test_multitask_example_with_an_aggregation(aggregation, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import multitask

    argv = [
        "--weighting",
        "none",
        "--aggregation",
        aggregation,
        "--epochs",
        "2",
        "--quiet",
        "--out",
        str(tmp_path),
    ]
    metrics = multitask.main(argv)
    assert {"train/loss/depth_epoch", "train/loss/cls_epoch"} <= set(metrics)
