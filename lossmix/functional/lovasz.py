r"""Lovász extensions of the Jaccard loss (Berman et al., "The Lovász-Softmax Loss", CVPR 2018).

For errors :math:`e` sorted in decreasing order with ground truths :math:`g` in that
order, the Lovász extension of the Jaccard loss is :math:`\sum_i e_{(i)}\, \Delta J_i`,
with the increments of the Jaccard loss along the sorted sequence
(:func:`lovasz_grad`):

.. math:: J_i = 1 - \frac{G - \sum_{k \le i} g_{(k)}}{G + \sum_{k \le i} (1 - g_{(k)})}, \qquad
    \Delta J_1 = J_1,\; \Delta J_i = J_i - J_{i-1}

where :math:`G = \sum_k g_k`. The kernels are batched over rows (images, or one row
for the whole batch) and exclude masked elements by sorting them last with an error of
``-inf``, so nothing is indexed by data and nothing syncs with the host.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["lovasz_grad", "lovasz_hinge", "lovasz_softmax"]


def lovasz_grad(gt_sorted: Tensor) -> Tensor:
    """The Jaccard-loss increments :math:`\\Delta J` along the last dim of sorted 0/1 ``gt_sorted``.

    >>> lovasz_grad(torch.tensor([1.0, 0.0, 1.0]))
    tensor([0.5000, 0.1667, 0.3333])
    """
    total = gt_sorted.sum(-1, keepdim=True)
    intersection = total - gt_sorted.cumsum(-1)
    union = total + (1 - gt_sorted).cumsum(-1)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)


def _extension(errors: Tensor, gt: Tensor, valid: Tensor) -> Tensor:
    """:math:`\\sum_i e_{(i)} \\Delta J_i` per row over the ``valid`` elements (last dim)."""
    errors = torch.where(valid, errors, float("-inf"))
    errors_sorted, order = errors.sort(dim=-1, descending=True)
    gt_sorted = torch.where(valid, gt, 0.0).gather(-1, order)
    kept = valid.gather(-1, order)
    grad = lovasz_grad(gt_sorted).detach()
    return (torch.where(kept, errors_sorted, 0.0) * grad).sum(-1)


def lovasz_hinge(logits: Tensor, labels: Tensor, valid: Tensor) -> Tensor:
    r"""Binary Lovász hinge per row: :math:`\sum_i \max(0, e_{(i)})\, \Delta J_i` with
    :math:`e = 1 - x\,(2t - 1)`.

    Shapes: ``logits``, ``labels`` (0/1), ``valid``: ``(B, P)``; returns ``(B,)``.

    >>> valid = torch.ones(1, 2, dtype=torch.bool)
    >>> lovasz_hinge(torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 0.0]]), valid)
    tensor([0.])
    """
    labels = labels.to(logits.dtype)
    errors = torch.relu(1 - logits * (2 * labels - 1))
    return _extension(errors, labels, valid)


def lovasz_softmax(probs: Tensor, labels: Tensor, valid: Tensor, *, classes: str = "present") -> Tensor:
    r"""Lovász-softmax per row: the mean over classes of the extension of
    :math:`e_c = |[y = c] - p_c|`; ``classes='present'`` averages over the classes that
    occur in the row's (valid) labels (0 if none), ``'all'`` over every class.

    Shapes: ``probs`` ``(B, C, P)``; ``labels``, ``valid`` ``(B, P)``; returns ``(B,)``.

    >>> probs = torch.tensor([[[0.9, 0.2], [0.1, 0.8]]])
    >>> lovasz_softmax(probs, torch.tensor([[0, 1]]), torch.ones(1, 2, dtype=torch.bool))
    tensor([0.1750])
    """
    classes_index = torch.arange(probs.shape[1], device=probs.device).view(1, -1, 1)
    fg = (labels.unsqueeze(1) == classes_index) & valid.unsqueeze(1)
    fg_float = fg.to(probs.dtype)
    mask = valid.unsqueeze(1).expand_as(probs)
    losses = _extension((fg_float - probs).abs(), fg_float, mask)  # (B, C)
    if classes == "all":
        return losses.mean(-1)
    present = fg.any(-1).to(probs.dtype)
    return (losses * present).sum(-1) / present.sum(-1).clamp(min=1)
