"""LossWeightSchedule: values at chosen steps/epochs, bad input, logged weights, stable keys."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from lossmix import LossConfigError
from lossmix.lightning import LossWeightSchedule, TermLogger
from lossmix.lightning.callbacks import Schedule
from tests.lightning_models import Regressor, loader, trainer


@pytest.mark.parametrize("spec, expected", [
    ({"kind": "constant", "value": 0.5}, {0: 0.5, 7: 0.5}),
    ({"kind": "linear", "begin": 2, "end": 6, "initial": 1.0, "final": 3.0},
     {0: 1.0, 2: 1.0, 4: 2.0, 5: 2.5, 6: 3.0, 100: 3.0}),
    ({"kind": "cosine", "begin": 0, "end": 4, "initial": 0.0, "final": 1.0},
     {0: 0.0, 1: (1 - math.cos(math.pi / 4)) / 2, 2: 0.5, 4: 1.0, 9: 1.0}),
    ({"kind": "step", "milestones": [2, 5], "gamma": 0.5, "initial": 4.0},
     {0: 4.0, 1: 4.0, 2: 2.0, 4: 2.0, 5: 1.0, 50: 1.0}),
    ({"kind": "piecewise", "points": [[0, 0.0], [10, 1.0], [20, 0.5]]},
     {0: 0.0, 5: 0.5, 10: 1.0, 15: 0.75, 30: 0.5}),
    ({"kind": "onoff", "on": 3}, {0: 0.0, 2: 0.0, 3: 1.0, 99: 1.0}),
    ({"kind": "onoff", "on": 1, "off": 3, "value": 2.0}, {0: 0.0, 1: 2.0, 2: 2.0, 3: 0.0}),
])
def test_schedule_values(spec, expected):
    schedule = Schedule("reg", spec)
    for t, value in expected.items():
        assert schedule(t) == pytest.approx(value, abs=1e-12), t


def test_onoff_last_n_resolves_from_the_run_length():
    schedule = Schedule("l1", {"kind": "onoff", "by": "epoch", "last": 15})
    schedule.resolve_last(300)
    assert [schedule(t) for t in (0, 284, 285, 299)] == [0.0, 0.0, 1.0, 1.0]
    with pytest.raises(LossConfigError, match="max_epochs"):
        Schedule("l1", {"kind": "onoff", "by": "epoch", "last": 15}).resolve_last(-1)


@pytest.mark.parametrize("spec, match", [
    ({"kind": "linaer"}, "unknown kind 'linaer'.*linear"),
    ({"kind": "linear", "begin": 5, "end": 2}, "out of order"),
    ({"kind": "linear", "end": 4, "final": -1.0}, "final=-1.0 must be a number >= 0"),
    ({"kind": "constant", "value": -2}, ">= 0"),
    ({"kind": "step", "milestones": [5, 2]}, "must increase"),
    ({"kind": "piecewise", "points": [[0, 1.0], [0, 2.0]]}, "increasing t"),
    ({"kind": "piecewise", "points": [[0, 1.0], [3, -2.0]]}, ">= 0"),
    ({"kind": "onoff", "on": 3, "off": 1}, "after on"),
    ({"kind": "onoff"}, "exactly one of 'on'"),
    ({"kind": "linear", "end": 3, "bgein": 0}, "not 'bgein'"),
    ({"kind": "constant", "by": "batch"}, "by='batch'"),
])
def test_bad_schedules_are_clear_errors(spec, match):
    with pytest.raises(LossConfigError, match=match):
        Schedule("reg", spec)


def test_schedule_for_a_missing_term_lists_the_terms_before_training():
    run = trainer(max_steps=1, callbacks=[LossWeightSchedule({"reg": {"kind": "constant"}})])
    with pytest.raises(LossConfigError, match="unknown term 'reg'; terms: t0, t1"):
        run.fit(Regressor(), loader(8, 4))


class Record(L.Callback):
    """Each step's effective weights and the buffered log keys."""

    def __init__(self):
        self.weights, self.keys = [], []

    def on_train_batch_end(self, trainer, pl_module, *args):
        result = pl_module.last_loss_result
        self.weights.append({k: float(v) for k, v in result.weights.items()})
        logger = pl_module.term_logger()
        self.keys.append(tuple(logger.buffers[("train", None)].keys))


def test_schedules_drive_weights_by_step_and_epoch_and_keep_log_keys():
    record = Record()
    schedule = LossWeightSchedule({
        "t0": {"kind": "onoff", "by": "epoch", "last": 1},          # off, then on in epoch 2
        "t1": {"kind": "linear", "by": "step", "begin": 0, "end": 4, "final": 1.0},
    })
    run = trainer(max_epochs=3, log_every_n_steps=1, callbacks=[schedule, record])
    run.fit(Regressor(), loader(8, 4))  # 2 steps per epoch
    t0 = [w["t0"] for w in record.weights]
    t1 = [w["t1"] for w in record.weights]
    assert t0 == [0.0, 0.0, 0.0, 0.0, 0.5, 0.5]             # loss_weight 0.5 × on/off
    assert t1 == pytest.approx([0.0, 0.375, 0.75, 1.125, 1.5, 1.5])  # 1.5 × ramp
    assert len(set(record.keys)) == 1                       # switching off keeps the keys
    assert {"train/weight/t0", "train/weight/t1"} <= set(record.keys[0])
    metrics = run.callback_metrics
    assert metrics["train/weight/t1"].item() == 1.5
    assert metrics["train/loss/t0"].item() > 0


def test_scheduled_weight_is_logged_without_log_raw_and_state_is_plain(tmp_path):
    schedule = LossWeightSchedule({"t1": {"kind": "constant", "value": 2.0}})
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    run = trainer(max_steps=2, log_every_n_steps=1, enable_checkpointing=True,
                  callbacks=[schedule, ckpt, TermLogger()])
    run.fit(Regressor(), loader(8, 4))
    assert run.callback_metrics["train/weight/t1"].item() == 3.0
    assert "train/weight/t0" not in run.callback_metrics and "train/raw/t1" not in (
        run.callback_metrics)
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert state["callbacks"][schedule.state_key]["values"] == {"t1": 2.0}
