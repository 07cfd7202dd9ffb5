"""``LoopLogger``: per-term logging for any training loop (plain PyTorch, Fabric, Hugging Face).

It is :class:`~lossmix.loops.term_log.TermLog` (the buffering core the Lightning
``TermLogger`` uses too) plus sinks: each :meth:`~LoopLogger.update` costs one ``stack``
on the device, the host reads every term once per ``every`` steps (one collective under
``torch.distributed``), and the values go to each sink under the Lightning app's keys.

Example:
    >>> import torch
    >>> from lossmix import LossMix
    >>> from lossmix.loops import LoopLogger
    >>> mix = LossMix.from_config({"a": {"type": "L1Loss", "inputs": {"pred": "p", "target": "y"}}})
    >>> seen = []
    >>> logger = LoopLogger(seen.append, every=2)
    >>> for step in range(4):
    ...     logger.update(mix({"p": torch.full((2,), float(step))}, {"y": torch.zeros(2)}, step=step))
    >>> seen
    [{'train/loss': 1.0, 'train/loss/a': 1.0}, {'train/loss': 3.0, 'train/loss/a': 3.0}]
    >>> logger.end_epoch()
    {'train/loss_epoch': 1.5, 'train/loss/a_epoch': 1.5}
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lossmix.loops.loss_plot import plot_loss_curves
from lossmix.loops.sinks import Sink, as_sink
from lossmix.loops.term_log import TermBuffer, TermLog, entries
from lossmix.loops.term_summary import print_summary, term_summary
from lossmix.mix.loss_mix import LossMix
from lossmix.utilities.checks import check_int
from lossmix.utilities.distributed import rank

__all__ = ["LoopLogger"]


class LoopLogger(TermLog):
    """Buffers each step's :class:`~lossmix.LossResult` and hands the values to ``sinks``.

    Keys: ``train/loss``, ``train/loss/{term}`` (step values, every ``every`` steps),
    ``train/loss/{term}_epoch`` (epoch means, :meth:`end_epoch`), ``val/loss/{term}``
    (validation means), ``train/weight/{term}`` for scheduled and learned weights.

    Args:
        *sinks: where values go: a callable taking a dict (``fabric.log_dict``,
            ``wandb.log``, ``accelerator.log``), a ``SummaryWriter``, or a ``.csv`` path
            (:mod:`lossmix.loops.sinks`). Called on rank 0 only.
        every: read and send the step values every ``every`` training steps.
        log_raw: also log each term before its weight (``train/raw/{term}``) and its weight.
        max_points: points kept per curve in :attr:`history`.
    """

    def __init__(self, *sinks: Any, every: int = 50, log_raw: bool = False, max_points: int = 2000) -> None:
        super().__init__(log_raw=log_raw, max_points=max_points)
        self.sinks: list[Sink] = [as_sink(s) for s in sinks]
        self.every = check_int("LoopLogger", "every", every, min=1)
        #: the step of the last training update
        self.step = -1
        #: every value sent so far, latest first: what the summary reads for val and weights
        self.latest: dict[str, float] = {}
        self._flushed_step = -1

    def update(
        self,
        result: Any,
        *,
        step: int | None = None,
        batch_size: int | None = None,
        stage: str = "train",
        group: str | None = None,
    ) -> None:
        """Buffer one step's result (no host sync); every ``every`` training steps, send.

        Args:
            result: what ``mix(outputs, batch, step=...)`` returned.
            step: the training step (default: one more than the last); the values read at
                step ``k`` are sent when ``(k + 1) % every == 0``, once per step.
            batch_size: this step's weight in the epoch means (default 1: a plain mean).
            stage: ``train``, or ``val``/``test`` for evaluation results (means only).
            group: the group of terms ``result`` holds (a GAN's ``gen``/``disc``).
        """
        self.record(stage, group, result, 1 if batch_size is None else batch_size)
        if stage != "train":
            return
        self.step = self.step + 1 if step is None else step
        if (self.step + 1) % self.every == 0 and self._flushed_step != self.step:
            self.flush()

    def flush(self) -> dict[str, float]:
        """Send the training values buffered since the last read, now (one read)."""
        buffers, values = self.flush_steps("train")
        self._flushed_step = self.step
        return self._send(buffers, values, "")

    def end_epoch(self, stage: str = "train") -> dict[str, float]:
        """Close ``stage``'s epoch: its means (over the steps each term ran, weighted by batch
        size), sent as ``{key}_epoch`` for training and ``{key}`` for evaluation stages."""
        if stage == "train" and self._flushed_step != self.step:
            self.flush()  # the epoch's last step values, as the Lightning logger leaves them
        sent: dict[str, float] = {}

        def emit(buffers: list[TermBuffer], means: list[float]) -> None:
            sent.update(self._send(buffers, means, "_epoch" if stage == "train" else ""))

        self.flush_epoch(stage, emit)
        return sent

    def _send(self, buffers: list[TermBuffer], values: list[float], suffix: str) -> dict[str, float]:
        shown = {k + suffix: v for k, v, hide in entries(buffers, values) if not hide}
        if not shown:
            return shown
        step = max(self.step, 0)
        self.remember(step, list(shown), list(shown.values()))
        self.latest.update(shown)
        if rank() == 0:
            for sink in self.sinks:
                sink(shown, step)
        return shown

    def finish(
        self, mix: LossMix, *, curves: str | Path | None = "loss_curves.png", show: bool = True
    ) -> list[dict[str, Any]]:
        """End of run: close the open training epoch, print the per-term summary table and
        write the curves PNG (on rank 0), the same as the Lightning app's.

        Returns:
            the summary's rows (:func:`~lossmix.loops.term_summary.term_summary`).
        """
        if any(s == "train" and b.sums is not None for (s, _), b in self.buffers.items()):
            self.end_epoch("train")
        rows = term_summary(mix, self.epoch_summary.get("train", {}), self.latest)
        if rank() == 0:
            written = plot_loss_curves(self.history, curves) if curves is not None else None
            if show:
                print_summary(rows, Path(written).parent if written is not None else None)
        return rows

    # -- checkpointing --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain containers: the curves, the step, the latest values and the open epoch's sums."""
        return {
            "history": {k: [list(p) for p in v] for k, v in self.history.items()},
            "step": self.step,
            "latest": dict(self.latest),
            "pending": self.open_sums("train"),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the open epoch's sums join the next step's, so its means count every batch."""
        self.history = {k: [list(p) for p in v] for k, v in state.get("history", {}).items()}
        self.step = self._flushed_step = int(state.get("step", -1))
        self.latest = dict(state.get("latest", {}))
        for entry in state.get("pending", []):
            self.carry(entry)
