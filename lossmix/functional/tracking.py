"""Embedding and matching kernels of MMDetection's tracking and ReID heads (QDTrack, ReID).

* :func:`hard_triplet_loss`: the batch-hard triplet loss of ``TripletLoss``;
* :func:`multi_pos_cross_entropy`: QDTrack's ``MultiPosCrossEntropyLoss``;
* :func:`knowledge_distillation_kl_div`: LD's ``KnowledgeDistillationKLDivLoss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF
from torch import Tensor

__all__ = ["hard_triplet_loss", "knowledge_distillation_kl_div", "multi_pos_cross_entropy"]


def hard_triplet_loss(embeddings: Tensor, labels: Tensor, *, margin: float = 0.3) -> Tensor:
    r"""Batch-hard triplet loss per anchor (Hermans et al. 2017), as MMDetection's ``TripletLoss``.

    With Euclidean distances :math:`d_{ij} = \sqrt{\max(\lVert x_i\rVert^2 + \lVert x_j\rVert^2
    - 2 x_i \cdot x_j, 10^{-12})}`, each anchor takes its farthest positive (same label,
    itself included) and its nearest negative:

    .. math:: \ell_i = \max\big(0,\; \max_{j: y_j = y_i} d_{ij} - \min_{k: y_k \ne y_i} d_{ik}
        + \text{margin}\big)

    An anchor without a negative gives 0 (MMDetection fails there).

    Shapes: ``embeddings`` ``(B, D)``; ``labels`` ``(B,)``; returns ``(B,)``.

    >>> x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    >>> hard_triplet_loss(x, torch.tensor([0, 0, 1]), margin=2.5)
    tensor([0.5000, 0.3377, 0.0000])
    """
    squares = embeddings.pow(2).sum(1, keepdim=True)
    dist = (squares + squares.t() - 2 * embeddings @ embeddings.t()).clamp(min=1e-12).sqrt()
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    # one padding column keeps the reductions defined for an empty batch
    pad = dist.new_full((dist.shape[0], 1), float("inf"))
    hardest_pos = torch.cat([torch.where(same, dist, float("-inf")), -pad], 1).amax(1)
    hardest_neg = torch.cat([torch.where(same, float("inf"), dist), pad], 1).amin(1)
    return torch.relu(hardest_pos - hardest_neg + margin)


def multi_pos_cross_entropy(pred: Tensor, label: Tensor) -> Tensor:
    r"""Cross-entropy with several positives per row (QDTrack), as MMDetection's ``MultiPosCrossEntropyLoss``.

    With the positives :math:`P = \{i: y_i \ge 1\}` and negatives :math:`Q = \{j: y_j = 0\}`
    of a row of scores :math:`s`:

    .. math:: \ell = \log\Big(1 + \sum_{i \in P} \sum_{j \in Q} e^{s_j - s_i}\Big)

    computed as a log-sum-exp over the pairs and a zero, so it is finite at any score;
    0 for a row without positives or negatives. Labels below 0 are neither.

    Shapes: ``pred``, ``label``: ``(N, C)``; returns ``(N,)``.

    >>> multi_pos_cross_entropy(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[1, 0, 0]]))
    tensor([0.2395])
    """
    pos, neg = label >= 1, label == 0
    pairs = pos.unsqueeze(2) & neg.unsqueeze(1)  # (N, i, j)
    gaps = torch.where(pairs, pred.unsqueeze(1) - pred.unsqueeze(2), float("-inf"))
    return TF.pad(gaps.flatten(1), (0, 1), value=0.0).logsumexp(dim=1)


def knowledge_distillation_kl_div(
    pred: Tensor, soft_label: Tensor, *, temperature: float = 10.0, detach_target: bool = True
) -> Tensor:
    r"""Knowledge-distillation KL divergence per row (LD's ``KnowledgeDistillationKLDivLoss``).

    .. math:: \ell = \frac{T^2}{C} \sum_c q_c \,(\log q_c - \log p_c),\qquad
        p = \mathrm{softmax}(x / T),\; q = \mathrm{softmax}(z / T)

    for the student logits :math:`x` (``pred``) and the teacher logits :math:`z`
    (``soft_label``, detached by default); the mean over the ``C`` classes is MMDetection's.

    Shapes: ``pred``, ``soft_label``: ``(N, C)``; returns ``(N,)``.

    >>> knowledge_distillation_kl_div(torch.zeros(1, 2), torch.zeros(1, 2))
    tensor([0.])
    """
    target = TF.softmax(soft_label / temperature, dim=1)
    if detach_target:
        target = target.detach()
    log_p = TF.log_softmax(pred / temperature, dim=1)
    return TF.kl_div(log_p, target, reduction="none").mean(1) * (temperature * temperature)
