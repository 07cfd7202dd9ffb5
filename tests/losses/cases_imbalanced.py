"""Battery cases for the imbalanced-data losses, with the papers' reference code as references.

* class weights from counts: Cui et al.'s class-balanced weights written out here;
* ``ldam_reference``: the authors' ``LDAMLoss.forward`` (kaidic/LDAM-DRW);
* logit adjustment: Menon et al.'s ``logits + tau * log(prior)``;
* ``asl_reference``: the authors' ``AsymmetricLoss.forward`` (Alibaba-MIIL/ASL) before its sum;
* ``lovasz_softmax_reference`` / ``lovasz_hinge_reference``: Berman et al.'s
  ``lovasz_losses.py``, with its boolean filtering and per-class loop.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as TF

from lossmix import functional as F
from lossmix.losses import (
    AsymmetricLoss,
    CrossEntropyLoss,
    FocalLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    LovaszHingeLoss,
    LovaszSoftmaxLoss,
)
from tests.losses.battery import LossCase
from tests.losses.cases_classification import softmax_focal_loop

COUNTS = [400.0, 60.0, 9.0, 2.0]
IGNORE = 255


def class_balanced_weights(counts, beta):
    """Cui et al. 2019: (1 - beta) / (1 - beta^n), normalised to sum to C (stored in float32,
    as lossmix keeps per-class vectors)."""
    weights = (1.0 - beta) / (1.0 - np.power(beta, np.array(counts)))
    return torch.tensor(weights / weights.sum() * len(counts)).float()


def inverse_frequency(counts, power=1.0):
    weights = np.array(torch.as_tensor(counts, dtype=torch.float64).tolist()) ** -power
    return torch.tensor(weights / weights.sum() * len(counts)).float()


def logits_and_labels(dtype, gen, scale):
    pred = torch.randn(8, 4, generator=gen, dtype=torch.float64) * scale
    return pred.to(dtype), torch.tensor([0, 0, 1, 2, 3, 0, 1, 3])


def ldam_reference(x, target, cls_num_list=COUNTS, max_m=0.5, s=30.0, weight=None):
    m_list = 1.0 / np.sqrt(np.sqrt(np.array(cls_num_list)))
    m_list = torch.tensor(m_list * (max_m / np.max(m_list))).float().to(x.dtype)
    index = torch.zeros_like(x, dtype=torch.bool)
    index.scatter_(1, target.view(-1, 1), True)
    batch_m = torch.matmul(m_list[None, :], index.to(x.dtype).transpose(0, 1)).view((-1, 1))
    output = torch.where(index, x - batch_m, x)
    return TF.cross_entropy(s * output, target, weight=weight, reduction="none")


def logit_adjusted_reference(x, target, tau=1.0):
    prior = torch.tensor(COUNTS, dtype=x.dtype) / sum(COUNTS)
    return TF.cross_entropy(x + tau * prior.log(), target, reduction="none")


def multilabel(dtype, gen, scale):
    pred = torch.randn(6, 5, generator=gen, dtype=torch.float64) * scale
    target = (torch.rand(6, 5, generator=gen) < 0.3).to(torch.float64)
    return pred.to(dtype), target.to(dtype)


def asl_reference(x, y, gamma_neg=4, gamma_pos=0, clip=0.05, eps=1e-8):
    xs_pos = torch.sigmoid(x)
    xs_neg = 1 - xs_pos
    if clip is not None and clip > 0:
        xs_neg = (xs_neg + clip).clamp(max=1)
    los_pos = y * torch.log(xs_pos.clamp(min=eps))
    los_neg = (1 - y) * torch.log(xs_neg.clamp(min=eps))
    loss = los_pos + los_neg
    if gamma_neg > 0 or gamma_pos > 0:
        pt = xs_pos * y + xs_neg * (1 - y)
        one_sided_gamma = gamma_pos * y + gamma_neg * (1 - y)
        loss *= torch.pow(1 - pt, one_sided_gamma)
    return -loss


def segmentation(dtype, gen, scale, classes=3):
    pred = torch.randn(3, classes, 4, 5, generator=gen, dtype=torch.float64) * scale
    labels = torch.randint(0, classes, (3, 4, 5), generator=gen)
    labels[0, 0, :3] = IGNORE
    labels[2] = labels[2].clamp(max=1)  # a class absent from one image
    return pred.to(dtype), labels


def _lovasz_grad(gt_sorted):
    p = len(gt_sorted)
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.float().cumsum(0)
    union = gts + (1 - gt_sorted).float().cumsum(0)
    jaccard = 1.0 - intersection / union
    if p > 1:
        jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
    return jaccard


def _lovasz_softmax_flat(probas, labels, classes="present"):
    if probas.numel() == 0:
        return probas * 0.0
    losses = []
    for c in range(probas.size(1)):
        fg = (labels == c).to(probas.dtype)
        if classes == "present" and fg.sum() == 0:
            continue
        errors = (fg - probas[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, 0, descending=True)
        losses.append(torch.dot(errors_sorted, _lovasz_grad(fg[perm]).to(probas.dtype)))
    return torch.stack(losses).mean() if losses else probas.sum() * 0.0


def _flatten_probas(probas, labels, ignore=None):
    c = probas.size(1)
    probas = probas.movedim(1, -1).reshape(-1, c)
    labels = labels.reshape(-1)
    valid = labels != ignore
    return probas[valid], labels[valid]


def lovasz_softmax_reference(logits, labels, per_image=False, classes="present", ignore=IGNORE):
    probas = logits.softmax(1)
    if per_image:
        return torch.stack(
            [
                _lovasz_softmax_flat(*_flatten_probas(prob[None], lab[None], ignore), classes=classes)
                for prob, lab in zip(probas, labels, strict=True)
            ]
        )
    return _lovasz_softmax_flat(*_flatten_probas(probas, labels, ignore), classes=classes)


def binary_masks(dtype, gen, scale):
    pred = torch.randn(3, 4, 5, generator=gen, dtype=torch.float64) * scale
    labels = (torch.rand(3, 4, 5, generator=gen) < 0.4).to(torch.float64)
    labels[1, 0, :2] = IGNORE
    return pred.to(dtype), labels.to(dtype)


def _lovasz_hinge_flat(logits, labels):
    if len(labels) == 0:
        return logits.sum() * 0.0
    signs = 2.0 * labels - 1.0
    errors = 1.0 - logits * signs
    errors_sorted, perm = torch.sort(errors, dim=0, descending=True)
    grad = _lovasz_grad(labels[perm]).to(logits.dtype)
    return torch.dot(TF.relu(errors_sorted), grad)


def lovasz_hinge_reference(logits, labels, per_image=True, ignore=IGNORE):
    def flat(scores, lab):
        scores, lab = scores.reshape(-1), lab.reshape(-1)
        valid = lab != ignore
        return scores[valid], lab[valid]

    if per_image:
        return torch.stack([_lovasz_hinge_flat(*flat(s, lab)) for s, lab in zip(logits, labels, strict=True)])
    return _lovasz_hinge_flat(*flat(logits, labels))


CASES = [
    LossCase(
        "CrossEntropyLoss-class-balanced",
        lambda **kw: CrossEntropyLoss(
            class_weight={"method": "effective_number", "beta": 0.99, "counts": COUNTS}, **kw
        ),
        logits_and_labels,
        reference=lambda p, t: TF.cross_entropy(
            p, t, weight=class_balanced_weights(COUNTS, 0.99).to(p.dtype), reduction="none"
        ),
    ),
    LossCase(
        "FocalLoss-softmax-inverse-frequency",
        lambda **kw: FocalLoss(
            use_sigmoid=False, alpha={"method": "inverse_frequency", "power": 0.5, "counts": COUNTS}, **kw
        ),
        logits_and_labels,
        reference=lambda p, t: softmax_focal_loop(p, t, alpha=inverse_frequency(COUNTS, 0.5).tolist()),
    ),
    LossCase(
        "LDAMLoss",
        lambda **kw: LDAMLoss(class_counts=COUNTS, **kw),
        logits_and_labels,
        reference=ldam_reference,
        kernel=lambda p, t: F.ldam_logits(p, t, F.ldam_margins(torch.tensor(COUNTS))),
    ),
    LossCase(
        "LDAMLoss-drw",
        lambda **kw: LDAMLoss(
            class_counts=COUNTS,
            max_m=0.3,
            s=10.0,
            class_weight={"method": "effective_number", "beta": 0.9999, "counts": COUNTS},
            **kw,
        ),
        logits_and_labels,
        reference=lambda p, t: ldam_reference(
            p, t, max_m=0.3, s=10.0, weight=class_balanced_weights(COUNTS, 0.9999).to(p.dtype)
        ),
    ),
    LossCase(
        "LogitAdjustedLoss",
        lambda **kw: LogitAdjustedLoss(class_counts=COUNTS, **kw),
        logits_and_labels,
        reference=logit_adjusted_reference,
        kernel=lambda p, t: F.logit_adjusted_logits(p, torch.tensor(COUNTS).log() - np.log(sum(COUNTS))),
    ),
    LossCase(
        "LogitAdjustedLoss-tau1.5",
        lambda **kw: LogitAdjustedLoss(class_counts=COUNTS, tau=1.5, **kw),
        logits_and_labels,
        reference=lambda p, t: logit_adjusted_reference(p, t, tau=1.5),
    ),
    LossCase(
        "AsymmetricLoss",
        lambda **kw: AsymmetricLoss(**kw),
        multilabel,
        reference=asl_reference,
        kernel=F.asymmetric_loss,
    ),
    LossCase(
        "AsymmetricLoss-both-sides",
        lambda **kw: AsymmetricLoss(gamma_pos=1.0, gamma_neg=2.0, clip=0.1, **kw),
        multilabel,
        reference=lambda p, t: asl_reference(p, t, gamma_neg=2.0, gamma_pos=1.0, clip=0.1),
        kernel=lambda p, t: F.asymmetric_loss(p, t, gamma_pos=1.0, gamma_neg=2.0, clip=0.1),
    ),
    LossCase(
        "LovaszSoftmaxLoss-per-image",
        lambda **kw: LovaszSoftmaxLoss(per_image=True, ignore_index=IGNORE, **kw),
        segmentation,
        reference=lambda p, t: lovasz_softmax_reference(p, t, per_image=True),
        kernel=lambda p, t: F.lovasz_softmax(p.softmax(1).flatten(2), t.flatten(1), t.flatten(1) != IGNORE),
    ),
    LossCase(
        "LovaszSoftmaxLoss-batch-all",
        lambda **kw: LovaszSoftmaxLoss(classes="all", ignore_index=IGNORE, **kw),
        segmentation,
        reference=lambda p, t: lovasz_softmax_reference(p, t, classes="all"),
    ),
    LossCase(
        "LovaszHingeLoss",
        lambda **kw: LovaszHingeLoss(ignore_index=IGNORE, **kw),
        binary_masks,
        reference=lovasz_hinge_reference,
        kernel=lambda p, t: F.lovasz_hinge(p.flatten(1), t.flatten(1), t.flatten(1) != IGNORE),
    ),
    LossCase(
        "LovaszHingeLoss-batch",
        lambda **kw: LovaszHingeLoss(per_image=False, ignore_index=IGNORE, **kw),
        binary_masks,
        reference=lambda p, t: lovasz_hinge_reference(p, t, per_image=False),
    ),
]
