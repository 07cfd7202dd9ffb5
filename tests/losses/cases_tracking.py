"""Battery cases for the tracking, ReID and distillation losses, with MMDetection's code as references.

Each reference transcribes MMDetection 3.3: ``TripletLoss.hard_mining_triplet_loss_forward``
(its per-anchor loop), ``MultiPosCrossEntropyLoss.multi_pos_cross_entropy`` (its
``repeat_interleave`` pairs), ``L2Loss``/``MarginL2Loss.update_weight`` without mining and
``knowledge_distillation_kl_div_loss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF

from lossmix import functional as F
from lossmix.losses import (
    KnowledgeDistillationKLDivLoss,
    L2Loss,
    MarginL2Loss,
    MultiPosCrossEntropyLoss,
    TripletLoss,
)
from tests.losses.battery import LossCase

IDS = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])


def reid_embeddings(dtype, gen, scale):
    return (torch.randn(8, 3, generator=gen, dtype=torch.float64) * scale).to(dtype), IDS.clone()


def triplet_reference(inputs, targets, margin=0.3):
    n = inputs.size(0)
    dist = torch.pow(inputs, 2).sum(dim=1, keepdim=True).expand(n, n)
    dist = dist + dist.t()
    dist = dist.addmm(inputs, inputs.t(), beta=1, alpha=-2).clamp(min=1e-12).sqrt()
    mask = targets.expand(n, n).eq(targets.expand(n, n).t())
    dist_ap = torch.cat([dist[i][mask[i]].max().unsqueeze(0) for i in range(n)])
    dist_an = torch.cat([dist[i][mask[i] == 0].min().unsqueeze(0) for i in range(n)])
    return TF.margin_ranking_loss(dist_an, dist_ap, torch.ones_like(dist_an), margin=margin, reduction="none")


def match_scores(dtype, gen, scale):
    pred = torch.randn(6, 5, generator=gen, dtype=torch.float64) * scale
    label = (torch.rand(6, 5, generator=gen) < 0.4).long()
    label[0] = torch.tensor([1, 0, 0, 0, 0])
    label[1] = 0  # no positive: 0
    return pred.to(dtype), label


def multipos_reference(pred, label):
    pos_inds, neg_inds = label >= 1, label == 0
    pred_pos = pred * pos_inds.float()
    pred_neg = pred * neg_inds.float()
    pred_pos[neg_inds] = pred_pos[neg_inds] + float("inf")
    pred_neg[pos_inds] = pred_neg[pos_inds] + float("-inf")
    _pos_expand = torch.repeat_interleave(pred_pos, pred.shape[1], dim=1)
    _neg_expand = pred_neg.repeat(1, pred.shape[1])
    x = TF.pad((_neg_expand - _pos_expand), (0, 1), "constant", 0)
    return torch.logsumexp(x, dim=1)


def similarities(dtype, gen, scale):
    pred = (torch.rand(6, 4, generator=gen, dtype=torch.float64) * 0.9 + 0.05) * scale
    target = (torch.rand(6, 4, generator=gen) < 0.4).to(torch.float64)
    return pred.to(dtype), target.to(dtype)


def margin_l2_reference(pred, target, pos_margin=-1.0, neg_margin=-1.0):
    pred = pred.clone()
    if pos_margin > 0:
        pred[target == 1] -= pos_margin
    if neg_margin > 0:
        pred[target == 0] -= neg_margin
    return (torch.clamp(pred, min=0, max=1) - target) ** 2


def teacher_logits(dtype, gen, scale):
    pred = torch.randn(6, 5, generator=gen, dtype=torch.float64) * scale
    soft = torch.randn(6, 5, generator=gen, dtype=torch.float64) * 2
    return pred.to(dtype), soft.to(dtype)


def kd_reference(pred, soft_label, T=10):
    target = TF.softmax(soft_label / T, dim=1).detach()
    return TF.kl_div(TF.log_softmax(pred / T, dim=1), target, reduction="none").mean(1) * (T * T)


CASES = [
    LossCase(
        "TripletLoss",
        lambda **kw: TripletLoss(**kw),
        reid_embeddings,
        reference=triplet_reference,
        kernel=F.hard_triplet_loss,
    ),
    LossCase(
        "TripletLoss-margin1",
        lambda **kw: TripletLoss(margin=1.0, **kw),
        reid_embeddings,
        reference=lambda p, t: triplet_reference(p, t, margin=1.0),
    ),
    LossCase(
        "MultiPosCrossEntropyLoss",
        lambda **kw: MultiPosCrossEntropyLoss(**kw),
        match_scores,
        reference=multipos_reference,
        kernel=F.multi_pos_cross_entropy,
    ),
    LossCase(
        "L2Loss",
        lambda **kw: L2Loss(**kw),
        similarities,
        reference=margin_l2_reference,
        extreme_scales=(1e4, -1e4),
        extra={"nonzero_mean": True},
    ),
    LossCase(
        "MarginL2Loss-margins",
        lambda **kw: MarginL2Loss(pos_margin=0.1, neg_margin=0.05, **kw),
        similarities,
        reference=lambda p, t: margin_l2_reference(p, t, 0.1, 0.05),
        extra={"nonzero_mean": True},
    ),
    LossCase(
        "KnowledgeDistillationKLDivLoss",
        lambda **kw: KnowledgeDistillationKLDivLoss(**kw),
        teacher_logits,
        reference=kd_reference,
        kernel=F.knowledge_distillation_kl_div,
    ),
    LossCase(
        "KnowledgeDistillationKLDivLoss-T2",
        lambda **kw: KnowledgeDistillationKLDivLoss(T=2, **kw),
        teacher_logits,
        reference=lambda p, t: kd_reference(p, t, T=2),
        kernel=lambda p, t: F.knowledge_distillation_kl_div(p, t, temperature=2.0),
    ),
]
