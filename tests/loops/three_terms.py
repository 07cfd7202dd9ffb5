"""The 3-term mix every loop's test trains: three cross-entropies over the labelled rows (label
-100: not scored), with learned uncertainty weights, on a tiny model and synthetic rows."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

INPUTS = {"pred": "logits", "target": "labels"}
CE = {"type": "CrossEntropyLoss", "ignore_index": -100, "avg_non_ignore": True, "inputs": INPUTS}
MIX: dict[str, Any] = {
    "cls": dict(CE),
    "smooth": {**CE, "label_smoothing": 0.1, "loss_weight": 0.5},
    "weighted": {**CE, "class_weight": [1.0, 2.0, 1.0]},
    "weighting": {"type": "uncertainty"},
}
TERMS = ("cls", "smooth", "weighted")
#: the Lightning app's keys every loop logs
STEP_KEYS = {"train/loss", *(f"train/loss/{t}" for t in (*TERMS, "weighting"))}
WEIGHT_KEYS = {f"train/weight/{t}" for t in TERMS}


class Tagger(nn.Module):
    """features [B, 4] → {"logits": [B, 3]}."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        return {"logits": self.net(features)}


def rows(n: int = 16, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Features and labels; about a third of the labels are -100 (unlabelled)."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(n, 4, generator=gen)
    labels = torch.randint(0, 3, (n,), generator=gen)
    labels[torch.rand(n, generator=gen) < 0.35] = -100
    labels[0] = 1  # every batch of a test has labelled rows
    return features, labels
