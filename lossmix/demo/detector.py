"""A small anchor-free dense detector (FCOS-like) whose loss is a lossmix mix.

Every feature location predicts class logits, the distances from its centre to the four
sides of a box, and a centerness logit. The model's outputs and the batch are flattened
to one row per location (``N = batch × locations``), so the term nodes route plain keys:

==================  =========  ===============================================
outputs             shape      batch (from :class:`~lossmix.demo.SyntheticBoxes`)
==================  =========  ===============================================
``cls_logits``      (N, C)     ``labels`` (N,), background = C
``boxes``           (N, 4)     ``box_targets`` (N, 4), ``pos_mask`` (N,)
``centerness``      (N,)       ``centerness_targets`` (N,)
``iou_targets``     (N, C)     (the IoU of each positive's box at its class: VarifocalLoss)
==================  =========  ===============================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lossmix.lightning import CompositeLoss

__all__ = ["DenseDetector", "box_iou_pairs"]

_PER_LOCATION = ("labels", "box_targets", "centerness_targets", "pos_mask")


def box_iou_pairs(a: Tensor, b: Tensor) -> Tensor:
    """IoU of matching rows of two ``(N, 4)`` box tensors ``(x1, y1, x2, y2)``."""
    wh = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]

    def area(box: Tensor) -> Tensor:
        return (box[:, 2] - box[:, 0]).clamp(min=0) * (box[:, 3] - box[:, 1]).clamp(min=0)

    return inter / (area(a) + area(b) - inter).clamp(min=1e-6)


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(4, c_out), nn.ReLU(inplace=True)
    )


class DenseDetector(CompositeLoss, pl.LightningModule):
    """A tiny dense detector trained with the terms of ``loss`` (a lossmix config node).

    Args:
        loss: the term mapping for :meth:`~lossmix.CompositeLoss.configure_loss`
            (plain containers, so checkpoints hold no OmegaConf objects).
        num_classes: object classes.
        stride: output stride, a power of two (matches the data's).
        width: channels of the trunk.
        lr, weight_decay: AdamW's.
    """

    def __init__(
        self,
        loss: Mapping[str, Any],
        num_classes: int = 3,
        stride: int = 4,
        width: int = 32,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        if stride < 2 or stride & (stride - 1):
            raise ValueError(f"stride={stride} must be a power of two >= 2.")
        self.save_hyperparameters()
        downs = int(math.log2(stride))
        layers = [_conv(3 if i == 0 else width, width, stride=2) for i in range(downs)]
        self.trunk = nn.Sequential(*layers, _conv(width, width), _conv(width, width))
        self.cls_head = nn.Conv2d(width, num_classes, 3, padding=1)
        self.reg_head = nn.Conv2d(width, 4, 3, padding=1)
        self.ctr_head = nn.Conv2d(width, 1, 3, padding=1)
        # RetinaNet's prior: every location starts as background with probability 0.99
        # (the head is built with bias=True, the default, so its bias is never None)
        nn.init.constant_(cast(Tensor, self.cls_head.bias), -math.log(99.0))
        self.num_classes, self.stride = num_classes, stride
        self.configure_loss(loss)

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        """Per-location outputs, flattened to ``(B * H' * W', ...)`` rows (row-major)."""
        features = self.trunk(image)
        batch, _, height, width = features.shape

        def rows(t: Tensor) -> Tensor:
            return t.permute(0, 2, 3, 1).reshape(batch * height * width, -1)

        ys = (torch.arange(height, device=image.device, dtype=image.dtype) + 0.5) * self.stride
        xs = (torch.arange(width, device=image.device, dtype=image.dtype) + 0.5) * self.stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centers = torch.stack([cx, cy], dim=-1).reshape(1, -1, 2).expand(batch, -1, -1)
        centers = centers.reshape(-1, 2)
        ltrb = F.softplus(rows(self.reg_head(features))) * self.stride
        boxes = torch.cat([centers - ltrb[:, :2], centers + ltrb[:, 2:]], dim=1)
        return {
            "cls_logits": rows(self.cls_head(features)),
            "boxes": boxes,
            "centerness": rows(self.ctr_head(features)).squeeze(1),
        }

    def outputs_and_targets(self, batch: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The model's outputs and the batch, both with one row per location."""
        outputs = self(batch["image"])
        targets = {key: batch[key].flatten(0, 1) for key in _PER_LOCATION}
        with torch.no_grad():
            iou = box_iou_pairs(outputs["boxes"], targets["box_targets"]) * targets["pos_mask"]
            onehot = F.one_hot(targets["labels"], self.num_classes + 1)[:, : self.num_classes]
            outputs["iou_targets"] = onehot.to(iou.dtype) * iou[:, None]
        return outputs, targets

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        outputs, targets = self.outputs_and_targets(batch)
        return self.compute_loss(outputs, targets, batch_size=len(batch["image"]))

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        outputs, targets = self.outputs_and_targets(batch)
        self.compute_loss(outputs, targets, batch_size=len(batch["image"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        lr: float = self.hparams["lr"]
        weight_decay: float = self.hparams["weight_decay"]
        return torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=weight_decay)
