"""The user's model: two heads on a small MLP, trained with the terms of its ``loss`` node.

Its outputs are named as lossmix's shipped term configs expect them (``cls_logits`` for
``loss/cls``, ``boxes`` for ``loss/reg``); the batch holds ``labels``, ``box_targets`` and
``pos_mask``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from lossmix import CompositeLoss


class TinyDetector(CompositeLoss, pl.LightningModule):
    def __init__(
        self, loss: Mapping[str, Any], num_classes: int = 3, hidden: int = 64, lr: float = 1e-2
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.trunk = nn.Sequential(nn.Linear(16, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.cls_head = nn.Linear(hidden, num_classes)
        self.box_head = nn.Linear(hidden, 4)
        self.configure_loss(loss)  # the terms: loss.cls, loss.reg, ... from the config

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        hidden = self.trunk(features)
        centre, log_size = self.box_head(hidden).split(2, dim=1)
        centre, size = 32 + 16 * centre, 8 * log_size.exp()
        boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
        return {"cls_logits": self.cls_head(hidden), "boxes": boxes}

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        return self.compute_loss(self(batch["features"]), batch)

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self.compute_loss(self(batch["features"]), batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])
