"""A toy GAN with manual optimization: the generator maps noise to 2-D points on a ring.

The data is a ring of 8 Gaussians (:func:`ring`, :class:`SyntheticRing`). The loss has
two groups, one per player, each computed by its own ``compute_loss(..., group=...)``:

==========  ===================================================================
group       outputs the term nodes route
==========  ===================================================================
``gen``     ``fake_score`` (N, 1): the discriminator on generated points;
            ``gen`` (the generator module) and ``batch_size`` (an int), for
            StyleGAN2's path-length regulariser
``disc``    ``real_score``, ``fake_score`` (N, 1); ``disc`` (the discriminator
            module) and ``real`` (N, 2), for a gradient penalty such as R1
==========  ===================================================================

Each training step makes two optimizer steps (generator, then discriminator), so
the trainer's ``max_steps`` is twice the number of batches.

The generator (:class:`ToyGenerator`) has StyleGAN's two halves, a mapping network
``z → w`` and a synthesis network ``w → x``, and answers MMagic's call
``gen(None, num_batches=n, return_latents=True)`` with ``{'fake_img', 'latent'}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lossmix.lightning import CompositeLoss

__all__ = ["SyntheticRing", "ToyGAN", "ToyGenerator", "ring"]


def ring(n: int, seed: int = 0, *, modes: int = 8, radius: float = 2.0, std: float = 0.05) -> Tensor:
    """``n`` points ``(n, 2)`` from ``modes`` Gaussians evenly spaced on a circle."""
    gen = torch.Generator().manual_seed(seed)
    angle = torch.randint(0, modes, (n,), generator=gen) * (2 * math.pi / modes)
    centres = torch.stack([angle.cos(), angle.sin()], -1) * radius
    return centres + std * torch.randn(n, 2, generator=gen)


class SyntheticRing(pl.LightningDataModule):
    """Training batches ``(points,)`` of :func:`ring` (no validation set).

    Args:
        num_train: points in the training set.
        batch_size: points per batch.
        num_workers: DataLoader workers.
        seed: generation seed.
    """

    def __init__(
        self, num_train: int = 25600, batch_size: int = 64, num_workers: int = 0, seed: int = 0
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_set: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            num_train: int = self.hparams["num_train"]
            seed: int = self.hparams["seed"]
            self.train_set = TensorDataset(ring(num_train, seed))

    def train_dataloader(self) -> DataLoader[tuple[Tensor, ...]]:
        workers: int = self.hparams["num_workers"]
        batch_size: int = self.hparams["batch_size"]
        # Lightning calls ``setup`` before asking for a loader, so the set exists by then.
        return DataLoader(
            cast(TensorDataset, self.train_set),
            batch_size=batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
        )


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inp, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, out),
    )


class ToyGenerator(nn.Module):
    """Noise ``z`` → latent ``w`` (``mapping_layers`` MLP layers; none: ``w = z``) → 2-D points.

    ``forward(z)`` returns the points ``(N, 2)``; ``forward(None, num_batches=n,
    return_latents=True)`` samples ``z`` itself and returns ``{'fake_img': points,
    'latent': w}``, ``w`` in the graph of the points (MMagic's generator interface).
    """

    def __init__(self, latent: int, hidden: int, mapping_layers: int = 0) -> None:
        super().__init__()
        self.latent = latent
        layers: list[nn.Module] = []
        for _ in range(mapping_layers):
            layers += [nn.Linear(latent, latent), nn.LeakyReLU(0.2)]
        self.mapping = nn.Sequential(*layers)
        self.synthesis = _mlp(latent, hidden, 2)

    def forward(
        self, noise: Tensor | None, num_batches: int = 0, return_latents: bool = False
    ) -> Tensor | dict[str, Tensor]:
        if noise is None:
            device = next(self.synthesis.parameters()).device
            noise = torch.randn(num_batches, self.latent, device=device)
        latent: Tensor = self.mapping(noise)  # no mapping layers: w = z
        if return_latents and not latent.requires_grad:
            latent = latent.requires_grad_()  # the leaf the path length differentiates against
        points: Tensor = self.synthesis(latent)
        return {"fake_img": points, "latent": latent} if return_latents else points


class ToyGAN(CompositeLoss, pl.LightningModule):
    """Generator and discriminator MLPs trained with the ``gen`` and ``disc`` groups of ``loss``.

    Args:
        loss: ``{"gen": {term: node}, "disc": {term: node}}`` for
            :meth:`~lossmix.CompositeLoss.configure_loss`.
        latent: size of the generator's noise.
        hidden: width of both MLPs.
        lr: Adam's learning rate (each player's is scaled, see ``reg_interval``).
        reg_interval: how often the discriminator's regulariser runs (R1's ``every``, k).
            For k > 1, StyleGAN2's lazy-regularisation correction scales the
            discriminator's Adam learning rate and betas by ``k / (k + 1)``.
        g_reg_interval: the same for the generator's regulariser (the path length's
            ``every``); 1: none.
        mapping_layers: layers of the generator's mapping network (0: ``w = z``).
    """

    def __init__(
        self,
        loss: Mapping[str, Any],
        latent: int = 8,
        hidden: int = 64,
        lr: float = 1e-3,
        reg_interval: int = 16,
        g_reg_interval: int = 1,
        mapping_layers: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("reg_interval", reg_interval), ("g_reg_interval", g_reg_interval)):
            if value < 1:
                raise ValueError(f"{name}={value} must be >= 1.")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.gen = ToyGenerator(latent, hidden, mapping_layers)
        self.disc = _mlp(2, hidden, 1)
        self.configure_loss(loss)

    def training_step(self, batch: tuple[Tensor], batch_idx: int) -> None:
        (real,) = batch
        # configure_optimizers returns two optimizers, so Lightning gives back a list of two
        opt_g, opt_d = cast(list[LightningOptimizer], self.optimizers())
        latent: int = self.hparams["latent"]
        noise = torch.randn(real.shape[0], latent, device=real.device)

        fake = cast(Tensor, self.gen(noise))
        self.toggle_optimizer(opt_g)
        outputs_g = {"fake_score": self.disc(fake), "gen": self.gen, "batch_size": real.shape[0]}
        loss_g = self.compute_loss(outputs_g, group="gen", batch_size=real.shape[0])
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        self.toggle_optimizer(opt_d)
        outputs = {
            "real_score": self.disc(real),
            "fake_score": self.disc(fake.detach()),
            "disc": self.disc,
            "real": real,
        }
        loss_d = self.compute_loss(outputs, group="disc", batch_size=real.shape[0])
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        lr: float = self.hparams["lr"]
        g_ratio, d_ratio = (_lazy_ratio(self.hparams[k]) for k in ("g_reg_interval", "reg_interval"))
        return (
            torch.optim.Adam(self.gen.parameters(), lr=lr * g_ratio, betas=(0.0, 0.99**g_ratio)),
            torch.optim.Adam(self.disc.parameters(), lr=lr * d_ratio, betas=(0.0, 0.99**d_ratio)),
        )


def _lazy_ratio(k: int) -> float:
    """StyleGAN2's lazy-regularisation correction of Adam for a regulariser every k steps."""
    return k / (k + 1) if k > 1 else 1.0
