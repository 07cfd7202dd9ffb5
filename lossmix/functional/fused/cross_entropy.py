"""The softmax cross-entropy (class-index targets) with its gradient computed in the forward pass."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lossmix.functional.cross_entropy import cross_entropy
from lossmix.functional.fused.function import backward_from_buffer, save_context, work_dtype

__all__ = ["fused_cross_entropy"]


def _value_and_grad(
    pred: Tensor, target: Tensor, class_weight: Tensor | None, ignore_index: int, label_smoothing: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The loss, the buffer ``g`` and the per-row scale ``r`` with ``∂ℓ_i/∂x_ik = r_i g_ik``."""
    x = work_dtype(pred)
    weight = None if class_weight is None else class_weight.to(x.dtype)
    classes = x.size(1)
    share = label_smoothing / classes
    log_p = F.log_softmax(x, 1)
    # F.cross_entropy is log_softmax, then nll_loss, then (label smoothing) this mix
    loss = F.nll_loss(log_p, target, weight=weight, ignore_index=ignore_index, reduction="none")
    valid = target != ignore_index
    index = target.masked_fill(~valid, 0)
    view = (1, classes) + (1,) * (x.dim() - 2)
    if label_smoothing:
        summed = log_p.sum(1) if weight is None else (log_p * weight.view(view)).sum(1)
        loss = (1 - label_smoothing) * loss + (-summed).masked_fill_(~valid, 0.0) * share
    # ∂ℓ/∂x_k = [valid] (p_k ((1-s) w_y + s/C Σw) - (1-s) w_y [k = y] - s/C w_k)
    grad = log_p.exp_()
    rows = valid.to(x.dtype)
    hit: Tensor | float = -(1 - label_smoothing)
    if weight is None:
        if label_smoothing:
            grad.sub_(share)
    elif not label_smoothing:
        rows = rows * weight[index]
        hit = -1.0
    else:
        picked = weight[index]
        grad.mul_(((1 - label_smoothing) * picked + share * weight.sum()).unsqueeze(1))
        grad.sub_(weight.view(view), alpha=share)
        hit = picked * hit
    # new_full, not as_tensor: a Python float copied to a GPU would wait for the device
    src = hit if isinstance(hit, Tensor) else x.new_full(index.shape, hit)
    grad.scatter_add_(1, index.unsqueeze(1), src.unsqueeze(1))
    return loss.to(pred.dtype), grad.to(pred.dtype), rows


def _plain(
    pred: Tensor, target: Tensor, class_weight: Tensor | None, ignore_index: int, label_smoothing: float
) -> Tensor:
    x = work_dtype(pred)
    weight = None if class_weight is None else class_weight.to(x.dtype)
    loss = cross_entropy(
        x, target, class_weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing
    )
    return loss.to(pred.dtype)


class CrossEntropyFused(torch.autograd.Function):
    """:func:`fused_cross_entropy`'s Function: forward gives ``(loss, buffer, row scale)``."""

    generate_vmap_rule = True
    setup_context = staticmethod(save_context)

    @staticmethod
    def forward(
        pred: Tensor, target: Tensor, class_weight: Tensor | None, ignore_index: int, label_smoothing: float
    ) -> tuple[Tensor, ...]:
        # torch's log_softmax and nll_loss are native kernels already: blocks of rows only add calls
        return _value_and_grad(pred, target, class_weight, ignore_index, label_smoothing)

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, *_: Tensor) -> tuple[Tensor | None, ...]:
        return backward_from_buffer(ctx, grad_loss, _plain, 1)


def fused_cross_entropy(
    pred: Tensor,
    target: Tensor,
    *,
    class_weight: Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> Tensor:
    r""":func:`~lossmix.functional.cross_entropy` for class-index targets, fused. With
    :math:`p = \mathrm{softmax}(x_i)`, :math:`s` the label smoothing and :math:`w` the
    class weights (1 without):

    .. math::
        \ell_i = -(1 - s) w_{y_i} \log p_{y_i} - \frac{s}{C} \sum_c w_c \log p_c, \qquad
        \frac{\partial \ell_i}{\partial x_{ik}} = p_k \Big((1 - s) w_{y_i} + \frac{s}{C}
        \sum_c w_c\Big) - (1 - s) w_{y_i} [k = y_i] - \frac{s}{C} w_k

    and 0 for a row labelled ``ignore_index``.

    Shapes: ``pred``: ``(N, C, *)`` logits; ``target``: ``(N, *)`` indices; ``class_weight``:
    ``(C,)``; returns ``(N, *)``.

    >>> fused_cross_entropy(torch.tensor([[0.0, 0.0]]), torch.tensor([1]))
    tensor([0.6931])
    """
    loss, _, _ = CrossEntropyFused.apply(pred, target, class_weight, ignore_index, label_smoothing)  # type: ignore[no-untyped-call]
    return loss  # type: ignore[no-any-return]
