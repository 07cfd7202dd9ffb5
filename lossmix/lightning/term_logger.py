"""Constant-cost term logging: one device buffer per step, one host read per logging point.

Lightning's ``self.log`` costs about 0.6 ms of Python per key per step, and
``sync_dist=True`` one barrier and one all-reduce per key (Lightning 2.6's
``trainer/connectors/logger_connector/result.py``; measured on an H100 host).
Here a step only writes the term values into a device buffer (one ``stack``) and
adds them, times the batch size, to a device accumulator. The host reads the
buffer once per logging interval (``Trainer(log_every_n_steps=...)``) and at
epoch end, with one collective for every key of every group together, and hands
plain floats to ``self.log`` with ``sync_dist=False`` (they are already
reduced), so they still reach every logger and ``trainer.callback_metrics``.

Keys: ``{stage}/loss`` (the total, on the progress bar) and ``{stage}/loss/{term}``;
for groups ``{stage}/loss/{group}`` and ``{stage}/loss/{group}/{term}``. Training
logs step values under those keys at each logging point and on the last batch of
each epoch (so ``trainer.callback_metrics`` holds them after any run, however short),
and epoch means (weighted
by batch size) under ``<key>_epoch``; validation and test log epoch means under
the keys themselves, so ``ModelCheckpoint(monitor="val/loss/cls")`` works.
Scheduled and learned weights are logged as ``{stage}/weight/{term}``; callbacks
add step values of their own (``train/grad_norm/{term}``) with
:meth:`TermLogger.record_values`. Every value flushed is also kept, as plain
floats, in :attr:`TermLogger.history` (``LossCurves`` draws it; it is checkpointed).

The buffering itself is :class:`lossmix.loops.term_log.TermLog`, which every other loop
(plain PyTorch, Fabric, Hugging Face) shares; this callback adds Lightning's hooks and
``self.log``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

from lossmix.loops.term_log import TermBuffer, TermLog, downsample, entries, epoch_means
from lossmix.utilities.compat import fast_dev_run, logging_due, resumed_mid_epoch
from lossmix.utilities.distributed import all_reduce_sum, collective_count

__all__ = [
    "SUMMARY_PREFIX",
    "TermBuffer",
    "TermLogger",
    "all_reduce_sum",
    "collective_count",
    "downsample",
    "summary_from_metrics",
]

#: the prefix of the epoch summary's entries in ``trainer.callback_metrics``
#: (read back by :func:`summary_from_metrics`)
SUMMARY_PREFIX = "lossmix_summary/"


# The values this callback logs at epoch level are reduced over ranks already.
warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(train|val|test|predict)/")


class TermLogger(TermLog, pl.Callback):
    """Flushes :class:`~lossmix.CompositeLoss`'s term buffers to Lightning's loggers.

    Installed automatically by ``CompositeLoss`` (through ``configure_callbacks``,
    or on first use); add it to ``Trainer(callbacks=...)`` yourself only to set
    ``log_raw``.

    Args:
        log_raw: also log each term's value before its weight as ``{stage}/raw/{term}``
            and its weight as ``{stage}/weight/{term}``.
        max_points: points kept per curve in :attr:`history`.
    """

    def __init__(self, log_raw: bool = False, max_points: int = 2000) -> None:
        super().__init__(log_raw=log_raw, max_points=max_points)
        self._pending: list[dict[str, Any]] = []
        self._epoch = 0
        self._step = 0

    # -- checkpointing ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "history": {k: [list(p) for p in v] for k, v in self.history.items()},
            "pending": self.open_sums("train", self._epoch),
            "step": self._step,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {k: [list(p) for p in v] for k, v in state_dict.get("history", {}).items()}
        self._pending = list(state_dict.get("pending", []))
        self._step = int(state_dict.get("step", 0))

    # -- flushing -------------------------------------------------------------------------------
    def _log(
        self,
        pl_module: pl.LightningModule,
        buffers: list[TermBuffer],
        values: list[float],
        *,
        suffix: str,
        on_step: bool,
    ) -> None:
        trainer = pl_module.trainer
        self._step = trainer.global_step
        shown = [(k, v) for k, v, hide in entries(buffers, values) if not hide]
        self.remember(trainer.global_step, [k + suffix for k, _ in shown], [v for _, v in shown])
        position = 0
        for buffer in buffers:
            for key in buffer.keys:
                if key in buffer.hidden:
                    position += 1
                    continue
                pl_module.log(
                    key + suffix,
                    values[position],
                    on_step=on_step,
                    on_epoch=not on_step,
                    prog_bar=key in buffer.prog_bar and suffix == "",
                    batch_size=1,
                    sync_dist=False,
                )
                position += 1

    def _flush_steps(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        buffers, values = self.flush_steps("train")
        if buffers:
            self._log(pl_module, buffers, values, suffix="", on_step=True)

    def _flush_epoch(self, pl_module: pl.LightningModule, stage: str, suffix: str) -> None:
        def emit(buffers: list[TermBuffer], means: list[float]) -> None:
            self._log(pl_module, buffers, means, suffix=suffix, on_step=False)
            _publish_summary(pl_module, stage, self.epoch_summary[stage])

        self.flush_epoch(stage, emit)

    # -- Lightning hooks ------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if logging_due(trainer) or fast_dev_run(trainer) or _last_step(trainer):
            self._flush_steps(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush_epoch(pl_module, "train", "_epoch")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:  # Lightning's check of the loop, not a result: not logged
            self.reset("val")
            return
        self._flush_epoch(pl_module, "val", "")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush_epoch(pl_module, "test", "")

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.reset("val")

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.reset("test")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.reset("train")
        self._epoch = trainer.current_epoch

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning calls no on_train_epoch_start for the epoch a fit resumes in, so a
        # resumed checkpoint's epoch sums are taken up here.
        self._epoch = trainer.current_epoch
        pending, self._pending = self._pending, []
        for entry in pending:
            if int(entry["epoch"]) == self._epoch and resumed_mid_epoch(trainer):
                self.carry(entry)
            elif any(c > 0 for c in entry["counts"]):  # its epoch ended in the checkpoint's batch
                self._log_closed_epoch(trainer, entry)

    def _log_closed_epoch(self, trainer: pl.Trainer, entry: dict[str, Any]) -> None:
        """The epoch means of an epoch whose last batch wrote the checkpoint (Lightning does
        not run its epoch-end hooks after the resume), logged at the step they belong to."""
        # the same float32 division as an epoch end's flush
        means = epoch_means(torch.tensor(entry["sums"]), torch.tensor(entry["counts"])).tolist()
        metrics = {f"{k}_epoch": m for k, m in zip(entry["keys"], means, strict=True)}
        self.remember(self._step, list(metrics), list(metrics.values()))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=self._step)


def _last_step(trainer: pl.Trainer) -> bool:
    """The epoch's (or the run's) last batch: its step values reach ``callback_metrics`` even
    between logging points, as ``self.log`` would leave them (one more host read per epoch)."""
    if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
        return True
    return trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps


def _publish_summary(
    pl_module: pl.LightningModule, stage: str, summary: Mapping[str, tuple[float, float]]
) -> None:
    """The epoch summary into ``trainer.callback_metrics`` (already read: no sync) when the run
    trains in spawned processes (``strategy=ddp_spawn``): that dict is the one thing they send
    back to the main process, whose own :class:`TermLogger` never saw a step. Two scalar
    entries per key (``.../mean``, ``.../count``), so code reading every metric with
    ``.item()`` still works; a run in this process publishes nothing."""
    trainer = getattr(pl_module, "_trainer", None)
    if trainer is None or not spawned(trainer):
        return
    metrics = trainer.callback_metrics
    for key, (mean, count) in summary.items():
        metrics[f"{SUMMARY_PREFIX}{stage}/{key}/mean"] = torch.tensor(mean, dtype=torch.float64)
        metrics[f"{SUMMARY_PREFIX}{stage}/{key}/count"] = torch.tensor(count, dtype=torch.float64)


def spawned(trainer: pl.Trainer) -> bool:
    """Whether ``trainer`` trains in processes it spawned (``strategy=ddp_spawn``)."""
    return isinstance(getattr(trainer.strategy, "launcher", None), _MultiProcessingLauncher)


def summary_from_metrics(metrics: Mapping[str, Any], stage: str) -> dict[str, tuple[float, float]]:
    """``{key: (mean, count)}`` of ``stage`` from ``callback_metrics`` (what a spawned run sent back)."""
    prefix = f"{SUMMARY_PREFIX}{stage}/"
    found: dict[str, tuple[float, float]] = {}
    for name, value in metrics.items():
        if name.startswith(prefix) and name.endswith("/mean"):
            key = name[len(prefix) : -len("/mean")]
            count = metrics.get(f"{prefix}{key}/count", 0.0)
            found[key] = (float(torch.as_tensor(value)), float(torch.as_tensor(count)))
    return found
