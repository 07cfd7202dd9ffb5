"""Battery cases for MMagic's (pred, target) image losses: the masked L1/MSE of the
``mmagic`` scope, PSNR and the Sobel-gradient loss. References are MMagic's formulas,
written here independently of lossmix's kernels."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as TF

from lossmix import functional as F
from lossmix.losses import GradientLoss, MaskedL1Loss, MaskedMSELoss, PSNRLoss
from lossmix.losses.pixel import MMagicPSNRLoss
from tests.losses.battery import LossCase


def _images(dtype: torch.dtype, gen: torch.Generator, scale: float):
    pred = torch.randn(2, 3, 6, 5, generator=gen, dtype=torch.float64).to(dtype) * scale
    target = torch.randn(2, 3, 6, 5, generator=gen, dtype=torch.float64).to(dtype)
    return pred, target


def _gray(dtype: torch.dtype, gen: torch.Generator, scale: float):
    pred = torch.randn(2, 1, 6, 5, generator=gen, dtype=torch.float64).to(dtype) * scale
    target = torch.randn(2, 1, 6, 5, generator=gen, dtype=torch.float64).to(dtype)
    return pred, target


def psnr_reference(pred, target):
    """HINet / MMagic: 10/ln(10) · ln(mean_CHW (p − t)² + 1e-8), one value per sample."""
    rows = [((p - t) ** 2).mean() for p, t in zip(pred, target, strict=True)]
    return torch.stack([10 / math.log(10) * torch.log(r + 1e-8) for r in rows])


def sobel_reference(image):
    """Sobel responses by explicit sums over a zero-padded image (MMagic's kx, ky)."""
    kx = [[1, 0, -1], [2, 0, -2], [1, 0, -1]]
    padded = TF.pad(image, (1, 1, 1, 1))
    h, w = image.shape[-2:]
    gx = torch.zeros_like(image)
    gy = torch.zeros_like(image)
    for i in range(3):
        for j in range(3):
            window = padded[..., i : i + h, j : j + w]
            gx = gx + kx[i][j] * window
            gy = gy + kx[j][i] * window
    return gx, gy


def gradient_reference(pred, target):
    (px, py), (tx, ty) = sobel_reference(pred), sobel_reference(target)
    return (px - tx).abs() + (py - ty).abs()


def _sobel_kernel(pred, target):
    gx, gy = F.sobel_gradients(pred - target)
    return gx.abs() + gy.abs()


CASES = [
    LossCase(
        "mmagic.L1Loss",
        lambda **kw: MaskedL1Loss(**kw),
        _images,
        reference=lambda p, t: (p - t).abs(),
        kernel=F.l1_loss,
        extra={"masked_mean": True},
    ),
    LossCase(
        "mmagic.MSELoss",
        lambda **kw: MaskedMSELoss(**kw),
        _images,
        reference=lambda p, t: (p - t) ** 2,
        kernel=F.mse_loss,
        extra={"masked_mean": True},
    ),
    LossCase(
        "PSNRLoss",
        lambda **kw: PSNRLoss(**kw),
        _images,
        reference=psnr_reference,
        kernel=F.psnr_loss,
        weight_shape=lambda p, t: (p.shape[0],),
    ),
    LossCase(
        "mmagic.PSNRLoss",
        lambda **kw: MMagicPSNRLoss(**kw),
        _images,
        reference=psnr_reference,
        kernel=F.psnr_loss,
        weight_shape=lambda p, t: (p.shape[0],),
    ),
    LossCase(
        "GradientLoss",
        lambda **kw: GradientLoss(**kw),
        _gray,
        reference=gradient_reference,
        kernel=_sobel_kernel,
        extra={"masked_mean": True},
    ),
]
