"""Perceptual-loss kernels with MMagic's numbers: per-sample feature distances and Gram
matrices (the kernels of :mod:`lossmix.losses.perceptual`).

Features are ``(N, C, H, W)``. Pure tensor code, no host sync, compiles with
``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

from torch import Tensor

from lossmix.errors import LossConfigError, did_you_mean

__all__ = ["CRITERIA", "check_criterion", "feature_distance", "gram_matrix"]

CRITERIA: tuple[str, ...] = ("l1", "mse")


def check_criterion(criterion: object, *, owner: str = "feature_distance") -> str:
    """``criterion`` lower-cased if it is ``'l1'`` or ``'mse'`` (MMagic's options), else raise."""
    lowered = criterion.lower() if isinstance(criterion, str) else criterion
    if lowered not in CRITERIA:
        raise LossConfigError(
            f"{owner}: criterion={criterion!r} is not valid; use one of {list(CRITERIA)}."
            f"{did_you_mean(str(criterion), CRITERIA)}"
        )
    checked: str = lowered  # one of CRITERIA, so a str
    return checked


def feature_distance(pred: Tensor, target: Tensor, *, criterion: str = "l1") -> Tensor:
    r"""Per-sample mean distance of two feature maps: :math:`\frac{1}{CHW}\sum |a - b|` (``'l1'``)
    or :math:`\frac{1}{CHW}\sum (a - b)^2` (``'mse'``).

    Its mean over ``N`` is ``torch.nn.L1Loss()`` / ``MSELoss()`` of the whole tensors, the
    criterion MMagic's feature losses use.

    Shapes: ``pred``, ``target``: ``(N, *)``; returns ``(N,)``.

    >>> import torch
    >>> feature_distance(torch.ones(2, 3), torch.zeros(2, 3), criterion="mse")
    tensor([1., 1.])
    """
    diff = pred - target
    elems = diff.abs() if criterion == "l1" else diff * diff
    return elems.flatten(1).mean(1)


def gram_matrix(features: Tensor) -> Tensor:
    r"""The Gram matrix of style losses: :math:`G = F F^\top / (C H W)` with
    :math:`F` the ``(N, C, HW)`` features.

    Shapes: ``(N, C, H, W)``; returns ``(N, C, C)``.

    >>> import torch
    >>> gram_matrix(torch.ones(1, 2, 2, 2))
    tensor([[[0.5000, 0.5000],
             [0.5000, 0.5000]]])
    """
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)
