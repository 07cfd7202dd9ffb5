"""Tracking, ReID and distillation losses: MMDetection's ``TripletLoss``, QDTrack's
``MultiPosCrossEntropyLoss``, ``MarginL2Loss`` and ``L2Loss``, and LD's
``KnowledgeDistillationKLDivLoss``."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from lossmix.errors import LossConfigError, LossInputError
from lossmix.functional import tracking as F
from lossmix.functional.regression import mse_loss
from lossmix.losses.base import BaseLoss, ElementLoss
from lossmix.registry.registry import LOSSES
from lossmix.utilities.checks import check_bool, check_float, check_int, check_positive, check_same_shape
from lossmix.utilities.rng import SeededGenerator

__all__ = [
    "KnowledgeDistillationKLDivLoss",
    "L2Loss",
    "MarginL2Loss",
    "MultiPosCrossEntropyLoss",
    "TripletLoss",
]


@LOSSES.register()
class TripletLoss(BaseLoss):
    """Batch-hard triplet loss (ReID), see :func:`lossmix.functional.hard_triplet_loss`.

    MMDetection's ``TripletLoss(margin=0.3, loss_weight=1.0, hard_mining=True)`` is the
    mean over the anchors, which is ``reduction='mean'`` here. Only hard mining exists
    (MMDetection raises otherwise).

    Shapes: ``pred`` (embeddings) ``(B, D)``; ``target`` (identities) ``(B,)``; ``weight``
    one per anchor ``(B,)``.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(B, D) float embeddings",
        "target": "(B,) int64 identity labels (equal labels: the same identity)",
        "weight": "(B,) float, one per anchor",
        "returns": "(B,), one per anchor (0 for an anchor without a negative)",
    }

    def __init__(
        self,
        *,
        margin: float = 0.3,
        hard_mining: bool = True,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.margin = check_float(self.loss_name, "margin", margin)
        if check_bool(self.loss_name, "hard_mining", hard_mining) is not True:
            raise LossConfigError(
                f"{self.loss_name}: hard_mining=False is not supported (MMDetection has only the "
                "batch-hard triplet loss); use hard_mining=True."
            )
        self.hard_mining = True

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.dim() != 2 or target.shape != pred.shape[:1]:
            raise LossInputError(
                f"{self.loss_name}: needs embeddings (B, D) and one identity per row (B,); got "
                f"{tuple(pred.shape)} and {tuple(target.shape)}."
            )
        return F.hard_triplet_loss(pred, target, margin=self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, " + super().extra_repr()


@LOSSES.register()
class MultiPosCrossEntropyLoss(BaseLoss):
    """QDTrack's multi-positive cross-entropy, see :func:`lossmix.functional.multi_pos_cross_entropy`.

    Shapes: ``pred`` (similarity scores) and ``target`` (1 for a positive, 0 for a
    negative) ``(N, C)``; ``weight`` one per row ``(N,)``. An integer ``pred`` is cast to
    the default float dtype, as MMDetection's own test passes one.
    """

    integer_pred = True

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, C) float (or integer, cast) similarity scores",
        "target": "(N, C) int64 or float labels, pred's shape: >= 1 positive, 0 negative, < 0 neither",
        "weight": "(N,) float, one per row",
        "returns": "(N,), one per row (0 for a row without positives or negatives)",
    }

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        check_same_shape(self.loss_name, pred, target)
        if pred.dim() != 2:
            raise LossInputError(f"{self.loss_name}: pred must be (N, C) scores; got {tuple(pred.shape)}.")
        return F.multi_pos_cross_entropy(pred, target)


