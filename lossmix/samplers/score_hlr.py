"""PISA's Score-HLR sampler (Cao et al., "Prime Sample Attention in Object Detection", CVPR 2020).

MMDetection's ``ScoreHLRSampler`` runs the RoI head on the negatives, groups them with
MMCV's ``nms_match`` and weights each selected negative by its hierarchical local rank
(HLR). Here the term routes what the head computed (the class logits, the decoded
boxes) and the engine passes the term's own per-element loss, so the sampler only
ranks, selects and weights, on the device.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import torch
from torch import Tensor

from lossmix.registry.registry import SAMPLERS
from lossmix.samplers.base import rank_in_groups, select_top
from lossmix.samplers.quota import RandomSampler
from lossmix.utilities.checks import check_float, check_positive

__all__ = ["ScoreHLRSampler", "nms_match_groups"]


def _pairwise_iou(boxes: Tensor) -> Tensor:
    """IoU of every pair of boxes in each row: ``(B, n, 4) -> (B, n, n)`` (MMCV's areas, no +1)."""
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    low = torch.maximum(boxes[..., None, :2], boxes[..., None, :, :2])
    high = torch.minimum(boxes[..., None, 2:], boxes[..., None, :, 2:])
    wh = (high - low).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area[..., :, None] + area[..., None, :] - inter
    return torch.where(union > 0, inter / torch.where(union > 0, union, 1.0), 0.0)


def nms_match_groups(boxes: Tensor, scores: Tensor, eligible: Tensor, iou_thr: float) -> Tensor:
    """Each eligible element's rank within its NMS-match group (MMCV's ``nms_match``).

    In descending score order, every box not yet suppressed leads a group and suppresses
    the later boxes overlapping it by IoU ``>= iou_thr``, which join its group; a group
    is ranked by score (its leader has rank 0). The greedy pass is a loop over the ``n``
    sorted positions of each row, batched over rows, with no host sync.

    Shapes: ``boxes`` ``(B, n, 4)``; ``scores``, ``eligible`` ``(B, n)``. Returns ``(B, n)``
    ranks (``n`` for ineligible elements).

    >>> boxes = torch.tensor([[[0.0, 0, 2, 2], [0, 0, 2, 1.9], [5, 5, 6, 6]]])
    >>> nms_match_groups(boxes, torch.tensor([[0.6, 0.9, 0.7]]), torch.ones(1, 3, dtype=torch.bool), 0.5)
    tensor([[1, 0, 0]])
    """
    n = scores.shape[1]
    order = scores.masked_fill(~eligible, float("-inf")).sort(dim=1, descending=True, stable=True).indices
    live = eligible.gather(1, order)
    sorted_boxes = boxes.gather(1, order.unsqueeze(-1).expand(-1, -1, 4))
    overlaps = (_pairwise_iou(sorted_boxes) >= iou_thr) & live.unsqueeze(1) & live.unsqueeze(2)
    later = torch.ones(n, n, dtype=torch.bool, device=boxes.device).triu(diagonal=1)
    leader = torch.arange(n, device=boxes.device).expand_as(order).clone()
    suppressed = torch.zeros_like(live)
    for t in range(n):
        keeps = live[:, t] & ~suppressed[:, t]
        hit = overlaps[:, t] & later[t] & ~suppressed & keeps.unsqueeze(1)
        leader = torch.where(hit, t, leader)
        suppressed |= hit
    position = torch.arange(n, device=boxes.device, dtype=scores.dtype).expand_as(scores)
    rank, _ = rank_in_groups(leader, -position, live)
    return torch.empty_like(rank).scatter_(1, order, rank)


@SAMPLERS.register()
class ScoreHLRSampler(RandomSampler):
    r"""Importance-based sample reweighting of the negatives by Score-HLR (MMDetection's ISR-N).

    Positives and the quotas are :class:`RandomSampler`'s. Of ``E`` negatives to take
    per set (MMDetection's arithmetic, with ``V`` valid negatives):

    1. ``s_i``: the largest foreground probability of negative ``i``
       (``softmax(pred)[..., :-1].max()``, the background last); it is *valid* if
       ``s_i > score_thr``.
    2. The valid negatives are grouped by NMS-match of their ``boxes`` at ``iou_thr``
       (:func:`nms_match_groups`); with ``r_i`` the rank in its group, the importance
       :math:`v_i = V - r_i + s_i` ranks them (within-group rank first, then score):
       ``R_i`` = rank of :math:`v_i`, 0 for the most important.
    3. The ``H = min(V, E)`` most important are taken, the ``E - H`` others at random
       from the invalid negatives.
    4. Weights: :math:`w_i = (U - R_i) / U` with :math:`U = \max(E, V)`, the random ones
       the smallest of those; then :math:`w = (b + (1 - b) w)^k` and all are scaled by
       :math:`\sum_i \ell_i / \sum_i \ell_i w_i` over the selected negatives, so the
       loss total is kept (``ℓ``: the term's own element-wise loss, passed as ``scores``).
       Without valid negatives every weight is 1.

    Selected positives get weight 1. The weights reach the loss as element weights.

    Routed inputs: ``pred``, the class logits ``(..., C + 1)`` (the term's own ``pred``),
    and ``boxes``, each element's predicted box ``(..., 4)`` decoded for its top class.

    Args:
        k: power of the mapping, > 0. bias: shift of the mapping, in ``[0, 1]``.
        score_thr: least foreground score of a valid negative. iou_thr: NMS-match IoU.
        num, pos_fraction, neg_pos_ub, add_gt_as_proposals, seed: as :class:`RandomSampler`.
    """

    needs_scores = True
    routed_inputs: Mapping[str, str] = MappingProxyType(
        {
            "pred": "the class logits (..., C + 1), background last (the term's pred)",
            "boxes": "each element's predicted box (..., 4), decoded for its top class",
        }
    )

    def __init__(
        self,
        *,
        num: int,
        pos_fraction: float,
        neg_pos_ub: float = -1,
        add_gt_as_proposals: bool = False,
        k: float = 0.5,
        bias: float = 0.0,
        score_thr: float = 0.05,
        iou_thr: float = 0.5,
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
        self.k = check_positive(name, "k", k)
        self.bias = check_float(name, "bias", bias, low=0.0, high=1.0)
        self.score_thr = check_float(name, "score_thr", score_thr)
        self.iou_thr = check_float(name, "iou_thr", iou_thr, low=0.0, high=1.0)

    def sample(self, pos: Tensor, neg: Tensor, scores: Tensor | None, **routed: Tensor) -> tuple[Tensor, ...]:
        num_pos, count = self.quotas(pos, neg)
        keys = self.ranking_keys(pos, scores)
        chosen_pos = self.select_pos(pos, num_pos, keys, routed)
        fg = routed["pred"].float().softmax(-1)[..., :-1].amax(-1)
        valid = neg & (fg > self.score_thr)
        num_valid = valid.sum(1)
        num_hlr = torch.minimum(num_valid, count)
        group_rank = nms_match_groups(routed["boxes"].float(), fg, valid, self.iou_thr)
        importance = (num_valid.unsqueeze(1) - group_rank).to(fg.dtype) + fg
        order = (
            importance.masked_fill(~valid, float("-inf")).sort(dim=1, descending=True, stable=True).indices
        )
        position = torch.arange(neg.shape[1], device=neg.device).expand_as(order)
        imp_rank = torch.empty_like(order).scatter_(1, order, position)
        hlr = valid & (imp_rank < num_hlr.unsqueeze(1))
        rand = select_top(keys, neg & ~valid, count - num_hlr, neg.shape[1])
        weight = self._weights(imp_rank, hlr, rand, count, num_valid, num_hlr, scores)
        return chosen_pos, hlr | rand, torch.where(chosen_pos, 1.0, weight)

    def _weights(
        self,
        imp_rank: Tensor,
        hlr: Tensor,
        rand: Tensor,
        count: Tensor,
        num_valid: Tensor,
        num_hlr: Tensor,
        losses: Tensor | None,
    ) -> Tensor:
        """Step 4: the linear map of the ranks, its power, and the renormalisation."""
        bound = torch.maximum(count, num_valid).clamp(min=1).float().unsqueeze(1)
        linear = (bound - imp_rank.float()) / bound
        smallest = (bound - (num_hlr.float().unsqueeze(1) - 1)) / bound
        weight = torch.where(hlr, linear, torch.where(rand, smallest, 0.0))
        weight = (self.bias + (1 - self.bias) * weight).pow(self.k)
        selected = hlr | rand
        if losses is not None:
            loss = torch.where(selected, losses.float(), 0.0)
            weighted = (loss * weight).sum(1, keepdim=True)
            ratio = torch.where(weighted > 0, loss.sum(1, keepdim=True) / weighted.clamp(min=1e-12), 1.0)
            weight = weight * ratio
        uniform = (num_valid == 0).unsqueeze(1)
        return torch.where(selected, torch.where(uniform, 1.0, weight), 0.0)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, k={self.k}, bias={self.bias}, score_thr={self.score_thr}, "
            f"iou_thr={self.iou_thr}"
        )
