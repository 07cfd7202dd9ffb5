"""A GAN with manual optimization: ``gen`` and ``disc`` groups, lazy R1 and DiscShift.

Run:  python examples/gan.py [--max-steps 400]

The generator maps noise to 2-D points; the data is a ring of 8 Gaussians. The
discriminator's group holds StyleGAN2's recipe: the non-saturating logistic loss,
an R1 penalty computed every 16 steps with its weight multiplied by 16
automatically (``every: 16``), and PGGAN's drift penalty (``DiscShiftLoss``,
default weight 0.1). Each player's terms are logged under
``train/loss/gen/...`` and ``train/loss/disc/...``.
"""

from __future__ import annotations

import argparse
import math

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lossmix import CompositeLoss

LOSS = {
    "gen": {
        "adv": {"type": "GANLoss", "gan_type": "wgan-logistic-ns",
                "inputs": {"pred": "fake_score", "target_is_real": True, "is_disc": False}},
    },
    "disc": {
        "real": {"type": "GANLoss", "gan_type": "wgan-logistic-ns",
                 "inputs": {"pred": "real_score", "target_is_real": True, "is_disc": True}},
        "fake": {"type": "GANLoss", "gan_type": "wgan-logistic-ns",
                 "inputs": {"pred": "fake_score", "target_is_real": False, "is_disc": True}},
        "r1": {"type": "R1GradientPenalty", "norm_mode": "HWC", "loss_weight": 5.0, "every": 16,
               "inputs": {"discriminator": "disc", "real_data": "real"}},
        "shift": {"type": "DiscShiftLoss", "inputs": {"pred": "real_score"}},
    },
}


def ring(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    angle = torch.randint(0, 8, (n,), generator=gen) * (2 * math.pi / 8)
    centres = torch.stack([angle.cos(), angle.sin()], -1) * 2
    return centres + 0.05 * torch.randn(n, 2, generator=gen)


def mlp(inp: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, 64), nn.LeakyReLU(0.2), nn.Linear(64, 64),
                         nn.LeakyReLU(0.2), nn.Linear(64, out))


class ToyGAN(CompositeLoss, L.LightningModule):
    def __init__(self, loss_cfg: dict = LOSS, latent: int = 8, lr: float = 1e-3) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.latent, self.lr = latent, lr
        self.gen = mlp(latent, 2)
        self.disc = mlp(2, 1)
        self.configure_loss(loss_cfg)

    def training_step(self, batch, batch_idx):
        (real,) = batch
        opt_g, opt_d = self.optimizers()
        noise = torch.randn(real.shape[0], self.latent, device=real.device)

        fake = self.gen(noise)
        self.toggle_optimizer(opt_g)
        loss_g = self.compute_loss({"fake_score": self.disc(fake)}, group="gen",
                                   batch_size=real.shape[0])
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        self.toggle_optimizer(opt_d)
        outputs = {"real_score": self.disc(real), "fake_score": self.disc(fake.detach()),
                   "disc": self.disc, "real": real}
        loss_d = self.compute_loss(outputs, group="disc", batch_size=real.shape[0])
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

    def configure_optimizers(self):
        # StyleGAN2's lazy-regularisation correction of Adam for the discriminator (k = 16)
        ratio = 16 / 17
        return (torch.optim.Adam(self.gen.parameters(), lr=self.lr, betas=(0.0, 0.99)),
                torch.optim.Adam(self.disc.parameters(), lr=self.lr * ratio,
                                 betas=(0.0, 0.99**ratio)))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    L.seed_everything(0, verbose=False)
    model = ToyGAN()
    trainer = L.Trainer(max_steps=2 * args.max_steps, accelerator="cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_model_summary=False,
                        enable_progress_bar=not args.quiet, log_every_n_steps=16)
    data = DataLoader(TensorDataset(ring(64 * args.max_steps)), batch_size=64)
    trainer.fit(model, data)
    metrics = {k: round(v.item(), 4) for k, v in trainer.callback_metrics.items()}
    if not args.quiet:
        print(metrics)
    return metrics


if __name__ == "__main__":
    main()
