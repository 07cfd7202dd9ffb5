"""Segmentation with Dice + BCE on synthetic shapes, every term logged on its own.

Run:  python examples/segmentation.py [--max-steps 200] [--dice-weight 1.0]

The loss is plain data: a Dice term (lossmix's ``DiceLoss``) and a BCE term (any
``torch.nn`` loss through ``_target_``), composed by ``CompositeLoss``. The same
mapping could come from a Hydra config group.
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lossmix import CompositeLoss


def loss_config(dice_weight: float = 1.0) -> dict:
    return {
        "dice": {"type": "DiceLoss", "loss_weight": dice_weight, "empty_target": "zero",
                 "inputs": {"pred": "mask_logits", "target": "mask"}},
        "bce": {"_target_": "torch.nn.BCEWithLogitsLoss", "loss_weight": 1.0,
                "inputs": {"pred": "mask_logits", "target": "mask"}},
    }


class Shapes(Dataset):
    """Noisy 32×32 images, each with a bright disc or square; the target is its mask."""

    def __init__(self, n: int, seed: int = 0, size: int = 32) -> None:
        gen = torch.Generator().manual_seed(seed)
        ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        centre = torch.randint(8, size - 8, (n, 2), generator=gen)
        radius = torch.randint(3, 8, (n,), generator=gen)
        disc = torch.rand(n, generator=gen) < 0.5
        dy = (ys[None] - centre[:, 0, None, None]).abs()
        dx = (xs[None] - centre[:, 1, None, None]).abs()
        r = radius[:, None, None]
        inside = torch.where(disc[:, None, None], dy**2 + dx**2 <= r**2, (dy <= r) & (dx <= r))
        self.mask = inside.float().unsqueeze(1)
        self.image = self.mask + 0.5 * torch.randn(n, 1, size, size, generator=gen)

    def __len__(self) -> int:
        return len(self.mask)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.image[i], "mask": self.mask[i]}


class Segmenter(CompositeLoss, L.LightningModule):
    def __init__(self, loss_cfg: dict, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(16, 1, 1))
        self.configure_loss(loss_cfg)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mask_logits": self.net(image)}

    def training_step(self, batch, batch_idx):
        return self.compute_loss(self(batch["image"]), batch)

    def validation_step(self, batch, batch_idx):
        self.compute_loss(self(batch["image"]), batch)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--dice-weight", type=float, default=1.0)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    L.seed_everything(0, verbose=False)
    model = Segmenter(loss_config(args.dice_weight))
    trainer = L.Trainer(max_steps=args.max_steps, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=not args.quiet,
                        enable_model_summary=False, log_every_n_steps=10)
    trainer.fit(model, DataLoader(Shapes(args.samples), batch_size=16, shuffle=True),
                DataLoader(Shapes(64, seed=1), batch_size=16))
    metrics = {k: round(v.item(), 4) for k, v in trainer.callback_metrics.items()}
    if not args.quiet:
        print({k: v for k, v in metrics.items() if k.startswith("val/")})
    return metrics


if __name__ == "__main__":
    main()
