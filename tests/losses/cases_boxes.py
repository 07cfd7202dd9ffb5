"""Battery cases for the box (IoU) losses, with a plain-Python per-box reference.

The reference re-derives MMDetection's ``iou_loss.py`` formulas on Python floats,
one box pair at a time, independently of :mod:`lossmix.functional.iou`.
"""

from __future__ import annotations

import math

import torch

from lossmix import functional as F
from lossmix.losses import BoundedIoULoss, CIoULoss, DIoULoss, EIoULoss, GIoULoss, IoULoss, SIoULoss
from tests.losses.battery import LossCase


def _geometry(p: list[float], t: list[float]) -> dict[str, float]:
    iw = max(min(p[2], t[2]) - max(p[0], t[0]), 0.0)
    ih = max(min(p[3], t[3]) - max(p[1], t[1]), 0.0)
    overlap = iw * ih
    union = (p[2] - p[0]) * (p[3] - p[1]) + (t[2] - t[0]) * (t[3] - t[1]) - overlap
    cw = max(p[2], t[2]) - min(p[0], t[0])
    ch = max(p[3], t[3]) - min(p[1], t[1])
    rho2 = ((t[0] + t[2] - p[0] - p[2]) ** 2 + (t[1] + t[3] - p[1] - p[3]) ** 2) / 4
    return {"overlap": overlap, "union": union, "cw": cw, "ch": ch, "rho2": rho2}


def box_iou_loss(p, t, mode="log", eps=1e-6):
    g = _geometry(p, t)
    iou = max(g["overlap"] / max(g["union"], 1e-6), eps)
    return {"log": -math.log(iou), "linear": 1 - iou, "square": 1 - iou**2}[mode]


def box_giou_loss(p, t, eps=1e-6):
    g = _geometry(p, t)
    union = max(g["union"], eps)
    enclose = max(g["cw"] * g["ch"], eps)
    return 1 - (g["overlap"] / union - (enclose - union) / enclose)


def box_diou_loss(p, t, eps=1e-6):
    g = _geometry(p, t)
    iou = g["overlap"] / (g["union"] + eps)
    return 1 - (iou - g["rho2"] / (g["cw"] ** 2 + g["ch"] ** 2 + eps))


def box_ciou_loss(p, t, eps=1e-6):
    g = _geometry(p, t)
    iou = g["overlap"] / (g["union"] + eps)
    aspect_t = math.atan((t[2] - t[0]) / (t[3] - t[1] + eps))
    aspect_p = math.atan((p[2] - p[0]) / (p[3] - p[1] + eps))
    v = 4 / math.pi**2 * (aspect_t - aspect_p) ** 2
    alpha = v / (1 - iou + v) if iou > 0.5 else 0.0
    ciou = iou - g["rho2"] / (g["cw"] ** 2 + g["ch"] ** 2 + eps) - alpha * v
    return 1 - min(max(ciou, -1.0), 1.0)


def box_bounded_iou_loss(p, t, beta=0.2, eps=1e-3):
    pw, ph, tw, th = p[2] - p[0], p[3] - p[1], t[2] - t[0], t[3] - t[1]
    dx = abs((t[0] + t[2]) - (p[0] + p[2])) / 2
    dy = abs((t[1] + t[3]) - (p[1] + p[3])) / 2
    terms = [
        1 - max((tw - 2 * dx) / (tw + 2 * dx + eps), 0.0),
        1 - max((th - 2 * dy) / (th + 2 * dy + eps), 0.0),
        1 - min(tw / (pw + eps), pw / (tw + eps)),
        1 - min(th / (ph + eps), ph / (th + eps)),
    ]
    return [0.5 * d * d / beta if d < beta else d - 0.5 * beta for d in terms]


