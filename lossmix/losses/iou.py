"""Box (IoU) losses: thin modules over :mod:`lossmix.functional.iou`.

Shared rules (MMDetection's ``iou_loss.py``): ``pred`` and ``target`` are boxes
``(x1, y1, x2, y2)`` of the same shape ``(..., 4)``; a per-coordinate weight
``(..., 4)`` is averaged to one weight per box; an empty input with
``'mean'`` gives a connected zero (torch's mean of nothing is NaN).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import ClassVar

from torch import Tensor

from lossmix.errors import LossConfigError, LossInputError, did_you_mean
from lossmix.functional import iou as F
from lossmix.functional.fused import fused_applies, fused_giou_loss
from lossmix.losses.base import BaseLoss, check_positive
from lossmix.registry.registry import LOSSES
from lossmix.utilities.checks import check_bool, check_fused

__all__ = ["BoundedIoULoss", "CIoULoss", "DIoULoss", "EIoULoss", "GIoULoss", "IoULoss", "SIoULoss"]


class _BoxLoss(BaseLoss):
    """Box shape checks, MMDetection's weight rule and the empty-input zero (not registered)."""

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(..., 4) float boxes (x1, y1, x2, y2)",
        "target": "(..., 4) float boxes (x1, y1, x2, y2)",
        "weight": "(...) per box, or (..., 4) per coordinate (averaged per box)",
        "returns": "(...), one value per box",
    }

    #: the kernel ``(pred, target, *, eps) -> loss`` of the single-argument subclasses
    kernel: Callable[..., Tensor]

    def __init__(self, *, eps: float = 1e-6, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.eps = check_positive(self.loss_name, "eps", eps)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        self.check_boxes(pred, target)
        return type(self).kernel(pred, target, eps=self.eps)

    def check_boxes(self, pred: Tensor, target: Tensor) -> None:
        """Raise :class:`LossInputError` unless both are boxes of one shape ``(..., 4)``."""
        if pred.shape != target.shape or pred.dim() == 0 or pred.shape[-1] != 4:
            raise LossInputError(
                f"{self.loss_name}: pred of shape {tuple(pred.shape)} and target of shape "
                f"{tuple(target.shape)} must be boxes (x1, y1, x2, y2) of the same shape (..., 4)."
            )

    def prepare_weight(self, weight: Tensor, loss: Tensor) -> Tensor:
        """A weight per coordinate ``(..., 4)`` becomes its mean per box; else the base rule."""
        if weight.dim() == loss.dim() + 1 and weight.shape[:-1] == loss.shape and (weight.shape[-1] == 4):
            return weight.mean(-1)
        return super().prepare_weight(weight, loss)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, " + super().extra_repr()


@LOSSES.register()
class IoULoss(_BoxLoss):
    """IoU loss (``'log'``, ``'linear'`` or ``'square'``), see :func:`lossmix.functional.iou_loss`.

    Args:
        linear: deprecated; ``True`` means ``mode='linear'`` (a :class:`DeprecationWarning`).
        eps: lower clamp of the IoU.
        mode: ``'log'`` (:math:`-\\ln IoU`), ``'linear'`` (:math:`1 - IoU`) or
            ``'square'`` (:math:`1 - IoU^2`).

    Shapes: ``pred``, ``target``: ``(..., 4)``; ``weight``: ``(...)`` or ``(..., 4)``.
    """

    def __init__(
        self,
        *,
        linear: bool = False,
        eps: float = 1e-6,
        mode: str = "log",
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(eps=eps, reduction=reduction, loss_weight=loss_weight)
        if not isinstance(mode, str) or mode not in F.IOU_MODES:
            raise LossConfigError(
                f"IoULoss: mode={mode!r} is not valid; use one of {list(F.IOU_MODES)}."
                f"{did_you_mean(str(mode), F.IOU_MODES)}"
            )
        if not isinstance(linear, bool):
            raise LossConfigError(
                f"IoULoss: linear={linear!r} is not valid; give True or False (better: mode='linear')."
            )
        if linear:
            if mode == "square":
                raise LossConfigError(
                    "IoULoss: linear=True contradicts mode='square'; drop linear (deprecated) "
                    "and keep mode='square', or use mode='linear'."
                )
            warnings.warn(
                "IoULoss: linear=True is deprecated; use mode='linear' instead.",
                DeprecationWarning,
                stacklevel=2,
            )
            mode = "linear"
        self.mode = mode

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        self.check_boxes(pred, target)
        return F.iou_loss(pred, target, mode=self.mode, eps=self.eps)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, " + super().extra_repr()


@LOSSES.register()
class GIoULoss(_BoxLoss):
    """Generalised IoU loss, see :func:`lossmix.functional.giou_loss`.

    ``fused``: ``True`` takes :func:`lossmix.functional.fused_giou_loss` (loss and gradient in
    one forward pass, the same numbers); ``None`` (automatic) takes it where
    :func:`lossmix.functional.fused_applies` says it is exact and was measured faster (on CPU
    in float32 with a gradient, from 4K boxes: 0.66× the plain step's time at 16K boxes,
    0.50× and 0.54× its time and peak memory at 1M, ``benchmarks/RESULTS.md``); ``False`` never.

    Shapes: ``pred``, ``target``: ``(..., 4)``; ``weight``: ``(...)`` or ``(..., 4)``.
    """

    kernel = staticmethod(F.giou_loss)

    def __init__(
        self,
        *,
        eps: float = 1e-6,
        fused: bool | None = None,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(eps=eps, reduction=reduction, loss_weight=loss_weight)
        self.fused = check_fused(self.loss_name, fused)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        self.check_boxes(pred, target)
        if fused_applies(self.fused, "giou_loss", pred, target):
            return fused_giou_loss(pred, target, eps=self.eps)
        return F.giou_loss(pred, target, eps=self.eps)


@LOSSES.register()
class DIoULoss(_BoxLoss):
    """Distance-IoU loss, see :func:`lossmix.functional.diou_loss`.

    Shapes: ``pred``, ``target``: ``(..., 4)``; ``weight``: ``(...)`` or ``(..., 4)``.
    """

    kernel = staticmethod(F.diou_loss)


@LOSSES.register()
class CIoULoss(_BoxLoss):
    """Complete-IoU loss (MMDetection's gated α), see :func:`lossmix.functional.ciou_loss`.

    Shapes: ``pred``, ``target``: ``(..., 4)``; ``weight``: ``(...)`` or ``(..., 4)``.
    """

    kernel = staticmethod(F.ciou_loss)


@LOSSES.register()
class BoundedIoULoss(_BoxLoss):
    """Bounded IoU loss, see :func:`lossmix.functional.bounded_iou_loss`.

    The element-wise loss has one value per coordinate bound ``(..., 4)``, so
    ``'mean'`` divides by ``4 n`` and a weight may be ``(..., 4)`` or ``(...)``.

    Args:
        beta: smooth-L1 threshold (> 0).
        eps: guard of the ratios (> 0).
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(..., 4) float boxes (x1, y1, x2, y2)",
        "target": "(..., 4) float boxes (x1, y1, x2, y2)",
        "weight": "(..., 4) per coordinate bound, or (...) per box",
        "returns": "(..., 4), one value per coordinate bound",
    }

    def __init__(
        self,
        *,
        beta: float = 0.2,
        eps: float = 1e-3,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(eps=eps, reduction=reduction, loss_weight=loss_weight)
        self.beta = check_positive(self.loss_name, "beta", beta)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        self.check_boxes(pred, target)
        return F.bounded_iou_loss(pred, target, beta=self.beta, eps=self.eps)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, " + super().extra_repr()


@LOSSES.register()
class EIoULoss(_BoxLoss):
    """Extended-IoU loss, smoothed below ``smooth_point``, see :func:`lossmix.functional.eiou_loss`.

    Args:
        eps: guard of the union. smooth_point: where the quadratic part ends (> 0).

    Shapes: ``pred``, ``target``: ``(..., 4)``; ``weight``: ``(...)`` or ``(..., 4)``.
    """

    def __init__(
        self,
        *,
        eps: float = 1e-6,
        smooth_point: float = 0.1,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(eps=eps, reduction=reduction, loss_weight=loss_weight)
        self.smooth_point = check_positive(self.loss_name, "smooth_point", smooth_point)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        self.check_boxes(pred, target)
        return F.eiou_loss(pred, target, smooth_point=self.smooth_point, eps=self.eps)

    def extra_repr(self) -> str:
        return f"smooth_point={self.smooth_point}, " + super().extra_repr()


@LOSSES.register()
class SIoULoss(_BoxLoss):
    """SIoU loss (angle, distance and shape costs), see :func:`lossmix.functional.siou_loss`.

    Args:
        eps: guard of the divisions. neg_gamma: ``True`` uses the paper's
            ``gamma = angle_cost - 2`` (MMDetection's default is ``2 - angle_cost``).

    Shapes: ``pred``, ``target``: ``(..., 4)``; ``weight``: ``(...)`` or ``(..., 4)``.
    """

    def __init__(
        self, *, eps: float = 1e-6, neg_gamma: bool = False, reduction: str = "mean", loss_weight: float = 1.0
    ) -> None:
        super().__init__(eps=eps, reduction=reduction, loss_weight=loss_weight)
        self.neg_gamma = check_bool(self.loss_name, "neg_gamma", neg_gamma)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        self.check_boxes(pred, target)
        return F.siou_loss(pred, target, eps=self.eps, neg_gamma=self.neg_gamma)

    def extra_repr(self) -> str:
        return f"neg_gamma={self.neg_gamma}, " + super().extra_repr()
