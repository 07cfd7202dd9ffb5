"""Asymmetric loss for multi-label classification (Ridnik et al., "Asymmetric Loss For
Multi-Label Classification", ICCV 2021), element-wise."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["asymmetric_loss"]


def _focusing(base: Tensor, gamma: Tensor) -> Tensor:
    """``base ** gamma`` with ``0 ** 0 = 1`` and no NaN gradient at ``base = 0``."""
    positive = base > 0
    safe = torch.where(positive, base, 1.0)
    return torch.where(positive, safe.pow(gamma), (gamma == 0).to(base.dtype))


def asymmetric_loss(
    pred: Tensor,
    target: Tensor,
    *,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    eps: float = 1e-8,
) -> Tensor:
    r"""Asymmetric loss per element (the authors' ``AsymmetricLoss``).

    With :math:`p = \sigma(x)` and the shifted negative probability
    :math:`p_m = \max(p - m, 0)` (``clip`` :math:`m`):

    .. math::
        \ell = -\big[\, t\,(1 - p)^{\gamma_+} \log p
               + (1 - t)\, p_m^{\gamma_-} \log(1 - p_m) \big]

    (for soft targets the authors' mixed form: the focusing exponent is
    :math:`\gamma_+ t + \gamma_- (1 - t)` of :math:`1 - p_t`, with
    :math:`p_t = p\,t + (1 - p_m)(1 - t)`). Both logs are of probabilities clamped to
    at least ``eps``. ``gamma_pos = gamma_neg = 0`` and ``clip = 0`` is binary
    cross-entropy (with the clamp).

    Shapes: ``pred``, ``target``: ``(N, C)`` (any one shape); returns that shape.

    >>> asymmetric_loss(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]), gamma_neg=0.0, clip=0.0)
    tensor([0.6931, 0.6931])
    """
    target = target.to(pred.dtype)
    prob = torch.sigmoid(pred)
    prob_neg = 1 - prob
    if clip > 0:
        prob_neg = (prob_neg + clip).clamp(max=1)
    loss = target * prob.clamp(min=eps).log() + (1 - target) * prob_neg.clamp(min=eps).log()
    if gamma_pos > 0 or gamma_neg > 0:
        p_t = prob * target + prob_neg * (1 - target)
        gamma = gamma_pos * target + gamma_neg * (1 - target)
        loss = loss * _focusing(1 - p_t, gamma)
    return -loss
