"""StyleGAN2's path-length regulariser, MMagic's ``gen_path_regularizer`` split in two.

* :func:`path_gradients` (autograd with ``create_graph=True``, not a kernel): the Jacobian-
  vector product :math:`J_w^\\top y` of the generated images against their latents, for a
  random image-space direction ``y``;
* :func:`path_lengths`, :func:`moved_path_mean` and :func:`path_length_penalty` (pure
  kernels): the per-sample path lengths, the moved running mean and the per-sample penalty.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["moved_path_mean", "path_gradients", "path_length_penalty", "path_lengths"]


def path_gradients(fake_img: Tensor, latents: Tensor, *, loss_scaler: Any = None) -> Tensor:
    r""":math:`\partial \sum(x \cdot y) / \partial w` with :math:`y \sim \mathcal{N}(0, 1)/\sqrt{HW}`.

    ``fake_img`` ``(N, C, H, W)`` (or ``(N, D)``: no spatial size, :math:`y \sim \mathcal{N}(0, 1)`)
    must be computed from ``latents`` ``(N, L, D)`` (or ``(N, D)``), which require grad.
    ``loss_scaler`` (an AMP ``GradScaler``) scales the sum and unscales the gradient, without
    reading the scale on the host. Returns the latents' shape, with ``create_graph=True`` so the
    penalty trains the generator.
    """
    spatial = math.prod(fake_img.shape[2:])
    noise = torch.randn_like(fake_img) / math.sqrt(spatial)
    out = (fake_img * noise).sum()
    if loss_scaler is not None:
        out = loss_scaler.scale(out)
    (grad,) = torch.autograd.grad(out, latents, create_graph=True, retain_graph=True)
    if loss_scaler is not None:
        grad = grad / loss_scaler.scale(torch.ones((), device=grad.device))
    return grad


def path_lengths(grad: Tensor) -> Tensor:
    r"""Per-sample path length :math:`\sqrt{\operatorname{mean}_\ell \sum_d g_{\ell d}^2}`.

    ``grad`` is ``(N, L, D)`` (one latent per synthesis layer, as StyleGAN2's ``w+``), or
    ``(N, D)`` (one latent: ``L = 1``); returns ``(N,)``. The root's slope at 0 is taken as 0,
    never inf.

    >>> path_lengths(torch.tensor([[[3.0, 4.0], [0.0, 5.0]]]))
    tensor([5.])
    """
    if grad.dim() == 2:
        grad = grad.unsqueeze(1)
    sq = (grad * grad).flatten(2).sum(2).mean(1)
    safe = torch.where(sq > 0, sq, torch.ones_like(sq))
    return torch.where(sq > 0, safe.sqrt(), torch.zeros_like(sq))


def moved_path_mean(lengths: Tensor, mean_path_length: Tensor, *, decay: float = 0.01) -> Tensor:
    r"""The running mean moved towards this batch:
    :math:`\bar a' = \bar a + \delta(\operatorname{mean}(a) - \bar a)`.

    Not detached, as in MMagic: the penalty also pulls on the batch mean through it.

    >>> moved_path_mean(torch.tensor([1.0, 3.0]), torch.tensor(0.0), decay=0.5)
    tensor(1.)
    """
    return mean_path_length + decay * (lengths.mean() - mean_path_length)


def path_length_penalty(lengths: Tensor, path_mean: Tensor) -> Tensor:
    r"""Each sample's penalty :math:`(a_i - \bar a')^2`; its mean is MMagic's ``path_penalty``.

    Shapes: ``lengths`` ``(N,)`` (:func:`path_lengths`), ``path_mean`` 0-dim
    (:func:`moved_path_mean`); returns ``(N,)``.

    >>> path_length_penalty(torch.tensor([1.0, 3.0]), torch.tensor(1.0))
    tensor([0., 4.])
    """
    return (lengths - path_mean) ** 2
