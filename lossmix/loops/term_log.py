"""The term-logging core every loop shares: one device buffer per step, one host read per interval.

A step writes its term values into a device buffer (one ``stack``) and adds them, times
the batch size, to a device accumulator: no host sync per term per step. The host reads
the buffers once per logging interval (:meth:`TermLog.flush_steps`) and once per epoch
(:meth:`TermLog.flush_epoch`), with one collective for every key of every group
together under ``torch.distributed``. Epoch means are exact: a lazy term's skipped steps
count in no mean (a key that ran on no step of the epoch is NaN, never 0).

Keys, the same in every loop (the Lightning app's): ``{stage}/loss`` (the total) and
``{stage}/loss/{term}``; for groups ``{stage}/loss/{group}`` and
``{stage}/loss/{group}/{term}``; raw values ``{stage}/raw/{term}`` (summed for the run's
summary, logged only with ``log_raw``); scheduled and learned weights
``{stage}/weight/{term}``. The Lightning :class:`~lossmix.lightning.TermLogger` and the
loop-agnostic :class:`~lossmix.loops.LoopLogger` are this class plus where the values go.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor

from lossmix.utilities.checks import check_int
from lossmix.utilities.distributed import all_reduce_sum, world_size

__all__ = ["EpochListener", "TermBuffer", "TermLog", "downsample", "epoch_means"]

EpochListener = Callable[[str, Mapping[str, tuple[float, float]]], None]
"""``listener(stage, {key: (mean, summed batch sizes)})`` after an epoch's means are read."""


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


def epoch_means(sums: Tensor, counts: Tensor) -> Tensor:
    """``sums / counts`` per key; a key that ran on no step of the epoch (a lazy term) is NaN.

    >>> epoch_means(torch.tensor([4.0, 0.0]), torch.tensor([2.0, 0.0]))
    tensor([2., nan])
    """
    return torch.where(counts > 0, sums / counts.clamp(min=1e-12), torch.full_like(sums, float("nan")))


