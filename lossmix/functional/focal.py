"""Focal-family kernels: sigmoid and softmax focal, varifocal, quality and distribution focal.

Notation: ``x`` a logit, ``p = sigmoid(x)``, ``t`` a (soft) target. The
modulating factors ``base ** gamma`` go through :func:`_safe_pow`, whose
gradient stays finite at ``base == 0`` even for ``gamma < 1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "distribution_focal_loss",
    "quality_focal_loss",
    "sigmoid_focal_loss",
    "softmax_focal_loss",
    "varifocal_loss",
]

# MMDetection's activated path calls F.binary_cross_entropy, which clamps log at -100.
_LOG_FLOOR = -100.0


def _safe_pow(base: Tensor, exponent: float) -> Tensor:
    """``base ** exponent`` for ``base >= 0``; at ``base == 0`` the value is ``0 ** exponent``
    and the gradient 0 (``d/db b**g`` is infinite there for ``g < 1``).

    ``exponent`` 0 is a constant 1 and ``exponent >= 1`` a plain power (its gradient at 0 is
    finite), one op instead of four; only ``0 < exponent < 1`` needs the guarded form."""
    if exponent == 0:
        return torch.ones_like(base)
    if exponent >= 1:
        return base * base if exponent == 2 else base**exponent
    positive = base > 0
    powered = torch.where(positive, base, torch.ones_like(base)) ** exponent
    return torch.where(positive, powered, 0.0**exponent)


def _clamped_log(x: Tensor) -> Tensor:
    """``max(log x, -100)`` with a zero (not NaN) gradient at ``x == 0``."""
    positive = x > 0
    logged = torch.log(torch.where(positive, x, torch.ones_like(x))).clamp(min=_LOG_FLOOR)
    return torch.where(positive, logged, _LOG_FLOOR)


def _bce(pred: Tensor, target: Tensor, activated: bool) -> Tensor:
    """Binary cross-entropy on logits (stable form) or, if ``activated``, on probabilities."""
    if activated:
        return -(target * _clamped_log(pred) + (1 - target) * _clamped_log(1 - pred))
    return F.binary_cross_entropy_with_logits(pred, target, reduction="none")


def sigmoid_focal_loss(
    pred: Tensor,
    target: Tensor,
    *,
    gamma: float = 2.0,
    alpha: float | None = 0.25,
    activated: bool = False,
) -> Tensor:
    r"""Sigmoid focal loss (RetinaNet), element-wise:

    .. math::
        \ell = \alpha_t\, (1 - p_t)^\gamma\, \mathrm{BCE}(x, t), \quad
        1 - p_t = (1 - p)\,t + p\,(1 - t), \quad \alpha_t = \alpha t + (1 - \alpha)(1 - t)

    ``alpha=None`` or a negative ``alpha`` (torchvision's ``-1``) means no
    balancing, :math:`\alpha_t = 1`. With ``activated=True``, ``pred`` holds
    probabilities and the BCE uses ``log`` clamped at -100 (MMDetection's
    ``F.binary_cross_entropy`` path); otherwise the BCE is the stable
    ``binary_cross_entropy_with_logits``.

    Shapes: ``pred``, ``target``: ``(*)``, the same shape, ``target`` in
    ``[0, 1]`` (one-hot or soft); returns ``(*)``.

    >>> sigmoid_focal_loss(torch.tensor([0.0]), torch.tensor([1.0]), gamma=0.0, alpha=None)
    tensor([0.6931])
    """
    target = target.to(pred.dtype)
    prob = pred if activated else torch.sigmoid(pred)
    one_minus_pt = (1 - prob) * target + prob * (1 - target)
    loss = _bce(pred, target, activated) * _safe_pow(one_minus_pt, gamma)
    if alpha is not None and alpha >= 0:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return loss


def softmax_focal_loss(
    pred: Tensor,
    target: Tensor,
    *,
    gamma: float = 2.0,
    alpha: float | Tensor | None = None,
    ignore_index: int = -100,
) -> Tensor:
    r"""Softmax focal loss per row (MMCV's ``softmax_focal_loss``), with
    :math:`p_i = \mathrm{softmax}(x_i)`:

    .. math:: \ell_i = -\alpha_{y_i} (1 - p_{i,y_i})^\gamma \log p_{i,y_i}


    ``log p`` comes from ``log_softmax`` and ``1 - p_y`` from ``-expm1(log p_y)``,
    both exact at saturated logits. ``alpha`` is ``None`` or negative (no
    balancing), a float (every class), or a ``(C,)`` tensor (per class). Rows
    labelled ``ignore_index`` give 0.

    Shapes: ``pred``: ``(N, C, *)`` logits; ``target``: ``(N, *)`` indices;
    returns ``(N, *)``. With ``gamma=0, alpha=None`` this is ``F.cross_entropy``.

    >>> softmax_focal_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([1]), gamma=0.0)
    tensor([0.6931])
    """
    valid = target != ignore_index
    index = torch.where(valid, target, torch.zeros_like(target)).long()
    log_p = F.log_softmax(pred, dim=1).gather(1, index.unsqueeze(1)).squeeze(1)
    loss = -_safe_pow(-torch.expm1(log_p), gamma) * log_p
    if isinstance(alpha, Tensor):
        loss = loss * alpha.to(loss.dtype)[index]
    elif alpha is not None and alpha >= 0:
        loss = loss * alpha
    return torch.where(valid, loss, 0.0)


def varifocal_loss(
    pred: Tensor,
    target: Tensor,
    *,
    alpha: float = 0.75,
    gamma: float = 2.0,
    iou_weighted: bool = True,
) -> Tensor:
    r"""Varifocal loss (VarifocalNet), element-wise, with ``q`` the IoU-aware target score:

    .. math::
        \ell = \mathrm{BCE}(x, q) \cdot \begin{cases} q & q > 0 \\
        \alpha\, |p - q|^\gamma & q \le 0 \end{cases}

    where the positive factor is 1 instead of ``q`` when ``iou_weighted=False``.

    Shapes: ``pred``, ``target``: ``(*)``, the same shape; returns ``(*)``.

    >>> varifocal_loss(torch.tensor([0.0, 0.0]), torch.tensor([0.5, 0.0]))
    tensor([0.3466, 0.1300])
    """
    target = target.to(pred.dtype)
    positive = target > 0
    negative_weight = alpha * _safe_pow((torch.sigmoid(pred) - target).abs(), gamma)
    positive_weight = target if iou_weighted else torch.ones_like(target)
    weight = torch.where(positive, positive_weight, negative_weight)
    return F.binary_cross_entropy_with_logits(pred, target, reduction="none") * weight


def quality_focal_loss(
    pred: Tensor,
    target: Tensor,
    *,
    beta: float = 2.0,
    activated: bool = False,
) -> Tensor:
    r"""Quality focal loss (GFL), element-wise, with a dense soft target ``t``:

    .. math:: \ell = \mathrm{BCE}(x, t)\, |t - p|^\beta

    At a negative (``t = 0``) this is MMDetection's :math:`\mathrm{BCE}(x, 0)\, p^\beta`; at
    the labelled class it is :math:`\mathrm{BCE}(x, s)|s - p|^\beta` with ``s`` the quality
    score. MMDetection's ``(label, score)`` target is the dense target
    ``one_hot_targets(label, C) * score[:, None]``; ``QualityFocalLoss`` then sums over
    classes. ``activated=True``: ``pred`` holds probabilities.

    Shapes: ``pred``, ``target``: ``(N, C)``; returns ``(N, C)``.

    >>> quality_focal_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
    tensor([[0.1733, 0.1733]])
    """
    target = target.to(pred.dtype)
    prob = pred if activated else torch.sigmoid(pred)
    return _bce(pred, target, activated) * _safe_pow((target - prob).abs(), beta)


def distribution_focal_loss(pred: Tensor, target: Tensor) -> Tensor:
    r"""Distribution focal loss (GFL) per row, with :math:`l = \lfloor y \rfloor, r = l + 1`:

    .. math:: \ell = \mathrm{CE}(x, l)\,(r - y) + \mathrm{CE}(x, r)\,(y - l)

    ``y`` is clamped to ``[0, n]``, and the right bin index to ``n``: a target of
    exactly ``n`` gives ``CE(x, n)`` instead of indexing bin ``n + 1``.

    Shapes: ``pred``: ``(N, n + 1)`` logits; ``target``: ``(N,)`` floats in
    ``[0, n]``; returns ``(N,)``.

    >>> distribution_focal_loss(torch.zeros(1, 3), torch.tensor([0.5]))
    tensor([1.0986])
    """
    top = pred.size(-1) - 1
    target = target.to(pred.dtype).clamp(0, top)
    left = target.floor()
    right = left + 1
    log_p = F.log_softmax(pred, dim=-1)
    bins = torch.stack([left, right.clamp(max=top)], dim=-1).long()
    ce_left, ce_right = (-log_p.gather(-1, bins)).unbind(-1)
    return ce_left * (right - target) + ce_right * (target - left)
