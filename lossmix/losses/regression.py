"""Regression losses: thin modules over :mod:`lossmix.functional.regression`."""

from __future__ import annotations

from torch import Tensor

from lossmix.errors import LossInputError
from lossmix.functional import regression as F
from lossmix.losses.base import WeightedLoss, check_positive, check_same_shape
from lossmix.reduction import AvgFactor, mask_reduce_loss
from lossmix.registry import LOSSES

__all__ = ["BalancedL1Loss", "CharbonnierLoss", "L1Loss", "MSELoss", "SmoothL1Loss"]


@LOSSES.register()
class L1Loss(WeightedLoss):
    """Absolute error, see :func:`lossmix.functional.l1_loss` (MMDetection's ``L1Loss``).

    Shapes: ``pred``, ``target``, ``weight``: ``(*)``, the same shape.
    """

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        check_same_shape(self.loss_name, pred, target)
        return F.l1_loss(pred, target)


@LOSSES.register()
class MSELoss(WeightedLoss):
    """Squared error, see :func:`lossmix.functional.mse_loss` (MMDetection's ``MSELoss``)."""

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        check_same_shape(self.loss_name, pred, target)
        return F.mse_loss(pred, target)


@LOSSES.register()
class SmoothL1Loss(WeightedLoss):
    """Smooth L1 with threshold ``beta > 0``, see :func:`lossmix.functional.smooth_l1_loss`."""

    def __init__(self, *, beta: float = 1.0, reduction: str = "mean", loss_weight: float = 1.0
                 ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.beta = check_positive(self.loss_name, "beta", beta)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        check_same_shape(self.loss_name, pred, target)
        return F.smooth_l1_loss(pred, target, beta=self.beta)


@LOSSES.register()
class BalancedL1Loss(WeightedLoss):
    """Balanced L1 of Libra R-CNN, see :func:`lossmix.functional.balanced_l1_loss`."""

    def __init__(
        self,
        *,
        alpha: float = 0.5,
        gamma: float = 1.5,
        beta: float = 1.0,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.alpha = check_positive(self.loss_name, "alpha", alpha)
        self.gamma = check_positive(self.loss_name, "gamma", gamma)
        self.beta = check_positive(self.loss_name, "beta", beta)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        check_same_shape(self.loss_name, pred, target)
        return F.balanced_l1_loss(pred, target, alpha=self.alpha, gamma=self.gamma, beta=self.beta)


@LOSSES.register()
class CharbonnierLoss(WeightedLoss):
    """Charbonnier loss with MMagic's masked mean, see :func:`lossmix.functional.charbonnier_loss`.

    With a ``weight`` (a mask ``(N, 1, H, W)`` or ``(N, C, H, W)``) and
    ``'mean'``, the result is :math:`\\sum \\ell w / \\sum w` (pixel-wise) or
    its per-sample version (``sample_wise=True``), as
    :func:`lossmix.reduction.mask_reduce_loss`. An ``avg_factor`` replaces the
    masked denominator (MMDetection's rule).
    """

    def __init__(
        self,
        *,
        eps: float = 1e-12,
        sample_wise: bool = False,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.eps = check_positive(self.loss_name, "eps", eps)
        self.sample_wise = bool(sample_wise)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        check_same_shape(self.loss_name, pred, target)
        return F.charbonnier_loss(pred, target, eps=self.eps)

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: AvgFactor = None,
        reduction_override: str | None = None,
    ) -> Tensor:
        if avg_factor is not None or weight is None or weight.dim() != pred.dim():
            return super().forward(pred, target, weight, avg_factor, reduction_override)
        reduction = self.resolve_reduction(reduction_override)
        loss = self.elementwise(pred, target)
        try:
            reduced = mask_reduce_loss(loss, weight, reduction, self.sample_wise)
        except ValueError as err:
            raise LossInputError(f"{self.loss_name}: {err}") from err
        return self.loss_weight * reduced
