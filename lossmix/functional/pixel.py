"""Pixel-loss kernels with MMagic's numbers: PSNR, the Y channel, Sobel gradients and
alpha compositing (the kernels of :mod:`lossmix.losses.pixel`).

Images are ``(N, C, H, W)``. Pure tensor code with no host sync and no branch on data, so
each compiles with ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as TF
from torch import Tensor

__all__ = ["alpha_composite", "psnr_loss", "rgb_to_y", "sobel_gradients"]

_PSNR_SCALE = 10.0 / math.log(10.0)
_Y_COEF = (65.481, 128.553, 24.966)  # ITU-R BT.601 on [0, 1] RGB, times 255


def psnr_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-8) -> Tensor:
    r"""Per-sample negative PSNR of HINet (MMagic's ``PSNRLoss``):
    :math:`\frac{10}{\ln 10} \ln\big(\frac{1}{CHW}\sum (p - t)^2 + \epsilon\big)`.

    For data in ``[0, 1]`` this is −PSNR in dB; identical images give
    :math:`10 \log_{10} 10^{-8} = -80`.

    Shapes: ``(N, C, H, W)`` (any ``(N, *)``); returns ``(N,)``.

    >>> psnr_loss(torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)).abs()
    tensor([0.])
    """
    mse = ((pred - target) ** 2).flatten(1).mean(1)
    return _PSNR_SCALE * torch.log(mse + eps)


def rgb_to_y(image: Tensor) -> Tensor:
    r"""The luma channel of RGB in ``[0, 1]``: :math:`(65.481 R + 128.553 G + 24.966 B + 16) / 255`
    (HINet's ``toY``), shape ``(N, 1, H, W)``.

    >>> rgb_to_y(torch.zeros(1, 3, 1, 1)) * 255
    tensor([[[[16.]]]])
    """
    r, g, b = _Y_COEF  # scalars, so no host-to-device copy of a coefficient tensor
    luma = r * image[:, 0:1] + g * image[:, 1:2] + b * image[:, 2:3]
    return (luma + 16.0) / 255.0


def sobel_gradients(image: Tensor) -> tuple[Tensor, Tensor]:
    r"""Sobel responses of every channel (MMagic's ``GradientLoss``), zero-padded to keep the size.

    Cross-correlation with :math:`k_x = \begin{pmatrix}1&0&-1\\2&0&-2\\1&0&-1\end{pmatrix}` and
    :math:`k_y = k_x^\top`; MMagic applies one ``(1, 1, 3, 3)`` kernel, so a single channel
    there, each channel on its own here.

    Shapes: ``(N, C, H, W)``; returns two ``(N, C, H, W)``.

    >>> gx, gy = sobel_gradients(torch.arange(9.0).view(1, 1, 3, 3))
    >>> gx[0, 0, 1, 1], gy[0, 0, 1, 1]
    (tensor(-8.), tensor(-24.))
    """
    # built on the device from arange (a kernel launch, not a host-to-device copy)
    steps = torch.arange(3, dtype=image.dtype, device=image.device)
    smooth, derivative = 2.0 - (steps - 1.0).abs(), 1.0 - steps  # (1, 2, 1) and (1, 0, -1)
    channels = image.shape[1]
    kx = torch.outer(smooth, derivative).view(1, 1, 3, 3).repeat(channels, 1, 1, 1)
    ky = kx.transpose(2, 3)
    gx = TF.conv2d(image, kx, padding=1, groups=channels)
    gy = TF.conv2d(image, ky, padding=1, groups=channels)
    return gx, gy


def alpha_composite(alpha: Tensor, fg: Tensor, bg: Tensor) -> Tensor:
    r"""The merged image :math:`\alpha F + (1 - \alpha) B` of matting's composition losses.

    Shapes: ``alpha`` ``(N, 1, H, W)``; ``fg``, ``bg`` ``(N, 3, H, W)``; returns ``(N, 3, H, W)``.

    >>> alpha_composite(torch.tensor([0.25]), torch.tensor([4.0]), torch.tensor([0.0]))
    tensor([1.])
    """
    return alpha * fg + (1.0 - alpha) * bg
