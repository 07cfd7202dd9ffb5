"""Segmentation overlap losses: Dice, Tversky and Jaccard over :mod:`lossmix.functional.dice`.

All three share one input convention, one ``ignore_index`` rule and one
empty-target policy (:class:`OverlapLoss`); they differ only in the kernel.
"""

from __future__ import annotations

import abc
import math
from typing import ClassVar

import torch
from torch import Tensor

from lossmix.errors import LossConfigError, LossInputError
from lossmix.functional import dice as F
from lossmix.losses.base import BaseLoss, ElementLoss
from lossmix.reduction import apply_weight
from lossmix.registry.registry import LOSSES
from lossmix.utilities.checks import (
    check_bool,
    check_choice,
    check_class_indices,
    check_optional_int,
    check_positive,
    check_same_shape,
)

__all__ = ["EMPTY_TARGET_POLICIES", "DiceLoss", "JaccardLoss", "OverlapLoss", "TverskyLoss"]

EMPTY_TARGET_POLICIES: tuple[str, ...] = ("smooth", "zero", "skip")


class OverlapLoss(BaseLoss):
    """Shared machinery of the overlap losses: inputs, units, ``ignore_index``, empty targets.

    **Inputs.** ``use_sigmoid=True`` (MMDetection): ``pred`` ``(N, *)`` logits and
    ``target`` of the same shape (float, bool or integer masks). ``use_sigmoid=False``
    (a lossmix extension): ``pred`` ``(N, C, *)`` logits, softmax over dim 1, and
    ``target`` either class indices ``(N, *)`` (one-hot encoded) or float ``(N, C, *)``.
    ``activate=False``: ``pred`` already holds probabilities.

    **Units.** The sums run per sample over everything (``per_class=False``,
    MMDetection's flattening) or per sample and class over dims ``2, ...``
    (``per_class=True``), the class losses then averaged per sample. ``per_class``
    defaults to ``True`` only with a softmax (``use_sigmoid=False, activate=True``),
    where it must stay ``True``: pooled over classes, ``Σp = Σt`` at every pixel, so
    FP = FN and Dice/Tversky stop measuring overlap (kornia's Tversky then depends on
    α + β only). With ``use_sigmoid=False, activate=False`` (probabilities given)
    MMDetection flattens per sample, and so does lossmix by default: ``pred`` and
    ``target`` then have one shape; ``per_class=True`` asks for the per-class form.

    **ignore_index.** An element whose target equals it counts in no sum: with index
    targets the whole pixel (every class); with float targets that element only (store
    ignored pixels as e.g. ``255`` in the mask).

    **empty_target** decides a unit whose target is empty (``Σt = 0`` after ``ignore_index``):

    * ``"smooth"`` (default): the formula's numbers, ``eps`` decides. MMDetection's
      V-Net Dice then gives loss 1 for an empty target even with an empty prediction.
    * ``"zero"``: MONAI-style smoothing, ``eps`` in numerator and denominator: an empty
      target with an empty prediction gives 0, false positives on it ≈ 1. Naive Dice,
      Tversky and Jaccard already smooth this way, so only V-Net Dice changes.
    * ``"skip"``: the unit gets weight 0. A class is left out of its sample's class
      mean (SMP keeps it, so empty classes pull the loss down), a sample whose units are
      all empty gets 0 under ``'none'`` and is left out of ``'mean'`` (divided by the
      number of counted samples, a device count, no host sync) unless ``avg_factor`` is
      given.

    **Shapes.** The ``'none'`` output is one loss per sample, ``(N,)``; ``weight`` is ``(N,)``.
    ``forward(pred, target, weight=None, avg_factor=None, reduction_override=None)`` keeps
    lossmix's order; MMDetection's ``DiceLoss.forward`` puts ``reduction_override``
    before ``avg_factor``, so pass both by keyword to call either the same way.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": (
            "(N, *) float logits (use_sigmoid), or (N, C, *) float logits with a softmax over "
            "dim 1 (use_sigmoid=False); probabilities with activate=False"
        ),
        "target": (
            "pred's shape: float, bool or int masks (use_sigmoid); (N, *) int64 class indices "
            "or (N, C, *) float (softmax)"
        ),
        "weight": "(N,) float, one per sample",
        "returns": "(N,), one per sample",
    }

    bool_targets = True  # masks may be bool

    def __init__(
        self,
        *,
        use_sigmoid: bool = True,
        activate: bool = True,
        per_class: bool | None = None,
        eps: float = 1e-3,
        ignore_index: int | None = None,
        empty_target: str = "smooth",
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = self.loss_name
        self.use_sigmoid = check_bool(name, "use_sigmoid", use_sigmoid)
        self.activate = check_bool(name, "activate", activate)
        softmax = not self.use_sigmoid and self.activate
        if per_class is None:
            per_class = softmax
        self.per_class = check_bool(name, "per_class", per_class)
        if softmax and not per_class:
            raise LossConfigError(
                f"{name}: per_class=False is not valid with use_sigmoid=False and activate=True; "
                "under a softmax the class-pooled sums make FP equal FN. Use per_class=True (or "
                "leave it None)."
            )
        self.eps = check_positive(name, "eps", eps)
        self.ignore_index = check_optional_int(name, "ignore_index", ignore_index)
        self.empty_target = check_choice(name, "empty_target", empty_target, EMPTY_TARGET_POLICIES)

    @abc.abstractmethod
    def unit_loss(self, prob: Tensor, target: Tensor) -> Tensor:
        """The kernel on ``(N, K, S)`` probabilities and targets, returning ``(N, K)``."""

    def check_inputs(self, pred: Tensor, target: Tensor) -> None:
        """Static shape checks (and class-index values on CPU); raise :class:`LossInputError`."""
        if not self.per_class:
            if pred.dim() < 1:
                raise LossInputError(f"{self.loss_name}: pred must be (N, *); got a 0-dim tensor.")
            check_same_shape(self.loss_name, pred, target)
            return
        if pred.dim() < 2:
            raise LossInputError(
                f"{self.loss_name}: pred of shape {tuple(pred.shape)} needs a class dimension, (N, C, *)."
            )
        if self.use_sigmoid or target.is_floating_point():
            check_same_shape(self.loss_name, pred, target)
            return
        expected = (pred.shape[0], *pred.shape[2:])
        if tuple(target.shape) != expected:
            raise LossInputError(
                f"{self.loss_name}: pred of shape {tuple(pred.shape)} and target of shape "
                f"{tuple(target.shape)} do not fit; give class indices of shape {expected} or "
                f"float targets of shape {tuple(pred.shape)}."
            )
        check_class_indices(self.loss_name, target, pred.shape[1], ignore_index=self.ignore_index)

    def per_sample(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(loss (N,), counted (N,) or None)``; ``counted`` is 0 for a skipped sample."""
        self.check_inputs(pred, target)
        # Flattened units take target as it is (the shape of pred): no one-hot encoding.
        prob, tgt = F.overlap_inputs(
            pred,
            target,
            use_sigmoid=self.use_sigmoid or not self.per_class,
            activate=self.activate,
            ignore_index=self.ignore_index,
        )
        n = prob.shape[0]
        k = prob.shape[1] if self.per_class else 1
        size = math.prod(prob.shape[2:]) if self.per_class else math.prod(prob.shape[1:])
        prob, tgt = prob.reshape(n, k, size), tgt.reshape(n, k, size)
        units = self.unit_loss(prob, tgt)
        if self.empty_target != "skip":
            return units.mean(1), None
        present = tgt.sum(-1) > 0
        count = present.sum(1)
        loss = torch.where(present, units, units.new_zeros(())).sum(1) / count.clamp(min=1)
        return loss, (count > 0).to(units.dtype)

    def elementwise(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> ElementLoss:
        """Per-sample losses ``(N,)`` with the caller's weight; under ``empty_target='skip'``
        a skipped sample has weight 0 and ``'mean'`` divides by the counted samples."""
        loss, counted = self.per_sample(pred, target)
        prepared = None if weight is None else self.prepare_weight(weight, loss)
        if counted is None:
            return ElementLoss(loss, prepared)
        prepared = counted if prepared is None else prepared * counted
        mean = apply_weight(loss, prepared).sum() / counted.sum().clamp(min=1)
        return ElementLoss(loss, prepared, mean=mean)

    def extra_repr(self) -> str:
        return (
            f"use_sigmoid={self.use_sigmoid}, activate={self.activate}, "
            f"per_class={self.per_class}, eps={self.eps}, ignore_index={self.ignore_index}, "
            f"empty_target={self.empty_target!r}, " + super().extra_repr()
        )


@LOSSES.register()
class DiceLoss(OverlapLoss):
    """Soft Dice loss ``1 − d`` per sample, MMDetection's ``DiceLoss``.

    Kernel: :func:`lossmix.functional.dice_loss`.

    Defaults and numbers are MMDetection's (``use_sigmoid=True, activate=True,
    naive_dice=False, eps=1e-3``): V-Net form ``d = 2Σpt / ((Σp² + eps) + (Σt² + eps))``,
    naive form ``d = (2Σpt + eps) / (Σp + Σt + eps)``, inputs flattened per sample.
    lossmix adds ``use_sigmoid=False`` (softmax, per class, then the class mean),
    ``per_class``, ``ignore_index`` and ``empty_target``, described in
    :class:`OverlapLoss` together with the input shapes. As in MMDetection, a positional
    call takes ``(pred, target, weight, reduction_override, avg_factor)``.
    """

    call_order = ("weight", "reduction_override", "avg_factor")

    def __init__(
        self,
        *,
        use_sigmoid: bool = True,
        activate: bool = True,
        naive_dice: bool = False,
        eps: float = 1e-3,
        per_class: bool | None = None,
        ignore_index: int | None = None,
        empty_target: str = "smooth",
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(
            use_sigmoid=use_sigmoid,
            activate=activate,
            per_class=per_class,
            eps=eps,
            ignore_index=ignore_index,
            empty_target=empty_target,
            reduction=reduction,
            loss_weight=loss_weight,
        )
        self.naive_dice = check_bool(self.loss_name, "naive_dice", naive_dice)

    def unit_loss(self, prob: Tensor, target: Tensor) -> Tensor:
        return F.dice_loss(
            prob,
            target,
            eps=self.eps,
            naive_dice=self.naive_dice,
            smooth_numerator=self.empty_target == "zero",
            start_dim=2,
        )

    def extra_repr(self) -> str:
        return f"naive_dice={self.naive_dice}, " + super().extra_repr()


@LOSSES.register()
class TverskyLoss(OverlapLoss):
    """(Focal) Tversky loss ``(1 − TI)^γ`` per sample and class.

    Kernel: :func:`lossmix.functional.tversky_loss`.

    ``TI = (TP + eps) / (TP + α·FP + β·FN + eps)``, computed per unit (per class with a
    softmax, never pooled over classes) and raised to ``gamma`` before the class mean.
    ``alpha = beta = 0.5`` is the naive :class:`DiceLoss` with ``2·eps``;
    ``alpha = beta = 1`` is :class:`JaccardLoss` with the same ``eps``. Inputs, units,
    ``ignore_index`` and ``empty_target`` as :class:`OverlapLoss` (``"zero"`` equals
    ``"smooth"`` here: the index is already smoothed on both sides).
    """

    def __init__(
        self,
        *,
        alpha: float = 0.5,
        beta: float = 0.5,
        gamma: float = 1.0,
        eps: float = 1e-3,
        use_sigmoid: bool = True,
        activate: bool = True,
        per_class: bool | None = None,
        ignore_index: int | None = None,
        empty_target: str = "smooth",
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(
            use_sigmoid=use_sigmoid,
            activate=activate,
            per_class=per_class,
            eps=eps,
            ignore_index=ignore_index,
            empty_target=empty_target,
            reduction=reduction,
            loss_weight=loss_weight,
        )
        self.alpha = check_positive(self.loss_name, "alpha", alpha, allow_zero=True)
        self.beta = check_positive(self.loss_name, "beta", beta, allow_zero=True)
        if self.alpha + self.beta == 0:
            raise LossConfigError(
                f"{self.loss_name}: alpha=0 and beta=0 make the loss constant; give alpha + beta > 0."
            )
        self.gamma = check_positive(self.loss_name, "gamma", gamma)

    def unit_loss(self, prob: Tensor, target: Tensor) -> Tensor:
        return F.tversky_loss(
            prob, target, alpha=self.alpha, beta=self.beta, gamma=self.gamma, eps=self.eps, start_dim=2
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, " + super().extra_repr()


@LOSSES.register()
class JaccardLoss(OverlapLoss):
    """Soft Jaccard (IoU) loss ``1 − (I + eps)/(U + eps)`` per sample and class.

    Kernel: :func:`lossmix.functional.jaccard_loss`. Inputs, units, ``ignore_index`` and
    ``empty_target`` as :class:`OverlapLoss` (``"zero"`` equals ``"smooth"``).
    """

    def unit_loss(self, prob: Tensor, target: Tensor) -> Tensor:
        return F.jaccard_loss(prob, target, eps=self.eps, start_dim=2)
