"""The stateful aggregators: GradVac's running cosine targets and DB-MTL's running log-loss
gradients are buffers, so checkpoints carry them; a step with non-finite gradients (an AMP
overflow the scaler skips) leaves them as they were."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

import lossmix.mtl.functional as F
from lossmix.mtl.aggregators.base import AGGREGATION_KEY, BaseAggregator, SeededAggregator, all_finite
from lossmix.registry.registry import AGGREGATORS
from lossmix.utilities.checks import check_float

__all__ = ["DBMTL", "GradVac"]

_CPU = torch.device("cpu")


@AGGREGATORS.register(name="gradvac")
class GradVac(SeededAggregator):
    """GradVac (Wang et al. 2021), stateful: each pair's cosine raised to its running target
    (:func:`lossmix.functional.gradvac_weights`).

    The running cosine targets ``φ̂`` (K, K) are the buffer ``targets``; an update with a
    non-finite Gramian (an AMP overflow step) leaves them unchanged.

    Args:
        beta: EMA rate of the targets, in ``[0, 1]`` (the paper uses 0.01).
        seed: seed of the random orders (the same on every rank).
    """

    method_name = "gradvac"
    targets: Tensor

    def __init__(self, tasks: Sequence[str], *, beta: float = 0.01, seed: int = 0) -> None:
        super().__init__(tasks, seed=seed)
        self.beta = check_float(f"{AGGREGATION_KEY}: gradvac", "beta", beta, low=0.0, high=1.0)
        self.register_buffer("targets", torch.zeros(len(self.tasks), len(self.tasks)))

    def weights(self, gramian: Tensor) -> Tensor:
        targets = self.targets.to(gramian.dtype)
        weights, new = F.gradvac_weights(gramian, targets, beta=self.beta, generator=self.generator.on(_CPU))
        self.targets.copy_(torch.where(all_finite(gramian), new, targets))
        return weights


@AGGREGATORS.register(name="db_mtl")
class DBMTL(BaseAggregator):
    """DB-MTL (Lin et al. 2023), stateful: running log-loss gradients, each scaled to the largest norm.

    The log-loss gradients ``∇log(L_i + ε)`` are averaged as ``ĝ ← g + (β / t^σ)(ĝ − g)``
    (buffer ``average``, K×D, created at the first step), then
    :func:`lossmix.functional.db_mtl`. ``over: shared`` only (the average is over
    parameters, which a representation's gradients are not).

    Args:
        beta: averaging factor ``β`` in ``[0, 1)``.
        beta_sigma: decay exponent ``σ ≥ 0`` of ``β / t^σ``.
        eps: ``ε`` inside the log.
    """

    method_name = "db_mtl"
    needs_losses = True
    average: Tensor
    step: Tensor

    def __init__(
        self, tasks: Sequence[str], *, beta: float = 0.9, beta_sigma: float = 0.0, eps: float = 1e-8
    ) -> None:
        super().__init__(tasks)
        owner = f"{AGGREGATION_KEY}: db_mtl"
        self.beta = check_float(owner, "beta", beta, low=0.0, high=1.0, high_open=True)
        self.beta_sigma = check_float(owner, "beta_sigma", beta_sigma, low=0.0)
        self.eps = check_float(owner, "eps", eps, low=0.0, low_open=True)
        self.register_buffer("average", torch.zeros(0))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def combine(self, jacobian: Tensor, losses: Tensor | None) -> Tensor:
        assert losses is not None  # forward checks needs_losses
        logs = jacobian / (losses.to(jacobian.dtype).clamp(min=0.0) + self.eps)[:, None]
        if self.average.shape != logs.shape:
            self.average = torch.zeros_like(logs)
        step = (self.step + 1).to(logs.dtype)
        average = logs + self.beta / step**self.beta_sigma * (self.average.to(logs.dtype) - logs)
        finite = all_finite(logs)
        self.average.copy_(torch.where(finite, average, self.average))
        self.step.add_(finite.long())
        return F.db_mtl(average)

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
        saved = state_dict.get(prefix + "average")
        if isinstance(saved, Tensor) and saved.shape != self.average.shape:
            self.average = torch.zeros_like(saved, device=self.average.device)
        super()._load_from_state_dict(state_dict, prefix, *args)
