"""IoU losses with extra geometry: extended IoU (EIoU) and SIoU's angle, distance and shape costs.

MMDetection v3's ``eiou_loss`` and ``siou_loss``, with :mod:`lossmix.functional.iou`'s
two guards, neither of which changes a well-formed box (``x2 >= x1``, ``y2 >= y1``,
sides and centre offsets larger than ``eps``): widths and heights clamp at 0, and
every division has a denominator of at least ``eps``.

Shapes: ``pred``, ``target``: ``(..., 4)`` boxes ``(x1, y1, x2, y2)``; both return ``(...)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lossmix.functional.iou import _enclosing_size, _overlap_union, _promote, _size

__all__ = ["eiou_loss", "siou_loss"]


def eiou_loss(pred: Tensor, target: Tensor, *, smooth_point: float = 0.1, eps: float = 1e-6) -> Tensor:
    r"""Extended-IoU loss (Peng & Yu, 2021; libfacedetection's), smoothed near 0.

    The intersection is extended past the boxes' overlap (negative for disjoint boxes):
    with the enclosing top-left corner :math:`e` and the overlap corners :math:`i_1, i_2`,

    .. math::
        I = (i_{2x} - e_x)(i_{2y} - e_y) + (\min(i_{1x}, i_{2x}) - e_x)(\min(i_{1y}, i_{2y}) - e_y)
          - (i_{1x} - e_x)(\max(i_{1y}, i_{2y}) - e_y) - (\max(i_{1x}, i_{2x}) - e_x)(i_{1y} - e_y)

    :math:`u = 1 - I / (A_p + A_t - I + \epsilon)` and the loss is :math:`0.5 u^2 / s` for
    :math:`u < s` (``smooth_point``), else :math:`u - 0.5 s`.

    >>> eiou_loss(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 1.0, 3.0, 3.0]]))
    tensor([0.8071])
    """
    pred, target, out_dtype = _promote(pred, target)
    corner = torch.minimum(pred[..., :2], target[..., :2])
    low = torch.maximum(pred[..., :2], target[..., :2])
    high = torch.minimum(pred[..., 2:], target[..., 2:])
    small, large = torch.minimum(low, high), torch.maximum(low, high)
    lo, hi, sm, la = low - corner, high - corner, small - corner, large - corner
    inter = (
        hi[..., 0] * hi[..., 1] + sm[..., 0] * sm[..., 1] - lo[..., 0] * la[..., 1] - la[..., 0] * lo[..., 1]
    )
    pw, ph = _size(pred)
    tw, th = _size(target)
    union = (pw * ph + tw * th - inter).clamp(min=0) + eps
    ious = 1 - inter / union
    loss = torch.where(ious < smooth_point, 0.5 * ious * ious / smooth_point, ious - 0.5 * smooth_point)
    return loss.to(out_dtype)


def siou_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-6, neg_gamma: bool = False) -> Tensor:
    r"""SIoU loss (Gevorgyan, 2022; YOLOv6's), MMDetection's variant.

    With the centre offset :math:`(s_x, s_y)` (+ ``eps``), :math:`\sigma = \lVert s \rVert`,
    :math:`\sin\alpha` the smaller of :math:`|s_x|/\sigma, |s_y|/\sigma`, the enclosing
    size :math:`(c_w, c_h)` and the sides :math:`w, h` (heights + ``eps``):

    .. math::
        \Lambda = \cos(2 \arcsin(\sin\alpha) - \pi/2), \quad
        \gamma = 2 - \Lambda \;(\texttt{neg\_gamma}: \Lambda - 2), \quad
        \Delta = 2 - e^{\gamma (s_x / c_w)^2} - e^{\gamma (s_y / c_h)^2}

    .. math::
        \Omega = \sum_{d \in \{w, h\}} \Big(1 - e^{-|d_p - d_t| / \max(d_p, d_t)}\Big)^4, \quad
        \ell = 1 - \mathrm{clamp}\big(\mathrm{IoU} - (\Delta + \Omega)/2, -1, 1\big)

    with :math:`\mathrm{IoU} = |A \cap B| / (|A \cup B| + \epsilon)`.

    >>> siou_loss(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 1.0, 3.0, 3.0]]))
    tensor([0.7396])
    """
    pred, target, out_dtype = _promote(pred, target)
    overlap, union = _overlap_union(pred, target)
    ious = overlap / (union + eps)
    cw, ch = _enclosing_size(pred, target)
    cw, ch = cw.clamp(min=eps), ch.clamp(min=eps)
    pw, ph = _size(pred)
    tw, th = _size(target)
    ph, th = ph + eps, th + eps
    s_cw = (target[..., 0] + target[..., 2] - pred[..., 0] - pred[..., 2]) * 0.5 + eps
    s_ch = (target[..., 1] + target[..., 3] - pred[..., 1] - pred[..., 3]) * 0.5 + eps
    sigma = torch.sqrt(s_cw * s_cw + s_ch * s_ch).clamp(min=eps)
    sin_x, sin_y = s_cw.abs() / sigma, s_ch.abs() / sigma
    sin_alpha = torch.where(sin_x > math.sqrt(2) / 2, sin_y, sin_x)
    angle_cost = torch.cos(torch.asin(sin_alpha) * 2 - math.pi / 2)
    gamma = angle_cost - 2 if neg_gamma else 2 - angle_cost
    distance_cost = 2 - torch.exp(gamma * (s_cw / cw) ** 2) - torch.exp(gamma * (s_ch / ch) ** 2)
    omega_w = (pw - tw).abs() / torch.maximum(pw, tw).clamp(min=eps)
    omega_h = (ph - th).abs() / torch.maximum(ph, th).clamp(min=eps)
    shape_cost = (1 - torch.exp(-omega_w)) ** 4 + (1 - torch.exp(-omega_h)) ** 4
    sious = ious - 0.5 * (distance_cost + shape_cost)
    return (1 - sious.clamp(min=-1.0, max=1.0)).to(out_dtype)
