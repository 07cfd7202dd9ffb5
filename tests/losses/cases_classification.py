"""Battery cases for the classification losses (focal family and cross-entropy).

References are written independently of the kernels: torchvision's focal formula,
``torch.nn.functional`` cross-entropies, or plain Python loops over MMDetection's
algorithm. GHMC is stateful and has no ``avg_factor``; it is tested in
``test_classification.py`` only.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as TF

from lossmix import functional as F
from lossmix.losses import (
    CrossEntropyLoss,
    DistributionFocalLoss,
    FocalLoss,
    QualityFocalLoss,
    VarifocalLoss,
)
from tests.losses.battery import LossCase

N, C = 6, 4
CLASS_WEIGHT = [0.5, 1.0, 2.0, 1.5]


# -- inputs ------------------------------------------------------------------------------------
def _logits(dtype, gen, scale, cols=C):
    return torch.randn(N, cols, generator=gen, dtype=torch.float64).to(dtype) * scale


def labels_with_background(gen):
    """Indices in [0, C], background C in row 0 and a class in row 1."""
    labels = torch.randint(0, C + 1, (N,), generator=gen)
    labels[0], labels[1] = C, 2
    return labels


def index_target(dtype, gen, scale):
    return _logits(dtype, gen, scale), labels_with_background(gen)


def onehot_target(dtype, gen, scale):
    pred, labels = index_target(dtype, gen, scale)
    return pred, TF.one_hot(labels, C + 1)[:, :C].to(dtype)


def soft_target(dtype, gen, scale):
    pred = _logits(dtype, gen, scale)
    return pred, torch.rand(N, C, generator=gen, dtype=torch.float64).to(dtype)


def class_target(dtype, gen, scale):
    return _logits(dtype, gen, scale), torch.randint(0, C, (N,), generator=gen)


def class_target_with_ignored(dtype, gen, scale):
    pred, labels = class_target(dtype, gen, scale)
    labels[0], labels[3] = -1, -1
    return pred, labels


def probabilities(dtype, gen, scale):
    pred, target = onehot_target(dtype, gen, scale)
    return torch.sigmoid(pred), target


def iou_scores(dtype, gen, scale):
    pred = _logits(dtype, gen, scale)
    score = torch.rand(N, C, generator=gen, dtype=torch.float64)
    score = torch.where(torch.rand(N, C, generator=gen) < 0.4, score, torch.zeros_like(score))
    return pred, score.to(dtype)


def label_and_score(dtype, gen, scale):
    pred, labels = index_target(dtype, gen, scale)
    return pred, (labels, torch.rand(N, generator=gen, dtype=torch.float64).to(dtype))


def distances(dtype, gen, scale, bins=4):
    pred = _logits(dtype, gen, scale, cols=bins + 1)
    target = torch.rand(N, generator=gen, dtype=torch.float64) * bins
    target[0], target[1], target[2] = bins, 0.0, 2.0  # both ends and an exact bin
    return pred, target.to(dtype)


# -- references --------------------------------------------------------------------------------
def torchvision_focal(pred, target, alpha=0.25, gamma=2.0):
    """torchvision.ops.sigmoid_focal_loss with reduction='none'."""
    p = torch.sigmoid(pred)
    ce = TF.binary_cross_entropy_with_logits(pred, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss


def onehot(labels, num_classes=C, dtype=torch.float64):
    return TF.one_hot(labels, num_classes + 1)[:, :num_classes].to(dtype)


def softmax_focal_loop(pred, target, gamma=2.0, alpha=None):
    out = torch.zeros(pred.size(0), dtype=pred.dtype)
    for i, row in enumerate(pred.tolist()):
        y = int(target[i])
        log_p = row[y] - math.log(sum(math.exp(v) for v in row))
        a = 1.0 if alpha is None else alpha[y]
        out[i] = -a * (1 - math.exp(log_p)) ** gamma * log_p
    return out


def sigmoid_ce_loop(pred, labels, pos_weight):
    out = torch.zeros_like(pred)
    for i in range(pred.size(0)):
        for c in range(pred.size(1)):
            t = 1.0 if int(labels[i]) == c else 0.0
            p = 1 / (1 + math.exp(-float(pred[i, c])))
            out[i, c] = -(pos_weight[c] * t * math.log(p) + (1 - t) * math.log(1 - p))
    return out


def varifocal_direct(pred, target, alpha=0.75, gamma=2.0):
    p = torch.sigmoid(pred)
    weight = target * (target > 0).to(pred.dtype) + alpha * (p - target).abs().pow(gamma) * (target <= 0).to(
        pred.dtype
    )
    return TF.binary_cross_entropy_with_logits(pred, target, reduction="none") * weight


def qfl_mmdet(pred, target, beta=2.0):
    """MMDetection's quality_focal_loss, with its boolean indexing."""
    label, score = target
    p = pred.sigmoid()
    loss = TF.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none")
    loss = loss * p.pow(beta)
    pos = ((label >= 0) & (label < pred.size(1))).nonzero().squeeze(1)
    pos_label = label[pos].long()
    scale = score[pos] - p[pos, pos_label]
    loss[pos, pos_label] = TF.binary_cross_entropy_with_logits(
        pred[pos, pos_label], score[pos], reduction="none"
    ) * scale.abs().pow(beta)
    return loss.sum(1)


