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
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import lightning.pytorch as pl
import torch
from torch import Tensor

from lossmix.utilities.checks import check_int
from lossmix.utilities.compat import fast_dev_run, logging_due, resumed_mid_epoch
from lossmix.utilities.distributed import all_reduce_sum, collective_count, world_size

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


def downsample(series: list[list[float]]) -> list[list[float]]:
    """Halve a ``[[step, value], ...]`` series: neighbours merged (their mean step and value),
    the first and the last point kept as they are, so the curve still spans the whole run.

    >>> downsample([[0, 1.0], [1, 3.0], [2, 5.0], [3, 7.0], [4, 9.0], [5, 0.0]])
    [[0, 1.0], [1.5, 4.0], [3.5, 8.0], [5, 0.0]]
    """
    first, middle, last = series[0], series[1:-1], series[-1]
    merged = [[(a[0] + b[0]) / 2, (a[1] + b[1]) / 2] for a, b in zip(middle[::2], middle[1::2], strict=False)]
    if len(middle) % 2:
        merged.append(middle[-1])
    return [first, *merged, last]


# The values this callback logs at epoch level are reduced over ranks already.
warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(train|val|test|predict)/")


@dataclass
class TermBuffer:
    """Per (stage, group): the latest step's values and the epoch's batch-weighted sums."""

    keys: list[str]
    last: Tensor | None = None
    fresh: bool = False
    sums: Tensor | None = None
    #: per key, the batch sizes of the steps it ran in this epoch (lazy terms skip some)
    counts: Tensor | None = None
    prog_bar: set[str] = field(default_factory=set)
    #: keys summed for the summary but not logged (raw values without ``log_raw``)
    hidden: set[str] = field(default_factory=set)
    #: a resumed epoch's sums and counts so far (from the checkpoint), added at the first record
    carried: tuple[list[float], list[float]] | None = None

    def record(self, values: Tensor, batch_size: int | None, ran: Tensor | None = None) -> None:
        """Store one step (device ops only: no host sync); ``None``: no epoch mean.

        ``ran`` (1 or 0 per key) marks the values of this step's computed terms: a lazy
        term's skipped step keeps its last value, and counts in no epoch mean.
        """
        if ran is None or self.last is None:
            self.last = values
        else:
            self.last = torch.where(ran > 0, values, self.last)
        self.fresh = True
        if batch_size is None:
            return
        size = float(batch_size)
        count = torch.full_like(values, size) if ran is None else ran * size
        weighted = values * count
        if self.sums is None and self.carried is not None:
            sums, counts = self.carried
            self.sums = torch.tensor(sums, dtype=weighted.dtype, device=weighted.device)
            self.counts = torch.tensor(counts, dtype=weighted.dtype, device=weighted.device)
        self.carried = None
        self.sums = weighted if self.sums is None else self.sums + weighted
        self.counts = count if self.counts is None else self.counts + count

    def reset_epoch(self) -> None:
        self.sums, self.counts, self.fresh, self.carried = None, None, False, None


