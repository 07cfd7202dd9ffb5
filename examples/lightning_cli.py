"""LightningCLI with per-term overrides: ``LossCLI`` (``pip install lossmix[cli]``).

Run:  python examples/lightning_cli.py fit --trainer.max_epochs=3 --model.loss.smooth.label_smoothing=0.2
      python examples/lightning_cli.py fit --model.loss.cls.gama=2 --model.loss.aux.bogus=1   # two errors

The model takes its loss node as a plain ``dict`` (here with a default; a ``--config``
YAML file may set it too). ``--model.loss.<term>.<key>=value`` merges into that term
(the term's other keys stay; the value is read as YAML); every bad term is reported on
one line naming the term and the key, with exit code 2; after ``fit`` the per-term
summary table is printed and ``loss_curves.png`` written to the run's log directory.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from plain_loop import LOSS, Classifier, batches

from lossmix import CompositeLoss
from lossmix.lightning.loss_cli import LossCLI


class CliClassifier(CompositeLoss, L.LightningModule):
    def __init__(self, loss: dict[str, Any] = LOSS, lr: float = 1e-2) -> None:
        super().__init__()
        self.net = Classifier()
        self.lr = lr
        self.configure_loss(loss)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, labels = batch
        return self.compute_loss(self(x), {"labels": labels})

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        x, labels = (torch.cat(parts) for parts in zip(*batches(10), strict=True))
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, labels), batch_size=32)


def main(args: list[str] | None = None) -> LossCLI:
    return LossCLI(CliClassifier, args=args, save_config_callback=None)


if __name__ == "__main__":
    main()
