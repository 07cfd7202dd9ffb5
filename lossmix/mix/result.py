"""One step's result (:class:`LossResult`) and the small tensor helpers of the engine.

Kept apart from :mod:`lossmix.mix.loss_mix` so the engine's module holds the mix itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lossmix.errors import LossInputError

__all__ = ["LossResult", "device_of", "gate", "zero_like"]


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

    def check_finite(self) -> None:
        """Raise :class:`~lossmix.errors.LossInputError` naming the first non-finite term and
        why, if the total is NaN or Inf; else return. For loops outside Lightning (where the
        ``NonFiniteLossGuard`` callback does this); it reads the device once (a host sync), so
        call it where a sync is cheap (after ``backward``, every N steps, or when debugging).

        The cause named, in this order: a routed input holding NaN/Inf (``pred``, ``target``,
        ``weight``, ...), a negative element weight, the normaliser's value (NaN, Inf, or
        <= 0 for a key normaliser without ``min``), a non-finite scalar weight, else the
        loss itself (its kernel produced the NaN from finite inputs). Naming the input needs
        the routed inputs (``LossMix.keep_inputs``, on unless the guard's ``zero`` policy
        turned it off).

        >>> import torch
        >>> from lossmix import LossMix
        >>> mix = LossMix.from_config({"reg": {"type": "L1Loss", "inputs": {"pred": "p", "target": "t"}}})
        >>> mix({"p": torch.zeros(2)}, {"t": torch.tensor([1.0, float("nan")])}).check_finite()
        Traceback (most recent call last):
        ...
        lossmix.errors.LossInputError: term 'reg': the loss is nan because input 'target' holds 1 ...
        """
        keys = list(self.terms)
        values = [self.raw[k] for k in keys] + [self.terms[k] for k in keys] + [self.total]
        finite = torch.stack([torch.isfinite(v.detach()).all() for v in values]).tolist()  # one sync
        bad = [
            k
            for k, ok_raw, ok in zip(keys, finite[: len(keys)], finite[len(keys) : -1], strict=True)
            if not (ok_raw and ok)
        ]
        if finite[-1] and not bad:
            return
        key = bad[0] if bad else "total"
        term = self.term_of.get(key, key)
        value = (self.terms.get(key, self.total)).detach()
        raise LossInputError(f"term '{key}': the loss is {_shown(value)} because {self._cause(key, term)}")

    def _cause(self, key: str, term: str) -> str:
        """Why ``term``'s value is not finite, with the fix (reads the device)."""
        inputs = self.inputs.get(term, {})
        for arg, value in inputs.items():
            if isinstance(value, Tensor) and value.is_floating_point():
                count = int((~torch.isfinite(value.detach())).sum())
                if count:
                    return (
                        f"input '{arg}' holds {count} NaN/Inf value(s) of {value.numel()} (0 x NaN is "
                        "NaN, so a zero weight does not mask them); clean the data or drop those "
                        "elements before the loss."
                    )
        weight = inputs.get("weight")
        if isinstance(weight, Tensor) and weight.numel() and bool((weight < 0).any()):
            return (
                f"its element weight has {int((weight < 0).sum())} negative value(s) (min "
                f"{float(weight.min()):.4g}), which would maximise the term; give weights >= 0, or "
                "add allow_negative: true to the term if that is meant."
            )
        divisor = self.stats.get(f"{term}.count")
        if divisor is not None and (not bool(torch.isfinite(divisor).all()) or bool((divisor <= 0).any())):
            return (
                f"its normalizer read {_shown(divisor)}; a normaliser must be a finite count > 0: fix "
                "the key's value, or floor it with normalizer: {type: key, key: <key>, min: 1} "
                "(MMDetection's max(num_pos, 1))."
            )
        weight_value = self.weights.get(key, 1.0)
        if not bool(torch.isfinite(torch.as_tensor(weight_value)).all()):
            return (
                f"its scalar weight is {_shown(torch.as_tensor(weight_value))} (a schedule or weighting "
                "went non-finite); check the term's schedule or the weighting's settings."
            )
        if not inputs:
            return (
                "of a non-finite input or the loss itself; set mix.keep_inputs = True to have the "
                "input named."
            )
        return (
            "the loss itself produced it from finite inputs (e.g. a log of 0, or pred out of the "
            "loss's range); check pred's range against what the loss expects."
        )


class _Gate(torch.autograd.Function):
    """Identity forward; backward passes the gradient only where ``keep`` (read at backward)."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, keep: Tensor) -> Tensor:
        ctx.keep = keep  # not saved_tensors: it is written after this forward, on purpose
        return value.view_as(value)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return torch.where(ctx.keep, grad, torch.zeros_like(grad)), None


def _shown(value: Tensor) -> str:
    """A scalar as ``nan``/``inf``/``0``, a tensor as its first non-finite or smallest value."""
    flat = value.detach().float().reshape(-1)
    bad = flat[~torch.isfinite(flat)]
    pick = bad[0] if bad.numel() else (flat.min() if flat.numel() else torch.tensor(0.0))
    return f"{float(pick):g}"


def device_of(kwargs: dict[str, Any]) -> torch.device | None:
    """The device of the first tensor among ``kwargs``' values (``None``: no tensor)."""
    return next((v.device for v in kwargs.values() if isinstance(v, Tensor)), None)


def gate(value: Any, keep: Tensor) -> Any:
    """``value`` unchanged forward; its gradient zeroed unless ``keep`` (read at backward)."""
    if isinstance(value, Tensor) and value.requires_grad:
        return _Gate.apply(value, keep)  # type: ignore[no-untyped-call]  # torch's stub is untyped
    return value


def zero_like(terms: dict[str, Tensor]) -> Tensor:
    """A zero connected to the first term (a plain zero when there is none)."""
    values = list(terms.values())
    return values[0] * 0.0 if values else torch.zeros(())
