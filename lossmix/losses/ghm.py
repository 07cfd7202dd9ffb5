"""GHM-C and GHM-R: MMDetection's stateful gradient-harmonized losses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as TF
from torch import Tensor

from lossmix.errors import LossConfigError, LossInputError
from lossmix.functional import ghm as F
from lossmix.functional.cross_entropy import one_hot_targets
from lossmix.losses.base import BaseLoss, ElementLoss
from lossmix.reduction import AvgFactor
from lossmix.registry.registry import LOSSES
from lossmix.utilities.checks import check_float, check_index_or_dense_target, check_int

__all__ = ["GHMC", "GHMR"]


def _index_or_dense_target(owner: str, pred: Tensor, target: Tensor) -> Tensor:
    """Float targets shaped like ``pred`` ``(N, C, *)``: from such a tensor, or from class
    indices ``(N, *)`` whose value ``C = pred.size(1)`` is the background (an all-zero row).
    """
    if check_index_or_dense_target(owner, pred, target):
        return target.to(pred.dtype)
    return one_hot_targets(target, pred.size(1), dtype=pred.dtype)


@LOSSES.register()
class GHMC(BaseLoss):
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

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, C) float logits",
        "target": "(N,) int64 class indices, C = background; or (N, C) float",
        "weight": "(N,) or (N, C) float label weight (required; only > 0 counts), also named label_weight",
        "returns": "(N, C)",
    }

    acc_sum: Tensor
    weight_aliases: ClassVar[tuple[str, ...]] = ("label_weight",)

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
        bins = check_int(name, "bins", bins, min=1)
        momentum = check_float(name, "momentum", momentum, low=0.0, high=1.0, high_open=True)
        if use_sigmoid is not True:
            raise LossConfigError(
                f"{name}: use_sigmoid={use_sigmoid!r} is not supported "
                "(MMDetection has only the sigmoid GHM-C); use True."
            )
        self.use_sigmoid = True
        self.bins, self.momentum = int(bins), float(momentum)
        self.register_buffer("acc_sum", torch.zeros(self.bins))

    def elementwise(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> ElementLoss:
        """The binary cross-entropy, weighted by the GHM density weights of the elements
        whose ``label_weight`` (the ``weight`` argument) is > 0; ``'mean'`` divides by
        their number."""
        if weight is None:
            raise LossInputError(
                f"{self.loss_name}: label_weight is required (which elements count, > 0); call "
                "loss(pred, target, label_weight)."
            )
        target = self._dense(pred, target)
        loss = TF.binary_cross_entropy_with_logits(pred, target, reduction="none")
        valid = (self.prepare_weight(weight, loss) > 0).expand_as(loss)
        weights, tot, acc = F.ghmc_weights(
            pred, target, valid, bins=self.bins, momentum=self.momentum, acc_sum=self.acc_sum
        )
        if self.momentum > 0 and self.training:
            with torch.no_grad():
                self.acc_sum.copy_(acc)
        return ElementLoss(loss, weights, avg_factor=tot, own_mean=True)

    def _dense(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.dim() != 2:
            raise LossInputError(
                f"{self.loss_name}: pred of shape {tuple(pred.shape)} must be (N, C) logits."
            )
        return _index_or_dense_target(self.loss_name, pred, target)

    def check_call(
        self, reduction: str, avg_factor: AvgFactor, weight: Tensor | None, inputs: Mapping[str, Any]
    ) -> None:
        if isinstance(avg_factor, str):
            raise LossInputError(
                f"{self.loss_name}: the fourth argument is avg_factor (ignored); pass "
                f"reduction_override={avg_factor!r} by keyword."
            )

    def extra_repr(self) -> str:
        return f"bins={self.bins}, momentum={self.momentum}, " + super().extra_repr()


@LOSSES.register()
class GHMR(BaseLoss):
    """Gradient harmonized regression loss, see :func:`lossmix.functional.ghmr_weights`.

    The authentic smooth L1 (:func:`lossmix.functional.asl1_loss`) of every element is
    weighted by the inverse density of its gradient norm among the elements with
    ``label_weight > 0``; ``'mean'`` divides by ``max(Σ label_weight, 1)``
    (MMDetection's ``avg_factor=tot``).

    Called as MMDetection's ``forward(pred, target, label_weight)``: the third argument
    (``weight``, or ``label_weight=``) is **required** and only masks. ``avg_factor`` is
    accepted and ignored, as in MMDetection. ``'sum'`` is the plain weighted sum
    (MMDetection raises there). The running bin counts ``acc_sum`` are a buffer, updated
    in training mode when ``momentum > 0`` (as :class:`GHMC`).

    Shapes: ``pred``, ``target``: ``(N, 4)`` (or ``(N, 4 · C)``); ``label_weight``: the same
    shape or one per row ``(N,)``.
    """

    acc_sum: Tensor
    weight_aliases: ClassVar[tuple[str, ...]] = ("label_weight",)

    def __init__(
        self,
        *,
        mu: float = 0.02,
        bins: int = 10,
        momentum: float = 0.0,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = self.loss_name
        self.mu = check_float(name, "mu", mu, low=0.0, low_open=True)
        self.bins = check_int(name, "bins", bins, min=1)
        self.momentum = check_float(name, "momentum", momentum, low=0.0, high=1.0, high_open=True)
        self.register_buffer("acc_sum", torch.zeros(self.bins))

    def elementwise(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> ElementLoss:
        """ASL1 weighted by the GHM-R density weights of the elements whose ``label_weight``
        is > 0; ``'mean'`` divides by ``max(Σ label_weight, 1)``."""
        if weight is None:
            raise LossInputError(
                f"{self.loss_name}: label_weight is required (which elements count, > 0); call "
                "loss(pred, target, label_weight)."
            )
        if pred.shape != target.shape:
            raise LossInputError(
                f"{self.loss_name}: pred of shape {tuple(pred.shape)} and target of shape "
                f"{tuple(target.shape)} must have the same shape."
            )
        loss = F.asl1_loss(pred, target, mu=self.mu)
        label_weight = self.prepare_weight(weight, loss).expand_as(loss).to(loss.dtype)
        tot = label_weight.sum().clamp(min=1.0)
        weights, acc = F.ghmr_weights(
            pred,
            target,
            label_weight > 0,
            tot,
            mu=self.mu,
            bins=self.bins,
            momentum=self.momentum,
            acc_sum=self.acc_sum,
        )
        if self.momentum > 0 and self.training:
            with torch.no_grad():
                self.acc_sum.copy_(acc)
        return ElementLoss(loss, weights, avg_factor=tot, own_mean=True)

    def check_call(
        self, reduction: str, avg_factor: AvgFactor, weight: Tensor | None, inputs: Mapping[str, Any]
    ) -> None:
        if isinstance(avg_factor, str):
            raise LossInputError(
                f"{self.loss_name}: the fourth argument is avg_factor (ignored); pass "
                f"reduction_override={avg_factor!r} by keyword."
            )

    def extra_repr(self) -> str:
        return f"mu={self.mu}, bins={self.bins}, momentum={self.momentum}, " + super().extra_repr()
