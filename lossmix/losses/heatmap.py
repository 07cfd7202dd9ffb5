"""CornerNet/CenterNet losses: MMDetection's ``GaussianFocalLoss`` and ``AssociativeEmbeddingLoss``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from lossmix.errors import LossInputError
from lossmix.functional import heatmap as F
from lossmix.losses.base import BaseLoss, ElementLoss
from lossmix.registry.registry import LOSSES
from lossmix.utilities.checks import check_float, check_positive, check_same_shape

__all__ = ["AssociativeEmbeddingLoss", "GaussianFocalLoss"]


@LOSSES.register()
class GaussianFocalLoss(BaseLoss):
    """Focal loss on Gaussian heatmaps (CornerNet, CenterNet), see
    :func:`lossmix.functional.gaussian_focal_loss`.

    ``pred`` holds probabilities, ``target`` the Gaussian heatmap (peaks exactly 1);
    both ``(N, C, H, W)`` or any one shape. Heads pass ``avg_factor`` (the number of
    peaks).

    CenterNet-update's form: ``loss(pred, target, pos_inds=..., pos_labels=...)`` with
    ``pred`` ``(N, C)``: the positives are the listed ``(pos_inds[i], pos_labels[i])``
    instead of ``target == 1``. ``'sum'`` and ``'mean'`` with ``avg_factor`` give
    MMDetection's numbers; ``'mean'`` without it is MMDetection's
    ``pos_weight·mean(positives) + neg_weight·mean(every element)`` (0 for the first
    without positives, where MMDetection gives NaN); ``'none'`` is the element-wise map.

    Args:
        alpha: power of the prediction (> 0). gamma: power of ``1 - t`` (>= 0).
        pos_weight, neg_weight: factors of the positive and negative terms.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "float probabilities in [0, 1], (N, C, H, W) or any shape; (N, C) with pos_inds/pos_labels",
        "target": "float Gaussian heatmap in [0, 1] (peaks exactly 1), pred's shape",
        "pos_inds": "(M,) int64 row indices in [0, N) of the listed positives; with pos_labels, or None",
        "pos_labels": "(M,) int64 class indices in [0, C), pos_inds' shape; with pos_inds, or None",
        "weight": "float, pred's shape, one per row (pred.shape[:-1]) or broadcastable to it",
        "returns": "pred's shape",
    }

    def __init__(
        self,
        *,
        alpha: float = 2.0,
        gamma: float = 4.0,
        pos_weight: float = 1.0,
        neg_weight: float = 1.0,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = self.loss_name
        self.alpha = check_positive(name, "alpha", alpha)
        self.gamma = check_positive(name, "gamma", gamma, allow_zero=True)
        self.pos_weight = check_float(name, "pos_weight", pos_weight)
        self.neg_weight = check_float(name, "neg_weight", neg_weight)

    def elementwise(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        *,
        pos_inds: Tensor | None = None,
        pos_labels: Tensor | None = None,
    ) -> ElementLoss:
        """The element-wise loss; with ``pos_inds``/``pos_labels``, also MMDetection's own mean."""
        check_same_shape(self.loss_name, pred, target)
        prepared = None if weight is None else self.prepare_weight(weight, pred)
        kwargs: dict[str, Any] = {"alpha": self.alpha, "gamma": self.gamma}
        if pos_inds is None and pos_labels is None:
            loss = F.gaussian_focal_loss(
                pred, target, pos_weight=self.pos_weight, neg_weight=self.neg_weight, **kwargs
            )
            return ElementLoss(loss, prepared)
        count = self._listed_positives(pred, pos_inds, pos_labels)
        pos = F.gaussian_focal_loss(pred, target, neg_weight=0.0, pos_count=count, **kwargs)
        neg = F.gaussian_focal_loss(pred, target, pos_weight=0.0, pos_count=count, **kwargs)
        if prepared is not None:
            pos, neg = pos * prepared, neg * prepared
        num_pos = max(pos_inds.numel() if pos_inds is not None else 0, 1)
        mean = self.pos_weight * pos.sum() / num_pos + self.neg_weight * neg.mean()
        return ElementLoss(self.pos_weight * pos + self.neg_weight * neg, mean=mean)

    def _listed_positives(self, pred: Tensor, pos_inds: Tensor | None, pos_labels: Tensor | None) -> Tensor:
        if pos_inds is None or pos_labels is None or pred.dim() != 2 or pos_inds.shape != pos_labels.shape:
            raise LossInputError(
                f"{self.loss_name}: pos_inds and pos_labels go together, one index pair per "
                f"positive, shape (M,) each, with pred (N, C); got pred {tuple(pred.shape)}, "
                f"pos_inds {None if pos_inds is None else tuple(pos_inds.shape)}, pos_labels "
                f"{None if pos_labels is None else tuple(pos_labels.shape)}."
            )
        count = torch.zeros_like(pred)
        ones = torch.ones(pos_inds.shape, dtype=pred.dtype, device=pred.device)
        # accumulate: a pair listed twice counts twice, as MMDetection's gather does
        return count.index_put((pos_inds.long(), pos_labels.long()), ones, accumulate=True)

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, gamma={self.gamma}, pos_weight={self.pos_weight}, "
            f"neg_weight={self.neg_weight}, " + super().extra_repr()
        )


