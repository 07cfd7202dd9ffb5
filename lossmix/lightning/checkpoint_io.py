"""``SafeCheckpointIO``: checkpoints written atomically, and read only as tensors, checked.

Lightning 2.6's ``TorchCheckpointIO`` saves through an fsspec transaction whose temporary
file lives in the system's temporary directory; committing it is a ``shutil.move``, which
across file systems (``/tmp`` on another disk or a tmpfs, the usual case) copies *over* the
target: on a full disk or past a file-size limit the copy stops half-way and the last good
``last.ckpt`` is replaced by a truncated one. Nothing is fsynced either.

:class:`SafeCheckpointIO` writes each local checkpoint to a temporary file in the target's
own directory, fsyncs it and renames it over the target
(:func:`lossmix.utilities.files.atomic_write`): a failed write keeps the previous file whole, removes
the temporary one and stops the run with one line naming the file and the cause. Loading
passes ``weights_only=True`` to ``torch.load`` explicitly (unless a caller passes ``False``
itself), and refuses an empty, truncated or foreign file, one without a ``state_dict``, and
one whose parameters or buffers hold NaN or infinity, each in one line
(:mod:`lossmix.utilities.checkpoint`). Remote paths (``s3://``, ...) are Lightning's as before.

The training app installs it by default; with a plain Trainer::

    Trainer(plugins=[SafeCheckpointIO()])
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from typing_extensions import override

from lossmix.utilities.checkpoint import check_checkpoint, is_bare_state_dict, read_checkpoint
from lossmix.utilities.files import atomic_write, write_failure

__all__ = ["SafeCheckpointIO"]


def _is_local(path: _PATH) -> bool:
    protocol: Any = get_filesystem(path).protocol
    protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
    return "file" in protocols or "local" in protocols


def _kept(target: Path) -> str | None:
    """What a failed write of ``target`` leaves whole: itself, else the checkpoints beside it."""
    if target.is_file():
        return f"the previous {target.name} there is kept whole, as it was"
    try:
        others = sorted(p.name for p in target.parent.glob("*.ckpt") if p.is_file())
    except OSError:
        return None
    return f"the checkpoints already there are kept whole ({', '.join(others)})" if others else None


class SafeCheckpointIO(TorchCheckpointIO):
    """Atomic, fsynced checkpoint writes; ``weights_only`` reads that are checked.

    Args:
        allow_nonfinite: load a checkpoint whose parameters or buffers hold NaN or inf
            (refused by default: training from it trains on NaN).
        allow_hint: the setting named in that refusal (the app names its own key).
        elsewhere: how to write somewhere else, named when a write fails.
    """

    def __init__(
        self,
        *,
        allow_nonfinite: bool = False,
        allow_hint: str = "SafeCheckpointIO(allow_nonfinite=True)",
        elsewhere: str = "write the checkpoints to another directory (ModelCheckpoint(dirpath=...))",
    ) -> None:
        super().__init__()
        if not isinstance(allow_nonfinite, bool):
            raise TypeError(f"SafeCheckpointIO: allow_nonfinite must be a bool, got {allow_nonfinite!r}")
        self.allow_nonfinite = allow_nonfinite
        self.allow_hint = allow_hint
        self.elsewhere = elsewhere
        self.bare_loaded: str | None = None
        """The path of the last file loaded if it was a bare state_dict (tensors only, as
        ``ddp_spawn`` hands the weights back), so a failed resume from it can be named."""

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` whole or not at all (remote paths: Lightning's way).

        Raises:
            LossRunError: the write failed (no space, read-only, a file-size limit, ...); the
                previous file at ``path``, if any, is kept as it was.
        """
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # first, so a checkpoint that cannot be pickled writes nothing
        target = Path(os.fspath(path))
        kept = _kept(target)
        try:
            atomic_write(target, lambda handle: handle.write(buffer.getbuffer()))
        except OSError as err:
            failure = write_failure(err, what="checkpoint", path=target, kept=kept, elsewhere=self.elsewhere)
            if failure is None:
                raise
            raise failure from err

    @override
    def load_checkpoint(
        self,
        path: _PATH,
        map_location: Callable[..., Any] | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Load ``path`` with ``weights_only=True`` (unless ``False`` is passed), then check it.

        Raises:
            LossConfigError: the file cannot be read, is empty, truncated, corrupt or not a
                checkpoint, holds other objects than tensors and containers, has no
                ``state_dict``, or holds NaN/inf (without ``allow_nonfinite``).
        """
        only_weights = True if weights_only is None else weights_only
        if not _is_local(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=only_weights)
        checkpoint = read_checkpoint(os.fspath(path), map_location=map_location, weights_only=only_weights)
        check_checkpoint(
            checkpoint, os.fspath(path), allow_nonfinite=self.allow_nonfinite, allow_hint=self.allow_hint
        )
        self.bare_loaded = os.fspath(path) if is_bare_state_dict(checkpoint) else None
        loaded: dict[str, Any] = checkpoint
        return loaded
