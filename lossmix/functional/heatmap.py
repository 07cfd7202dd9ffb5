"""Keypoint-heatmap kernels of CornerNet and CenterNet: Gaussian focal and associative embedding.

Both follow MMDetection's ``gaussian_focal_loss.py`` and ``ae_loss.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lossmix.errors import LossInputError

__all__ = ["associative_embedding_loss", "gaussian_focal_loss", "match_indices"]

_LOG_EPS = 1e-12  # MMDetection's guard inside both logs


def gaussian_focal_loss(
    pred: Tensor,
    target: Tensor,
    *,
    alpha: float = 2.0,
    gamma: float = 4.0,
    pos_weight: float = 1.0,
    neg_weight: float = 1.0,
    pos_count: Tensor | None = None,
) -> Tensor:
    r"""Focal loss on a Gaussian heatmap (CornerNet, CenterNet), element-wise.

    .. math::
        \ell = w_+\, m\, \big(-\log(p + \epsilon)\big)(1 - p)^{\alpha}
             + w_-\, \big(-\log(1 - p + \epsilon)\big)\, p^{\alpha} (1 - t)^{\gamma}

    with :math:`\epsilon = 10^{-12}`, :math:`w_\pm` = ``pos_weight``/``neg_weight`` and
    :math:`m = [t = 1]`, or ``pos_count`` (how often an element is a listed positive,
    MMDetection's ``pos_inds``/``pos_labels`` path) when given.

    Args:
        pred: probabilities in ``[0, 1]``, any shape.
        target: the Gaussian heatmap in ``[0, 1]``, peaks exactly 1; the shape of ``pred``.
        alpha: power of the prediction. gamma: power of ``1 - t`` for negatives.
        pos_weight, neg_weight: factors of the two terms.
        pos_count: positives per element, the shape of ``pred`` (replaces ``t == 1``).

    Returns:
        The shape of ``pred``.

    >>> gaussian_focal_loss(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.5]))
    tensor([0.1733, 0.0108])
    """
    target = target.to(pred.dtype)
    positive = target.eq(1).to(pred.dtype) if pos_count is None else pos_count.to(pred.dtype)
    pos_loss = -(pred + _LOG_EPS).log() * (1 - pred).pow(alpha) * positive
    neg_loss = -(1 - pred + _LOG_EPS).log() * pred.pow(alpha) * (1 - target).pow(gamma)
    return pos_weight * pos_loss + neg_weight * neg_loss


def match_indices(
    match: Sequence[Sequence[Sequence[Sequence[int]]]], batch: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """CornerNet's ``match`` (per image, a list of ``[[tl_y, tl_x], [br_y, br_x]]``) as tensors.

    Returns ``(top_left, bottom_right, valid)``: ``(B, K, 2)`` coordinates padded to the
    largest object count ``K`` and a ``(B, K)`` mask. ``match`` is host data (it comes
    from the ground-truth boxes), so reading it syncs nothing.
    """
    if len(match) != batch:
        raise LossInputError(
            f"AssociativeEmbeddingLoss: match has {len(match)} images but pred has {batch}; give "
            "one list of [[tl_y, tl_x], [br_y, br_x]] pairs per image."
        )
    width = max((len(pairs) for pairs in match), default=0)
    corners = torch.zeros(batch, width, 2, 2, dtype=torch.long)
    valid = torch.zeros(batch, width, dtype=torch.bool)
    for image, pairs in enumerate(match):
        for k, pair in enumerate(pairs):
            corners[image, k] = torch.as_tensor(pair, dtype=torch.long)
            valid[image, k] = True
    corners, valid = corners.to(device), valid.to(device)
    return corners[:, :, 0], corners[:, :, 1], valid


def _gather(embedding: Tensor, yx: Tensor) -> Tensor:
    """``embedding[b, :, y, x]`` for every ``(b, k)``: ``(B, M, H, W), (B, K, 2) -> (B, K, M)``."""
    width = embedding.shape[-1]
    flat = embedding.flatten(2)  # (B, M, H*W)
    index = (yx[..., 0] * width + yx[..., 1]).unsqueeze(1).expand(-1, flat.shape[1], -1)
    return flat.gather(2, index).transpose(1, 2)


def associative_embedding_loss(
    tl: Tensor, br: Tensor, top_left: Tensor, bottom_right: Tensor, valid: Tensor, *, margin: float = 1.0
) -> tuple[Tensor, Tensor]:
    r"""Pull and push losses of associative embedding (Newell et al. 2017, CornerNet), per image.

    With the ``N`` objects of an image, their corner embeddings :math:`e^{tl}_k, e^{br}_k`
    (``M``-dimensional) and means :math:`\bar e_k`:

    .. math::
        L_{pull} = \frac{1}{N} \sum_k \lVert e^{tl}_k - \bar e_k \rVert^2
                 + \lVert e^{br}_k - \bar e_k \rVert^2, \qquad
        L_{push} = \frac{1}{N(N-1)} \sum_{j \ne k}
                 \max\Big(0,\; \Delta - \Big|\sum_m (\bar e_j - \bar e_k)_m\Big|\Big)

    with margin :math:`\Delta = 1`; both are 0 without objects, ``L_push`` with one.

    Shapes: ``tl``, ``br`` ``(B, M, H, W)``; ``top_left``, ``bottom_right`` ``(B, K, 2)``
    ``(y, x)``; ``valid`` ``(B, K)`` (:func:`match_indices`). Returns ``(B,)`` twice.
    """
    e_tl, e_br = _gather(tl, top_left), _gather(br, bottom_right)
    mask = valid.to(tl.dtype)
    count = mask.sum(1)
    mean = (e_tl + e_br) / 2
    pull = (((e_tl - mean) ** 2 + (e_br - mean) ** 2).sum(-1) * mask).sum(1)
    pull = pull / count.clamp(min=1)
    gap = (mean.unsqueeze(2) - mean.unsqueeze(1)).sum(-1).abs()  # (B, K, K)
    others = (
        mask.unsqueeze(2)
        * mask.unsqueeze(1)
        * (1 - torch.eye(gap.shape[-1], dtype=tl.dtype, device=tl.device))
    )
    push = (torch.relu(margin - gap) * others).sum((1, 2))
    push = push / (count * (count - 1)).clamp(min=1)
    return pull, push
