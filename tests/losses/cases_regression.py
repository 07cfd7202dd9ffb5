"""Battery cases for the regression losses."""

from __future__ import annotations

import math

import torch

from lossmix import functional as F
from lossmix.losses import BalancedL1Loss, CharbonnierLoss, L1Loss, MSELoss, SmoothL1Loss
from tests.losses.battery import LossCase


def _pair(dtype: torch.dtype, gen: torch.Generator, scale: float):
    pred = torch.randn(6, 4, generator=gen, dtype=torch.float64).to(dtype) * scale
    target = torch.randn(6, 4, generator=gen, dtype=torch.float64).to(dtype)
    return pred, target


def _balanced(pred, target, alpha=0.5, gamma=1.5, beta=1.0):
    out = torch.empty_like(pred)
    b = math.exp(gamma / alpha) - 1
    for i, d in enumerate((pred - target).abs().flatten().tolist()):
        if d < beta:
            v = alpha / b * (b * d + 1) * math.log(b * d / beta + 1) - alpha * d
        else:
            v = gamma * d + gamma / b - alpha * beta
        out.view(-1)[i] = v
    return out


CASES = [
    LossCase(
        "L1Loss",
        lambda **kw: L1Loss(**kw),
        _pair,
        reference=lambda p, t: torch.nn.functional.l1_loss(p, t, reduction="none"),
        kernel=F.l1_loss,
    ),
    LossCase(
        "MSELoss",
        lambda **kw: MSELoss(**kw),
        _pair,
        reference=lambda p, t: torch.nn.functional.mse_loss(p, t, reduction="none"),
        kernel=F.mse_loss,
        extreme_scales=(1e4,),
    ),
    LossCase(
        "SmoothL1Loss",
        lambda **kw: SmoothL1Loss(beta=0.5, **kw),
        _pair,
        reference=lambda p, t: torch.nn.functional.smooth_l1_loss(p, t, beta=0.5, reduction="none"),
        kernel=lambda p, t: F.smooth_l1_loss(p, t, beta=0.5),
    ),
    LossCase(
        "BalancedL1Loss",
        lambda **kw: BalancedL1Loss(**kw),
        _pair,
        reference=_balanced,
        kernel=F.balanced_l1_loss,
    ),
    LossCase(
        "CharbonnierLoss",
        lambda **kw: CharbonnierLoss(eps=1e-6, **kw),
        _pair,
        reference=lambda p, t: torch.sqrt((p - t) ** 2 + 1e-6),
        kernel=lambda p, t: F.charbonnier_loss(p, t, eps=1e-6),
        extra={"masked_mean": True},
    ),
]