def box_eiou_loss(p, t, smooth_point=0.1, eps=1e-6):
    """MMDetection's ``eiou_loss`` on one box pair."""
    px1, py1, px2, py2 = p
    tx1, ty1, tx2, ty2 = t
    ex1, ey1 = min(px1, tx1), min(py1, ty1)
    ix1, iy1, ix2, iy2 = max(px1, tx1), max(py1, ty1), min(px2, tx2), min(py2, ty2)
    xmin, ymin, xmax, ymax = min(ix1, ix2), min(iy1, iy2), max(ix1, ix2), max(iy1, iy2)
    intersection = (
        (ix2 - ex1) * (iy2 - ey1)
        + (xmin - ex1) * (ymin - ey1)
        - (ix1 - ex1) * (ymax - ey1)
        - (xmax - ex1) * (iy1 - ey1)
    )
    union = (px2 - px1) * (py2 - py1) + (tx2 - tx1) * (ty2 - ty1) - intersection + eps
    ious = 1 - intersection / union
    return 0.5 * ious**2 / smooth_point if ious < smooth_point else ious - 0.5 * smooth_point


def box_siou_loss(p, t, eps=1e-6, neg_gamma=False):
    """MMDetection's ``siou_loss`` on one box pair."""
    g = _geometry(p, t)
    ious = g["overlap"] / (g["union"] + eps)
    cw, ch = max(g["cw"], eps), max(g["ch"], eps)
    w1, h1 = p[2] - p[0], p[3] - p[1] + eps
    w2, h2 = t[2] - t[0], t[3] - t[1] + eps
    s_cw = (t[0] + t[2] - p[0] - p[2]) * 0.5 + eps
    s_ch = (t[1] + t[3] - p[1] - p[3]) * 0.5 + eps
    sigma = (s_cw**2 + s_ch**2) ** 0.5
    sin_alpha_1, sin_alpha_2 = abs(s_cw) / sigma, abs(s_ch) / sigma
    sin_alpha = sin_alpha_2 if sin_alpha_1 > 2**0.5 / 2 else sin_alpha_1
    angle_cost = math.cos(math.asin(sin_alpha) * 2 - math.pi / 2)
    rho_x, rho_y = (s_cw / cw) ** 2, (s_ch / ch) ** 2
    gamma = angle_cost - 2 if neg_gamma else 2 - angle_cost
    distance_cost = 2 - math.exp(gamma * rho_x) - math.exp(gamma * rho_y)
    omiga_w = abs(w1 - w2) / max(w1, w2)
    omiga_h = abs(h1 - h2) / max(h1, h2)
    shape_cost = (1 - math.exp(-omiga_w)) ** 4 + (1 - math.exp(-omiga_h)) ** 4
    sious = ious - 0.5 * (distance_cost + shape_cost)
    return 1 - min(max(sious, -1.0), 1.0)


