"""Element-wise box losses: IoU, GIoU, DIoU, CIoU, bounded IoU, EIoU and SIoU (MMDetection's ``iou_loss.py``).

Boxes are ``(x1, y1, x2, y2)`` in the last dimension: ``pred`` and ``target``
have shape ``(..., 4)`` and every kernel except :func:`bounded_iou_loss`
returns one value per box, shape ``(...)``.

Two deliberate departures from MMDetection, neither of which changes a
well-formed box (``x2 >= x1``, ``y2 >= y1``):

* widths and heights are clamped at 0 before areas and aspect ratios are
  taken, so an inverted box counts as an empty one instead of having a
  negative area (which can make a DIoU/CIoU union exactly 0 and the loss NaN);
* every division has a denominator of at least ``eps``, so degenerate boxes
  (zero width or height, a single point) give finite values *and* finite
  gradients, and a zero element weight can mask them safely.

Half-precision inputs are computed in float32 (as MMDetection v3 does for
IoU/GIoU) and the result is cast back to the input dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lossmix.errors import LossConfigError

__all__ = [
    "IOU_MODES",
    "aligned_box_iou",
    "bounded_iou_loss",
    "ciou_loss",
    "diou_loss",
    "eiou_loss",
    "giou_loss",
    "iou_loss",
    "siou_loss",
]

IOU_MODES: tuple[str, ...] = ("log", "linear", "square")

# The union guard of MMDetection's ``bbox_overlaps``, which ``iou_loss`` calls with its default.
_UNION_EPS = 1e-6
_HALF = (torch.float16, torch.bfloat16)


def _promote(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, torch.dtype]:
    """Cast both to a common dtype, float32 at least for half types; return the output dtype."""
    out_dtype = torch.promote_types(pred.dtype, target.dtype)
    work = torch.float32 if out_dtype in _HALF else out_dtype
    return pred.to(work), target.to(work), out_dtype


def _size(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Width and height, clamped at 0 so an inverted box is an empty one."""
    width = (boxes[..., 2] - boxes[..., 0]).clamp(min=0)
    return width, (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def _overlap_union(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Intersection area and (unguarded, non-negative) union area of aligned box pairs."""
    wh = (
        torch.minimum(pred[..., 2:], target[..., 2:]) - torch.maximum(pred[..., :2], target[..., :2])
    ).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    pw, ph = _size(pred)
    tw, th = _size(target)
    return overlap, pw * ph + tw * th - overlap


def _enclosing_size(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Width and height of the smallest box enclosing both."""
    wh = (
        torch.maximum(pred[..., 2:], target[..., 2:]) - torch.minimum(pred[..., :2], target[..., :2])
    ).clamp(min=0)
    return wh[..., 0], wh[..., 1]


def _centre_distance2(pred: Tensor, target: Tensor) -> Tensor:
    """Squared distance between the box centres."""
    dx = (target[..., 0] + target[..., 2]) - (pred[..., 0] + pred[..., 2])
    dy = (target[..., 1] + target[..., 3]) - (pred[..., 1] + pred[..., 3])
    return (dx * dx + dy * dy) / 4


def aligned_box_iou(pred: Tensor, target: Tensor, *, eps: float = _UNION_EPS) -> Tensor:
    r"""IoU of aligned box pairs: :math:`|A \cap B| / \max(|A \cup B|, \epsilon)`.

    MMDetection's ``bbox_overlaps(pred, target, is_aligned=True)``.

    Shapes: ``pred``, ``target``: ``(..., 4)``; returns ``(...)``.

    >>> aligned_box_iou(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 1.0, 3.0, 3.0]]))
    tensor([0.1429])
    """
    pred, target, out_dtype = _promote(pred, target)
    return _iou(pred, target, eps).to(out_dtype)


def _iou(pred: Tensor, target: Tensor, eps: float) -> Tensor:
    overlap, union = _overlap_union(pred, target)
    return overlap / union.clamp(min=eps)


def iou_loss(pred: Tensor, target: Tensor, *, mode: str = "log", eps: float = 1e-6) -> Tensor:
    r"""IoU loss with the IoU clamped to at least ``eps``.

    ``'log'``: :math:`-\ln \mathrm{IoU}`; ``'linear'``: :math:`1 - \mathrm{IoU}`;
    ``'square'``: :math:`1 - \mathrm{IoU}^2`. The IoU is :func:`aligned_box_iou`
    with MMDetection's fixed union guard of ``1e-6``.

    Shapes: ``pred``, ``target``: ``(..., 4)``; returns ``(...)``.

    >>> iou_loss(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 1.0, 3.0, 3.0]]))
    tensor([1.9459])
    """
    if mode not in IOU_MODES:
        raise LossConfigError(f"iou_loss: mode={mode!r} is not valid; use one of {list(IOU_MODES)}.")
    pred, target, out_dtype = _promote(pred, target)
    ious = _iou(pred, target, _UNION_EPS).clamp(min=eps)
    if mode == "linear":
        loss = 1 - ious
    elif mode == "square":
        loss = 1 - ious * ious
    else:
        loss = -ious.log()
    return loss.to(out_dtype)


def giou_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-6) -> Tensor:
    r"""Generalised IoU loss :math:`1 - \mathrm{GIoU}`, with union :math:`U` and enclosing area
    :math:`E` both clamped to at least ``eps``:

    .. math:: \mathrm{GIoU} = \frac{|A \cap B|}{U} - \frac{E - U}{E}

    Shapes: ``pred``, ``target``: ``(..., 4)``; returns ``(...)``.

    >>> giou_loss(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 1.0, 3.0, 3.0]]))
    tensor([1.0794])
    """
    pred, target, out_dtype = _promote(pred, target)
    overlap, union = _overlap_union(pred, target)
    union = union.clamp(min=eps)
    cw, ch = _enclosing_size(pred, target)
    enclose = (cw * ch).clamp(min=eps)
    gious = overlap / union - (enclose - union) / enclose
    return (1 - gious).to(out_dtype)


def _diou_terms(pred: Tensor, target: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``IoU = overlap / (union + eps)`` and the centre penalty ``rho^2 / (c^2 + eps)``."""
    overlap, union = _overlap_union(pred, target)
    ious = overlap / (union + eps)
    cw, ch = _enclosing_size(pred, target)
    return ious, _centre_distance2(pred, target) / (cw * cw + ch * ch + eps)


def diou_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-6) -> Tensor:
    r"""Distance-IoU loss :math:`1 - (\mathrm{IoU} - \rho^2 / c^2)`.

    :math:`\mathrm{IoU} = |A \cap B| / (|A \cup B| + \epsilon)`, :math:`\rho` is
    the distance between the box centres and :math:`c^2 = c_w^2 + c_h^2 + \epsilon`
    the squared diagonal of the enclosing box.

    Shapes: ``pred``, ``target``: ``(..., 4)``; returns ``(...)``.

    >>> diou_loss(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 1.0, 3.0, 3.0]]))
    tensor([0.9683])
    """
    pred, target, out_dtype = _promote(pred, target)
    ious, penalty = _diou_terms(pred, target, eps)
    return (1 - (ious - penalty)).to(out_dtype)


def ciou_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-6) -> Tensor:
    r"""Complete-IoU loss, MMDetection's variant:
    :math:`1 - \mathrm{clamp}(\mathrm{IoU} - \rho^2 / c^2 - \alpha v, -1, 1)`.

    The IoU and :math:`\rho^2 / c^2` are those of :func:`diou_loss`;
    :math:`v = \frac{4}{\pi^2}(\arctan\frac{w_t}{h_t + \epsilon}
    - \arctan\frac{w_p}{h_p + \epsilon})^2`
    and :math:`\alpha = [\mathrm{IoU} > 0.5]\, v / (1 - \mathrm{IoU} + v)` is a constant
    (no gradient flows through it). Unlike torchvision's ``complete_box_iou_loss``,
    :math:`\alpha` is gated at IoU 0.5 and the result is clamped.

    Shapes: ``pred``, ``target``: ``(..., 4)``; returns ``(...)``.

    >>> ciou_loss(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 1.0, 3.0, 4.0]]))
    tensor([1.0189])
    """
    pred, target, out_dtype = _promote(pred, target)
    ious, penalty = _diou_terms(pred, target, eps)
    pw, ph = _size(pred)
    tw, th = _size(target)
    v = (4 / math.pi**2) * (torch.atan(tw / (th + eps)) - torch.atan(pw / (ph + eps))) ** 2
    ious_c, v_c = ious.detach(), v.detach()
    denom = 1 - ious_c + v_c
    # denom is 0 only where v = 0 and the IoU rounds to 1 (huge boxes); alpha is then 0 / 1.
    safe_denom = torch.where(denom > 0, denom, torch.ones_like(denom))
    alpha = torch.where(ious_c > 0.5, v_c / safe_denom, torch.zeros_like(v_c))
    cious = ious - (penalty + alpha * v)
    return (1 - cious.clamp(min=-1.0, max=1.0)).to(out_dtype)


def bounded_iou_loss(pred: Tensor, target: Tensor, *, beta: float = 0.2, eps: float = 1e-3) -> Tensor:
    r"""Bounded IoU loss (Tychsen-Smith & Petersson), smooth-L1 (``beta``) of four bounds.

    With the centre offsets :math:`\Delta x, \Delta y` and the target terms taken as constants:

    .. math::
        d_x = 1 - \max\Big(\frac{w_t - 2|\Delta x|}{w_t + 2|\Delta x| + \epsilon}, 0\Big), \quad
        d_w = 1 - \min\Big(\frac{w_t}{w_p + \epsilon}, \frac{w_p}{w_t + \epsilon}\Big)

    and likewise :math:`d_y, d_h`. The ratio :math:`w_t / (w_p + \epsilon)` uses the
    width clamped at 0 (an inverted predicted box is then penalised through
    :math:`w_p / (w_t + \epsilon)`, with no pole at :math:`w_p = -\epsilon`).

    Shapes: ``pred``, ``target``: ``(..., 4)``; returns ``(..., 4)`` (dx, dy, dw, dh).

    >>> pred, target = torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[0.0, 0.0, 2.0, 4.0]])
    >>> bounded_iou_loss(pred, target).round(decimals=4)
    tensor([[0.0000, 0.5667, 0.0000, 0.4001]])
    """
    pred, target, out_dtype = _promote(pred, target)
    pw = pred[..., 2] - pred[..., 0]
    ph = pred[..., 3] - pred[..., 1]
    target = target.detach()
    tw, th = _size(target)
    dx = (target[..., 0] + target[..., 2] - pred[..., 0] - pred[..., 2]).abs() / 2
    dy = (target[..., 1] + target[..., 3] - pred[..., 1] - pred[..., 3]).abs() / 2
    zero = pred.new_zeros(())
    loss_dx = 1 - torch.maximum((tw - 2 * dx) / (tw + 2 * dx + eps), zero)
    loss_dy = 1 - torch.maximum((th - 2 * dy) / (th + 2 * dy + eps), zero)
    loss_dw = 1 - torch.minimum(tw / (pw.clamp(min=0) + eps), pw / (tw + eps))
    loss_dh = 1 - torch.minimum(th / (ph.clamp(min=0) + eps), ph / (th + eps))
    diff = torch.stack([loss_dx, loss_dy, loss_dw, loss_dh], dim=-1)
    loss = torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)
    return loss.to(out_dtype)


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
