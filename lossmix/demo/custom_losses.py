"""A user's own losses, registered with ``@LOSSES.register()`` and named from config.

This module stands for user code: it uses only lossmix's public API, and nothing in
lossmix imports it. Importing it registers the losses, after which a term node can
say ``type: LogCoshDiceLoss``; the training app imports it when the config lists it::

    lossmix:
      imports: [lossmix.demo.custom_losses]   # experiment=custom does this

``examples/custom_loss.py`` uses it from plain Python.

* :class:`LogCoshDiceLoss` (Jadon 2020): a :class:`~lossmix.losses.BaseLoss`
  subclass, so it gets lossmix's ``weight``/``avg_factor``/``reduction``/``loss_weight``.
* :func:`soft_l1`: a plain element-wise function; registering it makes a loss of it
  with the same arguments.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lossmix import LOSSES
from lossmix.losses import BaseLoss
from lossmix.losses.base import check_positive

__all__ = ["LogCoshDiceLoss", "soft_l1"]


@LOSSES.register()
class LogCoshDiceLoss(BaseLoss):
    """log(cosh(1 − Dice)) per sample: Dice's optimum with a smoother gradient.

    Dice = (2·Σ p·t + eps) / (Σ p + Σ t + eps) with p = sigmoid(pred), summed over
    every dimension but the first.

    Shape:
        ``pred`` (N, *) logits, ``target`` (N, *) in [0, 1]; one value per sample (N,).

    Example:
        >>> loss = LogCoshDiceLoss()
        >>> loss(torch.full((2, 4, 4), 50.0), torch.ones(2, 4, 4))
        tensor(0.)
    """

    def __init__(self, *, eps: float = 1.0, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.eps = check_positive(self.loss_name, "eps", eps)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        prob, target = pred.sigmoid().flatten(1), target.flatten(1)
        dice = (2 * (prob * target).sum(1) + self.eps) / (prob.sum(1) + target.sum(1) + self.eps)
        return torch.log(torch.cosh(1 - dice))


# Registry.register is annotated to return Any (lossmix/registry/registry.py), so mypy cannot see that
# the decorator hands the function back unchanged.
@LOSSES.register()
def soft_l1(pred: Tensor, target: Tensor, *, scale: float = 1.0) -> Tensor:
    """Pseudo-Huber, element-wise: scale² · (sqrt(1 + ((pred − target)/scale)²) − 1)."""
    return scale**2 * (torch.sqrt(1 + ((pred - target) / scale) ** 2) - 1)