def per_box(fn, **kw):
    """Lift a per-box reference to ``(pred, target) -> Tensor`` over ``(..., 4)`` inputs."""

    def reference(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        rows = zip(pred.reshape(-1, 4).tolist(), target.reshape(-1, 4).tolist(), strict=True)
        values = torch.tensor([fn(p, t, **kw) for p, t in rows], dtype=pred.dtype)
        return values.reshape(*pred.shape[:-1], *values.shape[1:])

    return reference


def random_boxes(shape, gen, *, dtype=torch.float64, scale=1.0):
    """Well-formed boxes ``(*shape, 4)``: corners in ``[0, 10)``, sides in ``[0.5, 4.5)``."""
    xy = torch.rand(*shape, 2, generator=gen, dtype=torch.float64) * 10
    wh = torch.rand(*shape, 2, generator=gen, dtype=torch.float64) * 4 + 0.5
    return (torch.cat([xy, xy + wh], -1) * scale).to(dtype)


def jittered_pairs(shape=(12,)):
    """Targets and predictions near them: overlapping, high-IoU and disjoint pairs."""

    def inputs(dtype: torch.dtype, gen: torch.Generator, scale: float):
        target = random_boxes(shape, gen)
        centre = (target[..., :2] + target[..., 2:]) / 2
        size = (target[..., 2:] - target[..., :2]) * torch.exp(
            0.3 * torch.randn(*shape, 2, generator=gen, dtype=torch.float64)
        )
        centre = centre + 0.8 * torch.randn(*shape, 2, generator=gen, dtype=torch.float64)
        pred = torch.cat([centre - size / 2, centre + size / 2], -1)
        return (pred * scale).to(dtype), (target * scale).to(dtype)

    return inputs


def low_iou_pairs(dtype: torch.dtype, gen: torch.Generator, scale: float):
    """Pairs with IoU <= 0.49 by construction (overlap <= 0.7 of the smaller side per axis).

    CIoU's alpha is a constant (no gradient) that is non-zero above IoU 0.5, where
    a finite-difference gradcheck would therefore disagree by design.
    """
    target = random_boxes((12,), gen)
    t_size = target[..., 2:] - target[..., :2]
    p_size = t_size * torch.exp(0.4 * torch.randn(12, 2, generator=gen, dtype=torch.float64))
    frac = 0.8 * torch.rand(12, 2, generator=gen, dtype=torch.float64) - 0.1  # < 0: disjoint
    sign = torch.randint(0, 2, (12, 2), generator=gen).to(torch.float64) * 2 - 1
    shift = (t_size + p_size) / 2 - frac * torch.minimum(t_size, p_size)
    centre = (target[..., :2] + target[..., 2:]) / 2 + sign * shift
    pred = torch.cat([centre - p_size / 2, centre + p_size / 2], -1)
    return (pred * scale).to(dtype), (target * scale).to(dtype)


CASES = [
    *[
        LossCase(
            f"IoULoss-{mode}",
            lambda mode=mode, **kw: IoULoss(mode=mode, **kw),
            jittered_pairs(),
            reference=per_box(box_iou_loss, mode=mode),
            kernel=lambda p, t, mode=mode: F.iou_loss(p, t, mode=mode),
        )
        for mode in ("log", "linear", "square")
    ],
    LossCase(
        "GIoULoss",
        lambda **kw: GIoULoss(**kw),
        jittered_pairs(),
        reference=per_box(box_giou_loss),
        kernel=F.giou_loss,
    ),
    LossCase(
        "GIoULoss-batched",
        lambda **kw: GIoULoss(**kw),
        jittered_pairs((2, 5)),
        reference=per_box(box_giou_loss),
        kernel=F.giou_loss,
    ),
    LossCase(
        "DIoULoss",
        lambda **kw: DIoULoss(**kw),
        jittered_pairs(),
        reference=per_box(box_diou_loss),
        kernel=F.diou_loss,
    ),
    LossCase(
        "CIoULoss",
        lambda **kw: CIoULoss(**kw),
        low_iou_pairs,
        reference=per_box(box_ciou_loss),
        kernel=F.ciou_loss,
    ),
    LossCase(
        "EIoULoss",
        lambda **kw: EIoULoss(**kw),
        jittered_pairs(),
        reference=per_box(box_eiou_loss),
        kernel=F.eiou_loss,
    ),
    LossCase(
        "EIoULoss-smooth0.5-batched",
        lambda **kw: EIoULoss(smooth_point=0.5, **kw),
        jittered_pairs((2, 5)),
        reference=per_box(box_eiou_loss, smooth_point=0.5),
        kernel=lambda p, t: F.eiou_loss(p, t, smooth_point=0.5),
    ),
    LossCase(
        "SIoULoss",
        lambda **kw: SIoULoss(**kw),
        jittered_pairs(),
        reference=per_box(box_siou_loss),
        kernel=F.siou_loss,
    ),
    LossCase(
        "SIoULoss-neg-gamma",
        lambda **kw: SIoULoss(neg_gamma=True, **kw),
        jittered_pairs(),
        reference=per_box(box_siou_loss, neg_gamma=True),
        kernel=lambda p, t: F.siou_loss(p, t, neg_gamma=True),
    ),
    LossCase(
        "BoundedIoULoss",
        lambda **kw: BoundedIoULoss(**kw),
        jittered_pairs(),
        reference=per_box(box_bounded_iou_loss),
        kernel=F.bounded_iou_loss,
    ),
]
