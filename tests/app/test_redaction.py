"""A value read by ``${oc.env:NAME}`` never leaves the process: not in an error, a warning or
a log line (at build time and at run time), not in a checkpoint or ``hparams.yaml``.

Each route runs with a distinctive secret in the environment that must appear nowhere: not
in what the app prints, not in any file of its run directory, not in a raised exception or
anything chained to it. Stored hyper-parameters hold the interpolation instead, and loading
such a checkpoint reads the variable again. The app runs in this process, except for one
``HYDRA_FULL_ERROR=1`` run of the real entry point.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import subprocess
import sys
import traceback
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import lossmix.train as train
from lossmix import LossConfigError, LossMix
from lossmix.app.checks import check_loss_config
from lossmix.demo import DenseDetector
from lossmix.errors import LossInputError
from lossmix.registry.allowlist import ENV_ALLOWED_TARGETS
from lossmix.registry.nodes import (
    env_paths,
    env_secrets,
    hidden_error,
    redacting,
    replace_at,
    resolve_env_values,
)
from lossmix.utilities import compat
from tests import lightning_models
from tests.app.test_train import QUIET, SUBPROCESS_TIMEOUT, TINY, compose_train, main_in_process
from tests.lightning_models import Regressor

SECRET = "hunter2-redaction-7f3a9c"
VAR = "LOSSMIX_TEST_SECRET"
SHOWN = "${oc.env:LOSSMIX_TEST_SECRET}"
KEY_VAR = "LOSSMIX_TEST_KEY"  # holds a batch key ("labels"), so the run can train
SEED_VAR = "LOSSMIX_TEST_SEED"
ONE_RUN = [*(o for o in TINY if not o.startswith("trainer.max_epochs=")), "trainer.max_epochs=1"]
OWN = logging.getLogger("tests.redaction.own")  # a logger with its own handler, not propagating
LOG = logging.getLogger("tests.redaction")


class TaggedDetector(DenseDetector):
    """The demo detector with a free-text hyper-parameter that it reports when training starts,
    in a log line, a log line with an exception, and a warning (as a model that echoes its
    settings would)."""

    def __init__(
        self,
        loss: Any,
        num_classes: int = 3,
        stride: int = 4,
        width: int = 32,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        tag: str = "",
    ) -> None:
        super().__init__(loss, num_classes, stride, width, lr, weight_decay)

    def on_train_start(self) -> None:
        tag = self.hparams["tag"]
        LOG.warning("the run's tag is %s", tag)
        LOG.warning("the tag was refused", exc_info=ValueError(f"bad tag {tag!r}"))
        OWN.warning("own handler: tag %s", tag)
        warnings.warn(f"tag {tag} is only a test", UserWarning, stacklevel=1)


TAGGED_RUN = [
    f"model._target_={__name__}.TaggedDetector",
    f"+model.tag=${{oc.env:{VAR}}}",
    f"loss.cls.inputs.target=${{oc.env:{KEY_VAR}}}",
    "+loss/cls@loss.cls2=focal",
    f"data.seed='${{oc.decode:${{oc.env:{SEED_VAR}}}}}'",
]


@pytest.fixture
def secret(monkeypatch):
    monkeypatch.setenv(VAR, SECRET)
    return SECRET


def leaks(run_dir: Path, *texts: str) -> list[str]:
    """The files of a run directory (checkpoints included, as bytes) that hold the secret."""
    found = []
    for path in run_dir.rglob("*"):
        if path.is_file() and SECRET.encode() in path.read_bytes():
            found.append(str(path))
    return found + [f"text {i}" for i, text in enumerate(texts) if SECRET in text]


def chain_shows_secret(err: BaseException) -> bool:
    """Whether the error, its trace as printed, or anything chained to it shows the secret."""
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    shown = "".join(traceback.format_exception(err))
    return SECRET in shown or any(SECRET in str(e) for e in seen)


# -- the app: errors -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override, expected",
    [
        (  # raised at the pre-flight batch, in trainer.fit
            f"loss.cls.inputs.target=${{oc.env:{VAR}}}",
            f"Error: term 'cls': input 'target' wants key {SHOWN}, which is not in the outputs",
        ),
        (  # raised by the callback when training starts
            f"callbacks.grad_monitor.module=${{oc.env:{VAR}}}",
            f"Error: TermGradientMonitor: module {SHOWN} is not in DenseDetector.",
        ),
    ],
    ids=["routing", "callback"],
)
def test_a_run_time_error_shows_the_interpolation(tmp_path, secret, override, expected, capsys, monkeypatch):
    extra = ["+callback@callbacks.grad_monitor=grad_monitor"] if "grad_monitor" in override else []
    code, out, err = main_in_process(
        [f"hydra.run.dir={tmp_path}", *ONE_RUN, *extra, override], capsys, monkeypatch
    )
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert code == 1 and len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith(expected), errors[0]
    assert not leaks(tmp_path, out, err)


def test_full_error_traces_show_the_interpolation(tmp_path, secret, monkeypatch):
    """``HYDRA_FULL_ERROR=1``: the exception that reaches the user, its trace and its chain."""
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "lossmix.train",
            *QUIET,
            f"hydra.run.dir={tmp_path}",
            *ONE_RUN,
            f"loss.cls.inputs.target=${{oc.env:{VAR}}}",
        ],
    )
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    try:
        with pytest.raises(LossInputError, match="wants key") as info:
            train.main()
    finally:
        GlobalHydra.instance().clear()
    assert SHOWN in str(info.value)
    assert not chain_shows_secret(info.value)
    assert "routing.py" in "".join(traceback.format_tb(info.value.__traceback__))  # the trace is kept
    assert not leaks(tmp_path)


def test_the_entry_point_with_full_error_prints_no_secret(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "1", VAR: SECRET}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lossmix.train",
            f"hydra.run.dir={run_dir}",
            *ONE_RUN,
            f"loss.cls.inputs.target=${{oc.env:{VAR}}}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" in result.stderr and f"wants key {SHOWN}" in result.stderr
    assert not leaks(run_dir, result.stdout, result.stderr), result.stderr[-3000:]


# -- the app: a run that trains, logs, warns and saves ---------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run whose model's ``tag`` (a secret), its ``cls`` term's target key and its
    data's seed come from the environment; a second term reads the same key literally."""
    run_dir = tmp_path_factory.mktemp("trained")
    own, logged = io.StringIO(), io.StringIO()
    own_handler, root_handler = logging.StreamHandler(own), logging.StreamHandler(logged)
    root = logging.getLogger()
    showwarning = warnings.showwarning
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(VAR, SECRET)
        patch.setenv(KEY_VAR, "labels")
        patch.setenv(SEED_VAR, "424242")
        patch.setenv(ENV_ALLOWED_TARGETS, "tests")  # the test's model
        patch.setattr(OWN, "propagate", False)
        OWN.addHandler(own_handler)
        root.addHandler(root_handler)
        out, err = io.StringIO(), io.StringIO()
        try:
            with warnings.catch_warnings(record=True) as caught, redirect_stdout(out), redirect_stderr(err):
                warnings.simplefilter("always")
                train.run(compose_train(run_dir, *ONE_RUN, *TAGGED_RUN))
        finally:
            OWN.removeHandler(own_handler)
            root.removeHandler(root_handler)
    left = [f for h in [*root.handlers, root_handler, own_handler] for f in h.filters]
    assert warnings.showwarning is showwarning and not left  # all removed after the run
    return {
        "dir": run_dir,
        "out": out.getvalue(),
        "err": err.getvalue(),
        "own": own.getvalue(),
        "log": logged.getvalue(),
        "warnings": [str(w.message) for w in caught],
    }


