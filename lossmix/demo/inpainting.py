"""Inpainting of synthetic colour fields: fill a rectangular hole, with MMagic's inpainting losses.

The ``inpainting`` experiment trains :class:`ToyInpainter` (a tiny generator and a patch
discriminator, manual optimization) on :class:`SyntheticInpainting` with the terms of
MMagic's PConv and AOT-GAN models: masked L1 on the hole and on the valid region,
perceptual and style losses through a VGG-16, masked total variation and the soft-mask
GAN (``smgan``). The groups route these keys:

==========  ======================================================================
group       outputs
==========  ======================================================================
``gen``     ``fake_res`` (N, 3, H, W): the generator's output; ``fake_img``: it
            composited into the known pixels; ``gt``; ``mask`` (N, 1, H, W), 1 in
            the hole; ``valid`` = 1 − mask; ``disc_fake_g`` (N, 1, H/4, W/4) (also
            in validation)
``disc``    ``disc_real``, ``disc_fake`` (N, 1, H/4, W/4); ``mask``
==========  ======================================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor, nn
from torch.utils.data import Dataset

from lossmix.demo.data import SyntheticDataModule
from lossmix.lightning import CompositeLoss

__all__ = ["SyntheticInpainting", "SyntheticInpaintingDataset", "ToyInpainter"]


class SyntheticInpaintingDataset(Dataset[dict[str, Tensor]]):
    """``num_images`` smooth RGB fields in ``[-1, 1]``, each with one rectangular hole, from ``seed``.

    An item is ``{"gt": (3, S, S), "mask": (1, S, S)}``; the field is a sum of two random
    plane waves per channel, the hole a rectangle of sides ``S/4`` to ``S/2`` (mask 1).
    """

    def __init__(self, num_images: int, *, image_size: int = 16, seed: int = 0) -> None:
        if image_size < 8:
            raise ValueError(f"image_size={image_size} must be at least 8.")
        gen = torch.Generator().manual_seed(seed)
        grid = torch.linspace(0.0, 1.0, image_size)
        ys, xs = torch.meshgrid(grid, grid, indexing="ij")
        freq = torch.rand(num_images, 3, 2, 2, generator=gen) * 2 * math.pi
        phase = torch.rand(num_images, 3, 2, 1, 1, generator=gen) * 2 * math.pi
        waves = torch.sin(freq[..., 0, None, None] * ys + freq[..., 1, None, None] * xs + phase)
        self.images = waves.mean(2).clamp(-1.0, 1.0)
        side = torch.randint(image_size // 4, image_size // 2 + 1, (num_images, 2), generator=gen)
        top = (torch.rand(num_images, 2, generator=gen) * (image_size - side + 1)).long()
        rows, cols = torch.arange(image_size)[None, :], torch.arange(image_size)[None, :]
        in_rows = (rows >= top[:, :1]) & (rows < top[:, :1] + side[:, :1])
        in_cols = (cols >= top[:, 1:]) & (cols < top[:, 1:] + side[:, 1:])
        self.masks = (in_rows[:, :, None] & in_cols[:, None, :]).float()[:, None]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"gt": self.images[index], "mask": self.masks[index]}


class SyntheticInpainting(SyntheticDataModule[dict[str, Tensor]]):
    """Train and validation sets of :class:`SyntheticInpaintingDataset` (seeds ``seed``, ``seed + 1``).

    Args:
        image_size: side of the square images, in pixels.
        num_train, num_val: images per set.
        batch_size: images per batch.
        num_workers: DataLoader workers.
        seed: generation seed of the training set.
    """

    def __init__(
        self,
        image_size: int = 16,
        num_train: int = 256,
        num_val: int = 32,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()

    def make_dataset(self, size: int, seed: int) -> SyntheticInpaintingDataset:
        image_size: int = self.hparams["image_size"]
        return SyntheticInpaintingDataset(size, image_size=image_size, seed=seed)


class ToyInpainter(CompositeLoss, pl.LightningModule):
    """A three-layer generator filling the hole and a two-layer patch discriminator.

    The generator sees the image with its hole zeroed and the mask; its output is pasted
    into the hole (``fake_img``). Each batch makes a generator step (group ``gen``), then a
    discriminator step (group ``disc``), so ``max_steps`` counts two per batch. Validation
    computes the ``gen`` terms.

    Args:
        loss: ``{"gen": {term: node}, "disc": {term: node}}`` for
            :meth:`~lossmix.CompositeLoss.configure_loss`.
        width: channels of the hidden layers.
        lr: Adam's learning rate of both players.
    """

    def __init__(self, loss: Mapping[str, Any], width: int = 16, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.gen = nn.Sequential(
            nn.Conv2d(4, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 3, 3, padding=1),
            nn.Tanh(),
        )
        self.disc = nn.Sequential(
            nn.Conv2d(3, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 1, 4, stride=2, padding=1),
        )
        self.configure_loss(loss)

    def forward(self, gt: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The generator's output and the composite ``output · mask + gt · (1 − mask)``."""
        fake_res: Tensor = self.gen(torch.cat([gt * (1 - mask), mask], 1))
        return fake_res, fake_res * mask + gt * (1 - mask)

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        # configure_optimizers returns two optimizers, so Lightning gives back a list of two
        opt_g, opt_d = cast(list[LightningOptimizer], self.optimizers())
        gt, mask = batch["gt"], batch["mask"]
        size = gt.shape[0]
        fake_res, fake_img = self(gt, mask)

        self.toggle_optimizer(opt_g)
        outputs_g = {
            "fake_res": fake_res,
            "fake_img": fake_img,
            "valid": 1 - mask,
            "disc_fake_g": self.disc(fake_img),
        }
        loss_g = self.compute_loss(outputs_g, batch, group="gen", batch_size=size)
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        self.toggle_optimizer(opt_d)
        outputs_d = {"disc_real": self.disc(gt), "disc_fake": self.disc(fake_img.detach())}
        loss_d = self.compute_loss(outputs_d, batch, group="disc", batch_size=size)
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        """The generator's terms on held-out images (logged as ``val/loss/gen``)."""
        fake_res, fake_img = self(batch["gt"], batch["mask"])
        outputs = {
            "fake_res": fake_res,
            "fake_img": fake_img,
            "valid": 1 - batch["mask"],
            "disc_fake_g": self.disc(fake_img),
        }
        self.compute_loss(outputs, batch, group="gen", batch_size=fake_res.shape[0])

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        lr: float = self.hparams["lr"]
        return (
            torch.optim.Adam(self.gen.parameters(), lr=lr, betas=(0.5, 0.999)),
            torch.optim.Adam(self.disc.parameters(), lr=lr, betas=(0.5, 0.999)),
        )
