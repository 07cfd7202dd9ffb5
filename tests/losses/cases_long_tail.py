"""Battery cases for the long-tail and large-vocabulary detection losses (LVIS, V3Det).

References transcribe MMDetection 3.3's ``seesaw_ce_loss`` + ``cross_entropy`` (Seesaw),
``EQLV2Loss.forward`` (with given gradient statistics) and the V3Det custom losses.
Seesaw and EQL v2 keep statistics; the battery builds them in eval mode with fixed
statistics so that repeated calls agree (their updates are tested in
``test_long_tail.py``).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as TF

from lossmix import functional as F
from lossmix.losses import CrossEntropyCustomLoss, EQLV2Loss, FocalCustomLoss, SeesawLoss
from tests.losses.battery import LossCase
from tests.losses.cases_classification import onehot, torchvision_focal

C = 4
CUM = torch.tensor([50.0, 3.0, 0.0, 12.0, 100.0])  # per class, then the background
POS_NEG = torch.tensor([0.2, 0.9, 1.5, 0.6])


def seesaw_reference(cls_score, labels, cum_samples, p=0.8, q=2.0, eps=1e-2):
    """MMDetection's ``seesaw_ce_loss`` (reduction 'none')."""
    onehot_labels = TF.one_hot(labels, C)
    seesaw_weights = cls_score.new_ones(onehot_labels.size())
    if p > 0:
        sample_ratio_matrix = cum_samples[None, :].clamp(min=1) / cum_samples[:, None].clamp(min=1)
        index = (sample_ratio_matrix < 1.0).float()
        sample_weights = sample_ratio_matrix.pow(p) * index + (1 - index)
        seesaw_weights = seesaw_weights * sample_weights[labels.long(), :]
    if q > 0:
        scores = TF.softmax(cls_score.detach(), dim=1)
        self_scores = scores[torch.arange(0, len(scores)).long(), labels.long()]
        score_matrix = scores / self_scores[:, None].clamp(min=eps)
        index = (score_matrix > 1.0).float()
        seesaw_weights = seesaw_weights * (score_matrix.pow(q) * index + (1 - index))
    cls_score = cls_score + (seesaw_weights.log() * (1 - onehot_labels))
    return TF.cross_entropy(cls_score, labels, reduction="none")


def seesaw_total(pred, labels, p=0.8, q=2.0):
    """Both sub-terms per row (all rows foreground, so both means are over N)."""
    classes = seesaw_reference(pred[:, :C], labels, CUM[:C].to(pred.dtype), p, q)
    objectness = TF.cross_entropy(pred[:, C:], (labels == C).long(), reduction="none")
    return classes + objectness


def seesaw_inputs(dtype, gen, scale):
    """All rows foreground, each labelled with its largest class logit: the compensation
    factor (a constant, computed without gradient, as in MMDetection) stays 1 there, so a
    finite-difference gradcheck agrees; ``test_long_tail.py`` checks it on other rows."""
    pred = torch.randn(6, C + 2, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 1, 0])
    pred[torch.arange(6), labels] += 4.0
    return (pred * scale).to(dtype), labels


def seesaw(**kw):
    loss = SeesawLoss(num_classes=C, **kw).eval()
    loss.cum_samples.copy_(CUM)
    return loss


def eqlv2_reference(pred, label, pos_neg=POS_NEG, mu=0.8, alpha=4.0, gamma=12.0):
    """MMDetection's ``EQLV2Loss.forward`` per row (its mean is the sum over rows / N)."""
    n_i, n_c = pred.size()
    target = pred.new_zeros(n_i, n_c)
    target[torch.arange(n_i), label] = 1
    neg_w = torch.cat([1 / (1 + torch.exp(-gamma * (pos_neg.to(pred.dtype) - mu))), pred.new_ones(1)])
    pos_w = 1 + alpha * (1 - neg_w)
    weight = pos_w.view(1, -1) * target + neg_w.view(1, -1) * (1 - target)
    return (TF.binary_cross_entropy_with_logits(pred, target, reduction="none") * weight).sum(1)


def eqlv2(**kw):
    loss = EQLV2Loss(num_classes=C, **kw).eval()
    loss.pos_neg.copy_(POS_NEG)
    return loss


def eqlv2_inputs(dtype, gen, scale):
    pred = torch.randn(6, C + 1, generator=gen, dtype=torch.float64) * scale
    return pred.to(dtype), torch.tensor([0, 4, 2, 4, 1, 3])


def custom_softmax_inputs(dtype, gen, scale):
    pred = torch.randn(6, C + 1, generator=gen, dtype=torch.float64) * scale
    return pred.to(dtype), torch.tensor([0, 4, 2, 4, 1, 3])


def custom_sigmoid_inputs(dtype, gen, scale):
    pred = torch.randn(6, C, generator=gen, dtype=torch.float64) * scale
    return pred.to(dtype), torch.tensor([0, 4, 2, 4, 1, 3])


CASES = [
    LossCase("SeesawLoss", seesaw, seesaw_inputs, reference=seesaw_total),
    LossCase(
        "SeesawLoss-mitigation-only",
        partial(seesaw, q=0.0),
        seesaw_inputs,
        reference=lambda p, t: seesaw_total(p, t, q=0.0),
        kernel=lambda p, t: F.seesaw_cross_entropy(p[:, :C], t, CUM[:C], q=0.0),
    ),
    LossCase(
        "SeesawLoss-sum",
        partial(seesaw, return_dict=False),
        seesaw_inputs,
        reference=seesaw_total,
    ),
    LossCase("EQLV2Loss", eqlv2, eqlv2_inputs, reference=eqlv2_reference),
    LossCase(
        "CrossEntropyCustomLoss",
        lambda **kw: CrossEntropyCustomLoss(num_classes=C, **kw),
        custom_softmax_inputs,
        reference=lambda p, t: TF.cross_entropy(p, t, reduction="none"),
    ),
    LossCase(
        "CrossEntropyCustomLoss-sigmoid",
        lambda **kw: CrossEntropyCustomLoss(num_classes=C, use_sigmoid=True, **kw),
        custom_sigmoid_inputs,
        reference=lambda p, t: TF.binary_cross_entropy_with_logits(
            p, onehot(t, dtype=p.dtype), reduction="none"
        ),
        weight_shape=lambda p, t: (p.size(0),),
    ),
    LossCase(
        "FocalCustomLoss",
        lambda **kw: FocalCustomLoss(num_classes=C, **kw),
        custom_sigmoid_inputs,
        reference=lambda p, t: torchvision_focal(p, onehot(t, dtype=p.dtype)),
        weight_shape=lambda p, t: (p.size(0),),
    ),
]
