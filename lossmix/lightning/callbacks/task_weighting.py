"""``TaskWeightingUpdates``: drives a ``LossMix``'s weighting and aggregation from Lightning's hooks.

Installed by :class:`~lossmix.CompositeLoss` when the loss config has a ``weighting:``
or an ``aggregation:`` key. At ``setup`` it binds both to the model (GradNorm's shared
layer, the aggregation's ``module``: an error before training if a name is wrong); it
closes DWA's epoch at each training epoch end; after each optimizer step it
renormalises GradNorm's weights and hands FAMO the step's task losses re-evaluated on
the same batch. The state is in the module (parameters and buffers), so this callback
has none of its own.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from lossmix.lightning.access import find_loss_mix, reevaluate_tasks_of
from lossmix.utilities.compat import resumed_mid_epoch, should_accumulate

__all__ = ["TaskWeightingUpdates"]


class TaskWeightingUpdates(pl.Callback):
    """Call the weighting's ``bind``, ``epoch_end``, ``step_end`` and ``post_step``, and the
    aggregation's ``bind``, at the right points."""

    @staticmethod
    def _weighting(pl_module: pl.LightningModule) -> Any:
        mix = find_loss_mix(pl_module)
        return None if mix is None else mix.weighting

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        mix = find_loss_mix(pl_module)
        if mix is None:
            return
        if mix.weighting is not None:
            mix.weighting.bind(pl_module)
        if mix.aggregation is not None:
            mix.aggregation.bind(pl_module)

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

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        weighting = self._weighting(pl_module)
        if weighting is None:
            return
        if weighting.needs_step_hooks:
            weighting.step_end()
        if weighting.needs_post_step_losses and not should_accumulate(trainer):
            losses = reevaluate_tasks_of(pl_module, batch, batch_idx)
            if losses is not None:
                weighting.post_step(losses)
