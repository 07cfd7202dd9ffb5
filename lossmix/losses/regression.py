"""Regression losses: thin modules over :mod:`lossmix.functional.regression`."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from lossmix.errors import LossInputError
from lossmix.functional import regression as F
from lossmix.losses.base import BaseLoss, ElementLoss, torch_kernel_fits
from lossmix.reduction import mask_reduce_loss
from lossmix.registry.registry import LOSSES
from lossmix.utilities.checks import check_bool, check_positive, check_same_shape
from lossmix.utilities.torch_kernels import l1_loss, mse_loss, smooth_l1_loss

__all__ = ["BalancedL1Loss", "CharbonnierLoss", "L1Loss", "MSELoss", "SmoothL1Loss"]


@LOSSES.register()
class L1Loss(BaseLoss):
    """Absolute error, see :func:`lossmix.functional.l1_loss` (MMDetection's ``L1Loss``).

    Shapes: ``pred``, ``target``, ``weight``: ``(*)``, the same shape.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(*) float",
        "target": "(*) float, pred's shape",
        "weight": "(*) float, pred's shape or broadcastable to it",
        "returns": "(*), pred's shape",
    }

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        check_same_shape(self.loss_name, pred, target)
        return F.l1_loss(pred, target)

    def reduced(self, pred: Tensor, target: Tensor, *, reduction: str) -> Tensor | None:
        """torch's ``l1_loss`` with its reduction: one call into torch."""
        if not torch_kernel_fits(pred, target):
            return None
        return l1_loss(pred, target, reduction)


@LOSSES.register()
class MSELoss(BaseLoss):
    """Squared error, see :func:`lossmix.functional.mse_loss` (MMDetection's ``MSELoss``)."""

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(*) float",
        "target": "(*) float, pred's shape",
        "weight": "(*) float, pred's shape or broadcastable to it",
        "returns": "(*), pred's shape",
    }

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        check_same_shape(self.loss_name, pred, target)
        return F.mse_loss(pred, target)

    def reduced(self, pred: Tensor, target: Tensor, *, reduction: str) -> Tensor | None:
        """torch's ``mse_loss`` with its reduction: one kernel forward and backward."""
        if not torch_kernel_fits(pred, target):
            return None
        return mse_loss(pred, target, reduction)


@LOSSES.register()
class SmoothL1Loss(BaseLoss):
    """Smooth L1 with threshold ``beta > 0``, see :func:`lossmix.functional.smooth_l1_loss`."""

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(*) float, e.g. box deltas (N, 4)",
        "target": "(*) float, pred's shape",
        "weight": "(*) float, pred's shape or broadcastable to it",
        "returns": "(*), pred's shape",
    }

    def __init__(self, *, beta: float = 1.0, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.beta = check_positive(self.loss_name, "beta", beta)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        check_same_shape(self.loss_name, pred, target)
        return F.smooth_l1_loss(pred, target, beta=self.beta)

    def reduced(self, pred: Tensor, target: Tensor, *, reduction: str) -> Tensor | None:
        """torch's ``smooth_l1_loss`` with its reduction: one kernel forward and backward."""
        if not torch_kernel_fits(pred, target):
            return None
        return smooth_l1_loss(pred, target, reduction, self.beta)


@LOSSES.register()
class BalancedL1Loss(BaseLoss):
    """Balanced L1 of Libra R-CNN, see :func:`lossmix.functional.balanced_l1_loss`."""

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(*) float, e.g. box deltas (N, 4)",
        "target": "(*) float, pred's shape",
        "weight": "(*) float, pred's shape or broadcastable to it",
        "returns": "(*), pred's shape",
    }

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
class CharbonnierLoss(BaseLoss):
    """Charbonnier loss with MMagic's masked mean, see :func:`lossmix.functional.charbonnier_loss`.

    With a ``weight`` (a mask ``(N, 1, H, W)`` or ``(N, C, H, W)``) and
    ``'mean'``, the result is :math:`\\sum \\ell w / \\sum w` (pixel-wise) or
    its per-sample version (``sample_wise=True``), as
    :func:`lossmix.reduction.mask_reduce_loss`. An ``avg_factor`` replaces the
    masked denominator (MMDetection's rule).
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, C, H, W) float images (any shape)",
        "target": "float, pred's shape",
        "weight": "(N, 1, H, W) or (N, C, H, W) float mask: 'mean' divides by its sum",
        "returns": "pred's shape",
    }

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
        self.sample_wise = check_bool(self.loss_name, "sample_wise", sample_wise)

    def elementwise(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> ElementLoss:
        check_same_shape(self.loss_name, pred, target)
        return masked_mean_loss(
            self, F.charbonnier_loss(pred, target, eps=self.eps), weight, sample_wise=self.sample_wise
        )


def masked_mean_loss(
    owner: BaseLoss, loss: Tensor, weight: Tensor | None, *, sample_wise: bool
) -> ElementLoss:
    """MMagic's masked mean as an :class:`ElementLoss`: a weight with the loss's number of
    dims is a mask whose (channel-expanded) sum divides ``'mean'``; any other weight follows
    MMDetection's rule (:meth:`BaseLoss.prepare_weight`, a mean over all elements)."""
    if weight is None or weight.dim() != loss.dim():
        return ElementLoss(loss, None if weight is None else owner.prepare_weight(weight, loss))
    try:
        mean = mask_reduce_loss(loss, weight, "mean", sample_wise)
    except LossInputError as err:
        raise LossInputError(f"{owner.loss_name}: {err}") from None
    return ElementLoss(loss, weight, mean=mean)
