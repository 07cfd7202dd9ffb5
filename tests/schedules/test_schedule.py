"""LossSchedule: values at chosen steps/epochs, bad input, logged weights, stable keys."""

from __future__ import annotations

import math
import re

import lightning as L
import pytest
import torch

from lossmix import LossConfigError
from lossmix.lightning import LossSchedule, TermLogger
from lossmix.lightning.callbacks import Schedule
from lossmix.schedules import (
    SCHEDULE_KINDS,
    BaseScheduleKind,
    ConstantSchedule,
    CosineSchedule,
    CyclicalSchedule,
    ExponentialSchedule,
    LinearSchedule,
    OnOffSchedule,
    PiecewiseSchedule,
    PlateauSchedule,
    SigmoidSchedule,
    StepSchedule,
    schedule_kind,
)
from tests.lightning_models import Regressor, loader, trainer


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({"kind": "constant", "value": 0.5}, {0: 0.5, 7: 0.5}),
        (
            {"kind": "linear", "begin": 2, "end": 6, "initial": 1.0, "final": 3.0},
            {0: 1.0, 2: 1.0, 4: 2.0, 5: 2.5, 6: 3.0, 100: 3.0},
        ),
        (
            {"kind": "cosine", "begin": 0, "end": 4, "initial": 0.0, "final": 1.0},
            {0: 0.0, 1: (1 - math.cos(math.pi / 4)) / 2, 2: 0.5, 4: 1.0, 9: 1.0},
        ),
        (
            {"kind": "step", "milestones": [2, 5], "gamma": 0.5, "initial": 4.0},
            {0: 4.0, 1: 4.0, 2: 2.0, 4: 2.0, 5: 1.0, 50: 1.0},
        ),
        (
            {"kind": "piecewise", "points": [[0, 0.0], [10, 1.0], [20, 0.5]]},
            {0: 0.0, 5: 0.5, 10: 1.0, 15: 0.75, 30: 0.5},
        ),
        ({"kind": "onoff", "on": 3}, {0: 0.0, 2: 0.0, 3: 1.0, 99: 1.0}),
        ({"kind": "onoff", "on": 1, "off": 3, "value": 2.0}, {0: 0.0, 1: 2.0, 2: 2.0, 3: 0.0}),
    ],
)
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


@pytest.mark.parametrize(
    "spec, match",
    [
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
    ],
)
def test_bad_schedules_are_clear_errors(spec, match):
    with pytest.raises(LossConfigError, match=match):
        Schedule("reg", spec)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({"kind": "constant"}, {0: 1.0, 1000: 1.0}),
        ({"kind": "constant", "value": 0}, {0: 0.0, 3: 0.0}),
        ({"kind": "linear", "end": 4}, {-3: 0.0, 0: 0.0, 1: 0.25, 3: 0.75, 4: 1.0, 8: 1.0}),
        ({"kind": "linear", "begin": 0, "end": 2, "initial": 2.0, "final": 0.0}, {0: 2.0, 1: 1.0, 2: 0.0}),
        (
            {"kind": "cosine", "begin": 2, "end": 6, "initial": 1.0, "final": 3.0},
            {0: 1.0, 2: 1.0, 3: 1.0 + (1 - math.cos(math.pi / 4)), 4: 2.0, 6: 3.0, 7: 3.0},
        ),
        ({"kind": "cosine", "end": 2, "initial": 1.0, "final": 0.0}, {0: 1.0, 1: 0.5, 2: 0.0}),
        ({"kind": "step", "milestones": [3]}, {0: 1.0, 2: 1.0, 3: 0.1, 9: 0.1}),
        (
            {"kind": "step", "milestones": (1, 2, 4), "gamma": 2.0, "initial": 0.5},
            {0: 0.5, 1: 1.0, 2: 2.0, 3: 2.0, 4: 4.0, 99: 4.0},
        ),
        ({"kind": "piecewise", "points": [[5, 0.25]]}, {0: 0.25, 5: 0.25, 50: 0.25}),
        (
            {"kind": "piecewise", "points": [(2, 1), (4, 0), (8, 2)]},
            {0: 1.0, 2: 1.0, 3: 0.5, 4: 0.0, 6: 1.0, 8: 2.0, 9: 2.0},
        ),
        ({"kind": "onoff", "on": 0, "value": 0.5}, {0: 0.5, 10: 0.5}),
        ({"kind": "onoff", "by": "epoch", "on": 2, "off": 4}, {1: 0.0, 2: 1.0, 3: 1.0, 4: 0.0, 5: 0.0}),
    ],
)
def test_each_kind_at_a_few_points(spec, expected):
    schedule = Schedule("reg", spec)
    values = {t: schedule(t) for t in expected}
    assert values == pytest.approx(expected, abs=1e-12)
    assert all(type(v) is float for v in values.values())


