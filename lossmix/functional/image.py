"""Image-restoration kernels with MMagic's numbers: PSNR, Sobel gradients, compositing,
Gaussian blur, Gram matrices and per-sample feature distances.

Images are ``(N, C, H, W)``. Every function is pure tensor code with no host sync and no
branch on data (branches on shapes and Python options only), so each compiles with
``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as TF
from torch import Tensor

from lossmix.errors import LossConfigError, did_you_mean

__all__ = [
    "CRITERIA",
    "alpha_composite",
    "check_criterion",
    "feature_distance",
    "gaussian_blur",
    "gaussian_kernel",
    "gram_matrix",
    "psnr_loss",
    "rgb_to_y",
    "sobel_gradients",
]

CRITERIA: tuple[str, ...] = ("l1", "mse")
_PSNR_SCALE = 10.0 / math.log(10.0)
_Y_COEF = (65.481, 128.553, 24.966)  # ITU-R BT.601 on [0, 1] RGB, times 255


def check_criterion(criterion: object, *, owner: str = "feature_distance") -> str:
    """``criterion`` lower-cased if it is ``'l1'`` or ``'mse'`` (MMagic's options), else raise."""
    lowered = criterion.lower() if isinstance(criterion, str) else criterion
    if lowered not in CRITERIA:
        raise LossConfigError(
            f"{owner}: criterion={criterion!r} is not valid; use one of {list(CRITERIA)}."
            f"{did_you_mean(str(criterion), CRITERIA)}"
        )
    checked: str = lowered  # one of CRITERIA, so a str
    return checked


def feature_distance(pred: Tensor, target: Tensor, *, criterion: str = "l1") -> Tensor:
    r"""Per-sample mean distance of two feature maps: :math:`\frac{1}{CHW}\sum |a - b|` (``'l1'``)
    or :math:`\frac{1}{CHW}\sum (a - b)^2` (``'mse'``).

    Its mean over ``N`` is ``torch.nn.L1Loss()`` / ``MSELoss()`` of the whole tensors, the
    criterion MMagic's feature losses use.

    Shapes: ``pred``, ``target``: ``(N, *)``; returns ``(N,)``.

    >>> feature_distance(torch.ones(2, 3), torch.zeros(2, 3), criterion="mse")
    tensor([1., 1.])
    """
    diff = pred - target
    elems = diff.abs() if criterion == "l1" else diff * diff
    return elems.flatten(1).mean(1)


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


def gaussian_kernel(
    size: int, sigma: float, *, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> Tensor:
    r"""A normalised ``(size, size)`` Gaussian: :math:`g_i g_j` with
    :math:`g_i \propto \exp(-(i - \lfloor size/2 \rfloor)^2 / 2\sigma^2)`, :math:`\sum g = 1`.

    >>> gaussian_kernel(3, 1.0).sum()
    tensor(1.)
    """
    work = torch.float64 if dtype == torch.float64 else torch.float32  # half precision would lose the tails
    offsets = torch.arange(size, dtype=work, device=device) - size // 2  # made on the device
    g = torch.exp(-(offsets**2) / (2.0 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).to(dtype)


def gaussian_blur(image: Tensor, *, size: int = 71, sigma: float = 10.0) -> Tensor:
    r"""Blur every channel with :func:`gaussian_kernel` and zero padding ``(size - 1) // 2``:
    MMagic's ``GaussianBlur`` (71 × 71, σ = 10), the soft fake label of AOT-GAN's ``smgan``.

    Shapes: ``(N, C, H, W)``; returns the same shape (``size`` odd).

    >>> gaussian_blur(torch.ones(1, 1, 3, 3), size=3, sigma=100.0)[0, 0, 1, 1]
    tensor(1.0000)
    """
    channels = image.shape[1]
    kernel = gaussian_kernel(size, sigma, dtype=image.dtype, device=image.device)
    kernel = kernel.view(1, 1, size, size).repeat(channels, 1, 1, 1)
    return TF.conv2d(image, kernel, padding=(size - 1) // 2, groups=channels)


def gram_matrix(features: Tensor) -> Tensor:
    r"""The Gram matrix of style losses: :math:`G = F F^\top / (C H W)` with
    :math:`F` the ``(N, C, HW)`` features.

    Shapes: ``(N, C, H, W)``; returns ``(N, C, C)``.

    >>> gram_matrix(torch.ones(1, 2, 2, 2))
    tensor([[[0.5000, 0.5000],
             [0.5000, 0.5000]]])
    """
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)
