"""Step 3 and 4 of a term: element weights and reduction.

This module reproduces MMDetection's reduction contract
(``mmdet/models/losses/utils.py``) and MMagic's masked mean, with two
deliberate departures that never change a finite result:

* an element whose weight is exactly zero is *selected away* with
  :func:`torch.where` instead of multiplied, so a NaN/Inf computed at a masked
  element cannot leak into the loss (``nan * 0`` is ``nan``);
* there is no ``if not any(weight > 0)`` shortcut (a host sync); the
  ``torch.where`` above gives the same connected zero.

Table (``eps = torch.finfo(torch.float32).eps``):

============  ===============  ============================  ====================
avg_factor    ``'none'``       ``'mean'``                    ``'sum'``
============  ===============  ============================  ====================
None          weighted tensor  ``loss.mean()`` (numel)       ``loss.sum()``
given         weighted tensor  ``sum / (avg_factor + eps)``  ``ValueError``
============  ===============  ============================  ====================
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lossmix.errors import LossConfigError, LossInputError

__all__ = [
    "EPS32",
    "REDUCTIONS",
    "apply_weight",
    "check_reduction",
    "mask_reduce_loss",
    "reduce_loss",
    "weight_reduce_loss",
    "weighted_loss",
]

REDUCTIONS: tuple[str, ...] = ("none", "mean", "sum")
EPS32: float = torch.finfo(torch.float32).eps

AvgFactor = float | int | Tensor | None


def check_reduction(reduction: Any, *, owner: str = "reduction") -> str:
    """Return ``reduction`` if it is one of :data:`REDUCTIONS`, else raise.

    Args:
        reduction: the value to check.
        owner: who received it, used in the error message (e.g. ``"FocalLoss"``).

    Raises:
        LossConfigError: (a ``ValueError``) naming the bad value and the valid ones.

    >>> check_reduction("sum")
    'sum'
    """
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise LossConfigError(
            f"{owner}: reduction={reduction!r} is not valid; use one of {list(REDUCTIONS)}."
        )
    return reduction


def reduce_loss(loss: Tensor, reduction: str) -> Tensor:
    """Reduce an element-wise loss: ``'none'`` (as is), ``'mean'`` or ``'sum'``.

    >>> reduce_loss(torch.tensor([1.0, 3.0]), "mean")
    tensor(2.)
    """
    check_reduction(reduction)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def apply_weight(loss: Tensor, weight: Tensor | None) -> Tensor:
    """Multiply ``loss`` by ``weight`` (broadcast), selecting zero where ``weight == 0``.

    Selecting rather than multiplying keeps a NaN or Inf at a masked element
    out of the value. It cannot protect the *gradient* of a kernel whose local
    derivative is NaN at that element; such kernels sanitise their inputs.
    """
    if weight is None:
        return loss
    weight = weight.to(loss.dtype)
    return torch.where(weight != 0, loss * weight, loss.new_zeros(()))


def weight_reduce_loss(
    loss: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    avg_factor: AvgFactor = None,
) -> Tensor:
    """Apply element weights, then reduce with MMDetection's semantics.

    Args:
        loss: element-wise loss, any shape.
        weight: element weights broadcastable to ``loss``; zero drops an element.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        avg_factor: divisor for ``'mean'``: ``loss.sum() / (avg_factor + eps)``.
            Ignored by ``'none'``; an error with ``'sum'``. A tensor stays on
            the device (no host sync) and is added to ``eps`` in the loss's dtype
            (float32 at least), as MMDetection's Python count is.

    Returns:
        The weighted loss (``'none'``) or a 0-dim tensor.

    >>> loss = torch.tensor([1.0, 2.0, 3.0, 4.0])
    >>> weight_reduce_loss(loss, torch.tensor([1.0, 0.0, 1.0, 0.0]), avg_factor=2)
    tensor(2.)
    """
    check_reduction(reduction)
    loss = apply_weight(loss, weight)
    if avg_factor is None:
        return reduce_loss(loss, reduction)
    if reduction == "mean":
        if isinstance(avg_factor, Tensor):
            # MMDetection's count is a Python number, so ``count + eps`` is a double: add the
            # eps in the loss's dtype (float32 at least), or a float64 loss would lose it.
            avg_factor = avg_factor.to(torch.promote_types(loss.dtype, torch.float32))
        return loss.sum() / (avg_factor + EPS32)
    if reduction == "sum":
        raise LossConfigError(
            'avg_factor can not be used with reduction="sum"; '
            'use reduction="mean" with avg_factor, or drop avg_factor.'
        )
    return loss


def weighted_loss(kernel: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Turn an element-wise kernel into ``fn(pred, target, weight=None, reduction="mean",
    avg_factor=None, **kwargs)``.

    >>> @weighted_loss
    ... def l1(pred, target):
    ...     return (pred - target).abs()
    >>> l1(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 1.0]), reduction="sum")
    tensor(2.)
    """

    @functools.wraps(kernel)
    def wrapper(
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        reduction: str = "mean",
        avg_factor: AvgFactor = None,
        **kwargs: Any,
    ) -> Tensor:
        return weight_reduce_loss(kernel(pred, target, **kwargs), weight, reduction, avg_factor)

    return wrapper


def mask_reduce_loss(
    loss: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    sample_wise: bool = False,
) -> Tensor:
    r"""MMagic's masked reduction: a mean over the *weighted* elements.

    With a weight and ``'mean'``: :math:`\sum \ell w / (\sum w + 10^{-12})`, where a
    one-channel weight ``(N, 1, ...)`` is first expanded over the ``C`` channels
    of ``loss`` so the denominator counts channels. ``sample_wise=True`` takes
    that ratio per sample and then the mean over ``N`` (every sample counts
    the same whatever its mask size). Without a weight, or with ``'sum'`` or
    ``'none'``, this is :func:`weight_reduce_loss` without ``avg_factor``.

    Shapes:
        loss: ``(N, C, *)``; weight: ``(N, 1, *)`` or ``(N, C, *)``.

    >>> loss = torch.ones(1, 3, 2, 2)
    >>> mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    >>> mask_reduce_loss(loss * 2, mask)
    tensor(2.)
    """
    check_reduction(reduction)
    if weight is None:
        return reduce_loss(loss, reduction)
    if weight.dim() != loss.dim() or (weight.dim() > 1 and weight.size(1) not in (1, loss.size(1))):
        raise LossInputError(
            f"mask_reduce_loss: weight of shape {tuple(weight.shape)} does not fit a loss of shape "
            f"{tuple(loss.shape)}; give a mask shaped (N, 1, ...) or (N, C, ...) like the loss."
        )
    weighted = apply_weight(loss, weight)
    if reduction != "mean":
        return reduce_loss(weighted, reduction)
    weight = weight.to(loss.dtype).expand_as(loss)
    if sample_wise:
        dims = tuple(range(1, loss.dim()))
        per_sample = weighted.sum(dims) / (weight.sum(dims) + 1e-12)
        return per_sample.mean()
    return weighted.sum() / (weight.sum() + 1e-12)
