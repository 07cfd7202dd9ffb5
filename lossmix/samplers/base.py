"""Sampler foundations: the result, the per-set helpers and the one base class.

A sampler takes two disjoint bool masks, the positive and the negative
candidates (elements in neither are ignored), and returns the selected
subsets as a :class:`SampleResult`: element weights and device-side counts.

Shapes: ``pos_mask``, ``neg_mask`` (and OHEM's ``scores``) share one shape.
``(N,)`` is one set; ``(B, ...)`` (two or more dims) is ``B`` sets, sampled
independently along the first dim, so ``num`` applies **per sample** (MMDetection
samples per image). The result's masks have the input shape; its counts are
totals over all sets.

**Routed inputs.** A sampler that needs more than the masks declares it in
:attr:`BaseSampler.routed_inputs` (``IoUBalancedNegSampler``: each element's IoU;
``InstanceBalancedPosSampler``: its ground-truth instance; ``ScoreHLRSampler``: class
scores and boxes). A term routes
them like the loss's own inputs (``inputs: {pred: cls_score, target: labels, ious:
max_overlaps}``) and hands them to ``forward`` by name; each has the masks' shape, or
the masks' shape plus one trailing dimension (boxes ``(..., 4)``). A name the loss also
takes (``pred``) is shared: the sampler sees the loss's input, detached.

Nothing here reads tensor data on the host: a variable number of elements is
chosen by ranking a key per element (random, or the score for OHEM) with the
ineligible ones pushed to ``-inf``, taking ``topk`` with a ``k`` fixed by the
shapes, and keeping the ranks below a device-side count.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from lossmix.errors import LossConfigError, LossInputError
from lossmix.registry.registry import SAMPLERS

__all__ = [
    "BaseSampler",
    "PseudoSampler",
    "SampleResult",
    "check_no_gt_proposals",
    "rank_in_groups",
    "select_top",
]


@dataclass
class SampleResult:
    """The elements a sampler selected.

    Attributes:
        weight: float element weights shaped like the input masks: 1.0 where selected
            (``ScoreHLRSampler``: a selected negative's importance weight), else 0.0.
        pos_mask: bool, the selected positives.
        neg_mask: bool, the selected negatives.
        num_pos: 0-dim float tensor, number of selected positives over all sets (may be 0).
        num_neg: 0-dim float tensor, number of selected negatives over all sets.
    """

    weight: Tensor
    pos_mask: Tensor
    neg_mask: Tensor
    num_pos: Tensor
    num_neg: Tensor

    @property
    def num_sampled(self) -> Tensor:
        """``num_pos + num_neg``."""
        return self.num_pos + self.num_neg


def _as_sets(mask: Tensor) -> Tensor:
    """View ``(N,)`` as one set ``(1, N)`` and ``(B, ...)`` as ``(B, prod(...))``."""
    return mask.unsqueeze(0) if mask.dim() == 1 else mask.flatten(1)


def _result(pos: Tensor, neg: Tensor, shape: torch.Size, weight: Tensor | None = None) -> SampleResult:
    """Pack per-set selections ``(B, n)`` (and weights) back into the input ``shape``."""
    pos, neg = pos.reshape(shape), neg.reshape(shape)
    selected = (pos | neg).to(torch.float32)
    return SampleResult(
        weight=selected if weight is None else torch.where(pos | neg, weight.reshape(shape), 0.0),
        pos_mask=pos,
        neg_mask=neg,
        num_pos=pos.sum().to(torch.float32),
        num_neg=neg.sum().to(torch.float32),
    )


def select_top(keys: Tensor, eligible: Tensor, count: Tensor, k: int, *, stable: bool = False) -> Tensor:
    """Per row, mask the ``count`` eligible elements with the largest finite ``keys``.

    ``k`` (a Python int from the shapes) bounds ``count``. Ineligible keys become
    ``-inf``, so as long as the eligible keys are finite they rank first and every
    rank below ``count <= #eligible`` is eligible. ``stable`` breaks ties by index.
    """
    keys = keys.masked_fill(~eligible, float("-inf"))
    if stable:
        order = keys.sort(dim=1, descending=True, stable=True).indices[:, :k]
    else:
        order = keys.topk(k, dim=1).indices
    chosen = torch.arange(k, device=keys.device) < count.unsqueeze(1)
    return torch.zeros_like(eligible).scatter(1, order, chosen)


def rank_in_groups(groups: Tensor, keys: Tensor, eligible: Tensor) -> tuple[Tensor, Tensor]:
    """Per row, each eligible element's rank (0: largest key) among the eligible elements
    of its group, and the number of groups with an eligible element.

    Two stable sorts (by key, then by group) order every row; a group's first position
    is carried forward with ``cummax``. Ineligible elements get a rank of ``n``.

    >>> groups = torch.tensor([[3, 1, 3, 1, 7]])
    >>> keys = torch.tensor([[0.2, 0.9, 0.8, 0.1, 0.5]])
    >>> rank_in_groups(groups, keys, torch.tensor([[True, True, True, True, False]]))
    (tensor([[1, 0, 0, 1, 5]]), tensor([2]))
    """
    n = groups.shape[1]
    sentinel = torch.iinfo(torch.int64).max
    groups = torch.where(eligible, groups.long(), sentinel)
    by_key = keys.sort(dim=1, descending=True, stable=True).indices
    order = by_key.gather(1, groups.gather(1, by_key).sort(dim=1, stable=True).indices)
    sorted_groups = groups.gather(1, order)
    starts = torch.ones_like(eligible)
    starts[:, 1:] = sorted_groups[:, 1:] != sorted_groups[:, :-1]
    position = torch.arange(n, device=groups.device).expand_as(order)
    first = torch.where(starts, position, 0).cummax(dim=1).values
    ranks = torch.empty_like(order).scatter_(1, order, position - first)
    count = (starts & (sorted_groups != sentinel)).sum(1)
    return torch.where(eligible, ranks, n), count


def check_no_gt_proposals(owner: str, add_gt_as_proposals: Any) -> bool:
    """``add_gt_as_proposals`` must be False: lossmix samples among the elements it is given."""
    if add_gt_as_proposals is False:
        return False
    if add_gt_as_proposals is True:
        raise LossConfigError(
            f"{owner}: add_gt_as_proposals=True is not supported: a sampler here chooses among the "
            "elements the term already has, and ground-truth boxes as proposals come from the "
            "model's assigner; append them to the proposals there and route them as positives "
            "(their labels in the target, or inputs.pos_mask), then set add_gt_as_proposals=False."
        )
    raise LossConfigError(f"{owner}: add_gt_as_proposals={add_gt_as_proposals!r} is not valid; use False.")


def _routed_sets(owner: str, name: str, value: Any, shape: torch.Size) -> Tensor:
    """A routed tensor of the masks' shape (plus at most one trailing dim) as per-set rows."""
    if not isinstance(value, Tensor):
        raise LossInputError(
            f"{owner}: routed input '{name}' must be a tensor shaped like the masks {tuple(shape)}; "
            f"got a {type(value).__name__}."
        )
    if value.shape == shape:
        return _as_sets(value.detach())
    if value.dim() == len(shape) + 1 and value.shape[:-1] == shape:
        rows: Tensor = value.detach()
        return rows.unsqueeze(0) if len(shape) == 1 else rows.flatten(1, -2)
    raise LossInputError(
        f"{owner}: routed input '{name}' of shape {tuple(value.shape)} does not fit the masks of "
        f"shape {tuple(shape)}; give one value per element, {tuple(shape)}, or one row per "
        f"element, {(*tuple(shape), 'D')}."
    )


class BaseSampler(nn.Module, metaclass=abc.ABCMeta):
    """Chooses which positive and negative candidates a term scores.

    Subclasses implement :meth:`sample` on per-set masks ``(B, n)``; ``forward``
    checks the inputs and reshapes. ``needs_scores`` tells the engine to pass a
    per-element loss computed without gradient (OHEM, ScoreHLR).
    ``routed_inputs`` names the extra inputs the sampler needs (and says what each
    is); ``forward`` takes them by keyword and :meth:`sample` receives them as
    per-set rows ``(B, n)`` or ``(B, n, D)``.
    """

    needs_scores: bool = False
    routed_inputs: Mapping[str, str] = MappingProxyType({})

    @property
    def sampler_name(self) -> str:
        """Name used in error messages."""
        return type(self).__name__

    def forward(
        self, pos_mask: Tensor, neg_mask: Tensor, scores: Tensor | None = None, **routed: Tensor
    ) -> SampleResult:
        """Select among ``pos_mask`` / ``neg_mask`` (same shape, bool; see the module docs).

        ``routed`` holds the inputs named by :attr:`routed_inputs`.

        Returns:
            :class:`SampleResult` with masks of the input shape and total counts.
        """
        self.check_masks(pos_mask, neg_mask, scores)
        sets = self.check_routed(routed, pos_mask.shape)
        # An element in both masks counts as a positive (only checked on CPU).
        neg_mask = neg_mask & ~pos_mask
        sets_scores = None if scores is None else _as_sets(scores.detach())
        pos, neg = _as_sets(pos_mask), _as_sets(neg_mask)
        out = self.sample(pos, neg, sets_scores, **sets) if sets else self.sample(pos, neg, sets_scores)
        return _result(out[0], out[1], pos_mask.shape, weight=out[2] if len(out) > 2 else None)

    @abc.abstractmethod
    def sample(self, pos: Tensor, neg: Tensor, scores: Tensor | None, **routed: Tensor) -> tuple[Tensor, ...]:
        """Selected positives and negatives, bool ``(B, n)``, from candidates ``(B, n)``;
        optionally a third entry, float element weights ``(B, n)`` for the selection."""

    def check_routed(self, routed: Mapping[str, Any], shape: torch.Size) -> dict[str, Tensor]:
        """The routed inputs as per-set rows; raise naming what is missing or unknown."""
        name = self.sampler_name
        unknown = sorted(set(routed) - set(self.routed_inputs))
        if unknown:
            takes = ", ".join(self.routed_inputs) or "none"
            raise LossInputError(f"{name}: unexpected routed input(s) {unknown}; it takes {takes}.")
        missing = [k for k in self.routed_inputs if k not in routed]
        if missing:
            needs = "; ".join(f"'{k}': {self.routed_inputs[k]}" for k in missing)
            raise LossInputError(
                f"{name}: routed input(s) {missing} missing; it needs {needs}. A term routes "
                f"them with inputs.{missing[0]}: <key>; a direct call passes {missing[0]}=<tensor>."
            )
        return {k: _routed_sets(name, k, routed[k], shape) for k in self.routed_inputs}

    def check_masks(self, pos_mask: Tensor, neg_mask: Tensor, scores: Tensor | None) -> None:
        """Static checks (dtype, shape); the overlap check reads data, so CPU only."""
        name = self.sampler_name
        for label, mask in (("pos_mask", pos_mask), ("neg_mask", neg_mask)):
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
                got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
                raise LossInputError(
                    f"{name}: {label} must be a bool tensor, got {got}; pass a comparison such as labels > 0."
                )
            if mask.dim() == 0:
                raise LossInputError(
                    f"{name}: {label} is 0-dim; give one flag per element, shape (N,) or (B, ...)."
                )
        if pos_mask.shape != neg_mask.shape:
            raise LossInputError(
                f"{name}: pos_mask of shape {tuple(pos_mask.shape)} and neg_mask of shape "
                f"{tuple(neg_mask.shape)} must have the same shape."
            )
        if self.needs_scores and scores is None:
            raise LossInputError(
                f"{name}: scores are missing; it ranks elements by a per-element loss computed "
                "without gradient: pass scores=<tensor shaped like pos_mask>."
            )
        if scores is not None and scores.shape != pos_mask.shape:
            raise LossInputError(
                f"{name}: scores of shape {tuple(scores.shape)} and pos_mask of shape "
                f"{tuple(pos_mask.shape)} must have the same shape (one score per element)."
            )
        # Data is free to read on CPU; elsewhere it would be a host sync, so skipped.
        if pos_mask.device.type == "cpu" and not torch.compiler.is_compiling():
            if not torch.equal(pos_mask & neg_mask, torch.zeros_like(pos_mask)):
                raise LossInputError(
                    f"{name}: some elements are in both pos_mask and neg_mask; each element "
                    "must be a positive, a negative or neither (ignored)."
                )


SAMPLERS.require_base(BaseSampler)


@SAMPLERS.register()
class PseudoSampler(BaseSampler):
    """Selects every positive and every negative (MMDetection's default when none is set).

    ``num_pos`` / ``num_neg`` are the mask sums.
    """

    def sample(self, pos: Tensor, neg: Tensor, scores: Tensor | None, **routed: Tensor) -> tuple[Tensor, ...]:
        return pos, neg
