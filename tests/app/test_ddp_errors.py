"""A DDP run that fails on one rank reports that rank's error, one line, from every process.

Two runs of the app (``trainer=ddp`` and ``trainer=ddp_spawn``, 2 CPU processes, gloo) with
labels out of range on rank 1 only; the rest (the records, the reporting rules, the wrapper a
spawned rank runs) in this process."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time

import pytest
import torch

from lossmix.app import rank_errors, runner
from lossmix.app.rank_errors import RecordRankErrors, find_record, rank_failure, record_error
from lossmix.errors import LossConfigError, LossInputError, RankError
from lossmix.utilities import compat
from tests.lightning_models import Regressor, loader, trainer

TIMEOUT = 600  # s: generous for a loaded 2-core machine; the run itself takes well under that
KINDS = (LossConfigError, LossInputError)
MESSAGE = "term 'cls': CrossEntropyLoss: class indices must lie in [0, 2] or -100 for pred with 3 classes"


def describe(err: BaseException) -> str:
    return str(err)


def fail_with(err: BaseException):
    def fit(*args, **kwargs):
        raise err

    return fit


def raise_input_error(*args, **kwargs):
    raise LossInputError("term 'cls': bad labels")


def rank_one() -> int:
    return 1


# -- the app under DDP ---------------------------------------------------------------------------
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_one_rank_fails_every_process_reports_its_line(tmp_path, strategy):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lossmix.train",
            f"hydra.run.dir={tmp_path}",
            "experiment=multitask",
            f"trainer={strategy}",
            "trainer.accelerator=cpu",
            "trainer.max_epochs=1",
            "data.num_train=32",
            "data.num_val=16",
            "data.batch_size=8",
            "trainer.enable_progress_bar=false",
            "data._target_=tests.ddp_bad_labels.BadLabelsOnRank1",
            "lossmix.allowed_targets=[tests]",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
    )
    elapsed = time.monotonic() - started
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert errors[0].startswith(f"Error: rank 1: {MESSAGE}; got values [7]."), errors
    # nothing waited on a dead rank: ddp_spawn's 30 s grace for a stuck child, a 30-min timeout
    assert elapsed < TIMEOUT / 2


# -- the records ---------------------------------------------------------------------------------
def test_the_earliest_record_of_this_run_is_found(tmp_path, monkeypatch):
    monkeypatch.setenv("MASTER_PORT", "1234")
    since = time.time()
    record_error(tmp_path, 3, "late")
    time.sleep(0.01)
    record_error(tmp_path, 2, "later")
    found = find_record(tmp_path, since=since)
    assert (found.rank, found.message, found.run) == (3, "late", "1234")
    assert find_record(tmp_path, since=since, exclude_rank=3).rank == 2
    assert find_record(tmp_path, since=time.time() + 60) is None  # an earlier run's
    monkeypatch.setenv("MASTER_PORT", "999")
    assert find_record(tmp_path, since=since) is None  # another run in the same directory


def test_a_rank_with_a_user_error_reports_itself(tmp_path):
    path = record_error(tmp_path, 1, "term 'cls': bad labels")
    err = LossInputError("term 'cls': bad labels")
    reported = rank_failure(err, rank=1, directory=tmp_path, since=0.0, kinds=KINDS, describe=describe)
    assert str(reported) == "rank 1: term 'cls': bad labels"
    assert (reported.rank, reported.record, reported.shown) == (1, path, False)


def test_a_communication_error_reports_the_failing_rank(tmp_path, monkeypatch):
    monkeypatch.setattr(rank_errors, "stderr_identity", lambda: (1, 2))
    gloo = RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:24969")
    since = time.time()
    path = record_error(tmp_path, 1, "term 'cls': bad labels")
    reported = rank_failure(gloo, rank=0, directory=tmp_path, since=since, kinds=KINDS, describe=describe)
    assert (str(reported), reported.shown) == ("rank 1: term 'cls': bad labels", False)
    rank_errors.mark_shown(path)  # the failing rank printed it on this terminal
    reported = rank_failure(gloo, rank=0, directory=tmp_path, since=since, kinds=KINDS, describe=describe)
    assert reported.shown
    monkeypatch.setattr(rank_errors, "stderr_identity", lambda: (1, 3))  # another terminal
    reported = rank_failure(gloo, rank=0, directory=tmp_path, since=since, kinds=KINDS, describe=describe)
    assert not reported.shown


def test_ddp_spawns_main_process_reports_any_rank(tmp_path):
    """Its trainer says rank 0, but it is no rank: rank 0's record counts too, and a child's
    wrapped communication error (rank 0's gloo error may reach it first) gives way to it."""
    from torch.multiprocessing.spawn import ProcessRaisedException

    since = time.time()
    record_error(tmp_path, 0, "term 'cls': bad labels")
    wrapped = ProcessRaisedException("-- Process 1 terminated ... Connection closed by peer", 1, 4321)
    reported = rank_failure(wrapped, rank=0, directory=tmp_path, since=since, kinds=KINDS, describe=describe)
    assert str(reported) == "rank 0: term 'cls': bad labels"


def test_without_a_record_the_error_stays_and_the_wait_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(rank_errors, "RECORD_WAIT_S", 0.3)
    gloo = RuntimeError("Connection closed by peer (gloo)")
    started = time.monotonic()
    assert rank_failure(gloo, rank=0, directory=tmp_path, since=0.0, kinds=KINDS, describe=describe) is None
    assert 0.3 <= time.monotonic() - started < 5
    record_error(tmp_path, 0, "mine")  # this rank's own record is not another's failure
    assert rank_failure(gloo, rank=0, directory=tmp_path, since=0.0, kinds=KINDS, describe=describe) is None
    stop = KeyboardInterrupt()
    assert rank_failure(stop, rank=0, directory=tmp_path, since=0.0, kinds=KINDS, describe=describe) is None


def test_the_app_prints_a_rank_error_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(rank_errors, "stderr_identity", lambda: (7, 8))
    path = record_error(tmp_path, 1, "term 'cls': bad labels")
    with pytest.raises(SystemExit) as exit:
        runner._exit_with(RankError(1, "term 'cls': bad labels", record=path), {})
    assert exit.value.code == 1
    assert capsys.readouterr().err == "Error: rank 1: term 'cls': bad labels\n"
    assert find_record(tmp_path, since=0.0).shown_on == (7, 8)
    with pytest.raises(SystemExit) as exit:  # already on this terminal: status 1, no second line
        runner._exit_with(RankError(1, "term 'cls': bad labels", record=path, shown=True), {})
    assert exit.value.code == 1
    assert capsys.readouterr().err == ""


def test_rank_error_pickles():
    err = pickle.loads(pickle.dumps(RankError(2, "boom", shown=True)))
    assert (str(err), err.rank, err.message, err.shown) == ("rank 2: boom", 2, "boom", True)


# -- the wrapper each rank runs ------------------------------------------------------------------
def test_the_rank_wrapper_pickles_and_records_user_errors_only(tmp_path):
    wrapper = RecordRankErrors(raise_input_error, rank_one, str(tmp_path), KINDS, describe)
    wrapper = pickle.loads(pickle.dumps(wrapper))  # as ddp_spawn sends it to a rank
    with pytest.raises(LossInputError):
        wrapper()
    assert find_record(tmp_path, since=0.0).message == "term 'cls': bad labels"
    other = tmp_path / "other"
    with pytest.raises(ZeroDivisionError):
        RecordRankErrors(fail_with(ZeroDivisionError()), rank_one, str(other), KINDS, describe)()
    assert find_record(other, since=0.0) is None


def test_lightning_runs_the_wrapped_fit():
    """``compat.fit_in_each_rank``: Lightning still calls the trainer's ``_fit_impl``."""
    calls: list[int] = []

    def wrap(fit):
        def counted(*args, **kwargs):
            calls.append(1)
            return fit(*args, **kwargs)

        return counted

    run = trainer(max_steps=1, num_sanity_val_steps=0)
    compat.fit_in_each_rank(run, wrap)
    run.fit(Regressor(), loader(4, 4))
    assert calls == [1] and run.global_step == 1
