"""The first hour with the app (issue 23, items 1, 2 and 4): an override of a key the term node
does not spell out works (in a run, ``--cfg job`` and ``lossmix show``), a NaN stops the default
run with one line and exit status 1 (the curves marked, the summary saying ``nan``), and
MMDetection's ``train_cfg`` says where the sampler goes. In this process, through the app's own
entry point; only the NaN case trains (two tiny steps)."""

from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import pytest
from hydra.core.global_hydra import GlobalHydra

import lossmix.train as train
from lossmix import LossMix
from lossmix.app.checks import explain_override_error
from lossmix.app.compose import compose_config
from lossmix.app.key_overrides import compose_adding_keys, with_added_keys
from lossmix.app.report import print_summary, summary_rows
from lossmix.lightning import NonFiniteLossGuard, TermLogger
from lossmix.loops import loss_plot as curves

QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=none", "trainer.enable_progress_bar=false"]
TINY = ["trainer.max_steps=2", "data.num_train=16", "data.num_val=8", "data.batch_size=8"]
SAMPLER = ["+sampler@loss.cls.sampler=random"]
COMPACT = """\
loss:
  reg:
    _target_: torch.nn.HuberLoss
    inputs: {pred: boxes, target: box_targets}
"""


def run_app(argv, tmp_path, capsys, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["lossmix.train", f"hydra.run.dir={tmp_path}", *QUIET, *argv])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    code = 0
    try:
        train.main()
    except SystemExit as exit:
        code = int(exit.code or 0)
    finally:
        GlobalHydra.instance().clear()
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- item 1: a key the node does not spell out ----------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "path", "value"),
    [
        ([*SAMPLER, "loss.cls.sampler.add_gt_as_proposals=true"], "cls.sampler.add_gt_as_proposals", True),
        ([*SAMPLER, "loss.cls.sampler.num=64"], "cls.sampler.num", 64),  # spelt out: as Hydra does
    ],
    ids=["sampler-default-key", "spelt-out-key"],
)
def test_lossmix_show_composes_a_key_the_node_leaves_out(overrides, path, value):
    cfg = compose_adding_keys(overrides)
    node = cfg.loss
    for part in path.split("."):
        node = node[part]
    assert node == value


def test_an_own_compact_node_takes_its_loss_arguments(tmp_path):
    (tmp_path / "config.yaml").write_text(COMPACT)
    cfg = compose_adding_keys(["loss.reg.loss_weight=0.5", "loss.reg.delta=2.0"], "config", str(tmp_path))
    assert cfg.loss.reg.loss_weight == 0.5 and cfg.loss.reg.delta == 2.0
    mix = LossMix.from_config(cfg.loss)
    assert mix.find_term("reg").weight == 0.5


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["loss.reg.loss_weight=0.5", "loss.reg.loss_weght=1"],
            ["++loss.reg.loss_weight=0.5", "loss.reg.loss_weght=1"],
        ),
        (["-m", "loss.reg.delta=1.0,2.0"], ["-m", "++loss.reg.delta=1.0,2.0"]),
    ],
    ids=["known-and-misspelt", "sweep"],
)
def test_only_keys_the_loss_takes_are_added(tmp_path, argv, expected):
    (tmp_path / "config.yaml").write_text(COMPACT)
    assert with_added_keys(argv, lambda rest: compose_config(rest, "config", str(tmp_path))) == expected


def test_a_key_the_loss_takes_but_hydra_refused_says_add_a_plus(tmp_path):
    (tmp_path / "config.yaml").write_text(COMPACT)
    refused = ValueError("Could not override 'loss.reg.loss_weight'. To append to your config use +...")
    message = explain_override_error(
        refused, ["loss.reg.loss_weight=0.5"], lambda rest: compose_config(rest, "config", str(tmp_path))
    )
    assert message == (
        "loss.reg.loss_weight is not in the composed config (its node does not spell it out), so Hydra "
        "cannot override it; add it with a +: +loss.reg.loss_weight=0.5."
    )


@pytest.mark.parametrize(
    ("argv", "code", "expected"),
    [
        ([*SAMPLER, "loss.cls.sampler.add_gt_as_proposals=true"], 0, "add_gt_as_proposals: true"),
        (
            [*SAMPLER, "loss.cls.sampler.add_gt_as_proposal=true"],
            1,
            "Error: term 'cls' (FocalLoss) sampler (RandomSampler): unknown key 'add_gt_as_proposal' "
            "(loss.cls.sampler.add_gt_as_proposal). Did you mean 'add_gt_as_proposals'?",
        ),
    ],
    ids=["added", "misspelt"],
)
def test_cfg_job_prints_the_config_or_lossmixs_message(tmp_path, capsys, monkeypatch, argv, code, expected):
    got, out, err = run_app([*argv, "--cfg", "job"], tmp_path, capsys, monkeypatch)
    assert got == code
    if code == 0:
        assert expected in out and "Error" not in err
    else:
        assert error_line(err).startswith(expected) and "nothing composed" not in err


