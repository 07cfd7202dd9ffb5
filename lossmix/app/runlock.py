"""One run per run directory: a lock, so a second run cannot write over the first one's files.

Two runs writing the same directory interleave their ``metrics.csv`` rows (the CSV logger
then fails on the other run's header), overwrite each other's ``last.ckpt`` and curves.
:class:`RunLock` takes an exclusive ``fcntl.flock`` on ``<run dir>/.lossmix.lock`` (a hidden
file beside ``.hydra/``) for the whole run and writes the holder's pid, host and start time
into it; a second run finds the lock held and stops with one line naming that process.
The kernel releases a ``flock`` when its process ends, so a crashed or killed run never
leaves a stale lock; a finished run releases it, so resuming into the same directory
(``ckpt_path=last``) works. The file itself stays (removing it would let two later runs
lock two different files).

Only the launching process takes the lock: under DDP, Lightning starts the other ranks
with ``LOCAL_RANK``/``NODE_RANK`` set (SLURM and torchrun set ``SLURM_PROCID``/``RANK``), and
they run the same code into the same directory (:func:`launching_process`).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType

from lossmix.errors import LossRunError

__all__ = ["LOCK_NAME", "RunLock", "launching_process"]

LOCK_NAME = ".lossmix.lock"
# lock file → [fd, depth]: this process's own locks, so the app's early lock (taken before
# Hydra writes .hydra/) and fit's lock on the same directory nest instead of refusing each other
_HELD: dict[str, list[int]] = {}
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def launching_process() -> bool:
    """Whether this process is the run's first (global rank 0) by the launchers' variables."""
    for name in _RANK_VARIABLES:
        value = os.environ.get(name, "0").strip() or "0"
        if value != "0":
            return False
    return True


class RunLock:
    """An exclusive lock on a run directory, held from ``__enter__`` to ``__exit__``.

    Args:
        run_dir: the directory (created if missing).
        fix: how to run elsewhere, named when the directory is in use.

    Raises:
        LossRunError: on ``__enter__``, when another process holds the lock.
    """

    def __init__(self, run_dir: str | os.PathLike[str], *, fix: str = "choose another run directory") -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.fix = fix
        self._key: str | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._key is not None

    def _holder(self, fd: int) -> str:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            text = os.pread(fd, 4096, 0).decode().strip()
            if text:
                return text
        return "another process"

    def __enter__(self) -> RunLock:
        if self._key is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = os.path.realpath(self.path)
        if key in _HELD:  # this process holds it already: nest
            _HELD[key][1] += 1
            self._key = key
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise LossRunError(
                f"the run directory {self.path.parent} is in use by another run ({holder}); two runs in "
                f"one directory would write over each other's metrics.csv and checkpoints: wait for it "
                f"to end, or {self.fix}."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        with contextlib.suppress(OSError):  # the lock holds even if its note cannot be written
            os.ftruncate(fd, 0)
            note = f"pid {os.getpid()} on host {socket.gethostname()}, started {started}\n"
            os.pwrite(fd, note.encode(), 0)
        _HELD[key] = [fd, 1]
        self._key = key
        return self

    def release(self) -> None:
        """Let the next run in (the kernel does the same when this process ends); a nested
        hold only gives its level back."""
        key, self._key = self._key, None
        if key is None:
            return
        held = _HELD[key]
        held[1] -= 1
        if held[1] > 0:
            return
        del _HELD[key]
        fd = held[0]
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