class TermLogger(pl.Callback):
    """Flushes :class:`~lossmix.CompositeLoss`'s term buffers to Lightning's loggers.

    Installed automatically by ``CompositeLoss`` (through ``configure_callbacks``,
    or on first use); add it to ``Trainer(callbacks=...)`` yourself only to set
    ``log_raw``.

    Args:
        log_raw: also log each term's value before its weight as ``{stage}/raw/{term}``
            and its weight as ``{stage}/weight/{term}``.
    """

    def __init__(self, log_raw: bool = False, max_points: int = 2000) -> None:
        self.log_raw = log_raw
        self.max_points = check_int("TermLogger", "max_points", max_points, min=4)
        self.buffers: dict[tuple[str, str | None], TermBuffer] = {}
        self.history: dict[str, list[list[float]]] = {}
        self._pending: list[dict[str, Any]] = []
        self._epoch = 0
        self._step = 0
        self._masks: dict[tuple[tuple[bool, ...], torch.device], Tensor] = {}
        #: per stage, the last epoch's ``{key: (mean, summed batch sizes)}``, raw values included
        self.epoch_summary: dict[str, dict[str, tuple[float, float]]] = {}
        self._epoch_listeners: list[Callable[[str, Mapping[str, tuple[float, float]]], None]] = []

    # -- recording (called by CompositeLoss.compute_loss) ---------------------------------------
    def record(self, stage: str, group: str | None, result: Any, batch_size: int) -> None:
        """Buffer one step's :class:`~lossmix.LossResult` under ``stage``/``group``."""
        buffer = self.buffers.get((stage, group))
        names = list(result.terms)
        prefix = f"{stage}/loss" + (f"/{group}" if group else "")
        values = [result.total, *result.terms.values()]
        keys = [prefix, *(f"{prefix}/{n}" for n in names)]
        raw_prefix = f"{stage}/raw" + (f"/{group}" if group else "")
        # raw values are always summed for the run's summary; logged only with log_raw
        values += list(result.raw.values())
        keys += [f"{raw_prefix}/{n}" for n in result.raw]
        if self.log_raw:
            weight_prefix = f"{stage}/weight" + (f"/{group}" if group else "")
            values += [_as_tensor(w, result.total) for w in result.weights.values()]
            keys += [f"{weight_prefix}/{n}" for n in names]
        elif result.dynamic:
            weight_prefix = f"{stage}/weight" + (f"/{group}" if group else "")
            values += [_as_tensor(result.weights[n], result.total) for n in result.dynamic]
            keys += [f"{weight_prefix}/{n}" for n in result.dynamic]
        if buffer is None:
            hidden = set() if self.log_raw else {k for k in keys if k.startswith(raw_prefix + "/")}
            buffer = self.buffers[(stage, group)] = TermBuffer(keys, prog_bar={prefix}, hidden=hidden)
        elif buffer.keys != keys:
            raise RuntimeError(
                f"lossmix: the terms logged under '{prefix}' changed from {buffer.keys} to {keys}; "
                "every term must be computed (or return a connected zero) on every step."
            )
        stacked = torch.stack(values).detach().float()
        buffer.record(stacked, batch_size, self._ran(keys, prefix, result.skipped, stacked.device))

    def _ran(
        self, keys: list[str], prefix: str, skipped: tuple[str, ...], device: torch.device
    ) -> Tensor | None:
        """1/0 per key: whether its term ran this step (``None``: all did). Cached per pattern,
        so a step with lazy terms costs no new host-to-device copy once the pattern is known."""
        if not skipped:
            return None
        names = set(skipped)
        pattern = tuple(k == prefix or k.rpartition("/")[2] not in names for k in keys)
        cached = self._masks.get((pattern, device))
        if cached is None:
            cached = self._masks[(pattern, device)] = torch.tensor(
                pattern, dtype=torch.float32, device=device
            )
        return cached

    def record_values(self, stage: str, kind: str, names: list[str], values: Tensor) -> None:
        """Buffer step values ``{stage}/{kind}/{name}`` (no epoch mean); flushed at the next
        logging point with the terms, in the same collective."""
        keys = [f"{stage}/{kind}/{n}" for n in names]
        buffer = self.buffers.get((stage, f"#{kind}"))
        if buffer is None or buffer.keys != keys:
            buffer = self.buffers[(stage, f"#{kind}")] = TermBuffer(keys)
        buffer.record(values.detach().float(), None)

    # -- history (for LossCurves) and checkpointing ---------------------------------------------
    def _remember(self, step: int, keys: list[str], values: list[float]) -> None:
        for key, value in zip(keys, values, strict=True):
            series = self.history.setdefault(key, [])
            series.append([float(step), value])
            if len(series) > self.max_points:
                series[:] = downsample(series)

    def state_dict(self) -> dict[str, Any]:
        # A mid-epoch checkpoint also keeps the epoch's sums so far (one host read, at save
        # time only): a resumed run's epoch means then count every batch of the epoch.
        pending = [
            {
                "stage": stage,
                "group": group,
                "keys": list(b.keys),
                "epoch": self._epoch,
                "sums": b.sums.tolist(),
                "counts": cast(Tensor, b.counts).tolist(),
            }
            for (stage, group), b in self.buffers.items()
            if stage == "train" and b.sums is not None
        ]
        return {
            "history": {k: [list(p) for p in v] for k, v in self.history.items()},
            "pending": pending,
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
        shown = [(k, v) for k, v, hide in _entries(buffers, values) if not hide]
        self._remember(trainer.global_step, [k + suffix for k, _ in shown], [v for _, v in shown])
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
        buffers = [
            b for (stage, _), b in self.buffers.items() if stage == "train" and b.fresh and b.last is not None
        ]
        if not buffers:
            return
        stacked = torch.cat([cast(Tensor, b.last) for b in buffers])
        values = (all_reduce_sum(stacked) / world_size()).tolist()
        for b in buffers:
            b.fresh = False
        self._log(pl_module, buffers, values, suffix="", on_step=True)

    def _flush_epoch(self, pl_module: pl.LightningModule, stage: str, suffix: str) -> None:
        buffers = [b for (s, _), b in self.buffers.items() if s == stage and b.sums is not None]
        if not buffers:
            return
        # sums and counts of every key of every group travel in one collective
        sums = torch.cat([cast(Tensor, b.sums) for b in buffers])
        counts = torch.cat([cast(Tensor, b.counts) for b in buffers])
        stacked = all_reduce_sum(torch.cat([sums, counts]))
        reduced_counts = stacked[len(sums) :]
        means, count_list = torch.stack(
            [_means(stacked[: len(sums)], reduced_counts), reduced_counts]
        ).tolist()  # one read
        self.epoch_summary[stage] = {
            k: (m, c) for (k, _, _), m, c in zip(_entries(buffers, means), means, count_list, strict=True)
        }
        for b in buffers:
            b.reset_epoch()
        self._log(pl_module, buffers, means, suffix=suffix, on_step=False)
        _publish_summary(pl_module, stage, self.epoch_summary[stage])
        for listener in self._epoch_listeners:
            listener(stage, self.epoch_summary[stage])

    def on_epoch_summary(self, listener: Callable[[str, Mapping[str, tuple[float, float]]], None]) -> None:
        """Call ``listener(stage, {key: (mean, count)})`` after each epoch's means are logged
        (the values a plateau schedule follows: already read, so no further host sync)."""
        if listener not in self._epoch_listeners:
            self._epoch_listeners.append(listener)

    # -- Lightning hooks ------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if logging_due(trainer) or fast_dev_run(trainer) or _last_step(trainer):
            self._flush_steps(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush_epoch(pl_module, "train", "_epoch")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:  # Lightning's check of the loop, not a result: not logged
            self._reset("val")
            return
        self._flush_epoch(pl_module, "val", "")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush_epoch(pl_module, "test", "")

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset("val")

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset("test")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset("train")
        self._epoch = trainer.current_epoch

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning calls no on_train_epoch_start for the epoch a fit resumes in, so a
        # resumed checkpoint's epoch sums are taken up here.
        self._epoch = trainer.current_epoch
        pending, self._pending = self._pending, []
        for entry in pending:
            if int(entry["epoch"]) == self._epoch and resumed_mid_epoch(trainer):
                key = (entry["stage"], entry["group"])
                buffer = self.buffers.get(key)
                if buffer is None:
                    prefix = entry["keys"][0]
                    buffer = self.buffers[key] = TermBuffer(list(entry["keys"]), prog_bar={prefix})
                buffer.carried = (list(entry["sums"]), list(entry["counts"]))
            elif any(c > 0 for c in entry["counts"]):  # its epoch ended in the checkpoint's batch
                self._log_closed_epoch(trainer, entry)

    def _log_closed_epoch(self, trainer: pl.Trainer, entry: dict[str, Any]) -> None:
        """The epoch means of an epoch whose last batch wrote the checkpoint (Lightning does
        not run its epoch-end hooks after the resume), logged at the step they belong to."""
        # the same float32 division as an epoch end's flush
        means = _means(torch.tensor(entry["sums"]), torch.tensor(entry["counts"])).tolist()
        metrics = {f"{k}_epoch": m for k, m in zip(entry["keys"], means, strict=True)}
        self._remember(self._step, list(metrics), list(metrics.values()))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=self._step)

    def _reset(self, stage: str) -> None:
        for (s, _), buffer in self.buffers.items():
            if s == stage:
                buffer.reset_epoch()


def _entries(buffers: list[TermBuffer], values: list[float]) -> list[tuple[str, float, bool]]:
    """``(key, value, hidden)`` for every key of ``buffers``, in order."""
    keys = [(k, k in b.hidden) for b in buffers for k in b.keys]
    return [(k, v, hide) for (k, hide), v in zip(keys, values, strict=True)]


def _means(sums: Tensor, counts: Tensor) -> Tensor:
    """Epoch means; a key that ran on no step of the epoch (a lazy term) is NaN, not 0."""
    return torch.where(counts > 0, sums / counts.clamp(min=1e-12), torch.full_like(sums, float("nan")))


def _last_step(trainer: pl.Trainer) -> bool:
    """The epoch's (or the run's) last batch: its step values reach ``callback_metrics`` even
    between logging points, as ``self.log`` would leave them (one more host read per epoch)."""
    if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
        return True
    return trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps


def _as_tensor(value: Any, like: Tensor) -> Tensor:
    return value if isinstance(value, Tensor) else like.new_tensor(float(value))


def _publish_summary(
    pl_module: pl.LightningModule, stage: str, summary: Mapping[str, tuple[float, float]]
) -> None:
    """The epoch summary into ``trainer.callback_metrics`` (already read: no sync), the one
    dict a spawned process (``strategy=ddp_spawn``) sends back to the main process, whose own
    :class:`TermLogger` never saw a step."""
    trainer = getattr(pl_module, "_trainer", None)
    if trainer is None:
        return
    metrics = trainer.callback_metrics
    for key, (mean, count) in summary.items():
        metrics[f"{SUMMARY_PREFIX}{stage}/{key}"] = torch.tensor([mean, count], dtype=torch.float64)


def summary_from_metrics(metrics: Mapping[str, Any], stage: str) -> dict[str, tuple[float, float]]:
    """``{key: (mean, count)}`` of ``stage`` from ``callback_metrics`` (what a spawned run sent back)."""
    prefix = f"{SUMMARY_PREFIX}{stage}/"
    found: dict[str, tuple[float, float]] = {}
    for name, value in metrics.items():
        if name.startswith(prefix):
            mean, count = torch.as_tensor(value).tolist()
            found[name[len(prefix) :]] = (float(mean), float(count))
    return found