def qfl_dense_mmdet(pred, target, beta=2.0):
    """MMDetection v3's quality_focal_loss_tensor_target."""
    p = pred.sigmoid()
    loss = TF.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none")
    loss = loss * p.pow(beta)
    pos = target != 0
    loss[pos] = TF.binary_cross_entropy_with_logits(pred[pos], target[pos], reduction="none") * (
        target[pos] - p[pos]
    ).abs().pow(beta)
    return loss.sum(1)


def dfl_loop(pred, target):
    out = torch.zeros(pred.size(0), dtype=pred.dtype)
    n = pred.size(1) - 1
    for i, row in enumerate(pred.tolist()):
        y = float(target[i])
        lse = math.log(sum(math.exp(v) for v in row))
        left = min(math.floor(y), n)
        right = left + 1
        ce_right = lse - row[right] if right <= n else 0.0  # weight (y - left) is 0 there
        out[i] = (lse - row[left]) * (right - y) + ce_right * (y - left)
    return out


def quiet_ce(**kwargs):
    """CrossEntropyLoss with ignore_index, without the avg_non_ignore warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return CrossEntropyLoss(**kwargs)


def _cw(dtype=torch.float64):
    return torch.tensor(CLASS_WEIGHT, dtype=dtype)


CASES = [
    LossCase(
        "FocalLoss-onehot",
        lambda **kw: FocalLoss(**kw),
        onehot_target,
        reference=torchvision_focal,
        kernel=F.sigmoid_focal_loss,
    ),
    LossCase(
        "FocalLoss-index",
        lambda **kw: FocalLoss(**kw),
        index_target,
        reference=lambda p, t: torchvision_focal(p, onehot(t, dtype=p.dtype)),
        weight_shape=lambda p, t: (p.size(0),),
    ),
    LossCase(
        "FocalLoss-gamma0.5-soft",
        lambda **kw: FocalLoss(gamma=0.5, alpha=-1, **kw),
        soft_target,
        reference=lambda p, t: torchvision_focal(p, t, alpha=-1, gamma=0.5),
        kernel=lambda p, t: F.sigmoid_focal_loss(p, t, gamma=0.5, alpha=None),
    ),
    LossCase(
        "FocalLoss-activated",
        lambda **kw: FocalLoss(activated=True, **kw),
        probabilities,
        reference=lambda p, t: (
            TF.binary_cross_entropy(p, t, reduction="none")
            * (0.25 * t + 0.75 * (1 - t))
            * ((1 - p) * t + p * (1 - t)) ** 2
        ),
        kernel=lambda p, t: F.sigmoid_focal_loss(p, t, activated=True),
    ),
    LossCase(
        "FocalLoss-softmax",
        lambda **kw: FocalLoss(use_sigmoid=False, alpha=CLASS_WEIGHT, **kw),
        class_target,
        reference=lambda p, t: softmax_focal_loop(p, t, alpha=CLASS_WEIGHT),
        kernel=lambda p, t: F.softmax_focal_loss(p, t, alpha=_cw(p.dtype)),
    ),
    LossCase(
        "CrossEntropyLoss",
        lambda **kw: CrossEntropyLoss(class_weight=CLASS_WEIGHT, **kw),
        class_target,
        reference=lambda p, t: TF.cross_entropy(p, t, weight=_cw(p.dtype), reduction="none"),
        kernel=lambda p, t: F.cross_entropy(p, t, class_weight=_cw(p.dtype)),
    ),
    LossCase(
        "CrossEntropyLoss-ignore",
        lambda **kw: quiet_ce(ignore_index=-1, **kw),
        class_target_with_ignored,
        reference=lambda p, t: TF.cross_entropy(p, t, ignore_index=-1, reduction="none"),
    ),
    LossCase(
        "CrossEntropyLoss-smoothing",
        lambda **kw: CrossEntropyLoss(label_smoothing=0.1, **kw),
        class_target,
        reference=lambda p, t: TF.cross_entropy(p, t, label_smoothing=0.1, reduction="none"),
    ),
    LossCase(
        "CrossEntropyLoss-sigmoid-index",
        lambda **kw: CrossEntropyLoss(use_sigmoid=True, class_weight=CLASS_WEIGHT, **kw),
        index_target,
        reference=lambda p, t: sigmoid_ce_loop(p, t, CLASS_WEIGHT),
        weight_shape=lambda p, t: (p.size(0),),
    ),
    LossCase(
        "CrossEntropyLoss-sigmoid-soft",
        lambda **kw: CrossEntropyLoss(use_sigmoid=True, **kw),
        soft_target,
        reference=lambda p, t: TF.binary_cross_entropy_with_logits(p, t, reduction="none"),
        kernel=F.sigmoid_cross_entropy,
    ),
    LossCase(
        "VarifocalLoss",
        lambda **kw: VarifocalLoss(**kw),
        iou_scores,
        reference=varifocal_direct,
        kernel=F.varifocal_loss,
    ),
    LossCase(
        "QualityFocalLoss",
        lambda **kw: QualityFocalLoss(**kw),
        label_and_score,
        reference=qfl_mmdet,
        kernel=lambda p, t: F.quality_focal_loss(
            p, F.one_hot_targets(t[0], p.size(1), dtype=p.dtype) * t[1][:, None]
        ).sum(1),
    ),
    LossCase(
        "QualityFocalLoss-dense",
        lambda **kw: QualityFocalLoss(**kw),
        iou_scores,
        reference=qfl_dense_mmdet,
        kernel=F.quality_focal_loss,
    ),
    LossCase(
        "DistributionFocalLoss",
        lambda **kw: DistributionFocalLoss(**kw),
        distances,
        reference=dfl_loop,
        kernel=F.distribution_focal_loss,
    ),
]
