"""Long-tailed detection kernels: Seesaw (Wang et al., CVPR 2021) and EQL v2 (Tan et al., CVPR 2021).

Both re-weight a classifier's logits or elements from class statistics a loss keeps
across steps (Seesaw's cumulative class counts, EQL v2's accumulated gradients); the
kernels take those statistics as tensors and never update them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF
from torch import Tensor

__all__ = ["eqlv2_gradients", "eqlv2_weights", "seesaw_cross_entropy", "seesaw_logits"]


def seesaw_logits(
    cls_score: Tensor,
    labels: Tensor,
    cum_samples: Tensor,
    *,
    p: float = 0.8,
    q: float = 2.0,
    eps: float = 1e-2,
) -> Tensor:
    r"""The logits Seesaw's cross-entropy uses: :math:`z_j + \log S_{ij}` for every class
    :math:`j \ne y_i`, with :math:`S_{ij} = M_{ij} C_{ij}`.

    Mitigation (``p > 0``), from the cumulative counts :math:`N` (each at least 1):
    :math:`M_{ij} = (N_j / N_{y_i})^p` where :math:`N_j < N_{y_i}`, else 1. Compensation
    (``q > 0``), from the detached probabilities :math:`\sigma`:
    :math:`C_{ij} = (\sigma_j / \max(\sigma_{y_i}, \epsilon))^q` where that ratio is > 1,
    else 1.

    Shapes: ``cls_score`` ``(N, C)``; ``labels`` ``(N,)`` in ``[0, C)``;
    ``cum_samples`` ``(C,)``; returns ``(N, C)``.

    >>> seesaw_logits(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([4.0, 1.0]), q=0.0)
    tensor([[ 0.0000, -1.1090]])
    """
    num_classes = cls_score.shape[-1]
    onehot = TF.one_hot(labels.long(), num_classes).to(cls_score.dtype)
    weights = torch.ones_like(cls_score)
    if p > 0:
        counts = cum_samples.to(cls_score.dtype).clamp(min=1)
        ratio = counts.unsqueeze(0) / counts.unsqueeze(1)  # [i, j] = N_j / N_i
        mitigation = torch.where(ratio < 1, ratio.pow(p), 1.0)
        weights = weights * mitigation[labels.long()]
    if q > 0:
        scores = TF.softmax(cls_score.detach(), dim=1)
        own = scores.gather(1, labels.long().unsqueeze(1))
        relative = scores / own.clamp(min=eps)
        weights = weights * torch.where(relative > 1, relative.pow(q), 1.0)
    return cls_score + weights.log() * (1 - onehot)


def seesaw_cross_entropy(
    cls_score: Tensor,
    labels: Tensor,
    cum_samples: Tensor,
    *,
    p: float = 0.8,
    q: float = 2.0,
    eps: float = 1e-2,
) -> Tensor:
    r"""Seesaw cross-entropy per row, :math:`-\log \mathrm{softmax}(\tilde z_i)_{y_i}` over the
    logits of :func:`seesaw_logits`.

    >>> seesaw_cross_entropy(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([4.0, 1.0]), q=0.0)
    tensor([0.2851])
    """
    logits = seesaw_logits(cls_score, labels, cum_samples, p=p, q=q, eps=eps)
    return TF.cross_entropy(logits, labels.long(), reduction="none")


def eqlv2_weights(
    pos_neg: Tensor, *, mu: float = 0.8, gamma: float = 12.0, alpha: float = 4.0
) -> tuple[Tensor, Tensor]:
    r"""EQL v2's per-class weights from the accumulated positive/negative gradient ratio :math:`g`.

    .. math:: w^-_c = \frac{1}{1 + e^{-\gamma (g_c - \mu)}}, \qquad w^+_c = 1 + \alpha (1 - w^-_c)

    with a last (background / objectness) column of weight 1 for both.

    Shapes: ``pos_neg`` ``(C,)``; returns ``(C + 1,)`` twice: ``(pos_weight, neg_weight)``.
    """
    neg = torch.cat([torch.sigmoid(gamma * (pos_neg - mu)), pos_neg.new_ones(1)])
    return 1 + alpha * (1 - neg), neg


def eqlv2_gradients(pred: Tensor, target: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    r"""The positive and negative gradient magnitudes EQL v2 accumulates, per class.

    With :math:`p = \sigma(x)`, the BCE gradient magnitude is :math:`|t (p - 1) + (1 - t) p|`;
    it is summed over the rows, split by the target and weighted, without the last
    (objectness) column.

    Shapes: ``pred``, ``target``, ``weight`` ``(N, C + 1)``; returns ``(C,)`` twice.
    """
    with torch.no_grad():
        prob = torch.sigmoid(pred.detach())
        grad = (target * (prob - 1) + (1 - target) * prob).abs() * weight
        return (grad * target).sum(0)[:-1], (grad * (1 - target)).sum(0)[:-1]
