"""The module convention every lossmix loss follows (MMDetection's, typed).

A loss is ``loss_weight × reduce(weight × kernel(pred, target))``:
subclasses only say how to compute the element-wise kernel; weighting,
reduction, ``avg_factor`` and ``reduction_override`` are handled here once.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

import torch
from torch import Tensor, nn

from lossmix.errors import LossConfigError, LossInputError
from lossmix.reduction import AvgFactor, check_reduction, weight_reduce_loss

__all__ = ["WeightedLoss", "check_class_indices", "check_positive", "check_same_shape"]


def check_positive(owner: str, name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float if it is a finite number > 0 (or >= 0), else raise."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise LossConfigError(f"{owner}: {name}={value!r} is not valid; {name} must be a number {bound}.")
    return float(value)


def check_same_shape(owner: str, pred: Tensor, target: Tensor, *, what: str = "target") -> None:
    """Raise :class:`LossInputError` naming both shapes unless ``pred`` and ``target`` match."""
    if pred.shape != target.shape:
        raise LossInputError(
            f"{owner}: pred of shape {tuple(pred.shape)} and {what} of shape "
            f"{tuple(target.shape)} must have the same shape."
        )


def check_class_indices(owner: str, target: Tensor, num_classes: int, *, ignore_index: int | None
                        = None, background_ok: bool = False) -> None:
    """Check integer class indices lie in ``[0, num_classes)`` (``]`` with ``background_ok``).

    Value checks read tensor data, so they run eagerly on CPU tensors only; on an
    accelerator they become an asynchronous device assert (no host sync) and under
    ``torch.compile`` they are skipped.
    """
    if target.is_floating_point() or torch.compiler.is_compiling():
        return
    high = num_classes + 1 if background_ok else num_classes
    valid = (target >= 0) & (target < high)
    if ignore_index is not None:
        valid |= target == ignore_index
    if target.device.type != "cpu":
        torch._assert_async(valid.all(), f"{owner}: class index out of range")
        return
    if target.numel() and not bool(valid.all()):
        bad = target[~valid]
        allowed = f"[0, {high - 1}]" + ("" if ignore_index is None else f" or {ignore_index}")
        hint = " (num_classes means background)" if background_ok else ""
        raise LossInputError(
            f"{owner}: class indices must lie in {allowed}{hint} for pred with {num_classes} "
            f"classes; got values {sorted(set(bad.tolist()))[:5]}. Check num_classes or the labels."
        )


class WeightedLoss(nn.Module, metaclass=abc.ABCMeta):
    """Base class: ``forward`` = kernel → element weight → reduce → ``loss_weight``.

    Subclasses implement :meth:`elementwise` and, when their weight has a
    different shape from the element-wise loss, :meth:`prepare_weight`.

    Args:
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: scalar applied after the reduction (so it scales every
            element under ``'none'``).
    """

    reshape_weight_by_numel: bool = False

    def __init__(self, *, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction, owner=self.loss_name)
        if isinstance(loss_weight, bool) or not isinstance(loss_weight, Real) or not math.isfinite(
            loss_weight
        ):
            raise LossConfigError(
                f"{self.loss_name}: loss_weight={loss_weight!r} is not valid; give a finite number."
            )
        self.loss_weight = float(loss_weight)

    @property
    def loss_name(self) -> str:
        """Name used in error messages."""
        return type(self).__name__

    @abc.abstractmethod
    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        """Return the unreduced loss (the kernel, step 2)."""

    def resolve_reduction(self, reduction_override: str | None) -> str:
        """``reduction_override`` if given (a falsy value falls back), else ``self.reduction``."""
        if not reduction_override:
            return self.reduction
        return check_reduction(reduction_override, owner=f"{self.loss_name} reduction_override")

    def check_avg_factor(self, reduction: str, avg_factor: AvgFactor) -> None:
        """Refuse ``avg_factor`` with ``'sum'`` (MMDetection raises there too)."""
        if avg_factor is not None and reduction == "sum":
            raise LossConfigError(
                f"{self.loss_name}: avg_factor can not be used with reduction='sum'; use "
                "reduction='mean' with avg_factor (a sum divided by it), or drop avg_factor."
            )

    def prepare_weight(self, weight: Tensor, loss: Tensor) -> Tensor:
        """Shape ``weight`` to broadcast against ``loss``.

        Accepted: the loss's shape; one weight per row (``loss.shape[:-1]``,
        unsqueezed); anything broadcastable to it; and, for losses that set
        ``reshape_weight_by_numel`` (focal, as MMDetection's FSAF weights need), the
        same number of elements, reshaped.
        """
        if weight.shape == loss.shape:
            return weight
        if weight.dim() == loss.dim() - 1 and weight.shape == loss.shape[:-1]:
            return weight.unsqueeze(-1)
        if weight.dim() <= loss.dim():
            try:
                if torch.broadcast_shapes(weight.shape, loss.shape) == loss.shape:
                    return weight
            except RuntimeError:
                pass  # not broadcastable: try the reshape rule, else the error below
        if self.reshape_weight_by_numel and weight.numel() == loss.numel():
            return weight.reshape(loss.shape)
        raise LossInputError(
            f"{self.loss_name}: weight of shape {tuple(weight.shape)} does not fit the element-wise "
            f"loss of shape {tuple(loss.shape)}; give a weight of that shape, one per row "
            f"{tuple(loss.shape[:-1])}, or one broadcastable to it."
        )

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: AvgFactor = None,
        reduction_override: str | None = None,
    ) -> Tensor:
        """Weighted, reduced, scaled loss; see the class docstring for the steps."""
        reduction = self.resolve_reduction(reduction_override)
        self.check_avg_factor(reduction, avg_factor)
        loss = self.elementwise(pred, target)
        if isinstance(loss, Mapping):  # a multi-output loss: each part is reduced alike
            return {k: self.reduce(v, weight, reduction, avg_factor) for k, v in loss.items()}
        if isinstance(loss, tuple):
            return tuple(self.reduce(v, weight, reduction, avg_factor) for v in loss)
        return self.reduce(loss, weight, reduction, avg_factor)

    def reduce(self, loss: Tensor, weight: Tensor | None, reduction: str, avg_factor: AvgFactor
               ) -> Tensor:
        """Steps 3 to 5 on an element-wise loss: weight, reduce, scale by ``loss_weight``."""
        if weight is not None:
            weight = self.prepare_weight(weight, loss)
        if reduction == "mean" and avg_factor is None and loss.numel() == 0:
            reduction = "sum"  # nothing to score: a connected zero, not the NaN of an empty mean
        return self.loss_weight * weight_reduce_loss(loss, weight, reduction, avg_factor)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, loss_weight={self.loss_weight}"
