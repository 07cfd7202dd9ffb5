"""A whole Lightning training step, eager vs ``loss_compile=True`` (one compiled graph).

The step: a two-layer detector-like head on 256 rows, five terms (focal with the random
sampler and ``num_pos``, focal with a moving-average normaliser, GIoU weighted by a
positive mask, smooth L1, cross-entropy), the term buffer, backward and SGD, inside
``Trainer.fit``. A callback times each step from ``on_train_batch_start`` to
``on_train_batch_end`` (forward, backward, optimizer); the first epoch (where the compiled
run compiles) is not counted. Eager and compiled fits alternate for ``--rounds`` rounds;
the medians of the per-step times are compared.

Usage: ``python -m benchmarks.compiled_step [--steps 60] [--rounds 3] [--write]``
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmarks._results import write_section
from lossmix import CompositeLoss

ROWS, FEATURES, CLASSES = 256, 32, 8

TERMS = {
    "cls": {
        "type": "FocalLoss",
        "inputs": {"pred": "logits", "target": "labels"},
        "sampler": {"type": "RandomSampler", "num": 128, "pos_fraction": 0.25},
        "normalizer": "num_pos",
    },
    "cls_ema": {
        "type": "FocalLoss",
        "inputs": {"pred": "logits", "target": "labels"},
        "normalizer": {"type": "num_pos", "ema": 0.9},
        "loss_weight": 0.5,
    },
    "box": {
        "type": "GIoULoss",
        "inputs": {"pred": "boxes", "target": "box_targets", "weight": "pos"},
        "normalizer": {"type": "weight_sum", "min": 1.0},
        "loss_weight": 2.0,
    },
    "l1": {"type": "SmoothL1Loss", "inputs": {"pred": "deltas", "target": "delta_targets"}},
    "ce": {"type": "CrossEntropyLoss", "inputs": {"pred": "logits", "target": "classes"}},
}


class Head(CompositeLoss, L.LightningModule):
    def __init__(self, compiled: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = torch.nn.Sequential(torch.nn.Linear(FEATURES, 64), torch.nn.ReLU())
        self.cls = torch.nn.Linear(64, CLASSES)
        self.reg = torch.nn.Linear(64, 8)
        self.loss_compile = compiled
        self.loss_preflight = False
        self.configure_loss(TERMS)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, labels, box_targets, delta_targets = batch
        h = self.trunk(x)
        reg = self.reg(h)
        xy = box_targets[:, :2]
        boxes = torch.cat([xy + reg[:, :2], xy + reg[:, 2:4].exp() * 10], dim=1)
        outputs = {"logits": self.cls(h), "boxes": boxes, "deltas": reg[:, 4:]}
        targets = {
            "labels": labels,
            "classes": labels.clamp(max=CLASSES - 1),
            "pos": (labels < CLASSES).float(),
            "box_targets": box_targets,
            "delta_targets": delta_targets,
        }
        return self.compute_loss(outputs, targets, batch_size=ROWS)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def data(steps: int) -> DataLoader:
    gen = torch.Generator().manual_seed(0)
    n = ROWS * steps
    xy = torch.rand(n, 2, generator=gen) * 50
    boxes = torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=gen) * 20], dim=1)
    tensors = (
        torch.randn(n, FEATURES, generator=gen),
        torch.randint(0, CLASSES + 1, (n,), generator=gen),
        boxes,
        torch.randn(n, 4, generator=gen),
    )
    return DataLoader(TensorDataset(*tensors), batch_size=ROWS)


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.current_epoch > 0:  # the first epoch compiles
            self.times.append(time.perf_counter() - self._start)


def fit(compiled: bool, steps: int) -> list[float]:
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=steps,
        callbacks=[timer],
    )
    trainer.fit(Head(compiled), data(steps))
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="steps per epoch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    eager: list[float] = []
    compiled: list[float] = []
    for r in range(args.rounds):  # which one runs first alternates
        if r % 2:
            compiled += fit(True, args.steps)
            eager += fit(False, args.steps)
        else:
            eager += fit(False, args.steps)
            compiled += fit(True, args.steps)
    ratio = statistics.median(compiled) / statistics.median(eager)
    print(f"compiled / eager step time: {ratio:.3f}× ({len(eager)} and {len(compiled)} steps)")
    body = (
        "One `Trainer.fit` training step (forward, five terms with the random sampler, `num_pos`, "
        "a moving-average normaliser and a weighted GIoU, the term buffer, backward, SGD) on 256 "
        f"rows, `loss_compile=True` (Inductor, one graph) relative to eager; median over "
        f"{len(eager)} steps of each, {args.rounds} alternating rounds, the compiling epoch not "
        f"counted.\n\n| step | time |\n|---|---|\n| eager | 1.000× |\n| `loss_compile=True` | {ratio:.3f}× |"
    )
    if args.write:
        command = (
            f"python -m benchmarks.compiled_step --steps {args.steps} --rounds {args.rounds} "
            f"--threads {args.threads} --write"
        )
        write_section("compiled_step", command, body)


if __name__ == "__main__":
    main()
