"""The optional callback configs (``+callback@callbacks.<name>=<option>``) compose,
instantiate and run, and the default callbacks draw ``loss_curves.png``."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from lossmix.lightning.callbacks import (
    GradientConflictMonitor,
    LossCurves,
    LossSchedule,
    NonFiniteLossGuard,
    TermGradientMonitor,
)


@pytest.fixture
def compose_train(tmp_path):
    def make(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_module(config_module="lossmix.conf", version_base="1.3"):
            return compose("train", overrides=[f"paths.output_dir={tmp_path}", *overrides])

    yield make
    GlobalHydra.instance().clear()


@pytest.mark.parametrize(
    "option, cls",
    [
        ("loss_weights", LossSchedule),
        ("nonfinite_guard", NonFiniteLossGuard),
        ("grad_monitor", TermGradientMonitor),
        ("conflict_monitor", GradientConflictMonitor),
    ],
)
def test_callback_options_instantiate(compose_train, option, cls):
    default = compose_train().callbacks  # the guard is in the default callbacks already
    cfg = compose_train() if option in default else compose_train(f"+callback@callbacks.{option}={option}")
    assert isinstance(instantiate(cfg.callbacks[option]), cls)


def test_schedule_overrides_from_the_command_line(compose_train):
    cfg = compose_train(
        "+callback@callbacks.loss_weights=loss_weights",
        "callbacks.loss_weights.schedules.reg.end=40",
        "+callbacks.loss_weights.schedules.cls={kind: onoff, by: epoch, last: 1}",
    )
    callback = instantiate(cfg.callbacks.loss_weights)
    assert callback.schedules["reg"].spec["end"] == 40
    assert callback.schedules["cls"].kind == "onoff"


def test_default_callbacks_draw_the_curves_into_the_run_dir(compose_train, tmp_path):
    cfg = compose_train()
    curves = instantiate(cfg.callbacks.loss_curves)
    assert isinstance(curves, LossCurves) and curves.dirpath == str(tmp_path)
