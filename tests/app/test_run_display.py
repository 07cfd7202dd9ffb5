"""Issue 23, item 11 (the run's terminal): ``Epoch 0`` for an open-ended run, the model summary
after the pre-flight check (its error alone), the summary of a spawned run's processes."""

from types import SimpleNamespace

import pytest
from lightning.pytorch.callbacks import RichProgressBar

from lossmix.app.report import summary_rows
from lossmix.app.runner import _with_terminal_callbacks
from lossmix.errors import LossInputError
from lossmix.lightning import TermLogger
from lossmix.lightning.callbacks.terminal import EpochProgressBar, epoch_description, late_model_summary
from tests.app.test_own_app import app  # noqa: F401  # the fixture: the example app in this process
from tests.lightning_models import Regressor, loader, trainer

ROUTE = {"pred": "pred", "target": "y"}


@pytest.mark.parametrize(("max_epochs", "text"), [(-1, "Epoch 0"), (None, "Epoch 0"), (10, "Epoch 0/9")])
def test_epoch_description(max_epochs, text):
    assert epoch_description(0, max_epochs) == text


def test_the_bar_overrides_lightnings_hook():
    assert callable(
        getattr(RichProgressBar, "_get_train_description", None)
    )  # a Lightning upgrade renames it?
    bar = EpochProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=-1)  # what the hook reads
    assert bar._get_train_description(0).strip() == "Epoch 0"


@pytest.mark.parametrize(
    ("node", "added", "kwargs"),
    [
        ({}, ["EpochProgressBar", "LateRichModelSummary"], {"enable_model_summary": False}),
        ({"enable_model_summary": False, "enable_progress_bar": False}, [], {}),
    ],
)
def test_terminal_callbacks_replace_lightnings_defaults(node, added, kwargs):
    callbacks, extra = _with_terminal_callbacks([], node)
    assert [type(c).__name__ for c in callbacks] == added and extra == kwargs


@pytest.mark.parametrize("bad", [False, True])
def test_the_model_summary_comes_after_the_preflight_check(bad, capsys):
    terms = {"a": {"type": "L1Loss", "inputs": {**ROUTE, "target": "nope" if bad else "y"}}}
    run = trainer(max_steps=1, callbacks=[late_model_summary()])
    if bad:
        with pytest.raises(LossInputError, match="term 'a': input 'target' wants key 'nope'"):
            run.fit(Regressor(terms), loader(8, 4))
    else:
        run.fit(Regressor(terms), loader(8, 4))
    assert ("Params" in capsys.readouterr().out) is not bad


def test_a_spawned_runs_summary_comes_back_in_callback_metrics(monkeypatch):
    import lossmix.lightning.term_logger as term_logger

    terms = {
        "a": {"type": "L1Loss", "inputs": ROUTE},
        "b": {"type": "MSELoss", "loss_weight": 3.0, "inputs": ROUTE},
    }
    model = Regressor(terms, lr=0.01)
    run = trainer(max_epochs=1)
    run.fit(model, loader(16, 4))
    # a run in this process publishes nothing: every metric stays one number (code reading
    # them all with .item() works)
    assert not any(k.startswith(term_logger.SUMMARY_PREFIX) for k in run.callback_metrics)
    assert all(v.numel() == 1 for v in run.callback_metrics.values())
    monkeypatch.setattr(term_logger, "spawned", lambda trainer: True)  # as in ddp_spawn's ranks
    model = Regressor(terms, lr=0.01)
    run = trainer(max_epochs=1)
    run.fit(model, loader(16, 4))
    assert all(v.numel() == 1 for v in run.callback_metrics.values())
    # the main process of ddp_spawn: its own TermLogger saw no step, callback_metrics came back
    main = SimpleNamespace(callbacks=[TermLogger()], callback_metrics=dict(run.callback_metrics))
    assert summary_rows(main, model) == summary_rows(run, model)
    assert all(r["train"] == r["train"] for r in summary_rows(main, model))  # not NaN: shown, not '-'


def test_own_apps_help_lists_lossmixs_config_groups(app, capsys):  # noqa: F811
    assert app(["--help"]) == 0
    out = capsys.readouterr().out
    groups = out.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert "loss/reg: giou, huber, l1, smooth_l1" in groups  # the app's option beside lossmix's
    assert "trainer: cpu, ddp, ddp_spawn" in groups and "sampler: ohem" in groups
