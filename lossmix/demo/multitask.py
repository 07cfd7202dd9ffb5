"""Two tasks of very different scales on one shared trunk, for dynamic task weighting.

A regression head predicts a target in the hundreds (its MSE starts near 1.5·10⁵) and a
3-class head a label (its cross-entropy starts near 1). With fixed weights the
regression term swamps the gradient; a ``weighting:`` node (uncertainty, DWA,
GradNorm with ``shared: trunk.2``) re-balances them, and an ``aggregation:`` node
balances their gradients (``{type: upgrad, over: shared, module: trunk}`` or
``{type: mgda, over: representation, input: features}``). The term nodes route:

============  ========  ==========================
outputs       shape     batch
============  ========  ==========================
``depth``     (N,)      ``depth_gt`` (N,), float
``logits``    (N, 3)    ``label`` (N,), class index
``features``  (N, W)    (the trunk's output, for ``over: representation``)
============  ========  ==========================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from lossmix.demo.data import SyntheticDataModule
from lossmix.lightning import CompositeLoss

__all__ = ["SyntheticTasks", "TwoTasks", "two_task_dataset"]


def two_task_dataset(n: int = 512, seed: int = 0, *, features: int = 8) -> TensorDataset:
    """``(x, depth, label)`` rows: ``depth = 100·Σx[:4] + 300``, a 3-class label from ``x[4:7]``."""
    if features < 7:
        raise ValueError(f"features={features} must be at least 7.")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=gen)
    depth = 100.0 * x[:, :4].sum(1) + 300.0  # mean 300, std 200: a first MSE ~1.3·10⁵
    label = (x[:, 4:6].sum(1) > 0).long() + (x[:, 6] > 1).long()
    return TensorDataset(x, depth, label)


class SyntheticTasks(SyntheticDataModule[tuple[Tensor, ...]]):
    """Train and validation sets of :func:`two_task_dataset` (seeds ``seed``, ``seed + 1``).

    Args:
        features: input features.
        num_train, num_val: rows per set.
        batch_size: rows per batch.
        num_workers: DataLoader workers.
        seed: generation seed of the training set.
    """

    def __init__(
        self,
        features: int = 8,
        num_train: int = 512,
        num_val: int = 128,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()

    def make_dataset(self, size: int, seed: int) -> TensorDataset:
        features: int = self.hparams["features"]
        return two_task_dataset(size, seed, features=features)


class TwoTasks(CompositeLoss, pl.LightningModule):
    """A shared MLP trunk (``trunk.2`` is its last linear layer) with two heads.

    Args:
        loss: the term mapping for :meth:`~lossmix.CompositeLoss.configure_loss`,
            with or without a ``weighting:`` node.
        features: input features.
        width: channels of the trunk.
        num_classes: classes of the classification head.
        lr: Adam's learning rate for the network.
        weighting_lr: Adam's learning rate for the learned task weights (``loss_mix``'s
            parameters). Learned log-variances must travel to about log Lᵢ, far from 0
            for a loss in the thousands, so they get their own, larger rate.
    """

    def __init__(
        self,
        loss: Mapping[str, Any],
        features: int = 8,
        width: int = 32,
        num_classes: int = 3,
        lr: float = 0.01,
        weighting_lr: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.trunk = nn.Sequential(nn.Linear(features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.depth_head = nn.Linear(width, 1)
        self.cls_head = nn.Linear(width, num_classes)
        self.configure_loss(loss)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.trunk(x)
        return {"depth": self.depth_head(h).squeeze(-1), "logits": self.cls_head(h), "features": h}

    def _step(self, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        x, depth, label = batch
        return self.compute_loss(self(x), {"depth_gt": depth, "label": label})

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch)

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        lr: float = self.hparams["lr"]
        weighting_lr: float = self.hparams["weighting_lr"]
        weights = list(self.loss_mix.parameters())
        ids = {id(p) for p in weights}
        groups: list[dict[str, Any]] = [{"params": [p for p in self.parameters() if id(p) not in ids]}]
        if weights:
            groups.append({"params": weights, "lr": weighting_lr})
        return torch.optim.Adam(groups, lr=lr)