@pytest.mark.parametrize(
    "spec, match",
    [
        ({}, "unknown kind None."),
        (
            {"kind": "logistic"},
            "unknown kind 'logistic'. Kinds: constant, linear, cosine, sigmoid, exponential, step, "
            "piecewise, onoff, cyclical, plateau.",
        ),
        ({"kind": "cosin"}, "unknown kind 'cosin'. Did you mean 'cosine'?"),
        ({"kind": "constant", "value": True}, "value=True must be a number >= 0."),
        ({"kind": "constant", "value": "1"}, "value='1' must be a number >= 0."),
        ({"kind": "constant", "value": None}, "constant needs 'value'."),
        ({"kind": "constant", "vlaue": 2}, "constant takes value, not 'vlaue'. Did you mean 'value'?"),
        ({"kind": "linear"}, "linear needs 'end'."),
        (
            {"kind": "linear", "begin": 3, "end": 3},
            "the ramp ends are out of order: begin=3 must be before end=3.",
        ),
        ({"kind": "linear", "begin": -1, "end": 3}, "begin=-1 must be a number >= 0."),
        ({"kind": "linear", "end": 3, "initial": -0.5}, "initial=-0.5 must be a number >= 0."),
        ({"kind": "linear", "end": 3, "on": 1}, "linear takes begin, end, final, initial, not 'on'."),
        ({"kind": "cosine", "begin": 0}, "cosine needs 'end'."),
        (
            {"kind": "cosine", "begin": 4, "end": 1},
            "the ramp ends are out of order: begin=4 must be before end=1.",
        ),
        ({"kind": "cosine", "end": 4, "final": "x"}, "final='x' must be a number >= 0."),
        ({"kind": "step"}, "step needs milestones: [t1, t2, ...]."),
        ({"kind": "step", "milestones": []}, "step needs milestones: [t1, t2, ...]."),
        ({"kind": "step", "milestones": 5}, "step needs milestones: [t1, t2, ...]."),
        ({"kind": "step", "milestones": [2, 2]}, "milestones [2, 2] must increase."),
        ({"kind": "step", "milestones": [2], "gamma": -0.5}, "gamma=-0.5 must be a number >= 0."),
        ({"kind": "step", "milestones": [2], "initial": -1}, "initial=-1 must be a number >= 0."),
        (
            {"kind": "step", "milestones": [2], "gama": 0.5},
            "step takes gamma, initial, milestones, not 'gama'. Did you mean 'gamma'?",
        ),
        ({"kind": "piecewise"}, "piecewise needs points: [[t0, v0], [t1, v1], ...]."),
        ({"kind": "piecewise", "points": []}, "piecewise needs points: [[t0, v0], [t1, v1], ...]."),
        ({"kind": "piecewise", "points": [[0, 1, 2]]}, "piecewise needs points: [[t0, v0], [t1, v1], ...]."),
        (
            {"kind": "piecewise", "points": [[3, 1.0], [1, 2.0]]},
            "piecewise points must have increasing t; got [3, 1].",
        ),
        (
            {"kind": "piecewise", "points": [[0, "a"]]},
            "piecewise values must be numbers >= 0; got [[0, 'a']].",
        ),
        ({"kind": "piecewise", "points": [[0, 1.0]], "values": [1]}, "piecewise takes points, not 'values'."),
        (
            {"kind": "onoff", "on": 1, "last": 2},
            "onoff needs exactly one of 'on' (t it turns on) or 'last' (on for the last N epochs/steps).",
        ),
        ({"kind": "onoff", "off": 5}, "onoff needs exactly one of 'on'"),
        ({"kind": "onoff", "on": 2, "off": 2}, "off=2 must come after on=2."),
        ({"kind": "onoff", "on": -1}, "on=-1 must be a number >= 0."),
        ({"kind": "onoff", "last": "5"}, "last='5' must be a number >= 0."),
        ({"kind": "onoff", "on": 1, "value": -1}, "value=-1 must be a number >= 0."),
        (
            {"kind": "onoff", "on": 1, "of": 3},
            "onoff takes last, off, on, value, not 'of'. Did you mean 'off'?",
        ),
        ({"kind": "onoff", "on": 1, "by": "Epoch"}, "by='Epoch'; use 'step' or 'epoch'."),
    ],
)
def test_each_kinds_bad_arguments_name_the_term(spec, match):
    with pytest.raises(LossConfigError, match=re.escape(f"schedule for term 'reg': {match}")):
        Schedule("reg", spec)


def test_onoff_last_is_resolved_into_the_spec_and_needs_the_run_length():
    schedule = Schedule("l1", {"kind": "onoff", "last": 3, "off": 9})
    with pytest.raises(
        LossConfigError,
        match=re.escape("schedule for term 'l1': 'last' is resolved when training starts (resolve_last)."),
    ):
        schedule(0)
    with pytest.raises(
        LossConfigError,
        match=re.escape("schedule for term 'l1': last=3 needs the run's length; set trainer.max_steps."),
    ):
        schedule.resolve_last(None)
    schedule.resolve_last(10)
    assert (schedule.term, schedule.kind, schedule.by) == ("l1", "onoff", "step")
    assert schedule.spec == {"last": 3, "off": 9, "on": 7}  # what state_dict saves
    assert [schedule(t) for t in (6, 7, 8, 9)] == [0.0, 1.0, 1.0, 0.0]
    schedule.resolve_last(2)  # a shorter run: on from 0
    assert schedule.spec["on"] == 0 and schedule(0) == 1.0
    constant = Schedule("c", {"kind": "constant"})
    constant.resolve_last(None)  # only onoff needs the length
    assert constant.spec == {} and constant(5) == 1.0