@LOSSES.register()
class AssociativeEmbeddingLoss(BaseLoss):
    """CornerNet's corner grouping loss, see :func:`lossmix.functional.associative_embedding_loss`.

    Called as MMDetection's ``loss(tl_embedding, br_embedding, match)`` and returns the
    tuple ``(pull, push)``, each ``pull_weight``/``push_weight`` times the per-image
    loss, **summed over the images** by default (``reduction='sum'``, MMDetection's
    numbers); ``'mean'`` averages over the images, ``'none'`` gives them per image.

    Shapes: ``pred`` (top-left embeddings), ``target`` (bottom-right embeddings)
    ``(B, M, H, W)``; ``match``: per image a list of ``[[tl_y, tl_x], [br_y, br_x]]``;
    ``weight``: one per image ``(B,)``.

    Args:
        pull_weight: weight of the pull loss. push_weight: weight of the push loss.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(B, M, H, W) float top-left corner embeddings",
        "target": "(B, M, H, W) float bottom-right corner embeddings, pred's shape",
        "match": (
            "B lists (one per image, host data), each of [[tl_y, tl_x], [br_y, br_x]] int pixel "
            "coordinates, one pair per object"
        ),
        "weight": "(B,) float, one per image",
        "returns": "tuple (pull, push), each (B,), one value per image",
    }

    part_names: tuple[str, ...] | None = ("pull", "push")

    def __init__(
        self,
        *,
        pull_weight: float = 0.25,
        push_weight: float = 0.25,
        reduction: str = "sum",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.pull_weight = check_float(self.loss_name, "pull_weight", pull_weight)
        self.push_weight = check_float(self.loss_name, "push_weight", push_weight)

    def elementwise(
        self, pred: Tensor, target: Tensor, match: Sequence[Sequence[Sequence[Sequence[int]]]]
    ) -> tuple[Tensor, Tensor]:
        """Per-image ``(pull_weight · pull, push_weight · push)``, each ``(B,)``."""
        if pred.dim() != 4 or pred.shape != target.shape:
            raise LossInputError(
                f"{self.loss_name}: the corner embeddings must be two tensors of one shape "
                f"(B, M, H, W); got {tuple(pred.shape)} and {tuple(target.shape)}."
            )
        top_left, bottom_right, valid = F.match_indices(match, pred.shape[0], pred.device)
        pull, push = F.associative_embedding_loss(pred, target, top_left, bottom_right, valid)
        return self.pull_weight * pull, self.push_weight * push

    def extra_repr(self) -> str:
        return f"pull_weight={self.pull_weight}, push_weight={self.push_weight}, " + super().extra_repr()
