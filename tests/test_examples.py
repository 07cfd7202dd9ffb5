"""Smoke tests of the stand-alone examples (tiny runs), one of them as a real command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lossmix.demo import ToyGAN, ring

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True)
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


def test_segmentation_example_logs_dice_and_bce():
    import segmentation

    metrics = segmentation.main(["--max-steps", "4", "--samples", "32", "--quiet"])
    assert {"val/loss/dice", "val/loss/bce", "train/loss/dice_epoch"} <= set(metrics)
    assert metrics["val/loss"] == pytest.approx(metrics["val/loss/dice"] + metrics["val/loss/bce"], abs=2e-4)


def test_gan_example_groups_and_lazy_r1():
    import gan

    metrics = gan.main(["--max-steps", "3", "--quiet"])
    assert {"train/loss/gen/adv_epoch", "train/loss/disc/r1_epoch", "train/loss/disc/shift_epoch"} <= set(
        metrics
    )
    model = ToyGAN(gan.LOSS)
    real = ring(8)
    outputs = {
        "real_score": model.disc(real),
        "fake_score": model.disc(real + 1),
        "disc": model.disc,
        "real": real,
    }
    on = model.loss_mix(outputs, group="disc", step=16)
    off = model.loss_mix(outputs, group="disc", step=17)
    assert on.weights["r1"] == 5.0 * 16 and off.weights["r1"] == 0.0
    assert on.weights["shift"] == pytest.approx(0.1)  # DiscShiftLoss's own default weight


def test_custom_loss_example_registers_and_trains():
    import custom_loss

    from lossmix import LOSSES

    metrics = custom_loss.main(["--max-steps", "3", "--quiet"])
    assert {"train/loss/seg_epoch", "train/loss/smooth_epoch"} <= set(metrics)
    assert "LogCoshDiceLoss" in LOSSES and "soft_l1" in LOSSES
    assert LOSSES.describe("soft_l1").params["scale"] == 1.0
    loss = custom_loss.LogCoshDiceLoss()
    perfect = torch.full((2, 1, 4, 4), 50.0)
    assert loss(perfect, torch.ones(2, 1, 4, 4)).item() == pytest.approx(0.0, abs=1e-6)


def test_segmentation_example_runs_from_the_command_line():
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "segmentation.py"), "--max-steps", "2", "--samples", "16", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("sampler", ["none", "random", "ohem"])
def test_detection_example_terms_and_samplers(sampler):
    import detection

    metrics = detection.main(["--max-steps", "3", "--samples", "32", "--sampler", sampler, "--quiet"])
    assert {"train/loss/cls_epoch", "train/loss/reg_epoch", "train/loss/ctr_epoch"} <= set(metrics)
    model = detection.DenseDetector(detection.loss_config(sampler=sampler))
    assert (model.loss_mix.find_term("cls").sampler is None) == (sampler == "none")
