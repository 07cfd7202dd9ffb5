"""One step's result (:class:`LossResult`) and the small tensor helpers of the engine.

Kept apart from :mod:`lossmix.mix.loss_mix` so the engine's module holds the mix itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["LossResult", "device_of", "gate", "sum_of", "zero_like"]


@dataclass
class LossResult:
    """One step's losses.

    Attributes:
        total: the objective, Σ weight × raw over the terms with ``in_total``.
        terms: weighted contribution of every term and sub-term, by log key (``name`` /
            ``name.part``; a term's ``loss_name`` replaces its name). Terms sharing a log key
            are added into one entry, as MMagic sums its same-named losses.
        raw: the same before the scalar weight (step 5); for a shared log key, the sum of
            the weighted contributions (with weight 1).
        weights: the effective weight used this step (lazy ×k included; 0 when skipped).
        stats: counts such as ``cls.num_pos``, ``cls.num_sampled``, ``cls.avg_factor``.
        group: the group computed, or ``None``.
        dynamic: keys whose weight changes during training (scheduled or learned);
            their weights are logged as ``{stage}/weight/{key}``.
        inputs: each computed term's routed arguments, kept only when
            ``LossMix.keep_inputs`` is set (the non-finite guard's ``raise`` policy).
        skipped: keys of the lazy terms this step skipped (their values are connected zeros;
            the logger keeps their last computed value instead).
        unnormalized_total: in training, when the terms' normalisers have ``scope:
            accumulation``: the total with each term's divisor multiplied back (Σ weight ×
            the loss's sum), for the gradient-accumulation window's own divisor.
        task_losses: the weighted task losses before the ``weighting`` factors, stacked
            (detached), when the mix has a weighting.
        aggregation_input: the routed representation of an ``aggregation`` node with
            ``over: representation`` (training steps).
        term_of: the term each log key of ``terms`` belongs to (``loss_l1`` → ``rec``).
    """

    total: Tensor
    terms: dict[str, Tensor]
    raw: dict[str, Tensor]
    weights: dict[str, float | Tensor]
    stats: dict[str, Tensor] = field(default_factory=dict)
    group: str | None = None
    dynamic: tuple[str, ...] = ()
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()
    unnormalized_total: Tensor | None = None
    task_losses: Tensor | None = None
    aggregation_input: Tensor | None = None
    term_of: dict[str, str] = field(default_factory=dict)

    def task_keys(self, tasks: Sequence[str]) -> dict[str, list[str]]:
        """Each task (a term's name) → the log keys of its contributions in :attr:`terms`
        (its parts, under its ``loss_name`` if it has one)."""
        return {task: [k for k, t in self.term_of.items() if t == task] for task in tasks}

    def __getitem__(self, name: str) -> Tensor:
        return self.terms[name]


class _Gate(torch.autograd.Function):
    """Identity forward; backward passes the gradient only where ``keep`` (read at backward)."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, keep: Tensor) -> Tensor:
        ctx.keep = keep  # not saved_tensors: it is written after this forward, on purpose
        return value.view_as(value)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return torch.where(ctx.keep, grad, torch.zeros_like(grad)), None


def device_of(kwargs: dict[str, Any]) -> torch.device | None:
    """The device of the first tensor among ``kwargs``' values (``None``: no tensor)."""
    return next((v.device for v in kwargs.values() if isinstance(v, Tensor)), None)


def gate(value: Any, keep: Tensor) -> Any:
    """``value`` unchanged forward; its gradient zeroed unless ``keep`` (read at backward)."""
    if isinstance(value, Tensor) and value.requires_grad:
        return _Gate.apply(value, keep)  # type: ignore[no-untyped-call]  # torch's stub is untyped
    return value


def sum_of(values: list[Tensor]) -> Tensor:
    """``Σ values`` of scalar tensors: one ``stack`` and one ``sum`` in eager mode (two ops
    whatever K); under ``torch.compile`` a chain of adds, which Inductor fuses into the
    step's kernel, where a stack would write K aliased views of one buffer first."""
    if torch.compiler.is_compiling():
        total = values[0]
        for value in values[1:]:
            total = total + value
        return total
    return torch.stack(values).sum()


def zero_like(terms: dict[str, Tensor]) -> Tensor:
    """A zero connected to the first term (a plain zero when there is none)."""
    values = list(terms.values())
    return values[0] * 0.0 if values else torch.zeros(())
