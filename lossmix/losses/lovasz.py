"""Lovász losses (Berman et al., CVPR 2018): the Jaccard index of segmentations, optimised directly.

Useful where classes are imbalanced: the Jaccard loss of a class does not depend on how
many pixels it covers. Kernels: :mod:`lossmix.functional.lovasz`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from lossmix.errors import LossInputError
from lossmix.functional import lovasz as FL
from lossmix.losses.base import BaseLoss
from lossmix.registry.registry import LOSSES
from lossmix.utilities.checks import (
    check_bool,
    check_choice,
    check_class_indices,
    check_optional_int,
    check_same_shape,
)

__all__ = ["LovaszHingeLoss", "LovaszSoftmaxLoss"]


def _rows(x: Tensor, per_image: bool) -> Tensor:
    """``(N, *)`` as one row per image ``(N, P)``, or one row for the batch ``(1, N·P)``."""
    return x.flatten(1) if per_image else x.reshape(1, -1)


def _per_image_or_batch(loss: Tensor, per_image: bool, images: int) -> Tensor:
    """``(N,)`` per image, else the batch's value (0-dim; ``(0,)`` for an empty batch, which
    has nothing to score)."""
    if per_image:
        return loss
    return loss.squeeze(0) if images else loss[:0]


@LOSSES.register()
class LovaszSoftmaxLoss(BaseLoss):
    """Lovász-softmax loss for segmentation, see :func:`lossmix.functional.lovasz_softmax`.

    Args:
        classes: ``'present'`` (average over the classes in the labels) or ``'all'``.
        per_image: one loss per image ``(N,)`` (else one for the batch, 0-dim).
        ignore_index: a label whose pixels count nowhere.
        activate: apply the softmax (False: ``pred`` holds probabilities).

    Shapes: ``pred`` ``(N, C, *)``; ``target`` ``(N, *)`` class indices; ``weight``: one per
    image with ``per_image``.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, C, *) float logits (probabilities with activate=False)",
        "target": "(N, *) int64 class indices in [0, C), or ignore_index",
        "weight": "(N,) float, one per image with per_image; else a 0-dim float",
        "returns": "(N,), one per image, with per_image; else 0-dim for the batch ((0,) if empty)",
    }

    def __init__(
        self,
        *,
        classes: str = "present",
        per_image: bool = False,
        ignore_index: int | None = None,
        activate: bool = True,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = self.loss_name
        self.classes = check_choice(name, "classes", classes, ("present", "all"))
        self.per_image = check_bool(name, "per_image", per_image)
        self.ignore_index = check_optional_int(name, "ignore_index", ignore_index)
        self.activate = check_bool(name, "activate", activate)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        expected = (pred.shape[0], *pred.shape[2:])
        if pred.dim() < 2 or target.is_floating_point() or tuple(target.shape) != expected:
            raise LossInputError(
                f"{self.loss_name}: needs pred (N, C, *) and class indices (N, *); got pred "
                f"{tuple(pred.shape)} and target {tuple(target.shape)} of dtype {target.dtype}."
            )
        check_class_indices(self.loss_name, target, pred.shape[1], ignore_index=self.ignore_index)
        probs = pred.softmax(1) if self.activate else pred
        valid = (
            torch.ones_like(target, dtype=torch.bool)
            if self.ignore_index is None
            else target != self.ignore_index
        )
        flat = probs.flatten(2) if self.per_image else probs.movedim(1, 0).reshape(1, pred.shape[1], -1)
        loss = FL.lovasz_softmax(
            flat, _rows(target, self.per_image), _rows(valid, self.per_image), classes=self.classes
        )
        return _per_image_or_batch(loss, self.per_image, pred.shape[0])

    def extra_repr(self) -> str:
        return f"classes={self.classes!r}, per_image={self.per_image}, " + super().extra_repr()


@LOSSES.register()
class LovaszHingeLoss(BaseLoss):
    """Binary Lovász hinge loss, see :func:`lossmix.functional.lovasz_hinge`.

    Args:
        per_image: one loss per image ``(N,)`` (else one for the batch, 0-dim).
        ignore_index: a label whose pixels count nowhere.

    Shapes: ``pred`` (logits), ``target`` (0/1): ``(N, *)``; ``weight``: one per image with
    ``per_image``.
    """

    def __init__(
        self,
        *,
        per_image: bool = True,
        ignore_index: int | None = None,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.per_image = check_bool(self.loss_name, "per_image", per_image)
        self.ignore_index = check_optional_int(self.loss_name, "ignore_index", ignore_index)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        check_same_shape(self.loss_name, pred, target)
        if pred.dim() < 1:
            raise LossInputError(f"{self.loss_name}: pred must be (N, *) logits; got a 0-dim tensor.")
        valid = (
            torch.ones_like(pred, dtype=torch.bool)
            if self.ignore_index is None
            else target != self.ignore_index
        )
        labels = torch.where(valid, target, 0)
        loss = FL.lovasz_hinge(
            _rows(pred, self.per_image), _rows(labels, self.per_image), _rows(valid, self.per_image)
        )
        return _per_image_or_batch(loss, self.per_image, pred.shape[0])

    def extra_repr(self) -> str:
        return f"per_image={self.per_image}, " + super().extra_repr()