@LOSSES.register()
class MarginL2Loss(BaseLoss):
    """QDTrack's squared error on similarities with margins and negative mining (MMDetection's).

    For targets 1 (positive) and 0 (negative) among the elements of ``weight > 0``:

    1. ``pred`` is lowered by ``pos_margin`` at positives and by ``neg_margin`` at
       negatives (each only when ``> 0``), then clamped to ``[0, 1]``;
    2. with ``neg_pos_ub > 0``, when there are more than ``neg_pos_ub · #positives``
       negatives (over the whole tensor), only that many are kept: the hardest (largest
       squared error) with ``hard_mining``, else a random choice; the others get weight 0;
    3. :math:`\\ell = (p - t)^2`, and ``'mean'`` divides by the number of elements of
       non-zero weight (``+ eps``), MMDetection's ``avg_factor``. A caller's
       ``avg_factor`` replaces it (MMDetection ignores it).

    Random mining draws from the loss's own :class:`~lossmix.utilities.rng.SeededGenerator`
    (``seed``), checkpointed with the loss; nothing reads tensor data on the host.

    Shapes: ``pred``, ``target``, ``weight``: one shape, e.g. ``(N, M)``.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(*) float similarities, e.g. (N, M); clamped to [0, 1] after the margins",
        "target": "(*) float or int64, pred's shape: 1 positive, 0 negative (for the margins and mining)",
        "weight": "(*) float, pred's shape or broadcastable to it; 'mean' counts the elements of weight > 0",
        "returns": "pred's shape, (pred - target)^2 times the (mined) weight",
    }

    def __init__(
        self,
        *,
        neg_pos_ub: int = -1,
        pos_margin: float = -1,
        neg_margin: float = -1,
        hard_mining: bool = False,
        seed: int | None = None,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = self.loss_name
        self.neg_pos_ub = check_int(name, "neg_pos_ub", neg_pos_ub)
        self.pos_margin = check_float(name, "pos_margin", pos_margin)
        self.neg_margin = check_float(name, "neg_margin", neg_margin)
        self.hard_mining = check_bool(name, "hard_mining", hard_mining)
        self.random = SeededGenerator(name, seed)

    def elementwise(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> ElementLoss:
        check_same_shape(self.loss_name, pred, target)
        weight = (
            torch.ones_like(pred) if weight is None else self.prepare_weight(weight, pred).expand_as(pred)
        )
        target = target.to(pred.dtype)
        valid = weight > 0
        pos, neg = valid & (target == 1), valid & (target == 0)
        if self.pos_margin > 0:
            pred = pred - torch.where(pos, self.pos_margin, 0.0)
        if self.neg_margin > 0:
            pred = pred - torch.where(neg, self.neg_margin, 0.0)
        loss = mse_loss(pred.clamp(min=0, max=1), target)
        if self.neg_pos_ub > 0:
            keep = self._mined_negatives(loss, pos, neg)
            weight = torch.where(neg & ~keep, 0.0, weight)
        return ElementLoss(loss, weight, avg_factor=(weight > 0).sum())

    def _mined_negatives(self, loss: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        """The negatives kept: all, or ``neg_pos_ub`` per positive (hardest or random)."""
        flat_neg = neg.reshape(1, -1)
        quota = torch.minimum(flat_neg.sum(1), pos.sum() * self.neg_pos_ub)
        keys = (
            loss.detach().reshape(1, -1)
            if self.hard_mining
            else self.random.rand(flat_neg.shape, loss.device)
        )
        keys = torch.nan_to_num(keys.float(), nan=0.0, posinf=1e30)
        order = keys.masked_fill(~flat_neg, float("-inf")).sort(dim=1, descending=True).indices
        chosen = torch.arange(order.shape[1], device=loss.device) < quota.unsqueeze(1)
        return torch.zeros_like(flat_neg).scatter(1, order, chosen).reshape(neg.shape)

    def get_extra_state(self) -> dict[str, Any]:
        """The random mining's generator state (``{}`` before its first draw)."""
        return self.random.state()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.random.load(state)

    def extra_repr(self) -> str:
        return (
            f"neg_pos_ub={self.neg_pos_ub}, pos_margin={self.pos_margin}, neg_margin={self.neg_margin}, "
            f"hard_mining={self.hard_mining}, " + super().extra_repr()
        )


@LOSSES.register()
class L2Loss(MarginL2Loss):
    """MMDetection's ``L2Loss`` (QDTrack): :math:`(p - t)^2` with the arguments and steps of
    :class:`MarginL2Loss` (so ``pred`` is clamped to ``[0, 1]`` and ``'mean'`` divides by
    the elements of non-zero weight)."""


@LOSSES.register()
class KnowledgeDistillationKLDivLoss(BaseLoss):
    """LD's distillation loss, see :func:`lossmix.functional.knowledge_distillation_kl_div`.

    Args:
        T: the temperature, > 0 (MMDetection asserts ``T >= 1``; lossmix accepts any
            positive temperature).

    Shapes: ``pred`` (student logits), ``target`` (teacher logits, MMDetection's
    ``soft_label``) ``(N, C)``; ``weight`` one per row ``(N,)``.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, C) float student logits",
        "target": "(N, C) float teacher logits (MMDetection's soft_label, detached), pred's shape",
        "weight": "(N,) float, one per row",
        "returns": "(N,), T^2 times the KL divergence averaged over the C classes",
    }

    def __init__(self, *, T: float = 10, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.T = check_positive(self.loss_name, "T", T)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        check_same_shape(self.loss_name, pred, target, what="soft_label")
        if pred.dim() != 2:
            raise LossInputError(f"{self.loss_name}: pred must be (N, C) logits; got {tuple(pred.shape)}.")
        return F.knowledge_distillation_kl_div(pred, target, temperature=self.T)

    def extra_repr(self) -> str:
        return f"T={self.T}, " + super().extra_repr()