@dataclass
class TermBuffer:
    """Per (stage, group): the latest step's values and the epoch's batch-weighted sums."""

    keys: list[str]
    last: Tensor | None = None
    fresh: bool = False
    sums: Tensor | None = None
    #: per key, the batch sizes of the steps with a lazy term skipped that it ran in
    masked: Tensor | None = None
    #: the summed batch sizes of the steps where every key ran (one device number)
    dense: Tensor | None = None
    prog_bar: set[str] = field(default_factory=set)
    #: keys summed for the summary but not logged (raw values without ``log_raw``)
    hidden: set[str] = field(default_factory=set)
    #: a resumed epoch's sums and counts so far (from a checkpoint), added at the first record
    carried: tuple[list[float], list[float]] | None = None

    def record(self, values: Tensor, batch_size: int | None, ran: Tensor | None = None) -> None:
        """Store one step (device ops only, in place: no host sync); ``None``: no epoch mean.

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
        if self.sums is None:
            self.sums = torch.zeros_like(values)
            self.dense = values.new_zeros(())
            if self.carried is not None:
                sums, counts = self.carried
                self.sums = torch.tensor(sums, dtype=values.dtype, device=values.device)
                self.masked = torch.tensor(counts, dtype=values.dtype, device=values.device)
        self.carried = None
        if ran is None:
            self.sums.add_(values, alpha=size)
            cast(Tensor, self.dense).add_(size)
            return
        self.sums.addcmul_(values, ran, value=size)
        self.masked = ran * size if self.masked is None else self.masked.add_(ran, alpha=size)

    def counts(self) -> Tensor:
        """Per key, the summed batch sizes of the steps it ran in this epoch."""
        assert self.sums is not None and self.dense is not None
        if self.masked is None:
            return self.dense.expand_as(self.sums)
        return self.masked + self.dense

    def reset_epoch(self) -> None:
        self.sums, self.masked, self.dense, self.fresh, self.carried = None, None, None, False, None


class TermLog:
    """Buffers :class:`~lossmix.LossResult` values per (stage, group) and reads them in bulk.

    Args:
        log_raw: also log each term's value before its weight (``{stage}/raw/{term}``) and
            its weight (``{stage}/weight/{term}``).
        max_points: points kept per curve in :attr:`history` (halved when exceeded).
    """

    def __init__(self, log_raw: bool = False, max_points: int = 2000) -> None:
        self.log_raw = log_raw
        self.max_points = check_int(type(self).__name__, "max_points", max_points, min=4)
        self.buffers: dict[tuple[str, str | None], TermBuffer] = {}
        #: every value read, as plain floats: key → ``[[step, value], ...]`` (the curves)
        self.history: dict[str, list[list[float]]] = {}
        #: per stage, the last epoch's ``{key: (mean, summed batch sizes)}``, raw values included
        self.epoch_summary: dict[str, dict[str, tuple[float, float]]] = {}
        self._masks: dict[tuple[tuple[bool, ...], torch.device], Tensor] = {}
        self._epoch_listeners: list[EpochListener] = []

    # -- recording -------------------------------------------------------------------------------
    def record(self, stage: str, group: str | None, result: Any, batch_size: int | None) -> None:
        """Buffer one step's :class:`~lossmix.LossResult` under ``stage``/``group`` (device ops
        only); ``batch_size`` weighs the step in the epoch means (``None``: in none)."""
        prefix = f"{stage}/loss" + (f"/{group}" if group else "")
        names = list(result.terms)
        values = [result.total, *result.terms.values()]
        keys = [prefix, *(f"{prefix}/{n}" for n in names)]
        raw_prefix = f"{stage}/raw" + (f"/{group}" if group else "")
        # raw values are always summed for the run's summary; logged only with log_raw
        values += list(result.raw.values())
        keys += [f"{raw_prefix}/{n}" for n in result.raw]
        weight_prefix = f"{stage}/weight" + (f"/{group}" if group else "")
        weighted = names if self.log_raw else list(result.dynamic)
        values += [_as_tensor(result.weights[n], result.total) for n in weighted]
        keys += [f"{weight_prefix}/{n}" for n in weighted]
        buffer = self.buffers.get((stage, group))
        if buffer is None:
            hidden = set() if self.log_raw else {k for k in keys if k.startswith(raw_prefix + "/")}
            buffer = self.buffers[(stage, group)] = TermBuffer(keys, prog_bar={prefix}, hidden=hidden)
        elif buffer.keys != keys:
            raise RuntimeError(
                f"lossmix: the terms logged under '{prefix}' changed from {buffer.keys} to {keys}; "
                "every term must be computed (or return a connected zero) on every step."
            )
        with torch.no_grad():  # a copy for the log: no autograd node
            stacked = torch.stack(values).float()
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
        """Buffer step values ``{stage}/{kind}/{name}`` (no epoch mean); read at the next
        logging point with the terms, in the same collective."""
        keys = [f"{stage}/{kind}/{n}" for n in names]
        buffer = self.buffers.get((stage, f"#{kind}"))
        if buffer is None or buffer.keys != keys:
            buffer = self.buffers[(stage, f"#{kind}")] = TermBuffer(keys)
        buffer.record(values.detach().float(), None)

    # -- reading ---------------------------------------------------------------------------------
    def flush_steps(self, stage: str = "train") -> tuple[list[TermBuffer], list[float]]:
        """The latest step values of ``stage``'s buffers written since the last read, averaged
        over ranks: one collective and one device→host copy for every key together."""
        buffers = [b for (s, _), b in self.buffers.items() if s == stage and b.fresh and b.last is not None]
        if not buffers:
            return [], []
        stacked = torch.cat([cast(Tensor, b.last) for b in buffers])
        values = (all_reduce_sum(stacked) / world_size()).tolist()
        for b in buffers:
            b.fresh = False
        return buffers, values

    def flush_epoch(
        self, stage: str, emit: Callable[[list[TermBuffer], list[float]], None] | None = None
    ) -> tuple[list[TermBuffer], list[float]]:
        """Close ``stage``'s epoch: its batch-weighted means over ranks (one collective, one
        read), kept in :attr:`epoch_summary`, handed to ``emit``, then to the listeners."""
        buffers = [b for (s, _), b in self.buffers.items() if s == stage and b.sums is not None]
        if not buffers:
            return [], []
        # sums and counts of every key of every group travel in one collective
        sums = torch.cat([cast(Tensor, b.sums) for b in buffers])
        counts = torch.cat([b.counts() for b in buffers])
        stacked = all_reduce_sum(torch.cat([sums, counts]))
        reduced_counts = stacked[len(sums) :]
        means, count_list = torch.stack(
            [epoch_means(stacked[: len(sums)], reduced_counts), reduced_counts]
        ).tolist()  # one read
        self.epoch_summary[stage] = {
            k: (m, c) for (k, _, _), m, c in zip(entries(buffers, means), means, count_list, strict=True)
        }
        for b in buffers:
            b.reset_epoch()
        if emit is not None:
            emit(buffers, means)
        for listener in self._epoch_listeners:
            listener(stage, self.epoch_summary[stage])
        return buffers, means

    def on_epoch_summary(self, listener: EpochListener) -> None:
        """Call ``listener(stage, {key: (mean, count)})`` after each epoch's means are read
        (the values a plateau schedule follows: already read, so no further host sync)."""
        if listener not in self._epoch_listeners:
            self._epoch_listeners.append(listener)

    def reset(self, stage: str) -> None:
        """Forget ``stage``'s epoch sums so far (a new epoch, a sanity check)."""
        for (s, _), buffer in self.buffers.items():
            if s == stage:
                buffer.reset_epoch()

    # -- history and resuming ---------------------------------------------------------------------
    def remember(self, step: int, keys: list[str], values: list[float]) -> None:
        """Add the values read at ``step`` to :attr:`history` (a curve over ``max_points`` halved)."""
        for key, value in zip(keys, values, strict=True):
            series = self.history.setdefault(key, [])
            series.append([float(step), value])
            if len(series) > self.max_points:
                series[:] = downsample(series)

    def open_sums(self, stage: str = "train", epoch: int = 0) -> list[dict[str, Any]]:
        """``stage``'s epoch sums so far as plain containers, for a mid-epoch checkpoint (one
        host read, at save time only): a resumed run's epoch means then count every batch."""
        return [
            {
                "stage": s,
                "group": group,
                "keys": list(b.keys),
                "epoch": epoch,
                "sums": b.sums.tolist(),
                "counts": b.counts().tolist(),
            }
            for (s, group), b in self.buffers.items()
            if s == stage and b.sums is not None
        ]

    def carry(self, entry: Mapping[str, Any]) -> None:
        """Take up an :meth:`open_sums` entry: its sums join the next record's."""
        key = (str(entry["stage"]), entry["group"])
        buffer = self.buffers.get(key)
        if buffer is None:
            prefix = entry["keys"][0]
            raw = f"{entry['stage']}/raw/"
            hidden = set() if self.log_raw else {k for k in entry["keys"] if k.startswith(raw)}
            buffer = self.buffers[key] = TermBuffer(list(entry["keys"]), prog_bar={prefix}, hidden=hidden)
        buffer.carried = (list(entry["sums"]), list(entry["counts"]))


def entries(buffers: list[TermBuffer], values: list[float]) -> list[tuple[str, float, bool]]:
    """``(key, value, hidden)`` for every key of ``buffers``, in order."""
    keys = [(k, k in b.hidden) for b in buffers for k in b.keys]
    return [(k, v, hide) for (k, hide), v in zip(keys, values, strict=True)]


def _as_tensor(value: Any, like: Tensor) -> Tensor:
    return value if isinstance(value, Tensor) else like.new_tensor(float(value))
