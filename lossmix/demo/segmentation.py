"""Binary segmentation of synthetic shapes: a bright disc or square on noise, and its mask.

The ``segmentation`` and ``custom`` experiments train :class:`Segmenter` on
:class:`SyntheticShapes`; ``examples/segmentation.py`` and ``examples/custom_loss.py``
do the same from plain Python. The term nodes route these keys:

================  =========  ===============================
outputs           shape      batch
================  =========  ===============================
``mask_logits``   (N, H, W)  ``masks`` (N, H, W), 0.0 or 1.0
================  =========  ===============================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from lossmix.demo.data import SyntheticDataModule
from lossmix.lightning import CompositeLoss

__all__ = ["Segmenter", "SyntheticShapeDataset", "SyntheticShapes"]


def _check_size(image_size: int) -> None:
    if image_size < 17:  # shapes reach 7 pixels from a centre kept 8 pixels from the border
        raise ValueError(f"image_size={image_size} must be at least 17.")


class SyntheticShapeDataset(Dataset[dict[str, Tensor]]):
    """``num_images`` noisy single-channel images, each with one disc or square, from ``seed``.

    An item is ``{"image": (1, S, S), "masks": (S, S)}``; the image is the mask plus
    Gaussian noise of standard deviation ``noise``.
    """

    def __init__(self, num_images: int, *, image_size: int = 32, noise: float = 0.5, seed: int = 0) -> None:
        _check_size(image_size)
        gen = torch.Generator().manual_seed(seed)
        ys, xs = torch.meshgrid(torch.arange(image_size), torch.arange(image_size), indexing="ij")
        centre = torch.randint(8, image_size - 8, (num_images, 2), generator=gen)
        radius = torch.randint(3, 8, (num_images,), generator=gen)
        disc = torch.rand(num_images, generator=gen) < 0.5
        dy = (ys[None] - centre[:, 0, None, None]).abs()
        dx = (xs[None] - centre[:, 1, None, None]).abs()
        r = radius[:, None, None]
        inside = torch.where(disc[:, None, None], dy**2 + dx**2 <= r**2, (dy <= r) & (dx <= r))
        self.masks = inside.float()
        self.images = self.masks[:, None] + noise * torch.randn(
            num_images, 1, image_size, image_size, generator=gen
        )

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"image": self.images[index], "masks": self.masks[index]}


class SyntheticShapes(SyntheticDataModule[dict[str, Tensor]]):
    """Train and validation sets of :class:`SyntheticShapeDataset` (seeds ``seed``, ``seed + 1``).

    Args:
        image_size: side of the square images, in pixels.
        noise: standard deviation of the noise added to the mask.
        num_train, num_val: images per set.
        batch_size: images per batch.
        num_workers: DataLoader workers.
        seed: generation seed of the training set.
    """

    def __init__(
        self,
        image_size: int = 32,
        noise: float = 0.5,
        num_train: int = 512,
        num_val: int = 64,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        _check_size(image_size)
        self.save_hyperparameters()

    def make_dataset(self, size: int, seed: int) -> SyntheticShapeDataset:
        image_size: int = self.hparams["image_size"]
        noise: float = self.hparams["noise"]
        return SyntheticShapeDataset(size, image_size=image_size, noise=noise, seed=seed)


class Segmenter(CompositeLoss, pl.LightningModule):
    """A three-layer fully convolutional net trained with the terms of ``loss``.

    Args:
        loss: the term mapping for :meth:`~lossmix.CompositeLoss.configure_loss`.
        in_channels: image channels.
        width: channels of the hidden layers.
        lr: Adam's learning rate.
    """

    def __init__(
        self, loss: Mapping[str, Any], in_channels: int = 1, width: int = 16, lr: float = 3e-3
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 1, 1),
        )
        self.configure_loss(loss)

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        return {"mask_logits": self.net(image).squeeze(1)}

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        return self.compute_loss(self(batch["image"]), batch)

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self.compute_loss(self(batch["image"]), batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        lr: float = self.hparams["lr"]
        return torch.optim.Adam(self.parameters(), lr=lr)
