"""Adversarial and image-prior kernels with MMagic's semantics.

* :func:`gan_loss`: the element-wise GAN objectives of ``GANLoss``;
* :func:`disc_shift_loss`, :func:`tv_differences`: element-wise regularisers;
* :func:`wgan_gp_penalty`, :func:`r1_penalty`: gradient penalties from given
  discriminator gradients (pure, compile-friendly), with
  :func:`discriminator_gradients` and :func:`interpolate_samples` computing
  those gradients (autograd, ``create_graph=True``; not kernels).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as TF
from torch import Tensor

from lossmix.errors import LossConfigError, did_you_mean

__all__ = [
    "GAN_TYPES",
    "NORM_MODES",
    "check_gan_type",
    "check_norm_mode",
    "disc_shift_loss",
    "discriminator_gradients",
    "gan_loss",
    "gaussian_blur",
    "gaussian_kernel",
    "interpolate_samples",
    "r1_penalty",
    "tv_differences",
    "wgan_gp_penalty",
]

GAN_TYPES: tuple[str, ...] = ("vanilla", "lsgan", "wgan", "wgan-logistic-ns", "hinge", "l1", "smgan")
NORM_MODES: tuple[str, ...] = ("pixel", "HWC")


def check_gan_type(gan_type: Any, *, owner: str = "gan_loss") -> str:
    """Return ``gan_type`` if it is one of :data:`GAN_TYPES`; else raise ``LossConfigError``."""
    if gan_type not in GAN_TYPES:
        raise LossConfigError(
            f"{owner}: gan_type={gan_type!r} is not valid; use one of {list(GAN_TYPES)}."
            f"{did_you_mean(str(gan_type), GAN_TYPES)}"
        )
    checked: str = gan_type  # one of GAN_TYPES, so a str
    return checked


def check_norm_mode(norm_mode: Any, *, owner: str = "gradient penalty") -> str:
    """Return ``norm_mode`` if it is one of :data:`NORM_MODES`; else raise ``LossConfigError``."""
    if norm_mode not in NORM_MODES:
        raise LossConfigError(
            f"{owner}: norm_mode={norm_mode!r} is not valid; use one of {list(NORM_MODES)}."
            f"{did_you_mean(str(norm_mode), NORM_MODES)}"
        )
    checked: str = norm_mode  # one of NORM_MODES, so a str
    return checked


def gan_loss(
    pred: Tensor,
    *,
    gan_type: str,
    target_is_real: bool | Tensor,
    is_disc: bool = False,
    real_label_val: float = 1.0,
    fake_label_val: float = 0.0,
    mask: Tensor | None = None,
) -> Tensor:
    r"""Element-wise GAN loss of a discriminator output ``x`` (MMagic's ``GANLoss``).

    With :math:`s = +1` for a real target and :math:`-1` for a fake one, and the label
    ``y`` = ``real_label_val`` or ``fake_label_val``:

    ==================  ==================================  ==================
    gan_type            discriminator (``is_disc=True``)    generator
    ==================  ==================================  ==================
    vanilla             BCE-with-logits(x, y)               same
    lsgan               (x − y)²                            same
    wgan                −s·x                                same
    wgan-logistic-ns    softplus(−s·x)                      same
    hinge               relu(1 − s·x)                       −x
    l1                  \|x − y\|                           same
    smgan               (x − y)², fake: y = blur(mask)      (x − y)²
    ==================  ==================================  ==================

    The means of these are MMagic's values. vanilla and wgan-logistic-ns use the
    stable softplus forms (finite at any logit). ``smgan`` (AOT-GAN's soft-mask GAN)
    first resizes ``x`` to the mask's size (bilinear, ``align_corners=True``) when they
    differ; the discriminator's fake label is the mask blurred by a 71 × 71, σ = 10
    Gaussian (:func:`lossmix.functional.gaussian_blur`). MMagic's generator side
    multiplies the already-averaged MSE by ``mask / mean(mask)`` and averages again,
    which cancels: the mean here is its value (finite for an all-zero mask, where
    MMagic's is NaN).

    Args:
        pred: discriminator logits, any shape.
        gan_type: one of :data:`GAN_TYPES`.
        target_is_real: a Python bool (the usual, config-level case) or a bool/0-1
            tensor broadcastable to ``pred`` (real and fake in one batch).
        is_disc: the discriminator's loss (hinge and smgan differ).
        real_label_val, fake_label_val: labels of vanilla, lsgan, l1 and smgan.
        mask: ``smgan`` only (required there): the hole mask ``(N, 1 or C, H, W)``.

    Returns:
        The broadcast shape of ``pred`` and ``target_is_real`` (hinge generator: ``pred``'s;
        smgan: the mask's spatial size).

    >>> gan_loss(torch.tensor([0.5, -2.0]), gan_type="hinge", target_is_real=True, is_disc=True)
    tensor([0.5000, 3.0000])
    """
    check_gan_type(gan_type)
    if gan_type == "smgan":
        return _smgan(pred, target_is_real, is_disc, real_label_val, fake_label_val, mask)
    if isinstance(target_is_real, Tensor):
        real = target_is_real.to(device=pred.device, dtype=torch.bool)
        sign: Tensor | float = torch.where(real, 1.0, -1.0).to(pred.dtype)
        label: Tensor | float = torch.where(real, real_label_val, fake_label_val).to(pred.dtype)
    else:
        sign = 1.0 if target_is_real else -1.0
        label = real_label_val if target_is_real else fake_label_val
    if gan_type == "vanilla":
        target: Tensor
        if isinstance(label, Tensor):
            # torch.functional.broadcast_tensors has no annotations (torch 2.x), so it is untyped
            pred, target = torch.broadcast_tensors(pred, label)  # type: ignore[no-untyped-call]
        else:
            target = torch.full_like(pred, label)  # a fill, not a host-to-device copy
        return TF.binary_cross_entropy_with_logits(pred, target, reduction="none")
    if gan_type == "lsgan":
        return (pred - label) ** 2
    if gan_type == "l1":
        return (pred - label).abs()
    if gan_type == "wgan":
        return -sign * pred
    if gan_type == "wgan-logistic-ns":
        return TF.softplus(-sign * pred)
    if is_disc:
        return TF.relu(1 - sign * pred)
    return -pred


def _smgan(
    pred: Tensor,
    target_is_real: bool | Tensor,
    is_disc: bool,
    real_val: float,
    fake_val: float,
    mask: Tensor | None,
) -> Tensor:
    if mask is None:
        raise LossConfigError(
            "gan_loss: gan_type='smgan' needs the hole mask; pass mask= (route inputs.mask)."
        )
    if pred.shape[2:] != mask.shape[2:]:
        pred = TF.interpolate(pred, size=mask.shape[2:], mode="bilinear", align_corners=True)
    real = target_is_real
    if isinstance(real, Tensor):
        real = real.to(device=pred.device, dtype=torch.bool)
    label: Tensor | float
    if is_disc:
        # the fake label is soft: the blurred mask; real ones stay real_label_val
        blurred = gaussian_blur(mask.to(pred.dtype)).detach()
        if isinstance(real, Tensor):
            label = torch.where(real, torch.full_like(blurred, real_val), blurred)
        else:
            label = torch.full_like(blurred, real_val) if real else blurred
    elif isinstance(real, Tensor):
        label = torch.where(real, real_val, fake_val).to(pred.dtype)
    else:
        label = real_val if real else fake_val
    return (pred - label) ** 2


def disc_shift_loss(pred: Tensor) -> Tensor:
    r"""PGGAN's discriminator drift penalty :math:`x^2` (MMagic's ``disc_shift_loss``).

    >>> disc_shift_loss(torch.tensor([2.0, -1.0]))
    tensor([4., 1.])
    """
    return pred * pred


def tv_differences(pred: Tensor) -> tuple[Tensor, Tensor]:
    r"""Absolute differences between vertical and horizontal neighbours.

    Returns :math:`|x_{i,j} - x_{i+1,j}|` of shape ``(N, C, H-1, W)`` and
    :math:`|x_{i,j} - x_{i,j+1}|` of shape ``(N, C, H, W-1)`` for ``pred`` ``(N, C, H, W)``
    (any ``(*, H, W)`` works).

    >>> dy, dx = tv_differences(torch.tensor([[[[0.0, 1.0], [3.0, 3.0]]]]))
    >>> dy, dx
    (tensor([[[[3., 2.]]]]), tensor([[[[1.], [0.]]]]))
    """
    dy = (pred[..., :-1, :] - pred[..., 1:, :]).abs()
    dx = (pred[..., :, :-1] - pred[..., :, 1:]).abs()
    return dy, dx


def _norm_sq(grad: Tensor, norm_mode: str) -> Tensor:
    if norm_mode == "pixel":
        return (grad * grad).sum(1)
    return (grad * grad).flatten(1).sum(1)


def wgan_gp_penalty(grad: Tensor, *, norm_mode: str = "pixel") -> Tensor:
    r"""WGAN-GP penalty :math:`(\lVert g \rVert_2 - 1)^2` from discriminator gradients ``g``.

    ``'pixel'``: the norm over channels (dim 1) at every position, ``(N, *)``;
    ``'HWC'``: the norm of each flattened sample, ``(N,)``. Their means are MMagic's.
    The norm's slope at ``g = 0`` is taken as 0 (a masked-out pixel), never NaN.

    >>> wgan_gp_penalty(torch.tensor([[[3.0]], [[4.0]]]).reshape(1, 2, 1), norm_mode="pixel")
    tensor([[16.]])
    """
    check_norm_mode(norm_mode)
    sq = _norm_sq(grad, norm_mode)
    safe = torch.where(sq > 0, sq, torch.ones_like(sq))
    norm = torch.where(sq > 0, safe.sqrt(), torch.zeros_like(sq))
    return (norm - 1) ** 2


def r1_penalty(grad: Tensor, *, norm_mode: str = "pixel") -> Tensor:
    r"""R1 penalty :math:`\lVert g \rVert_2^2` from discriminator gradients at real data.

    ``'pixel'``: the squared norm over channels at every position, ``(N, *)``;
    ``'HWC'``: the flattened sum of squares per sample, ``(N,)``.

    >>> r1_penalty(torch.ones(2, 3, 1, 1), norm_mode="HWC")
    tensor([3., 3.])
    """
    check_norm_mode(norm_mode)
    return _norm_sq(grad, norm_mode)


def interpolate_samples(real: Tensor, fake: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """``a·real + (1 − a)·fake`` with one ``a ~ U(0, 1)`` per sample, as a detached leaf.

    Detached like MMagic's ``autograd.Variable``: the penalty trains the
    discriminator only. ``generator`` makes ``a`` reproducible (drawn on its device).

    >>> x = interpolate_samples(torch.ones(2, 3), torch.zeros(2, 3),
    ...                         generator=torch.Generator().manual_seed(0))
    >>> x.requires_grad, bool((x[:, 0:1] == x).all())
    (True, True)
    """
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    device = generator.device if generator is not None else real.device
    alpha = torch.rand(shape, generator=generator, device=device).to(real)
    return (alpha * real + (1 - alpha) * fake).detach().requires_grad_()


def discriminator_gradients(discriminator: Any, inputs: Tensor, *, loss_scaler: Any = None) -> Tensor:
    """``∂ ΣD(inputs) / ∂inputs`` with ``create_graph=True`` (``inputs`` must require grad).

    ``loss_scaler`` (an AMP ``GradScaler``) scales the output before the gradient
    and unscales the gradient, without reading the scale on the host.
    """
    out = discriminator(inputs)
    if loss_scaler is not None:
        out = loss_scaler.scale(out)
    (grad,) = torch.autograd.grad(
        out, inputs, grad_outputs=torch.ones_like(out), create_graph=True, retain_graph=True
    )
    if loss_scaler is not None:
        grad = grad / loss_scaler.scale(torch.ones((), device=grad.device))
    return grad


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
