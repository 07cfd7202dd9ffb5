"""Per-term logging under Lightning Fabric: ``CompositeLoss`` logs through ``fabric.log_dict``.

Run:  python examples/fabric_loop.py [--epochs 3] [--every 5]

The module is the usual ``CompositeLoss`` LightningModule; ``fabric.setup`` attaches it
to Fabric, and ``compute_loss`` then sends ``train/loss`` and ``train/loss/{term}`` to
Fabric's loggers (here a CSV logger) every ``loss_log_every`` steps, with one host read
per interval. ``fabric.call("on_train_epoch_end")`` logs the epoch means
(``train/loss/{term}_epoch``) and closes a weighting's epoch; ``loss_logger.finish``
prints the per-term summary and writes ``loss_curves.png``. The learned uncertainty
weights are parameters of the module's ``loss_mix``, so ``module.parameters()`` gives
them to the optimizer.
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
from lightning.fabric.loggers import CSVLogger
from plain_loop import LOSS, Classifier, batches

from lossmix import CompositeLoss


class FabricClassifier(CompositeLoss, L.LightningModule):
    def __init__(self, loss: dict, every: int = 5) -> None:
        super().__init__()
        self.net = Classifier()
        self.loss_log_every = every
        self.configure_loss(loss)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(x)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps-per-epoch", type=int, default=10)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--root", default="fabric_logs")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    fabric = L.Fabric(accelerator="cpu", devices=1, loggers=[CSVLogger(args.root)])
    model = FabricClassifier(LOSS, every=args.every)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    module, optimizer = fabric.setup(model, optimizer)
    for _ in range(args.epochs):
        for x, labels in batches(args.steps_per_epoch):
            loss = model.compute_loss(module(x), {"labels": labels})
            fabric.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        fabric.call("on_train_epoch_end")
    fabric.logger.finalize("success")
    logger = model.loss_logger
    assert logger is not None
    logger.finish(model.loss_mix, curves=f"{args.root}/loss_curves.png", show=not args.quiet)
    return logger.latest


if __name__ == "__main__":
    main()
