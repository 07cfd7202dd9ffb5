"""Class-imbalance kernels: class weights from counts, LDAM margins, logit adjustment.

* :func:`inverse_frequency_weights` and :func:`effective_number_weights` (Cui et al.,
  "Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019) turn per-class
  sample counts into class weights, normalised to sum to the number of classes;
* :func:`ldam_logits` (Cao et al., "Learning Imbalanced Datasets with Label-Distribution-
  Aware Margin Loss", NeurIPS 2019) and :func:`logit_adjusted_logits` (Menon et al.,
  "Long-Tail Learning via Logit Adjustment", ICLR 2021) change the logits a softmax
  cross-entropy sees;
* :func:`label_histogram` counts labels on the device.

Counts are validated by the losses (:mod:`lossmix.losses.class_balance`); these
functions assume positive counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF
from torch import Tensor

__all__ = [
    "CLASS_WEIGHT_METHODS",
    "class_weights_from_counts",
    "effective_number_weights",
    "inverse_frequency_weights",
    "label_histogram",
    "ldam_logits",
    "ldam_margins",
    "logit_adjusted_logits",
]

CLASS_WEIGHT_METHODS: tuple[str, ...] = ("inverse_frequency", "effective_number")


def _sum_to_classes(weights: Tensor) -> Tensor:
    return weights * (weights.numel() / weights.sum())


def inverse_frequency_weights(counts: Tensor, *, power: float = 1.0) -> Tensor:
    r"""Class weights :math:`w_c \propto n_c^{-p}`, scaled so :math:`\sum_c w_c = C`.

    ``power`` 1 is inverse frequency, 0.5 inverse square root.

    >>> inverse_frequency_weights(torch.tensor([1.0, 3.0]))
    tensor([1.5000, 0.5000])
    """
    return _sum_to_classes(counts.double().pow(-power)).to(torch.float32)


def effective_number_weights(counts: Tensor, *, beta: float = 0.999) -> Tensor:
    r"""Class-balanced weights from the effective number of samples (Cui et al. 2019).

    .. math:: E_c = \frac{1 - \beta^{n_c}}{1 - \beta}, \qquad
        w_c \propto \frac{1}{E_c} = \frac{1 - \beta}{1 - \beta^{n_c}}, \qquad \sum_c w_c = C

    ``beta = 0`` weighs every class 1; ``beta → 1`` tends to inverse frequency.

    >>> effective_number_weights(torch.tensor([1.0, 3.0]), beta=0.5)
    tensor([1.2727, 0.7273])
    """
    counts = counts.double()
    weights = (1 - beta) / (1 - torch.pow(torch.tensor(beta, dtype=counts.dtype), counts))
    return _sum_to_classes(weights).to(torch.float32)


def class_weights_from_counts(
    counts: Tensor, *, method: str, beta: float = 0.999, power: float = 1.0
) -> Tensor:
    """:func:`inverse_frequency_weights` or :func:`effective_number_weights` by name."""
    if method == "effective_number":
        return effective_number_weights(counts, beta=beta)
    return inverse_frequency_weights(counts, power=power)


def label_histogram(labels: Tensor, num_classes: int, *, ignore_index: int | None = None) -> Tensor:
    """Per-class counts of integer ``labels`` (any shape) as floats ``(num_classes,)``.

    Labels outside ``[0, num_classes)`` and ``ignore_index`` are not counted. One
    ``scatter_add`` on the labels' device: no host sync.

    >>> label_histogram(torch.tensor([0, 2, 2, -1, 5]), 3)
    tensor([1., 0., 2.])
    """
    flat = labels.flatten().long()
    valid = (flat >= 0) & (flat < num_classes)
    if ignore_index is not None:
        valid &= flat != ignore_index
    index = torch.where(valid, flat, num_classes)
    counts = torch.zeros(num_classes + 1, device=labels.device).scatter_add_(0, index, valid.float())
    return counts[:num_classes]


def ldam_margins(counts: Tensor, *, max_m: float = 0.5) -> Tensor:
    r"""LDAM's class margins :math:`\Delta_c \propto n_c^{-1/4}`, the largest equal to ``max_m``.

    >>> ldam_margins(torch.tensor([16.0, 1.0]), max_m=0.5)
    tensor([0.2500, 0.5000])
    """
    margins = counts.double().pow(-0.25)
    return (margins * (max_m / margins.max())).to(torch.float32)


def ldam_logits(pred: Tensor, target: Tensor, margins: Tensor, *, scale: float = 30.0) -> Tensor:
    r"""The logits of the LDAM loss: :math:`s\,(z_j - [j = y]\,\Delta_y)`.

    The loss is then the softmax cross-entropy of these logits,
    :math:`\ell = -\log \frac{e^{s(z_y - \Delta_y)}}{e^{s(z_y - \Delta_y)} + \sum_{j \ne y} e^{s z_j}}`.

    Shapes: ``pred`` ``(N, C, *)``; ``target`` ``(N, *)`` class indices; ``margins``
    ``(C,)``; returns the shape of ``pred``.
    """
    onehot = TF.one_hot(target.long().clamp(min=0), pred.shape[1]).movedim(-1, 1).to(pred.dtype)
    shape = (1, -1) + (1,) * (pred.dim() - 2)
    return scale * (pred - onehot * margins.to(pred.dtype).view(shape))


def logit_adjusted_logits(pred: Tensor, log_prior: Tensor, *, tau: float = 1.0) -> Tensor:
    r"""The logits of the logit-adjusted loss: :math:`z_j + \tau \log \pi_j`.

    With the class priors :math:`\pi_j = n_j / \sum_k n_k`, the softmax cross-entropy of
    these logits is :math:`-\log \frac{e^{z_y + \tau \log \pi_y}}{\sum_j e^{z_j + \tau \log \pi_j}}`.

    Shapes: ``pred`` ``(N, C, *)``; ``log_prior`` ``(C,)``; returns the shape of ``pred``.
    """
    shape = (1, -1) + (1,) * (pred.dim() - 2)
    return pred + tau * log_prior.to(pred.dtype).view(shape)
