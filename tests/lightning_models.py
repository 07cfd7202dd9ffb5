"""Small LightningModules and data shared by the Lightning tests (picklable: ddp_spawn takes them too)."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from lossmix import CompositeLoss


class Pairs(Dataset):
    """``x`` (n, 4) → ``y`` (n, 2), fixed by ``seed``."""

    def __init__(self, n: int, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=gen)
        self.y = torch.randn(n, 2, generator=gen)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


def regression_terms(k: int = 2) -> dict:
    kinds = ["L1Loss", "MSELoss", "SmoothL1Loss"]
    return {
        f"t{i}": {"type": kinds[i % 3], "loss_weight": 0.5 + i, "inputs": {"pred": "pred", "target": "y"}}
        for i in range(k)
    }


class Regressor(CompositeLoss, L.LightningModule):
    """A linear model whose weights stay fixed when ``lr=0`` (so logged values can be
    recomputed by hand)."""

    def __init__(self, terms: dict | None = None, lr: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(4, 2)
        self.lr = lr
        self.configure_loss(terms or regression_terms())

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pred": self.net(x)}

    def training_step(self, batch, batch_idx):
        return self.compute_loss(self(batch["x"]), batch)

    def validation_step(self, batch, batch_idx):
        self.compute_loss(self(batch["x"]), batch)

    def test_step(self, batch, batch_idx):
        self.compute_loss(self(batch["x"]), batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def loader(n: int, batch_size: int, seed: int = 0) -> DataLoader:
    return DataLoader(Pairs(n, seed), batch_size=batch_size)


def trainer(**kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**{**defaults, **kwargs})


def ddp_trainer(**kwargs) -> L.Trainer:
    """Two CPU processes (gloo, ``ddp_fork``), quiet, no checkpoints: the DDP tests' trainer.

    Forked, not spawned: a child inherits the imported torch and Lightning instead of
    importing them again (about 15 s less per test on 2 cores); Lightning sets each child to
    one thread. ``ddp_spawn`` and ``ddp`` themselves are run by the app's DDP tests."""
    return trainer(**{"devices": 2, "strategy": "ddp_fork", **kwargs})
