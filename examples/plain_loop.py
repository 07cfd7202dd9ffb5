"""Per-term logging in a plain PyTorch loop: no Lightning, no Hydra, ten lines of loop.

Run:  python examples/plain_loop.py [--steps 60] [--every 10] [--csv metrics.csv]

Three cross-entropy terms over the labelled rows of a tiny classifier, with learned
uncertainty weights (``weighting: {type: uncertainty}``: their log-variances are
parameters of the mix, so they go to the optimizer with the model's). ``LoopLogger``
buffers every term on the device and reads them once every ``--every`` steps; the values
go to a CSV file (and to any callable: ``wandb.log``, ``accelerator.log``) under the
Lightning app's keys; ``finish`` prints the per-term summary and writes
``loss_curves.png``. The loop resumes from ``{"model", "mix", "optimizer", "logger"}``
state dicts.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from lossmix import LossMix
from lossmix.loops import LoopLogger

CE = {"type": "CrossEntropyLoss", "ignore_index": -100, "avg_non_ignore": True}
LOSS = {
    "cls": {**CE, "inputs": {"pred": "logits", "target": "labels"}},
    "smooth": {
        **CE,
        "label_smoothing": 0.1,
        "loss_weight": 0.5,
        "inputs": {"pred": "logits", "target": "labels"},
    },
    "aux": {**CE, "inputs": {"pred": "aux_logits", "target": "labels"}},
    "weighting": {"type": "uncertainty"},
}


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(8, 32), nn.ReLU())
        self.head, self.aux = nn.Linear(32, 4), nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)
        return {"logits": self.head(h), "aux_logits": self.aux(h)}


def batches(steps: int, size: int = 32):
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, generator=gen) * 2
    for _ in range(steps):
        labels = torch.randint(0, 4, (size,), generator=gen)
        x = centres[labels] + torch.randn(size, 8, generator=gen)
        labels[torch.rand(size, generator=gen) < 0.2] = -100  # unlabelled rows: not scored
        yield x, labels


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--csv", default="metrics.csv")
    parser.add_argument("--curves", default="loss_curves.png")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    model, mix = Classifier(), LossMix.from_config(LOSS)
    optimizer = torch.optim.Adam([*model.parameters(), *mix.parameters()], lr=1e-2)
    logger = LoopLogger(args.csv, every=args.every)
    for step, (x, labels) in enumerate(batches(args.steps)):
        result = mix(model(x), {"labels": labels}, step=step)
        optimizer.zero_grad()
        result.total.backward()
        optimizer.step()
        logger.update(result, step=step, batch_size=len(x))
    logger.finish(mix, curves=args.curves, show=not args.quiet)
    return logger.latest


if __name__ == "__main__":
    main()
