"""A datamodule whose training labels are out of range on rank 1 only (the DDP error tests)."""

from __future__ import annotations

from typing import Any

from torch.utils.data import TensorDataset

from lossmix.demo import SyntheticTasks


class BadLabelsOnRank1(SyntheticTasks):
    """``experiment=multitask``'s data with every training label 7 (3 classes) on global rank 1
    only, so that rank alone fails the ``cls`` term's class-index check."""

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        trainer: Any = self.trainer
        if trainer is not None and trainer.global_rank == 1:
            x, depth, label = self.train_set.tensors  # type: ignore[union-attr]
            self.train_set = TensorDataset(x, depth, label.clone().fill_(7))
