"""``LossCurves``: a PNG of every term's curve and of the effective weights
(:func:`lossmix.loops.loss_plot.plot_loss_curves`, which every loop shares)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

from lossmix.errors import NonFiniteLoss
from lossmix.lightning.term_logger import TermLogger
from lossmix.loops.loss_plot import plot_loss_curves

__all__ = ["LossCurves", "plot_loss_curves"]


class LossCurves(pl.Callback):
    """At the end of fit (and, with ``every_epoch=True``, each epoch) write ``filename``; also
    when :class:`~lossmix.lightning.NonFiniteLossGuard` stops the run, marked at its step.

    The curves are the values :class:`~lossmix.lightning.TermLogger` already read
    at its logging points (no extra syncs), so their resolution is
    ``Trainer(log_every_n_steps=...)``. The file goes to ``trainer.log_dir`` (else
    ``default_root_dir``), on rank 0 only; its path is printed and kept in
    :attr:`path`.

    Args:
        filename: the PNG's name in the run directory.
        every_epoch: also redraw at each training epoch end.
        stage: which stage's step values to draw.
        dirpath: where to write instead of the run directory (the training app passes
            its Hydra output directory).
    """

    def __init__(
        self,
        filename: str = "loss_curves.png",
        every_epoch: bool = False,
        stage: str = "train",
        dirpath: str | None = None,
    ) -> None:
        self.filename, self.every_epoch, self.stage = filename, every_epoch, stage
        self.dirpath = dirpath
        self.path: Path | None = None

    def _draw(self, trainer: pl.Trainer, non_finite_from: int | None = None) -> None:
        if not trainer.is_global_zero:
            return
        callbacks: list[pl.Callback] = getattr(trainer, "callbacks", [])
        logger = next((c for c in callbacks if isinstance(c, TermLogger)), None)
        if logger is None:
            return
        run_dir = self.dirpath or trainer.log_dir or trainer.default_root_dir
        written = plot_loss_curves(
            logger.history, Path(run_dir) / self.filename, self.stage, non_finite_from=non_finite_from
        )
        if written is not None:
            self.path = written
            rank_zero_info(f"LossCurves: wrote {written}")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_epoch:
            self._draw(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._draw(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """A run the non-finite guard stopped still gets its curves, marked where it began."""
        if isinstance(exception, NonFiniteLoss):
            self._draw(trainer, non_finite_from=exception.step)

    def state_dict(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None}
