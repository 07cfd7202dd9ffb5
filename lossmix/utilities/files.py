"""Writing a run's files: whole or not at all, and a failed write said in one line.

A file written in place (``open(path, "wb")``, or ``shutil.move`` copying across file
systems) is truncated first and then filled, so a full disk, a file-size limit or a crash
half-way leaves half a file where the last good one was. :func:`atomic_write` writes a
temporary file next to the target, flushes and fsyncs it, and only then ``os.replace``\\ s it
over the target (one rename, atomic on a POSIX file system): a failed write leaves the
previous file as it was and removes the temporary one.

:func:`write_failure` turns the ``OSError`` of a write (no space, read-only, a file where a
directory should be, a file-size limit) into a :class:`~lossmix.errors.LossRunError` whose
message names the file, the cause and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from lossmix.errors import LossRunError

__all__ = ["ONLY_WRITES_ERRNOS", "WRITE_ERRNOS", "atomic_write", "write_failure"]

# the causes of a failed write a user can act on, with what to do beyond writing elsewhere
# (anything else is a bug, and keeps its trace)
_FIXES: dict[int, str | None] = {
    errno.ENOSPC: "free space on that disk",
    errno.EDQUOT: "free space within your disk quota",
    errno.EFBIG: "raise the file-size limit (ulimit -f)",
    errno.EROFS: None,
    errno.EACCES: "check the permissions there",
    errno.EPERM: "check the permissions there",
    errno.ENOTDIR: None,
    errno.EEXIST: None,
    errno.EISDIR: None,
    errno.EIO: "check the disk",
}
_EXPLAINED = {
    errno.ENOTDIR: "a part of that path is a file, not a directory",
    errno.EEXIST: "a file stands where a directory is needed",
    errno.EISDIR: "a directory stands where the file goes",
}
WRITE_ERRNOS = frozenset(_FIXES)
ONLY_WRITES_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
"""Causes a read never has (the others may come from opening a file to read it)."""
"""The ``errno`` values :func:`write_failure` explains."""


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (not every file system can open a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` through ``write(handle)`` so that it is replaced whole or not at all.

    The bytes go to a hidden temporary file in ``path``'s directory (the same file system,
    so the final rename cannot turn into a copy), which is flushed and fsynced, gets the
    permissions a new file would get, and is then renamed over ``path``. On any failure the
    temporary file is removed and the exception propagates; ``path`` is untouched.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    target = Path(path)
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_directory(directory)
    return target


def write_failure(
    err: OSError,
    *,
    what: str,
    path: str | os.PathLike[str] | None = None,
    kept: str | None = None,
    elsewhere: str,
    verb: str = "write",
) -> LossRunError | None:
    """The one-line error for a failed write, or ``None`` when ``err`` is not a write failure
    a user can fix (the caller then lets it propagate with its trace).

    Args:
        err: the ``OSError`` raised while writing.
        what: what was written, e.g. ``"checkpoint"`` (may be empty).
        path: the file or directory written (default: the error's own file name).
        kept: what is left intact, e.g. ``"the last good checkpoint is kept at ..."``.
        elsewhere: how to write somewhere else, e.g. ``"set hydra.run.dir=<directory>"``.
        verb: ``"write"``, or ``"access"`` where the failed call may have been a read.
    """
    if err.errno not in _FIXES:
        return None
    target = path if path is not None else err.filename
    where = " ".join(p for p in (what, os.fspath(target) if target is not None else "") if p)
    cause = f"[Errno {err.errno}] {err.strerror or os.strerror(err.errno)}"
    if err.filename is not None and target is not None and os.fspath(err.filename) != os.fspath(target):
        cause += f" ({os.fspath(err.filename)})"
    if err.errno in _EXPLAINED:
        cause += f": {_EXPLAINED[err.errno]}"
    left = f"; {kept}" if kept else ""
    fix = _FIXES[err.errno]
    return LossRunError(
        f"could not {verb} {where}: {cause}{left}; {fix + ', or ' if fix else ''}{elsewhere}."
    )