def test_warnings_and_log_lines_of_a_run_show_the_interpolation(trained):
    assert f"the run's tag is {SHOWN}\n" in trained["log"]
    assert f"ValueError: bad tag {SHOWN}" in trained["log"]  # the exception of a log line
    assert f"own handler: tag {SHOWN}" in trained["own"]  # a handler of a logger that does not propagate
    assert f"tag {SHOWN} is only a test" in trained["warnings"]
    texts = [trained["out"], trained["err"], trained["own"], trained["log"], *trained["warnings"]]
    assert "per-term summary" in trained["out"]
    assert not leaks(trained["dir"], *texts)


def test_checkpoints_and_hparams_yaml_store_the_interpolation(trained):
    seed = f"${{oc.decode:${{oc.env:{SEED_VAR}}}}}"
    run_dir = trained["dir"]
    hparams = yaml.safe_load((run_dir / "csv" / "hparams.yaml").read_text())
    checkpoints = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    assert len(checkpoints) == 2  # the best and last.ckpt
    for stored in [hparams, *(torch.load(p, weights_only=True) for p in checkpoints)]:
        model = stored.get("hyper_parameters", stored)
        data = stored.get("datamodule_hyper_parameters", stored)
        assert model["tag"] == SHOWN
        assert model["loss"]["cls"]["inputs"]["target"] == f"${{oc.env:{KEY_VAR}}}"
        # by path, not by value: the other term's literal "labels" stays
        assert model["loss"]["cls2"]["inputs"]["target"] == "labels"
        assert data["seed"] == seed
        assert data["num_train"] == 16
    assert not leaks(run_dir)


