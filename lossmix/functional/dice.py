"""Soft overlap kernels for segmentation: Dice, Tversky (focal-Tversky) and Jaccard.

Overlap losses are not element-wise: each kernel sums over every dimension from
``start_dim`` on and returns one loss per leading index, e.g. ``(N,)`` for
``(N, *)`` inputs (MMDetection's per-sample Dice) or ``(N, C)`` for
``(N, C, *)`` inputs with ``start_dim=2`` (one loss per sample and class).

The kernels take *probabilities* and float targets of the same shape. An
element that must not count (``ignore_index``) is excluded by setting both its
probability and its target to zero, which removes it from every sum;
:func:`overlap_inputs` does that, and the activation and one-hot encoding.

With ``P = Σp``, ``T = Σt``, ``I = Σp·t`` (``TP = I``, ``FP = P − I``,
``FN = T − I``) over one unit:

* Dice, V-Net form:  ``d = (2I + s) / ((Σp² + eps) + (Σt² + eps))``, ``s = 0``
  (MMDetection) or ``s = 2·eps`` (``smooth_numerator=True``, MONAI-style);
* Dice, naive form:  ``d = (2I + eps) / (P + T + eps)``;
* Tversky:           ``ti = (TP + eps) / (TP + α·FP + β·FN + eps)``, loss ``(1 − ti)^γ``;
* Jaccard:           ``j = (I + eps) / (P + T − I + eps)``.

Tversky with ``α = β = 1`` is Jaccard with the same ``eps``; with ``α = β = 0.5``
it is the naive Dice with ``2·eps``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["dice_loss", "jaccard_loss", "overlap_inputs", "tversky_loss"]


def _unit_sum(x: Tensor, start_dim: int) -> Tensor:
    """Sum over the dims from ``start_dim`` on (a sum, not a reshape: 0 rows stay 0 rows)."""
    return x.sum(dim=tuple(range(start_dim, x.dim()))) if x.dim() > start_dim else x


def dice_loss(
    pred: Tensor,
    target: Tensor,
    *,
    eps: float = 1e-3,
    naive_dice: bool = False,
    smooth_numerator: bool = False,
    start_dim: int = 1,
) -> Tensor:
    r"""Soft Dice loss ``1 − d`` per unit (MMDetection's ``dice_loss`` numbers by default).

    .. math::
        d_{\text{V-Net}} = \frac{2\sum p t + s}{(\sum p^2 + \epsilon) + (\sum t^2 + \epsilon)},
        \qquad
        d_{\text{naive}} = \frac{2\sum p t + \epsilon}{\sum p + \sum t + \epsilon}

    with :math:`s = 0`, or :math:`s = 2\epsilon` when ``smooth_numerator`` (then an
    empty target with an empty prediction gives ``d = 1``; the naive form always has it).

    Args:
        pred: probabilities, ``(N, *)``.
        target: float targets, the same shape.
        eps: smoothing, > 0.
        naive_dice: the naive form instead of V-Net's squares.
        smooth_numerator: add ``2·eps`` to the V-Net numerator (MONAI-style smoothing).
        start_dim: sums run over dims ``start_dim, ...``.

    Returns:
        ``pred.shape[:start_dim]``.

    >>> p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    >>> dice_loss(p, torch.tensor([[1.0, 0.0], [1.0, 0.0]]), naive_dice=True)
    tensor([0.0000, 0.4998])
    """
    inter = _unit_sum(pred * target, start_dim)
    if naive_dice:
        total = _unit_sum(pred, start_dim) + _unit_sum(target, start_dim)
        return 1 - (2 * inter + eps) / (total + eps)
    sum_p2 = _unit_sum(pred * pred, start_dim)
    sum_t2 = _unit_sum(target * target, start_dim)
    denom = (sum_p2 + eps) + (sum_t2 + eps)
    numer = 2 * inter + 2 * eps if smooth_numerator else 2 * inter
    return 1 - numer / denom


def tversky_loss(
    pred: Tensor,
    target: Tensor,
    *,
    alpha: float = 0.5,
    beta: float = 0.5,
    gamma: float = 1.0,
    eps: float = 1e-3,
    start_dim: int = 1,
) -> Tensor:
    r"""(Focal) Tversky loss :math:`(1 - TI)^\gamma` per unit.

    .. math::
        TI = \frac{TP + \epsilon}{TP + \alpha\,FP + \beta\,FN + \epsilon},\quad
        TP = \sum p t,\; FP = \sum p (1 - t),\; FN = \sum (1 - p) t

    ``alpha`` weighs false positives, ``beta`` false negatives.

    Args:
        pred: probabilities, ``(N, *)``; target: float, the same shape.
        alpha, beta: >= 0; gamma: > 0 (focal-Tversky exponent, 1 = plain Tversky).
        eps: smoothing, > 0. start_dim: as :func:`dice_loss`.

    Returns:
        ``pred.shape[:start_dim]``.

    >>> p = torch.tensor([[0.5, 0.5]]); t = torch.tensor([[1.0, 0.0]])
    >>> tversky_loss(p, t, alpha=1.0, beta=1.0, eps=1e-6)
    tensor([0.6667])
    """
    tp = _unit_sum(pred * target, start_dim)
    fp = _unit_sum(pred, start_dim) - tp
    fn = _unit_sum(target, start_dim) - tp
    index = (tp + eps) / (tp + alpha * fp + beta * fn + eps)
    loss = 1 - index
    if gamma == 1.0:
        return loss
    # 1 - TI may round below 0, and x ** γ with γ < 1 has an infinite slope at 0.
    return loss.clamp(min=1e-12) ** gamma


def jaccard_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-3, start_dim: int = 1) -> Tensor:
    r"""Soft Jaccard (IoU) loss :math:`1 - (I + \epsilon) / (\sum p + \sum t - I + \epsilon)`.

    Args:
        pred: probabilities, ``(N, *)``; target: float, the same shape.
        eps: smoothing, > 0. start_dim: as :func:`dice_loss`.

    Returns:
        ``pred.shape[:start_dim]``.

    >>> jaccard_loss(torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 0.0]]), eps=1e-6)
    tensor([0.6667])
    """
    inter = _unit_sum(pred * target, start_dim)
    union = _unit_sum(pred, start_dim) + _unit_sum(target, start_dim) - inter
    return 1 - (inter + eps) / (union + eps)


def overlap_inputs(
    pred: Tensor,
    target: Tensor,
    *,
    use_sigmoid: bool = True,
    activate: bool = True,
    ignore_index: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Probabilities and float targets for the overlap kernels, ignored elements zeroed.

    * ``use_sigmoid``: ``pred`` and ``target`` have the same shape; ``p = σ(pred)``.
    * softmax: ``pred`` is ``(N, C, *)``, ``p = softmax(pred, 1)``; an integer
      ``target`` ``(N, *)`` is one-hot encoded to ``(N, C, *)``, a float target
      must already be ``(N, C, *)``.

    ``activate=False`` takes ``pred`` as probabilities already. An element whose
    target equals ``ignore_index`` gets ``p = t = 0`` (for index targets: the
    whole pixel, every class). Ignored logits are replaced before the
    activation, so a NaN there reaches neither the value nor the gradient.

    >>> p, t = overlap_inputs(torch.zeros(1, 2, 2), torch.tensor([[0, 255]]),
    ...                       use_sigmoid=False, ignore_index=255)
    >>> p
    tensor([[[0.5000, 0.0000],
             [0.5000, 0.0000]]])
    >>> t
    tensor([[[1., 0.],
             [0., 0.]]])
    """
    valid = None if ignore_index is None else target != ignore_index
    if not use_sigmoid and not target.is_floating_point():
        classes = torch.arange(pred.shape[1], device=pred.device)
        classes = classes.view(1, -1, *([1] * (pred.dim() - 2)))
        target = target.unsqueeze(1) == classes
        if valid is not None:
            valid = valid.unsqueeze(1)
    target = target.to(pred.dtype if pred.is_floating_point() else torch.float32)
    if valid is not None:
        pred = torch.where(valid, pred, pred.new_zeros(()))
        target = torch.where(valid, target, target.new_zeros(()))
    if activate:
        pred = pred.sigmoid() if use_sigmoid else pred.softmax(dim=1)
    if valid is None:
        return pred, target
    return torch.where(valid, pred, pred.new_zeros(())), target