def test_kind_table_and_classes():
    assert sorted(SCHEDULE_KINDS) == [
        "constant",
        "cosine",
        "cyclical",
        "exponential",
        "linear",
        "onoff",
        "piecewise",
        "plateau",
        "sigmoid",
        "step",
    ]
    assert SCHEDULE_KINDS == {
        "constant": ConstantSchedule,
        "linear": LinearSchedule,
        "cosine": CosineSchedule,
        "step": StepSchedule,
        "piecewise": PiecewiseSchedule,
        "onoff": OnOffSchedule,
        "sigmoid": SigmoidSchedule,
        "exponential": ExponentialSchedule,
        "cyclical": CyclicalSchedule,
        "plateau": PlateauSchedule,
    }
    assert all(cls.name == name for name, cls in SCHEDULE_KINDS.items())
    assert isinstance(Schedule("reg", {"kind": "step", "milestones": [1]}).fn, StepSchedule)
    ramp = LinearSchedule("reg", {"end": 2})  # usable on its own
    assert [ramp(t) for t in range(3)] == [0.0, 0.5, 1.0]
    with pytest.raises(LossConfigError, match="schedule for term 'x': linear takes .* not 'kind'"):
        LinearSchedule("x", {"kind": "linear", "end": 2})


def test_a_new_kind_is_one_class_in_the_table(monkeypatch):
    class Halving(BaseScheduleKind):
        name = "halving"
        keys = frozenset({"every"})

        def __init__(self, term, spec):
            super().__init__(term, spec)
            self.every = self._number("every", at_least=1)

        def __call__(self, t):
            return 0.5 ** (t // self.every)

    monkeypatch.setattr("lossmix.schedules.kinds.SCHEDULE_KINDS", dict(SCHEDULE_KINDS))
    import lossmix.schedules.kinds as kinds

    monkeypatch.setattr("lossmix.schedules.SCHEDULE_KINDS", kinds.SCHEDULE_KINDS)
    assert schedule_kind(Halving) is Halving and kinds.SCHEDULE_KINDS["halving"] is Halving
    with pytest.raises(LossConfigError, match="schedule kind 'linear' is taken by LinearSchedule"):
        schedule_kind(type("Other", (LinearSchedule,), {}))
    schedule = Schedule("reg", {"kind": "halving", "by": "epoch", "every": 2})
    assert [schedule(t) for t in range(5)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    with pytest.raises(
        LossConfigError, match=re.escape("schedule for term 'reg': every=0 must be a number >= 1.")
    ):
        Schedule("reg", {"kind": "halving", "every": 0})
    with pytest.raises(LossConfigError, match="halving takes every, not 'evry'"):
        Schedule("reg", {"kind": "halving", "evry": 2})


def test_schedule_for_a_missing_term_lists_the_terms_before_training():
    run = trainer(max_steps=1, callbacks=[LossSchedule({"reg": {"kind": "constant"}})])
    with pytest.raises(
        LossConfigError, match=r"schedule for 'reg': nothing to schedule there .* Schedulable: t0, t1\."
    ):
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
    schedule = LossSchedule(
        {
            "t0": {"kind": "onoff", "by": "epoch", "last": 1},  # off, then on in epoch 2
            "t1": {"kind": "linear", "by": "step", "begin": 0, "end": 4, "final": 1.0},
        }
    )
    run = trainer(max_epochs=3, log_every_n_steps=1, callbacks=[schedule, record])
    run.fit(Regressor(), loader(8, 4))  # 2 steps per epoch
    t0 = [w["t0"] for w in record.weights]
    t1 = [w["t1"] for w in record.weights]
    assert t0 == [0.0, 0.0, 0.0, 0.0, 0.5, 0.5]  # loss_weight 0.5 × on/off
    assert t1 == pytest.approx([0.0, 0.375, 0.75, 1.125, 1.5, 1.5])  # 1.5 × ramp
    assert len(set(record.keys)) == 1  # switching off keeps the keys
    assert {"train/weight/t0", "train/weight/t1"} <= set(record.keys[0])
    metrics = run.callback_metrics
    assert metrics["train/weight/t1"].item() == 1.5
    assert metrics["train/loss/t0"].item() > 0


def test_scheduled_weight_is_logged_without_log_raw_and_state_is_plain(tmp_path):
    schedule = LossSchedule({"t1": {"kind": "constant", "value": 2.0}})
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    run = trainer(
        max_steps=2, log_every_n_steps=1, enable_checkpointing=True, callbacks=[schedule, ckpt, TermLogger()]
    )
    run.fit(Regressor(), loader(8, 4))
    assert run.callback_metrics["train/weight/t1"].item() == 3.0
    assert "train/weight/t0" not in run.callback_metrics and "train/raw/t1" not in (run.callback_metrics)
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert state["callbacks"][schedule.state_key]["values"] == {"t1": 2.0}
