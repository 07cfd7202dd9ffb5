"""The GIoU loss with its gradient computed in the forward pass."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lossmix.functional.fused.function import backward_from_buffer, by_rows, save_context
from lossmix.functional.iou import _promote, giou_loss

__all__ = ["fused_giou_loss"]


def _tie_sign(a: Tensor, b: Tensor) -> Tensor:
    """``s = sign(b - a)``: ``∂min(a, b)/∂a = (1 + s) / 2`` and ``∂max(a, b)/∂a = (1 - s) / 2``,
    which split a tie half and half, as torch's ``minimum`` and ``maximum`` do."""
    return torch.sign(b - a)


def _value_and_grad(pred: Tensor, target: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    p, t, out_dtype = _promote(pred, target)
    lo_p, hi_p, lo_t, hi_t = p[..., :2], p[..., 2:], t[..., :2], t[..., 2:]
    inner_raw = torch.minimum(hi_p, hi_t) - torch.maximum(lo_p, lo_t)
    inner = inner_raw.clamp(min=0)
    overlap = inner[..., 0] * inner[..., 1]
    size_raw = hi_p - lo_p
    size = size_raw.clamp(min=0)
    size_t = (hi_t - lo_t).clamp(min=0)
    union_raw = size[..., 0] * size[..., 1] + size_t[..., 0] * size_t[..., 1] - overlap
    union = union_raw.clamp(min=eps)
    outer_raw = torch.maximum(hi_p, hi_t) - torch.minimum(lo_p, lo_t)
    outer = outer_raw.clamp(min=0)
    enclose_raw = outer[..., 0] * outer[..., 1]
    enclose = enclose_raw.clamp(min=eps)
    loss = 1 - (overlap / union - (enclose - union) / enclose)
    # ℓ = 1 - I/U + (E - U)/E: ∂ℓ/∂U = I/U² - 1/E, ∂ℓ/∂I = -1/U - ∂ℓ/∂U (U = A_p + A_t - I),
    # ∂ℓ/∂E = U/E²; clamps pass the gradient where the input is >= the bound (as torch's)
    g_union = (overlap / (union * union) - 1 / enclose) * (union_raw >= eps)
    g_overlap = -1 / union - g_union
    g_enclose = union / (enclose * enclose) * (enclose_raw >= eps)
    g_inner = _swap(inner) * g_overlap.unsqueeze(-1) * (inner_raw >= 0)
    g_size = _swap(size) * g_union.unsqueeze(-1) * (size_raw >= 0)
    g_outer = _swap(outer) * g_enclose.unsqueeze(-1) * (outer_raw >= 0)
    mean, half_diff = (g_inner + g_outer) / 2, (g_inner - g_outer) / 2
    g_lo = _tie_sign(lo_p, lo_t) * half_diff - mean - g_size
    g_hi = _tie_sign(hi_p, hi_t) * half_diff + mean + g_size
    return loss.to(out_dtype), torch.cat([g_lo, g_hi], -1).to(pred.dtype)


def _swap(pair: Tensor) -> Tensor:
    """``(h, w)`` from ``(w, h)``: the other factor of each side of an area."""
    return pair.flip(-1)


class GIoUFused(torch.autograd.Function):
    """:func:`fused_giou_loss`'s Function: forward gives ``(loss, ∂loss/∂pred)``."""

    generate_vmap_rule = True
    setup_context = staticmethod(save_context)

    @staticmethod
    def forward(pred: Tensor, target: Tensor, eps: float) -> tuple[Tensor, ...]:
        boxes = (pred.reshape(-1, 4), target.reshape(-1, 4))
        loss, grad = by_rows(_value_and_grad, *boxes, eps)
        return loss.view(pred.shape[:-1]), grad.view(pred.shape)

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, _grad: Tensor) -> tuple[Tensor | None, ...]:
        return backward_from_buffer(ctx, grad_loss, _plain, -1)


def _plain(pred: Tensor, target: Tensor, eps: float) -> Tensor:
    return giou_loss(pred, target, eps=eps)


def fused_giou_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-6) -> Tensor:
    r""":func:`~lossmix.functional.giou_loss`, fused: :math:`\ell = 1 - I/U + (E - U)/E` with
    intersection :math:`I`, union :math:`U` and enclosing area :math:`E` (both clamped to at
    least ``eps``), and its gradient through the box corners,

    .. math::
        \frac{\partial \ell}{\partial U} = \frac{I}{U^2} - \frac{1}{E}, \quad
        \frac{\partial \ell}{\partial I} = -\frac{1}{U} - \frac{\partial \ell}{\partial U}, \quad
        \frac{\partial \ell}{\partial E} = \frac{U}{E^2}

    computed in the forward pass.

    Shapes: ``pred``, ``target``: ``(..., 4)`` boxes ``(x1, y1, x2, y2)``; returns ``(...)``.

    >>> fused_giou_loss(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 1.0, 3.0, 3.0]]))
    tensor([1.0794])
    """
    loss, _ = GIoUFused.apply(pred, target, eps)  # type: ignore[no-untyped-call]
    return loss  # type: ignore[no-any-return]
