"""Resume from any checkpoint: the data position, the shuffle order and the random streams.

Lightning restores the model, the optimizers, the loops' counters and every callback's
state. Three things a run depends on are not in a checkpoint by default, so a run resumed
mid-epoch sees other batches than the uninterrupted one:

* **the shuffle order**: a ``DataLoader(shuffle=True)`` draws a new permutation from the
  global random stream each time it is iterated. :class:`ResumableSampler` derives the
  permutation from ``(seed, epoch)`` instead (``set_epoch`` is called by Lightning), so
  epoch ``e`` has the same order in every run;
* **the position in the epoch**: after a mid-epoch checkpoint Lightning continues the
  batch count but iterates the loader from its start. :class:`DataPosition` tells every
  :class:`ResumableSampler` of the training loader to skip the batches already done;
* **the global random streams** (dropout, a GAN's latent noise, ``torch.randn`` in a
  model): :class:`RandomState` saves torch's (CPU and CUDA), Python's and NumPy's
  generators in the checkpoint and puts them back on resume.

:class:`~lossmix.CompositeLoss` installs ``DataPosition`` and ``RandomState``; a loader
resumes exactly when its sampler is a :class:`ResumableSampler`::

    DataLoader(dataset, batch_size=32, sampler=ResumableSampler(len(dataset), seed=0))

Exactness holds on one process with ``num_workers=0`` or a deterministic dataset
(workers keep their own random streams). Under DDP, Lightning wraps the sampler in its
distributed sampler, which shuffles by epoch itself; the position is then Lightning's.

A mid-epoch resume whose training loader cannot continue where the checkpoint stopped (no
:class:`ResumableSampler`, not a stateful loader Lightning restores itself) warns once, on
rank 0, with a :class:`InexactResumeWarning` that says what differs and how to fix it; it
replaces Lightning's generic "not resumable" warning, which also fires, wrongly, for a
:class:`ResumableSampler`.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator
from typing import Any, cast

import lightning.pytorch as pl
import torch
from torch.utils.data import Sampler

from lossmix.utilities.checks import check_bool, check_int
from lossmix.utilities.compat import (
    close_epoch_ended_in_checkpoint,
    hide_lightning_mid_epoch_warning,
    resumed_mid_epoch,
    show_lightning_mid_epoch_warning,
)

__all__ = ["DataPosition", "InexactResumeWarning", "RandomState", "ResumableSampler"]


class InexactResumeWarning(UserWarning):
    """A mid-epoch resume will not see the batches the uninterrupted run saw (see
    :class:`DataPosition`)."""


class ResumableSampler(Sampler[int]):
    """Indices ``0..size-1``, shuffled by ``(seed, epoch)``, that can skip a resumed prefix.

    Args:
        size: the dataset's length.
        shuffle: permute each epoch (``False``: in order).
        seed: the permutation's seed; epoch ``e`` uses ``seed + e``.

    >>> sampler = ResumableSampler(6, seed=0)
    >>> sampler.set_epoch(1)
    >>> first = list(sampler)
    >>> sampler.skip(2)
    >>> list(sampler) == first[2:]
    True
    """

    def __init__(self, size: int, *, shuffle: bool = True, seed: int = 0) -> None:
        self.size = check_int("ResumableSampler", "size", size, min=0)
        self.shuffle = check_bool("ResumableSampler", "shuffle", shuffle)
        self.seed = check_int("ResumableSampler", "seed", seed, min=0)
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order from the next iteration (Lightning calls it)."""
        self.epoch = int(epoch)

    def skip(self, count: int) -> None:
        """Leave out the first ``count`` indices of the next iteration only (a resumed epoch)."""
        self._skip = check_int("ResumableSampler.skip", "count", count, min=0)

    def order(self) -> list[int]:
        """This epoch's whole order."""
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        permutation: list[int] = torch.randperm(self.size, generator=generator).tolist()
        return permutation

    def __iter__(self) -> Iterator[int]:
        start, self._skip = self._skip, 0
        return iter(self.order()[start:])

    def __len__(self) -> int:
        return self.size


def _loaders(loader: Any) -> list[Any]:
    """The loaders of a training loader: itself, or those of a list, tuple or dict of them."""
    if isinstance(loader, (list, tuple)):
        return list(loader)
    if isinstance(loader, dict):
        return list(loader.values())
    return [loader]


def _own_samplers(item: Any) -> list[Any]:
    return [
        getattr(item, "sampler", None),
        getattr(getattr(item, "batch_sampler", None), "sampler", None),
    ]


def _resumable_samplers(loader: Any) -> list[ResumableSampler]:
    found: list[ResumableSampler] = []
    for item in _loaders(loader):
        for sampler in _own_samplers(item):
            if isinstance(sampler, ResumableSampler) and sampler not in found:
                found.append(sampler)
    return found


def _stateful(item: Any) -> bool:
    """A loader Lightning saves and restores itself (``state_dict``/``load_state_dict``, e.g.
    torchdata's ``StatefulDataLoader``): it continues where the checkpoint stopped."""
    return callable(getattr(item, "state_dict", None)) and callable(getattr(item, "load_state_dict", None))