def test_a_stored_checkpoint_loads_with_the_variable_and_names_it_without(trained, monkeypatch):
    monkeypatch.setenv(KEY_VAR, "labels")
    path = trained["dir"] / "checkpoints" / "last.ckpt"
    model = TaggedDetector.load_from_checkpoint(path)
    assert model.loss_mix.terms["cls"].inputs == {"pred": "cls_logits", "target": "labels"}
    assert model.hparams["loss"]["cls"]["inputs"]["target"] == f"${{oc.env:{KEY_VAR}}}"  # a resave keeps it
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    monkeypatch.delenv(KEY_VAR)
    with pytest.raises(LossConfigError) as info:
        TaggedDetector.load_from_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"term 'cls', key 'inputs.target' is ${{oc.env:{KEY_VAR}}}, and the environment variable "
        f"{KEY_VAR} is not set; set it"
    )


def test_a_run_resumes_from_such_a_checkpoint(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(VAR, SECRET)
    monkeypatch.setenv(KEY_VAR, "labels")
    monkeypatch.setenv(SEED_VAR, "424242")
    monkeypatch.setenv(ENV_ALLOWED_TARGETS, "tests")
    path = trained["dir"] / "checkpoints" / "last.ckpt"
    # two epochs: one more than the checkpoint's
    train.run(compose_train(tmp_path, *TINY, *TAGGED_RUN, f"ckpt_path={path}"))
    out, err = capsys.readouterr()
    resumed = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 1 and resumed["hyper_parameters"]["tag"] == SHOWN
    assert not leaks(tmp_path, out, err)


# -- the pieces ------------------------------------------------------------------------------
def test_a_secret_only_in_a_cause_drops_the_chain():
    secrets = {SECRET: SHOWN}
    try:
        try:
            raise KeyError(SECRET)
        except KeyError as cause:
            raise RuntimeError("the lookup failed") from cause
    except RuntimeError as err:
        hidden = hidden_error(err, secrets)
    assert hidden is not None and str(hidden) == "the lookup failed"
    with pytest.raises(RuntimeError) as info:
        with redacting(secrets):
            raise hidden
    assert not chain_shows_secret(info.value)
    assert hidden_error(RuntimeError("nothing secret"), secrets) is None


def test_a_wrapped_lossmix_error_gives_way_to_it_hidden():
    secrets = {SECRET: SHOWN}
    try:
        try:
            raise LossConfigError(f"term 'cls': key {SECRET!r} is wrong")
        except LossConfigError as cause:
            raise RuntimeError(f"Error in call to target: {cause}") from cause
    except RuntimeError as err:
        hidden = hidden_error(err, secrets)
    assert isinstance(hidden, LossConfigError) and str(hidden) == f"term 'cls': key {SHOWN} is wrong"


def test_redacting_hides_warnings_and_log_lines_and_removes_itself(caplog, monkeypatch):
    secrets = {SECRET: SHOWN}
    solo = io.StringIO()  # the only handler of a record: nothing formats it before the filter
    handler = logging.StreamHandler(solo)
    monkeypatch.setattr(OWN, "propagate", False)
    monkeypatch.setattr(OWN, "handlers", [handler])
    root_filters = [list(h.filters) for h in logging.getLogger().handlers]
    showwarning = warnings.showwarning
    try:
        try:
            raise KeyError(SECRET)
        except KeyError as cause:
            raise RuntimeError("the lookup failed") from cause
    except RuntimeError as err:
        failed = err
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with redacting(secrets):
            LOG.warning("value %r and %s", SECRET, SECRET, stack_info=True)
            LOG.error("a step failed", exc_info=failed)  # the secret only in the cause
            OWN.error("a step failed", exc_info=failed)
            warnings.warn(f"value {SECRET}", RuntimeWarning, stacklevel=1)
        LOG.warning("after: %s", "plain")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [f"value {SHOWN} and {SHOWN}", "a step failed", "after: plain"]
    assert [(w.category, str(w.message)) for w in caught] == [(RuntimeWarning, f"value {SHOWN}")]
    assert "RuntimeError: the lookup failed" in caplog.text and SECRET not in caplog.text
    assert solo.getvalue().endswith("RuntimeError: the lookup failed\n")
    assert "KeyError" not in solo.getvalue() and not handler.filters
    assert warnings.showwarning is showwarning
    assert [list(h.filters) for h in logging.getLogger().handlers] == root_filters
    with pytest.raises(ValueError, match="^x ") as info:  # an error of the block
        with redacting(secrets):
            raise ValueError(f"x {SECRET}")
    assert str(info.value) == f"x {SHOWN}" and info.value.__suppress_context__


def test_env_paths_follow_interpolations_and_secrets_include_the_variable(monkeypatch):
    monkeypatch.setenv(VAR, SECRET)
    cfg = OmegaConf.create(
        {
            "data": {"token": f"${{oc.env:{VAR}}}", "url": f"https://x/${{oc.env:{VAR}}}"},
            "model": {"token": "${data.token}", "near": "${.width}", "width": 3, "up": {"t": "${..token}"}},
            "whole": "${data}",
            "loop": "${loop}",
        }
    )
    assert env_paths(cfg) == {
        ("data", "token"): SHOWN,
        ("data", "url"): f"https://x/{SHOWN}",
        ("model", "token"): SHOWN,
        ("model", "up", "t"): SHOWN,
        ("whole", "token"): SHOWN,
        ("whole", "url"): f"https://x/{SHOWN}",
    }
    assert env_secrets(cfg) == {SECRET: SHOWN, f"https://x/{SECRET}": f"https://x/{SHOWN}"}
    assert env_paths({"token": SECRET}) == {}


def test_replace_at_goes_by_path_and_type():
    node = {"a": {"k": "1", "n": 1}, "b": ["1", "x"], "c": "1"}
    out = replace_at(
        node, {("a", "k"): ("1", "S"), ("a", "n"): ("1", "S"), ("b", 0): ("1", "S"), ("z",): ("1", "S")}
    )
    assert out == {"a": {"k": "S", "n": 1}, "b": ["S", "x"], "c": "1"}
    assert node == {"a": {"k": "1", "n": 1}, "b": ["1", "x"], "c": "1"}  # unchanged: copies


def test_a_plain_loss_node_reads_whole_env_interpolations_only(monkeypatch):
    monkeypatch.setenv(KEY_VAR, "labels")
    monkeypatch.delenv(VAR, raising=False)
    node = {
        "cls": {
            "type": "FocalLoss",
            "inputs": {"pred": "cls_logits", "target": f"${{oc.env:{KEY_VAR}}}"},
            "reduction": f"${{oc.env:{VAR},sum}}",  # unset: the default, as OmegaConf reads it
        }
    }
    check_loss_config(node)
    mix = LossMix.from_config(node)
    assert mix.terms["cls"].inputs["target"] == "labels"
    resolved, read = resolve_env_values(node)
    assert mix.terms["cls"].loss.reduction == "sum"
    assert resolved["cls"]["reduction"] == "sum" and node["cls"]["reduction"] == f"${{oc.env:{VAR},sum}}"
    assert read == {"labels": f"${{oc.env:{KEY_VAR}}}", "sum": f"${{oc.env:{VAR},sum}}"}
    node["cls"]["gamma"] = f"${{oc.env:{VAR}}}"
    with pytest.raises(LossConfigError, match=rf"^term 'cls', key 'gamma' is .*{VAR} is not set"):
        LossMix.from_config(node)
    node["cls"]["gamma"] = f"x${{oc.env:{KEY_VAR}}}"
    with pytest.raises(LossConfigError, match=r"only a whole \$\{oc.env:NAME\}"):
        check_loss_config(node)
    node["cls"]["gamma"] = "${oc.select:x}"  # any other interpolation is text, never evaluated
    with pytest.raises(LossConfigError, match="expects float"):
        check_loss_config(node)


def test_a_value_read_for_a_stored_node_stays_hidden_in_its_errors(monkeypatch):
    monkeypatch.setenv(VAR, SECRET)
    node = {"cls": {"type": "FocalLoss", "gamma": f"${{oc.env:{VAR}}}"}}
    for call in (lambda: check_loss_config(node), lambda: LossMix.from_config(node)):
        with pytest.raises(LossConfigError) as info:
            call()
        assert SHOWN in str(info.value) and not chain_shows_secret(info.value)


class TokenRegressor(Regressor):
    """The shared regressor with a saved ``token`` hyper-parameter."""

    def __init__(self, terms: dict | None = None, lr: float = 0.0, token: str = "") -> None:
        super().__init__(terms, lr)
        self.save_hyperparameters()


def test_the_private_lightning_apis_edit_what_leaves_the_run(tmp_path):
    """``lossmix.utilities.compat``'s two doors against the installed Lightning: ``hparams_initial`` (what
    loggers write) changes while ``hparams`` (what the module reads) keeps the value, and
    every checkpoint the trainer saves, weights-only ones too, goes through the edit."""
    model = TokenRegressor(token=SECRET)
    compat.replace_initial_hparams(
        model, functools.partial(replace_at, replacements={("token",): (SECRET, SHOWN)})
    )
    assert model.hparams_initial["token"] == SHOWN and model.hparams["token"] == SECRET
    trainer = lightning_models.trainer(max_steps=1)
    compat.edit_saved_checkpoints(
        trainer, lambda checkpoint: checkpoint["hyper_parameters"].update(token=SHOWN)
    )
    trainer.fit(model, lightning_models.loader(8, 4))
    for weights_only in (False, True):
        path = tmp_path / f"{weights_only}.ckpt"
        trainer.save_checkpoint(path, weights_only=weights_only)
        assert torch.load(path, weights_only=True)["hyper_parameters"]["token"] == SHOWN
        assert SECRET.encode() not in path.read_bytes()
    assert model.hparams["token"] == SECRET
