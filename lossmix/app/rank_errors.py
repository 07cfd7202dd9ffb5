"""One line for a distributed run that fails on one rank: the failing rank's own error.

Under DDP a configuration or input error (a bad label, a missing key) often shows on one
rank only. That rank stops; every other rank then fails in its next collective with a
communication error (gloo's "Connection closed by peer", a ``DistBackendError``), and under
``ddp_spawn`` the main process gets the first child's traceback wrapped in a
``ProcessRaisedException``. The user sees a wall of traces about sockets and not the one
line that says what is wrong.

So the rank that fails records its one-line message (a small JSON file per rank in
``<run directory>/.lossmix_rank_errors/``) before it exits, and every other process that
then fails (a rank with a communication error, the main process of ``ddp_spawn``) looks for
the earliest record of this run and reports that instead, as :class:`~lossmix.errors.RankError`
(``rank 1: <the original message>``). A file, not the process group's store: the store lives
in rank 0 and is gone once rank 0 has exited, and the main process of ``ddp_spawn`` is not
in the group. :func:`lossmix.app.runner.fit` wires it in; the app prints the line once (a rank
whose terminal already shows it exits with status 1 and prints nothing more).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossmix.errors import RankError

__all__ = [
    "RECORD_DIR",
    "RankRecord",
    "RecordRankErrors",
    "find_record",
    "mark_shown",
    "rank_failure",
    "record_error",
    "stderr_identity",
]

RECORD_DIR = ".lossmix_rank_errors"
#: How long a rank that failed in a collective waits for the failing rank's record: the
#: record is written before that rank exits, and the collective fails only once it has, so
#: this covers a slow shared file system; a real network fault costs this wait, no more.
RECORD_WAIT_S = 3.0
_POLL_S = 0.1


@dataclass(frozen=True)
class RankRecord:
    """One rank's recorded failure: its global rank, its one-line message, when (epoch
    seconds), the run it belongs to (``MASTER_PORT``), where its line was already
    printed (the identity of a stderr, or ``None``), and the record's file."""

    rank: int
    message: str
    time: float
    run: str | None
    shown_on: tuple[int, int] | None
    path: Path


def _run_key() -> str | None:
    """The process group's rendezvous port, the same in every process of one run (ddp sets it
    before launching the other ranks, ddp_spawn before spawning them; the main process of
    ddp_spawn never sets the address) and, on one machine, new each run."""
    return os.environ.get("MASTER_PORT")


def stderr_identity() -> tuple[int, int] | None:
    """``(device, inode)`` of this process's stderr: equal in processes that write to the same
    terminal, pipe or file (Lightning's ddp launcher starts the other ranks on rank 0's), so a
    line one printed is not printed again by the other. ``None`` when stderr has no file."""
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # replaced stderr (a capture), closed
        return None
    return (stat.st_dev, stat.st_ino)


def _write(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a reader sees the old record or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(payload))
    os.replace(temporary, path)


def record_error(directory: str | Path, rank: int, message: str) -> Path:
    """Record that global rank ``rank`` failed with ``message`` (one line); returns the file."""
    folder = Path(directory) / RECORD_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"rank{rank}.json"
    _write(
        path,
        {"rank": rank, "message": message, "time": time.time(), "run": _run_key(), "shown_on": None},
    )
    return path


def mark_shown(path: Path) -> None:
    """Note in the record that its line was printed on this process's stderr."""
    with contextlib.suppress(OSError, ValueError):
        payload = json.loads(path.read_text())
        payload["shown_on"] = stderr_identity()
        _write(path, payload)


def _read(path: Path) -> RankRecord | None:
    try:
        payload = json.loads(path.read_text())
        shown = payload.get("shown_on")
        return RankRecord(
            rank=int(payload["rank"]),
            message=str(payload["message"]),
            time=float(payload["time"]),
            run=payload.get("run"),
            shown_on=None if shown is None else (int(shown[0]), int(shown[1])),
            path=path,
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError):  # gone, or not ours
        return None


