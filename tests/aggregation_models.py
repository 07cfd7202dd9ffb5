"""A two-task model with a shared trunk, and an independent reference of an aggregated step.

Picklable for ``ddp_spawn``. The reference computes, with ``torch.autograd`` and the pure
aggregators only (no ``lossmix.mtl.aggregation``), what one optimizer step with an aggregation
node must do: per-task gradients of the trunk (or of its output) accumulated over the
micro-batches, aggregated, the heads' ordinary gradients, AMP scaling, clipping, SGD.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import torch
from torch import Tensor, nn

from lossmix import CompositeLoss, LossMix


def two_task_terms(aggregation: dict | None = None, weighting: dict | None = None) -> dict:
    terms: dict = {
        "a": {"type": "MSELoss", "inputs": {"pred": "a", "target": "ya"}},
        "b": {"type": "L1Loss", "loss_weight": 2.0, "inputs": {"pred": "b", "target": "yb"}},
    }
    if aggregation is not None:
        terms["aggregation"] = aggregation
    if weighting is not None:
        terms["weighting"] = weighting
    return terms


class SharedTrunk(CompositeLoss, L.LightningModule):
    """``trunk`` (Linear + tanh) feeding two linear heads; the targets make the tasks pull apart."""

    def __init__(
        self,
        aggregation: dict | None = None,
        *,
        lr: float = 0.1,
        weighting: dict | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
        self.head_a = nn.Linear(8, 1)
        self.head_b = nn.Linear(8, 1)
        self.to(dtype)
        self.lr = lr
        self.configure_loss(two_task_terms(aggregation, weighting))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.trunk(x.to(self.trunk[0].weight.dtype))
        return {"a": self.head_a(h)[:, 0], "b": self.head_b(h)[:, 0], "features": h}

    @staticmethod
    def targets(batch: dict[str, Tensor]) -> dict[str, Tensor]:
        y = batch["y"]
        return {"ya": y[:, 0] + y[:, 1], "yb": -2.0 * y[:, 0]}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.compute_loss(self(batch["x"]), self.targets(batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _grads(value: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
    grads = torch.autograd.grad(value, list(params), retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]


def reference_step(
    model: SharedTrunk,
    mix: LossMix,
    batches: Sequence[dict[str, Tensor]],
    *,
    mode: str,
    aggregate: Callable[[Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None = None,
    autocast: torch.dtype | None = None,
    clip: float | None = None,
) -> None:
    """One optimizer step over ``batches`` (the accumulation window), by hand.

    ``aggregate`` maps the task Jacobian (shared mode: the trunk's parameters, summed over the
    window; representation mode: the features, per micro-batch) to the update (shared) or
    the task weights (representation, from the Gramian).
    """
    trunk = list(model.trunk.parameters())
    heads = [*model.head_a.parameters(), *model.head_b.parameters()]
    if scaler is not None:
        scaler.scale(torch.ones(()))  # creates the scaler's scale tensor on first use
    scale = scaler.get_scale() if scaler is not None else 1.0
    window = len(batches)
    jacobian: Tensor | None = None
    head_grads = [torch.zeros_like(p) for p in heads]
    trunk_grads = [torch.zeros_like(p) for p in trunk]
    for batch in batches:
        with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            out = model(batch["x"])
            result = mix(out, model.targets(batch), step=0)
        tasks = [result.terms["a"] * (scale / window), result.terms["b"] * (scale / window)]
        for i, g in enumerate(_grads(sum(tasks), heads)):
            head_grads[i] += g / scale
        if mode == "shared":
            rows = torch.stack([torch.cat([g.flatten() for g in _grads(t, trunk)]) for t in tasks]) / scale
            jacobian = rows if jacobian is None else jacobian + rows
        else:
            z = out["features"]
            rows = torch.stack([_grads(t, [z])[0] for t in tasks])  # scaled
            flat = rows.flatten(1).float() / scale
            weights = aggregate(flat @ flat.T)
            grad_z = (weights.float() @ rows.flatten(1).float()).view_as(z).to(z.dtype)
            for i, g in enumerate(torch.autograd.grad(z, trunk, grad_outputs=grad_z)):
                trunk_grads[i] += g / scale
    if mode == "shared":
        assert jacobian is not None
        update = aggregate(jacobian)
        offset = 0
        for i, p in enumerate(trunk):
            trunk_grads[i] = update[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
    optimizer.zero_grad()
    for p, g in zip([*trunk, *heads], [*trunk_grads, *head_grads], strict=True):
        p.grad = (g * scale).to(p.dtype)
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip is not None:
        torch.nn.utils.clip_grad_norm_([*trunk, *heads], clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
