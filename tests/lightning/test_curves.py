"""LossCurves: a PNG of the terms and effective weights in the run directory."""

from __future__ import annotations

import lightning as L
import pytest

from lossmix.lightning import LossCurves, LossSchedule, TermLogger
from lossmix.lightning.callbacks import plot_loss_curves
from tests.lightning_models import Regressor, loader, trainer


@pytest.mark.parametrize("every_epoch", [False, True])
def test_curves_written_to_the_run_dir(tmp_path, every_epoch, capsys):
    curves = LossCurves(every_epoch=every_epoch)
    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="run")
    run = trainer(
        max_epochs=2,
        log_every_n_steps=1,
        logger=logger,
        callbacks=[curves, LossSchedule({"t1": {"kind": "linear", "end": 4}})],
    )
    run.fit(Regressor(lr=0.01), loader(8, 4))
    assert curves.path == tmp_path / "run" / "version_0" / "loss_curves.png"
    assert curves.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = next(c for c in run.callbacks if isinstance(c, TermLogger)).history
    assert [p[0] for p in history["train/loss/t0"]] == [1.0, 2.0, 3.0, 4.0]
    assert [p[1] for p in history["train/weight/t1"]] == pytest.approx([0.0, 0.375, 0.75, 1.125])


def test_nothing_to_draw_writes_nothing(tmp_path):
    assert plot_loss_curves({}, tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()


def test_default_root_dir_without_a_logger(tmp_path):
    curves = LossCurves(filename="c.png")
    run = trainer(max_steps=2, log_every_n_steps=1, default_root_dir=tmp_path, callbacks=[curves])
    run.fit(Regressor(), loader(8, 4))
    assert curves.path == tmp_path / "c.png" and curves.path.exists()


def test_short_run_without_a_logging_point_draws_each_epochs_last_step(tmp_path):
    curves = LossCurves(filename="c.png")
    run = trainer(max_epochs=2, log_every_n_steps=50, default_root_dir=tmp_path, callbacks=[curves])
    run.fit(Regressor(), loader(8, 4))
    history = next(c for c in run.callbacks if isinstance(c, TermLogger)).history
    assert [p[0] for p in history["train/loss/t0"]] == [2.0, 4.0]
    assert curves.path == tmp_path / "c.png" and curves.path.exists()


def test_history_stays_bounded_and_keeps_the_whole_run():
    from lossmix.lightning import TermLogger

    logger = TermLogger(max_points=500)
    for step in range(10_000):
        logger.remember(step, ["train/loss/a", "train/loss/b"], [float(step), 1.0 / (step + 1)])
    for key in ("train/loss/a", "train/loss/b"):
        series = logger.history[key]
        assert len(series) <= 500
        assert series[0] == [0.0, float(0) if key.endswith("a") else 1.0]
        assert series[-1][0] == 9999.0
        steps = [p[0] for p in series]
        assert steps == sorted(steps)
    # the merged points are means: the straight line a(step) = step stays on itself
    assert all(abs(step - value) < 1e-9 for step, value in logger.history["train/loss/a"])
    assert len(str(logger.state_dict())) < 100_000  # a checkpoint stays small


def test_sanity_check_validation_is_neither_logged_nor_drawn(tmp_path):
    """Lightning's sanity check runs validation at step 0 before training; it is a check of
    the loop, not a result, so no curve starts with it (a user's own Trainer has it on)."""
    curves = LossCurves(filename="c.png")
    run = trainer(
        max_epochs=2,
        log_every_n_steps=1,
        num_sanity_val_steps=2,
        default_root_dir=tmp_path,
        callbacks=[curves],
    )
    run.fit(Regressor(lr=0.01), loader(8, 4), loader(8, 4, seed=1))
    history = next(c for c in run.callbacks if isinstance(c, TermLogger)).history
    assert [p[0] for p in history["val/loss"]] == [2.0, 4.0]  # one point per epoch, none at 0
    assert [p[0] for p in history["val/loss/t0"]] == [2.0, 4.0]


def test_panels_split_by_group_with_one_colour_per_term_across_runs():
    from lossmix.loops.loss_plot import _colours, _panels

    history = {
        "train/loss/gen": [[1, 1.0]],
        "train/loss/gen/adv": [[1, 1.0]],
        "train/loss/disc": [[1, 2.0]],
        "train/loss/disc/real": [[1, 1.0]],
        "train/loss/disc/r1": [[1, 1.0]],
        "train/weight/disc/r1": [[1, 16.0]],
    }
    panels = [(kind, group, sorted(curves)) for kind, group, curves in _panels(history, "train")]
    assert panels == [
        ("loss", "disc", ["r1", "real", "total"]),
        ("loss", "gen", ["adv", "total"]),
        ("weight", "disc", ["r1"]),
    ]
    one, other = _colours({"cls", "reg", "ctr"}), _colours({"cls", "reg", "seg", "aux"})
    assert one["cls"] == other["cls"] and one["reg"] == other["reg"]
    assert len(set(one.values())) == 3


@pytest.mark.parametrize(
    ("curves", "log"),
    [
        ({"a": [[1, 2.0]], "b": [[1, 0.5]]}, True),
        ({"a": [[1, 2.0]], "weighting": [[1, 0.0]]}, True),  # the regulariser does not decide
        ({"a": [[1, 2.0]], "weighting": [[1, -1.5]]}, True),
        ({"a": [[1, 2.0]], "b": [[1, 0.0]]}, False),  # a zero term value keeps it linear
    ],
)
def test_log_scale_is_decided_by_the_terms_only(curves, log):
    from lossmix.loops.loss_plot import _log_scale

    assert _log_scale("loss", curves) is log
    assert _log_scale("weight", curves) is False
