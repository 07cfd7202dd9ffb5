"""The sigmoid focal loss with its gradient computed in the forward pass."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lossmix.functional.focal import sigmoid_focal_loss
from lossmix.functional.fused.function import backward_from_buffer, by_rows, save_context, work_dtype

__all__ = ["fused_sigmoid_focal_loss"]


def _dense_target(target: Tensor, like: Tensor) -> Tensor:
    """A float target shaped like ``like`` ``(N, C, *)``, from one or from class indices ``(N, *)``
    (a label outside ``[0, C)`` is an all-negative row: MMDetection's background ``C``)."""
    if target.dim() == like.dim():
        return target.to(like.dtype)
    shape = (1, like.size(1)) + (1,) * (like.dim() - 2)
    classes = torch.arange(like.size(1), device=like.device).view(shape)
    return (target.unsqueeze(1) == classes).to(like.dtype)


def _pow_slope_(q: Tensor, gamma: float) -> Tensor:
    """:math:`\\gamma q^{\\gamma - 1}`, in place; finite at ``q = 0`` for ``gamma < 1`` (its
    factor ``p (1 - p)`` in the chain rule is 0 there, as the plain path's gradient is)."""
    if gamma < 1:
        q.clamp_(min=torch.finfo(q.dtype).tiny)
    return q.pow_(gamma - 1).mul_(gamma)


def _value_and_grad(pred: Tensor, target: Tensor, gamma: float, alpha: float | None) -> tuple[Tensor, Tensor]:
    # The plain kernel's operations in its order (so the same bits), in place where a value
    # is not needed again.
    x = work_dtype(pred)
    t = _dense_target(target, x)
    not_t = 1 - t
    # binary_cross_entropy_with_logits' own formula: (1 - t) x - log σ(x)
    bce = (not_t * x).sub_(F.logsigmoid(x))
    p = torch.sigmoid(x)
    q = (1 - p).mul_(t).add_(p * not_t)  # 1 - p_t = (1 - p) t + p (1 - t)
    modulator = q**gamma
    # ∂ℓ/∂x = α_t [q^γ (p - t) + γ q^(γ-1) · ∂q/∂x · BCE],  ∂q/∂x = (1 - 2t) p (1 - p)
    grad = (p - t).mul_(modulator)
    if gamma:
        slope = _pow_slope_(q, gamma).mul_(not_t - t).mul_(p).mul_(1 - p)
        grad.add_(slope.mul_(bce))
    loss = bce.mul_(modulator)
    if alpha is not None and alpha >= 0:
        balance = (t * alpha).add_(not_t.mul_(1 - alpha))
        loss.mul_(balance)
        grad.mul_(balance)
    return loss.to(pred.dtype), grad.to(pred.dtype)


def _plain(pred: Tensor, target: Tensor, gamma: float, alpha: float | None) -> Tensor:
    x = work_dtype(pred)
    t = _dense_target(target, x)
    return sigmoid_focal_loss(x, t, gamma=gamma, alpha=alpha).to(pred.dtype)


class SigmoidFocalFused(torch.autograd.Function):
    """:func:`fused_sigmoid_focal_loss`'s Function: forward gives ``(loss, ∂loss/∂pred)``."""

    generate_vmap_rule = True
    setup_context = staticmethod(save_context)

    @staticmethod
    def forward(pred: Tensor, target: Tensor, gamma: float, alpha: float | None) -> tuple[Tensor, ...]:
        return by_rows(_value_and_grad, pred, target, gamma, alpha)

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, _grad: Tensor) -> tuple[Tensor | None, ...]:
        return backward_from_buffer(ctx, grad_loss, _plain, None)


def fused_sigmoid_focal_loss(
    pred: Tensor, target: Tensor, *, gamma: float = 2.0, alpha: float | None = 0.25
) -> Tensor:
    r""":func:`~lossmix.functional.sigmoid_focal_loss` (on logits), fused:

    .. math::
        \ell = \alpha_t (1 - p_t)^\gamma \mathrm{BCE}(x, t), \qquad
        \frac{\partial \ell}{\partial x} = \alpha_t \left[(1 - p_t)^\gamma (p - t)
        + \gamma (1 - p_t)^{\gamma - 1} (1 - 2t)\, p (1 - p)\, \mathrm{BCE}(x, t)\right]

    both computed in the forward pass; ``alpha=None`` or negative: :math:`\alpha_t = 1`.

    Shapes: ``pred``: ``(N, C, *)`` logits; ``target``: ``(N, *)`` class indices (a label
    outside ``[0, C)``, e.g. the background ``C``, is an all-negative row) or ``(N, C, *)``
    floats in ``[0, 1]``; returns ``(N, C, *)``.

    >>> fused_sigmoid_focal_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([1]), gamma=0.0, alpha=None)
    tensor([[0.6931, 0.6931]])
    """
    loss, _ = SigmoidFocalFused.apply(pred, target, gamma, alpha)  # type: ignore[no-untyped-call]
    return loss  # type: ignore[no-any-return]
