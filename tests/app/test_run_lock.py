"""One run per run directory: a second run is refused in one line naming the first one.

The "first run" here is a lock held on ``<run dir>/.lossmix.lock`` by this test process (an
``flock`` on its own open file, as another process's would be) or by a small child process;
the app runs in this process.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lossmix.train as train
from lossmix.app.runlock import LOCK_NAME, RunLock, launching_process
from lossmix.errors import LossRunError
from tests.app.test_train import TINY, compose_train, main_in_process

ONE_EPOCH = [*TINY, "trainer.max_epochs=1"]
HOLDER = "pid 4242 on host trainbox, started 2026-01-01 00:00:00 UTC"


def _hold(run: Path) -> int:
    """Lock ``run`` as another run would (a flock on another open file), with its note."""
    run.mkdir(parents=True, exist_ok=True)
    fd = os.open(run / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.pwrite(fd, f"{HOLDER}\n".encode(), 0)
    return fd


def test_a_second_run_into_a_directory_in_use_is_refused_before_hydra_writes(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    fd = _hold(run)
    try:
        code, _, err = main_in_process([f"hydra.run.dir={run}", *ONE_EPOCH], capsys, monkeypatch)
    finally:
        os.close(fd)
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert code == 1 and errors == [
        f"Error: the run directory {run} is in use by another run ({HOLDER}); two runs in one directory "
        "would write over each other's metrics.csv and checkpoints: wait for it to end, or set "
        "hydra.run.dir=<another directory> for this run."
    ], err[-3000:]
    assert "Traceback" not in err
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # not even .hydra/ was rewritten


def test_fit_takes_the_lock_and_a_finished_run_releases_it(tmp_path, capsys):
    run = tmp_path / "run"
    fd = _hold(run)
    try:
        with pytest.raises(LossRunError, match=rf"is in use by another run \({HOLDER}\).*paths.output_dir="):
            train.run(compose_train(run, *ONE_EPOCH))
    finally:
        os.close(fd)
    assert not (run / "checkpoints").exists()
    train.run(compose_train(run, *ONE_EPOCH))  # free now
    capsys.readouterr()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / LOCK_NAME).read_text() == ""  # released: no holder named
    with RunLock(run):  # and free again after the run
        pass


def test_the_lock_names_its_holder_nests_in_one_process_and_frees_when_its_process_dies(tmp_path):
    with RunLock(tmp_path) as lock, RunLock(tmp_path):  # fit inside the app's early lock
        note = (tmp_path / LOCK_NAME).read_text()
        assert note.startswith(f"pid {os.getpid()} on host ") and ", started " in note
    assert not lock.held
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(tmp_path / LOCK_NAME)!r}, os.O_RDWR)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.pwrite(fd, b'pid %d on host child' % os.getpid(), 0)\n"
            "print('locked', flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(LossRunError, match=rf"in use by another run \(pid {holder.pid} on host child\)"):
            RunLock(tmp_path).__enter__()
    finally:
        holder.kill()  # a crashed run: the kernel frees its lock
        holder.wait(timeout=60)
    with RunLock(tmp_path) as lock:
        assert lock.held


@pytest.mark.parametrize(
    ("variables", "first"),
    [
        ({}, True),
        ({"LOCAL_RANK": "0", "NODE_RANK": "0"}, True),
        ({"LOCAL_RANK": "1"}, False),
        ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, False),
        ({"SLURM_PROCID": "3"}, False),
        ({"RANK": "2"}, False),
    ],
)
def test_only_the_launching_process_takes_the_lock(variables, first, monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert launching_process() is first


def test_only_a_single_run_locks_before_hydra(tmp_path):
    from lossmix.utilities.compat import single_run_overrides

    assert single_run_overrides([f"hydra.run.dir={tmp_path}", "seed=1"]) == [
        f"hydra.run.dir={tmp_path}",
        "seed=1",
    ]
    for other in (["-m"], ["--cfg", "job"], ["--help"], ["--info"]):
        assert single_run_overrides([*other, f"hydra.run.dir={tmp_path}"]) is None
