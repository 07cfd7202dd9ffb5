"""``TaskWeightingUpdates``: drives a ``LossMix``'s dynamic weighting from Lightning's hooks.

Installed by :class:`~lossmix.CompositeLoss` when the loss config has a
``weighting:`` key. It binds the weighting to the model at ``setup`` (GradNorm's
shared layer: an error before training if the name is wrong), closes DWA's
epoch at each training epoch end, and renormalises GradNorm's weights after each
optimizer step. The weighting's state is in the module (parameters and buffers),
so this callback has none of its own.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from lossmix.compat import resumed_mid_epoch
from lossmix.lightning.access import find_loss_mix

__all__ = ["TaskWeightingUpdates"]


class TaskWeightingUpdates(pl.Callback):
    """Call the weighting's ``bind``, ``epoch_end`` and ``step_end`` at the right points."""

    @staticmethod
    def _weighting(pl_module: pl.LightningModule) -> Any:
        mix = find_loss_mix(pl_module)
        return None if mix is None else mix.weighting

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        weighting = self._weighting(pl_module)
        if weighting is not None:
            weighting.bind(pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A checkpoint written at an epoch's last batch holds that epoch's sums, but Lightning
        # runs no epoch-end hook for it after the resume: close that epoch here. (A mid-epoch
        # checkpoint's sums go on; an epoch-end checkpoint has none, and this is a no-op.)
        weighting = self._weighting(pl_module)
        if weighting is not None and trainer.ckpt_path is not None and not resumed_mid_epoch(trainer):
            weighting.epoch_end()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        weighting = self._weighting(pl_module)
        if weighting is not None:
            weighting.epoch_end()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        weighting = self._weighting(pl_module)
        if weighting is not None and weighting.needs_step_hooks:
            weighting.step_end()
