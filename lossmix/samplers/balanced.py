"""Libra R-CNN's balanced samplers (Pang et al., CVPR 2019) and MMDetection's ``CombinedSampler``.

Both follow MMDetection's arithmetic step by step; each step ("take up to ``q`` of this
set at random") is one :func:`~lossmix.samplers.base.select_top` over fresh random keys
with a device-side quota, so nothing reads tensor data on the host. The quotas of
:class:`~lossmix.samplers.quota.QuotaSampler` fix how many of each side are taken;
these samplers only change *which*.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from lossmix.errors import LossConfigError
from lossmix.registry.nodes import to_plain
from lossmix.registry.registry import SAMPLERS
from lossmix.samplers.base import rank_in_groups, select_top
from lossmix.samplers.quota import QuotaSampler, RandomSampler, float64_on
from lossmix.utilities.checks import check_float, check_int

__all__ = ["CombinedSampler", "InstanceBalancedPosSampler", "IoUBalancedNegSampler"]


@SAMPLERS.register()
class InstanceBalancedPosSampler(RandomSampler):
    """Positives balanced over ground-truth instances; negatives at random (Libra R-CNN).

    Per set, when there are more than ``E = int(num * pos_fraction)`` positives
    (MMDetection's ``_sample_pos``): with ``G`` distinct instances among them, each
    instance keeps at most ``int(round(E / G) + 1)`` of its positives (chosen at random,
    ``round`` halving to even as Python's), then the total is brought to exactly ``E``:
    topped up at random from the other positives, or cut at random. Otherwise every
    positive is kept. The negatives are :class:`RandomSampler`'s.

    Routed input ``gt_inds``: per element, the id of its ground-truth instance
    (MMDetection's ``AssignResult.gt_inds``; any integers, only the positives' matter).
    Other arguments as :class:`RandomSampler`.
    """

    routed_inputs: Mapping[str, str] = MappingProxyType(
        {"gt_inds": "per element, the id of the ground-truth instance it is assigned to"}
    )

    def select_pos(self, pos: Tensor, count: Tensor, keys: Tensor, routed: dict[str, Tensor]) -> Tensor:
        expected = self.num_expected_pos
        order = self.random.rand(pos.shape, pos.device)
        rank, instances = rank_in_groups(routed["gt_inds"], order, pos)
        share = expected / instances.clamp(min=1).to(float64_on(pos.device))
        per_instance = torch.round(share) + 1
        first = pos & (rank < per_instance.unsqueeze(1))
        # The first pass ranks above everything else; random keys order within each group.
        return select_top(first.to(keys.dtype) + keys, pos, count, min(expected, pos.shape[1]))


def _random_subset(sampler: RandomSampler, eligible: Tensor, quota: Tensor) -> Tensor:
    """Up to ``quota`` of the ``eligible`` elements of each row, uniformly at random."""
    keys = sampler.random.rand(eligible.shape, eligible.device)
    return select_top(keys, eligible, torch.minimum(quota, eligible.sum(1)), eligible.shape[1])


@SAMPLERS.register()
class IoUBalancedNegSampler(RandomSampler):
    """Negatives balanced over IoU bins; positives at random (Libra R-CNN's IoU-balanced sampling).

    Per set, when there are more than ``E`` negatives (MMDetection's ``_sample_neg``):

    1. The negatives split into a floor set and an IoU-sampling set by their IoU ``u``:
       ``0 <= u < floor_thr`` and ``u >= floor_thr`` (``floor_thr > 0``); ``u == 0`` and
       ``u > 0`` (``floor_thr == 0``); none and all (``floor_thr == -1``).
    2. ``E_iou = int(E * (1 - floor_fraction))`` come from the IoU-sampling set when it is
       larger: with ``num_bins >= 2`` the range ``[f, max u)`` (``f = max(floor_thr, 0)``,
       ``max u`` over every element of the set) is cut into ``num_bins`` equal bins, each
       giving at most ``int(E_iou / num_bins)`` at random, topped up at random from the
       rest of the set; with one bin, ``E_iou`` at random. Otherwise the whole set.
    3. The floor set gives up to ``E`` minus that, at random; any shortfall is filled at
       random from the remaining negatives.

    Routed input ``ious``: per element, its IoU with the best-matching ground truth
    (MMDetection's ``AssignResult.max_overlaps``).

    Args:
        floor_thr: IoU below which negatives are sampled at random, ``>= 0``, or ``-1``
            to balance every negative by IoU.
        floor_fraction: share of ``E`` taken from the floor set, in ``[0, 1]``.
        num_bins: IoU bins, ``int >= 1``.
        num, pos_fraction, neg_pos_ub, add_gt_as_proposals, seed: as :class:`RandomSampler`.
    """

    routed_inputs: Mapping[str, str] = MappingProxyType(
        {"ious": "per element, its IoU with the best-matching ground truth (max_overlaps)"}
    )

    def __init__(
        self,
        *,
        num: int,
        pos_fraction: float,
        floor_thr: float = -1,
        floor_fraction: float = 0,
        num_bins: int = 3,
        neg_pos_ub: float = -1,
        add_gt_as_proposals: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            num=num,
            pos_fraction=pos_fraction,
            neg_pos_ub=neg_pos_ub,
            add_gt_as_proposals=add_gt_as_proposals,
            seed=seed,
        )
        name = self.sampler_name
        self.floor_thr = check_float(name, "floor_thr", floor_thr)
        if self.floor_thr < 0 and self.floor_thr != -1:
            raise LossConfigError(
                f"{name}: floor_thr={floor_thr!r} is not valid; give an IoU >= 0, or -1 to balance "
                "every negative by IoU."
            )
        self.floor_fraction = check_float(name, "floor_fraction", floor_fraction, low=0.0, high=1.0)
        self.num_bins = check_int(name, "num_bins", num_bins, min=1)

    def select_neg(self, neg: Tensor, count: Tensor, keys: Tensor, routed: dict[str, Tensor]) -> Tensor:
        ious = routed["ious"].to(float64_on(neg.device))
        if self.floor_thr > 0:
            floor, balanced = neg & (ious >= 0) & (ious < self.floor_thr), neg & (ious >= self.floor_thr)
        elif self.floor_thr == 0:
            floor, balanced = neg & (ious == 0), neg & (ious > 0)
        else:
            floor, balanced = torch.zeros_like(neg), neg & (ious > -1)
        quota = (count.to(ious.dtype) * (1 - self.floor_fraction)).floor().long()
        chosen = self._iou_balanced(balanced, ious, quota)
        chosen |= _random_subset(self, floor & ~chosen, count - chosen.sum(1))
        return chosen | _random_subset(self, neg & ~chosen, count - chosen.sum(1))

    def _iou_balanced(self, eligible: Tensor, ious: Tensor, quota: Tensor) -> Tensor:
        """``quota`` of ``eligible`` balanced over the IoU bins (all of it if not larger)."""
        if self.num_bins == 1:
            return _random_subset(self, eligible, quota)
        low = max(self.floor_thr, 0.0)
        interval = (ious.amax(dim=1, keepdim=True) - low) / self.num_bins
        starts = low + torch.arange(self.num_bins + 1, device=ious.device, dtype=ious.dtype) * interval
        # bin i holds starts[i] <= u < starts[i + 1], as MMDetection's comparisons
        bins = (ious.unsqueeze(-1) >= starts.unsqueeze(1)).sum(-1) - 1
        in_bin = eligible & (bins >= 0) & (bins < self.num_bins)
        order = self.random.rand(eligible.shape, eligible.device)
        rank, _ = rank_in_groups(bins, order, in_bin)
        chosen = in_bin & (rank < torch.div(quota, self.num_bins, rounding_mode="floor").unsqueeze(1))
        chosen |= _random_subset(self, eligible & ~chosen, quota - chosen.sum(1))
        larger = eligible.sum(1) > quota
        return torch.where(larger.unsqueeze(1), chosen, eligible)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, floor_thr={self.floor_thr}, floor_fraction={self.floor_fraction}, "
            f"num_bins={self.num_bins}"
        )


def _sub_sampler(owner: str, which: str, node: Any, shared: dict[str, Any]) -> QuotaSampler:
    node = to_plain(node)
    if not isinstance(node, Mapping):
        raise LossConfigError(
            f"{owner}: {which}={node!r} is not valid; give a sampler node such as "
            "{type: InstanceBalancedPosSampler}."
        )
    node = dict(node)
    try:
        by_name = "type" in node
        cls, _ = SAMPLERS.resolve(node.get("type") if by_name else node.get("_target_"), by_name=by_name)
        if not (isinstance(cls, type) and issubclass(cls, QuotaSampler)):
            got = getattr(cls, "__name__", cls)
            raise LossConfigError(
                f"{which} must be a quota sampler (RandomSampler, OHEMSampler, "
                f"InstanceBalancedPosSampler, IoUBalancedNegSampler, ...); got {got}."
            )
        sampler: QuotaSampler = SAMPLERS.build({**shared, **node})
    except LossConfigError as err:
        raise LossConfigError(f"{owner}: {which}: {err}") from err
    return sampler


@SAMPLERS.register()
class CombinedSampler(QuotaSampler):
    """Positives from one sampler, negatives from another, with one set of quotas (MMDetection's).

    Libra R-CNN: ``{type: CombinedSampler, num: 512, pos_fraction: 0.25,
    pos_sampler: {type: InstanceBalancedPosSampler}, neg_sampler: {type:
    IoUBalancedNegSampler, floor_thr: -1, floor_fraction: 0, num_bins: 3}}``. The
    sub-samplers get ``num``, ``pos_fraction``, ``neg_pos_ub`` and
    ``add_gt_as_proposals`` as defaults; the quotas are this sampler's. Routed inputs
    and the need for scores are the union of the two.
    """

    def __init__(
        self,
        *,
        num: int,
        pos_fraction: float,
        pos_sampler: Mapping[str, Any],
        neg_sampler: Mapping[str, Any],
        neg_pos_ub: float = -1,
        add_gt_as_proposals: bool = False,
    ) -> None:
        super().__init__(
            num=num, pos_fraction=pos_fraction, neg_pos_ub=neg_pos_ub, add_gt_as_proposals=add_gt_as_proposals
        )
        shared = {"num": num, "pos_fraction": pos_fraction, "neg_pos_ub": neg_pos_ub}
        self.pos_sampler = _sub_sampler(self.sampler_name, "pos_sampler", pos_sampler, shared)
        self.neg_sampler = _sub_sampler(self.sampler_name, "neg_sampler", neg_sampler, shared)
        self.needs_scores = self.pos_sampler.needs_scores or self.neg_sampler.needs_scores
        self.routed_inputs = MappingProxyType(
            {**self.pos_sampler.routed_inputs, **self.neg_sampler.routed_inputs}
        )

    def ranking_keys(self, pos: Tensor, scores: Tensor | None) -> Tensor:
        return self.pos_sampler.ranking_keys(pos, scores)

    def sample(self, pos: Tensor, neg: Tensor, scores: Tensor | None, **routed: Tensor) -> tuple[Tensor, ...]:
        num_pos, num_neg = self.quotas(pos, neg)
        pos_keys = self.pos_sampler.ranking_keys(pos, scores)
        neg_keys = self.neg_sampler.ranking_keys(neg, scores)
        return (
            self.pos_sampler.select_pos(pos, num_pos, pos_keys, routed),
            self.neg_sampler.select_neg(neg, num_neg, neg_keys, routed),
        )