def find_record(
    directory: str | Path, *, since: float, exclude_rank: int | None = None, wait: float = 0.0
) -> RankRecord | None:
    """The earliest record of this run in ``directory`` (written after ``since``, with this
    process's run key when both have one), other than ``exclude_rank``'s; polls up to ``wait``
    seconds for one to appear."""
    folder = Path(directory) / RECORD_DIR
    run = _run_key()
    deadline = time.monotonic() + wait
    while True:
        found = [r for r in map(_read, sorted(folder.glob("rank*.json"))) if r is not None]
        found = [
            r
            for r in found
            if r.time >= since and r.rank != exclude_rank and (r.run is None or run is None or r.run == run)
        ]
        if found:
            return min(found, key=lambda r: (r.time, r.rank))
        if time.monotonic() >= deadline:
            return None
        time.sleep(_POLL_S)


_COMMUNICATION_SIGNS = (
    "gloo",
    "nccl",
    "connection closed",
    "connection reset",
    "broken pipe",
    "timed out",
    "socket",
    "process group",
    "processgroup",
)


def _communication_error(err: BaseException) -> bool:
    """An error from a collective or the process group (the peer is gone, a timeout), or the
    main process of ``ddp_spawn`` learning that a child failed."""
    import torch

    dist_error = getattr(torch.distributed, "DistError", None)
    if dist_error is not None and isinstance(err, dist_error):
        return True
    if type(err).__module__ == "torch.multiprocessing.spawn":  # ProcessRaised/ExitedException
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(sign in text for sign in _COMMUNICATION_SIGNS)


class RecordRankErrors:
    """Run ``fit`` (the trainer's fit in one rank process) and record the rank's user error.

    Picklable (a module-level class holding picklable parts), since ``ddp_spawn`` sends it to
    each spawned rank, where no Lightning hook sees an exception.

    Args:
        fit: the rank's fit function.
        rank: a function of no arguments giving this process's global rank (read once it fails,
            in the rank's own process).
        directory: where the records go (the run directory, shared by every rank).
        kinds: the exception types that are a user's error (recorded); others are left alone.
        describe: the one-line message of such an error.
    """

    def __init__(
        self,
        fit: Callable[..., Any],
        rank: Callable[[], int],
        directory: str,
        kinds: tuple[type[BaseException], ...],
        describe: Callable[[BaseException], str],
    ) -> None:
        self.fit = fit
        self.rank = rank
        self.directory = directory
        self.kinds = kinds
        self.describe = describe

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.fit(*args, **kwargs)
        except self.kinds as err:
            with contextlib.suppress(OSError):  # a read-only run directory: the trace stays
                record_error(self.directory, self.rank(), self.describe(err))
            raise


def rank_failure(
    err: BaseException,
    *,
    rank: int,
    directory: str | Path,
    since: float,
    kinds: tuple[type[BaseException], ...],
    describe: Callable[[BaseException], str],
) -> RankError | None:
    """The error a process of a distributed run reports for ``err``, or ``None`` (keep ``err``).

    * ``err`` is a user error (one of ``kinds``) of this rank: ``rank <rank>: <message>``;
    * else, when another rank's record exists (a communication error waits for one up to
      :data:`RECORD_WAIT_S`): the earliest one, marked as already shown when its line went to
      this process's stderr.
    """
    if isinstance(err, kinds):
        mine = Path(directory) / RECORD_DIR / f"rank{rank}.json"
        found = _read(mine)
        return RankError(rank, describe(err), record=found.path if found is not None else None)
    if not isinstance(err, Exception):  # KeyboardInterrupt, SystemExit: as they are
        return None
    wait = RECORD_WAIT_S if _communication_error(err) else 0.0
    # the main process of ddp_spawn is no rank (its trainer says 0): every rank's record counts
    exclude = None if type(err).__module__ == "torch.multiprocessing.spawn" else rank
    found = find_record(directory, since=since, exclude_rank=exclude, wait=wait)
    if found is None:
        return None
    identity = stderr_identity()
    shown = found.shown_on is not None and identity is not None and found.shown_on == identity
    return RankError(found.rank, found.message, record=found.path, shown=shown)