def _inexact_samplers(loader: Any) -> list[str]:
    """The samplers (by type name) of the loaders that a mid-epoch resume replays from their
    start: no :class:`ResumableSampler` (or no batch size to skip by), and not stateful."""
    skips = _batch_size(loader) is not None
    names: list[str] = []
    for item in _loaders(loader):
        samplers = _own_samplers(item)
        if _stateful(item) or (skips and any(isinstance(s, ResumableSampler) for s in samplers)):
            continue
        sampler = next((s for s in samplers if s is not None), None)
        names.append(type(sampler if sampler is not None else item).__name__)
    return names


def _inexact_resume_message(names: list[str], epoch: int, done: int, *, distributed: bool = False) -> str:
    kinds = ", ".join(sorted(set(names)))
    if distributed:  # Lightning's distributed sampler wraps any sampler, a ResumableSampler too
        fix = (
            "Under DDP Lightning's distributed sampler takes the place of the loader's own "
            "sampler, so resume from an epoch-end checkpoint for an exact run."
        )
    else:
        fix = (
            "For an exact resume give the loader sampler=lossmix.lightning.callbacks.resume.ResumableSampler("
            "len(dataset), shuffle=..., seed=...) (instead of shuffle=True or its own sampler), or "
            "resume from an epoch-end checkpoint."
        )
    return (
        f"lossmix: resuming in the middle of epoch {epoch} (after {done} of its batches), but the "
        f"training loader cannot continue where the checkpoint stopped (its sampler: {kinds}; only "
        "a lossmix ResumableSampler of a single loader, or a stateful loader, can): Lightning "
        "iterates it from its first batch again, so the rest of this epoch trains on other "
        "batches than the uninterrupted run did (the epoch's first batches again, in another "
        f"order if it shuffles) and the run's values differ from there on. {fix}"
    )


def _batch_size(loader: Any) -> int | None:
    batch_sampler = getattr(loader, "batch_sampler", None)
    size = getattr(batch_sampler, "batch_size", None) or getattr(loader, "batch_size", None)
    return int(size) if size else None


class DataPosition(pl.Callback):
    """On a mid-epoch resume, make the training loader's :class:`ResumableSampler` skip the
    batches the checkpoint's epoch already did, so the run continues on the next batch.

    A resume from the epoch's last batch, or from its end, starts the next epoch as usual;
    for a checkpoint written in ``on_train_epoch_end`` this works around Lightning 2.6, which
    would otherwise train one extra batch in the finished epoch
    (:func:`lossmix.utilities.compat.close_epoch_ended_in_checkpoint`).
    Loaders without a :class:`ResumableSampler` are left alone: Lightning then replays the
    epoch from its first batch, and this callback warns once, on rank 0
    (:class:`InexactResumeWarning`: what differs, and the fix) in place of Lightning's
    generic warning, which it hides until the first resumed batch.
    """

    def __init__(self) -> None:
        self._hidden: Any = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if close_epoch_ended_in_checkpoint(trainer):
            return  # the next epoch starts from its first batch
        done = resumed_mid_epoch(trainer)
        if not done:
            return
        loader = trainer.train_dataloader
        size = _batch_size(loader)
        for sampler in _resumable_samplers(loader):
            if size is not None:
                sampler.skip(done * size)
        self._hidden = hide_lightning_mid_epoch_warning()
        inexact = _inexact_samplers(loader)
        if inexact and trainer.is_global_zero:
            warnings.warn(
                _inexact_resume_message(
                    inexact, trainer.current_epoch, done, distributed=trainer.world_size > 1
                ),
                InexactResumeWarning,
                stacklevel=2,
            )

    def _show_lightning_warning(self) -> None:
        if self._hidden is not None:
            show_lightning_mid_epoch_warning(self._hidden)
            self._hidden = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._show_lightning_warning()  # Lightning has had its say by the first batch

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._show_lightning_warning()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._show_lightning_warning()


class RandomState(pl.Callback):
    """Save the global random streams in the checkpoint and restore them on resume.

    The state is kept as plain lists (``weights_only`` loading works).
    """

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "torch": torch.get_rng_state().tolist(),
            "python": _python_state(random.getstate()),
        }
        if torch.cuda.is_available() and _cuda_in_use():
            state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
        numpy = _numpy_state()
        if numpy is not None:
            state["numpy"] = numpy
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "torch" in state_dict:
            torch.set_rng_state(torch.tensor(state_dict["torch"], dtype=torch.uint8))
        if "python" in state_dict:
            version, internal, gauss = state_dict["python"]
            random.setstate((int(version), tuple(int(v) for v in internal), gauss))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state_dict["cuda"]])
        if "numpy" in state_dict:
            _set_numpy_state(state_dict["numpy"])


def _cuda_in_use() -> bool:
    """Whether this process has initialised CUDA (reading its generators would otherwise
    initialise it)."""
    initialized: Any = torch.cuda.is_initialized  # untyped in torch's stubs
    return bool(initialized())


def _python_state(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _numpy_state() -> list[Any] | None:
    try:
        import numpy as np
    except ImportError:  # NumPy is optional
        return None
    name, keys, pos, has_gauss, cached = cast(
        tuple[str, Any, int, int, float], np.random.get_state(legacy=True)
    )
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _set_numpy_state(state: list[Any]) -> None:
    try:
        import numpy as np
    except ImportError:
        return
    name, keys, pos, has_gauss, cached = state
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
