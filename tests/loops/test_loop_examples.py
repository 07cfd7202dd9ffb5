"""The four loop examples run (tiny runs) and log every term under the Lightning app's keys."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TERMS = ("cls", "smooth", "aux")


@pytest.fixture(autouse=True)
def in_tmp(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.chdir(tmp_path)


def test_plain_loop_example(tmp_path):
    import plain_loop

    latest = plain_loop.main(["--steps", "6", "--every", "3", "--quiet"])
    assert {f"train/loss/{t}" for t in TERMS} | {f"train/loss/{t}_epoch" for t in TERMS} <= set(latest)
    assert (tmp_path / "metrics.csv").is_file() and (tmp_path / "loss_curves.png").is_file()


def test_fabric_example(tmp_path):
    import fabric_loop

    latest = fabric_loop.main(["--epochs", "1", "--steps-per-epoch", "4", "--every", "2", "--quiet"])
    assert {f"train/loss/{t}_epoch" for t in TERMS} <= set(latest)
    assert list(tmp_path.rglob("metrics.csv"))


def test_hf_example(tmp_path):
    pytest.importorskip("transformers", reason="the hf extra (pip install lossmix[hf]) is missing")
    import hf_trainer

    history = hf_trainer.main(["--max-steps", "2", "--accumulation", "2"])
    assert any("train/loss/balanced_epoch" in entry for entry in history)


def test_lightning_cli_example(capsys):
    pytest.importorskip("jsonargparse", reason="the cli extra (pip install lossmix[cli]) is missing")
    import lightning_cli

    cli = lightning_cli.main(
        [
            "fit",
            "--trainer.max_steps=2",
            "--trainer.enable_progress_bar=false",
            "--model.loss.aux.loss_weight=2",
        ]
    )
    assert cli.model.loss_mix.find_term("aux").weight == 2.0
    assert "per-term summary" in capsys.readouterr().out
