"""Every writer of a run failing mid-run stops the app with one line naming what and why.

Hydra's run directory under a regular file is real; a read-only file system, a full disk
and a file-size limit are the ``OSError`` each writer (the checkpoint, the CSV logger, the
curves) gets, raised by a mock (the tests run as root, which ``chmod`` does not stop).
"""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace

import pytest
from matplotlib.figure import Figure

import lossmix.utilities.files
from lossmix.errors import LossRunError
from lossmix.utilities.files import atomic_write, write_failure
from tests.app.test_train import TINY, main_in_process

ONE_EPOCH = [*TINY, "trainer.max_epochs=1"]
ELSEWHERE = "set hydra.run.dir=<another directory>."


def _one_error_line(code: int, err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert code == 1 and len(errors) == 1, err[-3000:]
    assert "Traceback" not in err and "Error executing job" not in err
    return errors[0]


def test_a_run_directory_under_a_regular_file_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("not a directory")
    run = tmp_path / "file" / "run"
    code, _, err = main_in_process([f"hydra.run.dir={run}", *ONE_EPOCH], capsys, monkeypatch)
    assert _one_error_line(code, err) == (
        f"Error: could not write {run}: [Errno 20] Not a directory: a part of that path is a file, not a "
        f"directory; {ELSEWHERE}"
    )


def _fail(number: int, filename: str | None = None):
    def raise_it(*args, **kwargs):
        raise OSError(number, os.strerror(number), *([filename] if filename else []))

    return raise_it


def test_a_read_only_file_system_at_the_checkpoint_is_one_line(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    # the first thing a write does there (only lossmix's writes see this tempfile)
    monkeypatch.setattr(
        lossmix.utilities.files,
        "tempfile",
        SimpleNamespace(mkstemp=_fail(errno.EROFS, str(run / "checkpoints"))),
    )
    code, _, err = main_in_process([f"hydra.run.dir={run}", *ONE_EPOCH], capsys, monkeypatch)
    assert _one_error_line(code, err) == (
        f"Error: could not write checkpoint {run}/checkpoints/epoch_000.ckpt: [Errno 30] Read-only file "
        f"system ({run}/checkpoints); {ELSEWHERE}"
    )


def test_a_full_disk_at_the_csv_logger_is_one_line(tmp_path, capsys, monkeypatch):
    from lightning.fabric.loggers.csv_logs import _ExperimentWriter

    run = tmp_path / "run"
    monkeypatch.setattr(_ExperimentWriter, "save", _fail(errno.ENOSPC))  # a write() has no file name
    code, _, err = main_in_process([f"hydra.run.dir={run}", *ONE_EPOCH], capsys, monkeypatch)
    assert _one_error_line(code, err) == (
        f"Error: could not write a file in the run directory {run}: [Errno 28] No space left on device; "
        f"free space on that disk, or {ELSEWHERE}"
    )


def test_a_file_size_limit_at_the_curves_is_one_line_naming_the_png(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setattr(Figure, "savefig", _fail(errno.EFBIG))
    code, _, err = main_in_process([f"hydra.run.dir={run}", *ONE_EPOCH], capsys, monkeypatch)
    assert _one_error_line(code, err) == (
        f"Error: could not write {run}/loss_curves.png: [Errno 27] File too large; raise the file-size "
        f"limit (ulimit -f), or {ELSEWHERE}"
    )
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_an_error_that_is_not_a_write_failure_keeps_its_trace():
    assert write_failure(OSError(errno.ECONNREFUSED, "refused"), what="x", elsewhere="y") is None
    failure = write_failure(
        OSError(errno.ENOSPC, "No space left on device"), what="x", path="p", elsewhere="y"
    )
    assert isinstance(failure, LossRunError)


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "a.bin"
    atomic_write(path, lambda handle: handle.write(b"old"))

    def half(handle) -> None:
        handle.write(b"ne")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, half)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a.bin"]
