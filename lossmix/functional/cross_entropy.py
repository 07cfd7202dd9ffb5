"""Cross-entropy kernels: softmax over classes, per-class sigmoid, and the one-hot helper.

Class-index targets use MMDetection's convention: the class dimension of
``pred`` is dim 1, and for sigmoid losses the label ``num_classes`` is the
background (an all-negative row).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cross_entropy", "mask_cross_entropy", "one_hot_targets", "sigmoid_cross_entropy"]


def one_hot_targets(label: Tensor, num_classes: int, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot encode class indices into dim 1; any label outside ``[0, num_classes)`` gives
    an all-zero row (the background ``num_classes``, an ignored label).

    Shapes: ``label``: ``(N, *)`` integer; returns ``(N, num_classes, *)`` of ``dtype``.

    >>> one_hot_targets(torch.tensor([1, 2, -1]), 2)
    tensor([[0., 1.],
            [0., 0.],
            [0., 0.]])
    """
    # one comparison against the class range (3 ops, no range check that reads the data):
    # a label outside [0, num_classes) matches no class
    classes = torch.arange(num_classes, device=label.device).view(1, num_classes, *([1] * (label.dim() - 1)))
    return (label.unsqueeze(1) == classes).to(dtype)


def cross_entropy(
    pred: Tensor,
    target: Tensor,
    *,
    class_weight: Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""Softmax cross-entropy per row, :math:`\ell_i = -w_{y_i} \log \mathrm{softmax}(x_i)_{y_i}`.

    This is ``F.cross_entropy(..., reduction='none')``: a row labelled
    ``ignore_index`` gives 0, ``class_weight`` multiplies each row by the weight
    of its class, and ``label_smoothing`` mixes the one-hot target with the
    uniform distribution (torch's definition). A float ``target`` shaped like
    ``pred`` holds class probabilities.

    Shapes: ``pred``: ``(N, C, *)`` logits; ``target``: ``(N, *)`` indices or
    ``(N, C, *)`` probabilities; ``class_weight``: ``(C,)``; returns ``(N, *)``.

    >>> cross_entropy(torch.tensor([[0.0, 0.0]]), torch.tensor([1]))
    tensor([0.6931])
    """
    return F.cross_entropy(
        pred,
        target,
        weight=class_weight,
        ignore_index=ignore_index,
        reduction="none",
        label_smoothing=label_smoothing,
    )


def sigmoid_cross_entropy(
    pred: Tensor,
    target: Tensor,
    *,
    pos_weight: Tensor | None = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""Element-wise binary cross-entropy on logits (MMDetection's sigmoid ``CrossEntropyLoss``):

    .. math::
        \ell = -\left[w_c\, t \log \sigma(x) + (1 - t) \log (1 - \sigma(x))\right],
        \qquad t \leftarrow t (1 - s) + s / 2

    with ``w_c = pos_weight`` (MMDetection's ``class_weight`` on this path) and
    ``s = label_smoothing``. Computed by ``binary_cross_entropy_with_logits``
    (a log-sum-exp form, finite at any logit).

    Shapes: ``pred``, ``target``: ``(N, C, *)``; ``pos_weight``: broadcastable
    to ``pred`` (``(C, 1, ..., 1)``); returns ``(N, C, *)``.

    >>> sigmoid_cross_entropy(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]))
    tensor([0.6931, 0.6931])
    """
    if target.dtype != pred.dtype:
        target = target.to(pred.dtype)
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + 0.5 * label_smoothing
    return F.binary_cross_entropy_with_logits(pred, target, pos_weight=pos_weight, reduction="none")


def mask_cross_entropy(pred: Tensor, target: Tensor, *, label: Tensor) -> Tensor:
    r"""Per-pixel binary cross-entropy of each RoI's mask for its own class:
    :math:`\ell_{r,h,w} = \mathrm{BCE}(x_{r, y_r, h, w}, t_{r,h,w})`.

    Shapes: ``pred``: ``(R, C, H, W)`` logits; ``target``: ``(R, H, W)`` in
    ``[0, 1]``; ``label``: ``(R,)`` class indices; returns ``(R, H, W)``.

    >>> mask_cross_entropy(torch.zeros(1, 2, 1, 1), torch.ones(1, 1, 1), label=torch.tensor([1]))
    tensor([[[0.6931]]])
    """
    rows = torch.arange(pred.size(0), device=pred.device)
    picked = pred[rows, label.long()]
    return F.binary_cross_entropy_with_logits(picked, target.to(pred.dtype), reduction="none")
