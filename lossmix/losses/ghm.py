"""GHM-C: MMDetection's stateful gradient-harmonized classification loss."""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
import torch.nn.functional as TF
from torch import Tensor

from lossmix.errors import LossConfigError, LossInputError
from lossmix.functional import ghm as F
from lossmix.functional.cross_entropy import one_hot_targets
from lossmix.losses.base import WeightedLoss, check_class_indices, check_same_shape
from lossmix.reduction import AvgFactor, weight_reduce_loss
from lossmix.registry import LOSSES

__all__ = ["GHMC"]


@LOSSES.register()
class GHMC(WeightedLoss):
    """Gradient harmonized classification loss, see :func:`lossmix.functional.ghmc_weights`.

    The sigmoid BCE of every element is weighted by the inverse density of its
    gradient norm ``|sigmoid(x) - t|`` among the valid elements; ``'mean'`` divides by
    the number of valid elements (MMDetection's ``avg_factor=tot``).

    Called as MMDetection's ``forward(pred, target, label_weight)``: the third
    argument (``weight``, or ``label_weight=`` by keyword) is **required** and only
    masks (``label_weight > 0``). ``avg_factor`` is accepted for the common signature
    and ignored. ``target`` is class indices ``(N,)`` (background ``C = pred.size(1)``,
    one-hot encoded) or floats shaped like ``pred``.

    State: the running bin counts ``acc_sum`` (a buffer, so it is checkpointed) are
    updated, under ``no_grad``, on calls in training mode when ``momentum > 0``; in
    eval mode the weights use the would-be update without storing it.

    Departures from MMDetection: ``'sum'`` is the plain weighted sum (MMDetection
    raises there, since it passes ``avg_factor``), and ``acc_sum`` exists even when
    ``momentum == 0``.

    Shapes: ``pred``: ``(N, C)`` logits; ``label_weight``: ``(N,)`` or ``(N, C)``.
    """

    acc_sum: Tensor

    def __init__(
        self,
        *,
        bins: int = 10,
        momentum: float = 0.0,
        use_sigmoid: bool = True,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = self.loss_name
        if isinstance(bins, bool) or not isinstance(bins, Integral) or bins < 1:
            raise LossConfigError(f"{name}: bins={bins!r} is not valid; use an integer >= 1.")
        if isinstance(momentum, bool) or not isinstance(momentum, Real) or not (
                math.isfinite(momentum) and 0 <= momentum < 1):
            raise LossConfigError(f"{name}: momentum={momentum!r} is not valid; use a number in "
                                  "[0, 1) (0 disables the running average).")
        if use_sigmoid is not True:
            raise LossConfigError(f"{name}: use_sigmoid={use_sigmoid!r} is not supported "
                                  "(MMDetection has only the sigmoid GHM-C); use True.")
        self.use_sigmoid = True
        self.bins, self.momentum = int(bins), float(momentum)
        self.register_buffer("acc_sum", torch.zeros(self.bins))

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        """The unweighted binary cross-entropy (the GHM weights need ``label_weight``)."""
        return TF.binary_cross_entropy_with_logits(pred, self._dense(pred, target),
                                                   reduction="none")

    def _dense(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.dim() != 2:
            raise LossInputError(f"{self.loss_name}: pred of shape {tuple(pred.shape)} must be "
                                 "(N, C) logits.")
        if target.dim() == pred.dim():
            check_same_shape(self.loss_name, pred, target)
            return target.to(pred.dtype)
        if target.shape != pred.shape[:1] or target.is_floating_point():
            raise LossInputError(
                f"{self.loss_name}: pred of shape {tuple(pred.shape)} needs class indices "
                f"(integer) of shape {tuple(pred.shape[:1])} or targets of the shape of pred; got "
                f"target of shape {tuple(target.shape)} and dtype {target.dtype}."
            )
        check_class_indices(self.loss_name, target, pred.size(1), background_ok=True)
        return one_hot_targets(target, pred.size(1), dtype=pred.dtype)

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: AvgFactor = None,
        reduction_override: str | None = None,
        *,
        label_weight: Tensor | None = None,
    ) -> Tensor:
        """GHM-weighted BCE; ``weight`` is MMDetection's ``label_weight`` (required)."""
        if isinstance(avg_factor, str):
            raise LossInputError(
                f"{self.loss_name}: the fourth argument is avg_factor (ignored); pass "
                f"reduction_override={avg_factor!r} by keyword."
            )
        if weight is not None and label_weight is not None:
            raise LossInputError(f"{self.loss_name}: give label_weight once, as weight or as "
                                 "label_weight=, not both.")
        label_weight = weight if label_weight is None else label_weight
        if label_weight is None:
            raise LossInputError(
                f"{self.loss_name}: label_weight is required (which elements count, > 0); call "
                "loss(pred, target, label_weight)."
            )
        reduction = self.resolve_reduction(reduction_override)
        target = self._dense(pred, target)
        loss = TF.binary_cross_entropy_with_logits(pred, target, reduction="none")
        valid = (self.prepare_weight(label_weight, loss) > 0).expand_as(loss)
        weights, tot, acc = F.ghmc_weights(pred, target, valid, bins=self.bins,
                                           momentum=self.momentum, acc_sum=self.acc_sum)
        if self.momentum > 0 and self.training:
            with torch.no_grad():
                self.acc_sum.copy_(acc)
        normaliser = tot if reduction == "mean" else None
        return self.loss_weight * weight_reduce_loss(loss, weights, reduction, normaliser)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, momentum={self.momentum}, " + super().extra_repr()
