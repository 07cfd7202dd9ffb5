"""Element-wise regression kernels: L1, MSE, smooth L1, balanced L1, Charbonnier.

Every function returns ``loss`` with the broadcast shape of ``pred`` and
``target`` and never reduces; :mod:`lossmix.reduction` does that.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["balanced_l1_loss", "charbonnier_loss", "l1_loss", "mse_loss", "smooth_l1_loss"]


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    r"""Absolute error :math:`|p - t|`.

    Shapes: ``pred``, ``target``: any, broadcastable; returns the broadcast shape.

    >>> l1_loss(torch.tensor([0.0, 3.0]), torch.tensor([1.0, 1.0]))
    tensor([1., 2.])
    """
    return (pred - target).abs()


def mse_loss(pred: Tensor, target: Tensor) -> Tensor:
    r"""Squared error :math:`(p - t)^2`.

    >>> mse_loss(torch.tensor([0.0, 3.0]), torch.tensor([1.0, 1.0]))
    tensor([1., 4.])
    """
    return (pred - target) ** 2


def smooth_l1_loss(pred: Tensor, target: Tensor, *, beta: float = 1.0) -> Tensor:
    r"""Huber-style smooth L1 with ``d = |p - t|``:
    :math:`0.5 d^2 / \beta` if :math:`d < \beta`, else :math:`d - 0.5\beta`.

    >>> smooth_l1_loss(torch.tensor([0.5, 3.0]), torch.zeros(2))
    tensor([0.1250, 2.5000])
    """
    diff = (pred - target).abs()
    return torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)


def balanced_l1_loss(
    pred: Tensor, target: Tensor, *, alpha: float = 0.5, gamma: float = 1.5, beta: float = 1.0
) -> Tensor:
    r"""Balanced L1 (Libra R-CNN), with :math:`b = e^{\gamma/\alpha} - 1` and ``d = |p - t|``:

    .. math::
        \ell = \begin{cases}
        \frac{\alpha}{b}(b d + 1)\ln(b d / \beta + 1) - \alpha d & d < \beta \\
        \gamma d + \gamma / b - \alpha \beta & \text{otherwise}
        \end{cases}

    >>> balanced_l1_loss(torch.tensor([2.0]), torch.tensor([0.0]))
    tensor([2.5786])
    """
    diff = (pred - target).abs()
    b = math.exp(gamma / alpha) - 1
    inner = alpha / b * (b * diff + 1) * torch.log1p(b * diff / beta) - alpha * diff
    outer = gamma * diff + gamma / b - alpha * beta
    return torch.where(diff < beta, inner, outer)


def charbonnier_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-12) -> Tensor:
    r"""Charbonnier (a differentiable L1): :math:`\sqrt{(p - t)^2 + \epsilon}`.

    >>> charbonnier_loss(torch.tensor([3.0]), torch.tensor([0.0]))
    tensor([3.])
    """
    return torch.sqrt((pred - target) ** 2 + eps)
