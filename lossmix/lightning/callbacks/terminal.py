"""What a run prints: the progress bar's epochs, and the model summary after the pre-flight check.

``EpochProgressBar``: Lightning's rich progress bar without ``Epoch 0/-2`` for open-ended runs.

Lightning's :class:`~lightning.pytorch.callbacks.RichProgressBar` writes ``Epoch {e}/{max_epochs - 1}``,
so a run with ``max_epochs: -1`` (bounded by ``max_steps``, as MMagic's iteration-based GAN
schedules are) shows ``Epoch 0/-2``. This bar writes ``Epoch {e}`` then, and
``Epoch {e}/{last}`` otherwise, as Lightning does.

``LateModelSummary``: Lightning's model summary, printed when the first epoch starts instead
of when fitting starts, so that an error of the pre-flight batch
(:class:`~lossmix.lightning.callbacks.PreflightBatch`, at ``on_train_start``) is the only thing
printed, not 20 lines after the table.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelSummary, RichModelSummary, RichProgressBar

__all__ = ["EpochProgressBar", "LateModelSummary", "epoch_description", "late_model_summary"]


def epoch_description(epoch: int, max_epochs: int | None) -> str:
    """``Epoch 3/9`` for a bounded run, ``Epoch 3`` for an open-ended one (``max_epochs`` -1 or None).

    >>> epoch_description(0, -1), epoch_description(3, 10)
    ('Epoch 0', 'Epoch 3/9')
    """
    if max_epochs is None or max_epochs < 0:
        return f"Epoch {epoch}"
    return f"Epoch {epoch}/{max_epochs - 1}"


class EpochProgressBar(RichProgressBar):
    """:class:`~lightning.pytorch.callbacks.RichProgressBar` with :func:`epoch_description`."""

    # Lightning's (private) hook for the train bar's text; tests/lightning check it still exists
    def _get_train_description(self, current_epoch: int) -> str:
        description = epoch_description(current_epoch, self.trainer.max_epochs)
        width = len(self.validation_description)  # padded as Lightning does, so the bars do not flicker
        return f"{description:{width}}" if width > len(description) else description


class _LateSummary:
    """Mixed before a :class:`ModelSummary`: its table at the first epoch start, once."""

    _printed = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._printed = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._printed:
            self._printed = True
            super().on_fit_start(trainer, pl_module)  # type: ignore[misc]  # ModelSummary's print


class LateModelSummary(_LateSummary, ModelSummary):
    """:class:`~lightning.pytorch.callbacks.ModelSummary`, printed at the first epoch start."""


class LateRichModelSummary(_LateSummary, RichModelSummary):
    """:class:`~lightning.pytorch.callbacks.RichModelSummary`, printed at the first epoch start."""


def late_model_summary(**kwargs: Any) -> ModelSummary:
    """The summary Lightning adds by default (rich: a dependency of lossmix), late."""
    return LateRichModelSummary(**kwargs)