# -- item 4: MMDetection's train_cfg --------------------------------------------------------------
def test_train_cfg_from_mmdetection_says_where_the_sampler_goes(tmp_path, capsys, monkeypatch):
    argv = ["+train_cfg={rpn: {sampler: {type: RandomSampler, num: 256, pos_fraction: 0.5}}}", *TINY]
    code, _, err = run_app(argv, tmp_path, capsys, monkeypatch)
    assert code == 1
    assert error_line(err).startswith(
        "Error: train_cfg.rpn.sampler: MMDetection's train_cfg is not read by lossmix; a sampler goes on "
        "the term whose loss it samples for, as loss.<term>.sampler"
    )


# -- item 2: NaN stops the default run with one line -----------------------------------------------
def test_the_default_run_stops_at_the_first_nan_with_one_line(tmp_path, capsys, monkeypatch):
    seen: list[int] = []
    mark = curves._mark_non_finite
    monkeypatch.setattr(curves, "_mark_non_finite", lambda ax, step: (seen.append(step), mark(ax, step)))
    code, _, err = run_app(["model.lr=inf", *TINY], tmp_path, capsys, monkeypatch)
    assert code == 1
    line = error_line(err)
    assert line.startswith(
        "Error: non-finite loss at step 1 (epoch 0): term(s) cls, reg, ctr. Inputs: cls.pred:"
    )
    assert "reg.target: shape (" in line and "min 0, max " in line
    assert (tmp_path / "loss_curves.png").is_file() and seen and set(seen) == {1}


def test_the_app_guards_by_default_and_takes_another_policy(tmp_path):
    assert compose_config([]).callbacks.nonfinite_guard.policy == "raise"
    assert (
        compose_config(["callbacks.nonfinite_guard.policy=skip"]).callbacks.nonfinite_guard.policy == "skip"
    )
    from lossmix.app.runner import _with_outputs

    model = SimpleNamespace(loss_mix=LossMix.from_config({"a": {"type": "L1Loss"}}))
    callbacks, _ = _with_outputs([], [], tmp_path, model)
    assert [c.policy for c in callbacks if isinstance(c, NonFiniteLossGuard)] == ["raise"]
    kept, _ = _with_outputs([NonFiniteLossGuard("zero")], [], tmp_path, model)
    assert [c.policy for c in kept if isinstance(c, NonFiniteLossGuard)] == ["zero"]


def test_adding_the_guard_the_defaults_already_hold_says_how_to_set_it(tmp_path, capsys, monkeypatch):
    code, _, err = run_app(
        ["+callback@callbacks.nonfinite_guard=nonfinite_guard"], tmp_path, capsys, monkeypatch
    )
    assert code == 1
    assert error_line(err) == (
        "Error: +callback@callbacks.nonfinite_guard=nonfinite_guard: 'callbacks.nonfinite_guard' is in "
        "the config already (the defaults list puts it there), so it cannot be added again; set its keys "
        "(callbacks.nonfinite_guard.<key>=...) or swap its option without the +: "
        "callback@callbacks.nonfinite_guard=nonfinite_guard."
    )


def test_the_summary_prints_nan_and_dash_for_what_was_not_logged(tmp_path, capsys):
    logger = TermLogger()
    logger.epoch_summary["train"] = {
        "train/loss/a": (math.nan, 4.0),
        "train/loss/b": (0.5, 4.0),
        "train/loss": (math.nan, 4.0),
    }
    model = SimpleNamespace(loss_mix=LossMix.from_config({"a": {"type": "L1Loss"}, "b": {"type": "MSELoss"}}))
    rows = {
        r["term"]: r for r in summary_rows(SimpleNamespace(callbacks=[logger], callback_metrics={}), model)
    }
    assert math.isnan(rows["a"]["train"]) and rows["a"]["val"] is None and rows["b"]["raw"] is None
    print_summary(list(rows.values()), tmp_path)
    table = capsys.readouterr().out
    a_row = next(line for line in table.splitlines() if line.strip("│ ").startswith("a "))
    cells = [c.strip() for c in a_row.strip("│").split("│")]
    assert cells[:5] == ["a", "1", "-", "nan", "-"]


def test_the_curves_mark_where_a_value_went_non_finite(tmp_path, monkeypatch):
    seen: list[int] = []
    monkeypatch.setattr(curves, "_mark_non_finite", lambda ax, step: seen.append(step))
    history = {"train/loss/a": [[0, 1.0], [4, 0.5], [8, math.nan], [12, math.nan]], "train/loss": [[0, 1.0]]}
    assert curves.plot_loss_curves(history, tmp_path / "a.png") is not None
    assert seen and set(seen) == {8}
    seen.clear()  # the guard's step, before any value was logged: the mark alone
    assert curves.plot_loss_curves({}, tmp_path / "b.png", non_finite_from=3) is not None
    assert seen == [3]
