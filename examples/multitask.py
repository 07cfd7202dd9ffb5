"""Multi-task learning with dynamic task weighting: two tasks of very different scales.

Run:  python examples/multitask.py [--weighting uncertainty|dwa|gradnorm|none] [--epochs 12]

A shared trunk feeds a regression head whose target is in the hundreds (its MSE
starts near 10⁴) and a 3-class classification head (its cross-entropy starts near
1). With fixed weights the regression term swamps the gradient; with
``weighting: {type: uncertainty}`` the learned log-variances rescale both terms
(the regression factor ½e^{−s} drops by orders of magnitude), DWA re-balances them by
their epoch-to-epoch rate of decrease, and GradNorm equalises their gradient
norms on the trunk's last layer. ``LossCurves`` writes every term's curve and
the effective weights to ``<run dir>/loss_curves.png``.
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lossmix import CompositeLoss
from lossmix.lightning import LossCurves

WEIGHTINGS = {
    "uncertainty": {"type": "uncertainty"},
    "dwa": {"type": "dwa", "temperature": 2.0},
    "gradnorm": {"type": "gradnorm", "shared": "trunk.2", "alpha": 1.5},
    "none": None,
}


def loss_config(weighting: str) -> dict:
    terms = {
        "depth": {"type": "MSELoss", "inputs": {"pred": "depth", "target": "depth_gt"}},
        "cls": {"type": "CrossEntropyLoss", "inputs": {"pred": "logits", "target": "label"}},
    }
    if WEIGHTINGS[weighting] is not None:
        terms["weighting"] = WEIGHTINGS[weighting]
    return terms


class TwoTasks(CompositeLoss, L.LightningModule):
    def __init__(self, weighting: str = "uncertainty", lr: float = 0.01) -> None:
        super().__init__()
        self.lr = lr
        self.trunk = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(),
                                         torch.nn.Linear(32, 32), torch.nn.ReLU())
        self.depth_head = torch.nn.Linear(32, 1)
        self.cls_head = torch.nn.Linear(32, 3)
        self.configure_loss(loss_config(weighting))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)
        return {"depth": self.depth_head(h).squeeze(-1), "logits": self.cls_head(h)}

    def training_step(self, batch, batch_idx):
        x, depth, label = batch
        return self.compute_loss(self(x), {"depth_gt": depth, "label": label})

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def synthetic(n: int = 512, seed: int = 0) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    depth = 100.0 * (x[:, :4].sum(1)) + 300.0          # scale ~10²: MSE ~10⁴
    label = (x[:, 4:6].sum(1) > 0).long() + (x[:, 6] > 1).long()
    return TensorDataset(x, depth, label)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weighting", choices=list(WEIGHTINGS), default="uncertainty")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--out", default="runs/multitask")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    L.seed_everything(0, verbose=False)
    model = TwoTasks(args.weighting)
    curves = LossCurves()
    trainer = L.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, callbacks=[curves],
                        default_root_dir=args.out, log_every_n_steps=4,
                        logger=L.pytorch.loggers.CSVLogger(args.out, name=args.weighting),
                        enable_checkpointing=False, enable_progress_bar=not args.quiet,
                        enable_model_summary=not args.quiet)
    trainer.fit(model, DataLoader(synthetic(), batch_size=64, shuffle=True))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if not args.quiet:
        for key in sorted(k for k in metrics if "/weight/" in k or "_epoch" in k):
            print(f"{key:32s} {metrics[key]:.4g}")
        print(f"curves: {curves.path}")
    metrics["curves"] = str(curves.path) if curves.path else ""
    return metrics


if __name__ == "__main__":
    main()
