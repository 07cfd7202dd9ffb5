"""Positives and negatives from a term's inputs: routed masks, or class-index targets.

A sampler (step 1) and the ``num_pos``/``num_sampled`` normalisers (step 4) need to know
which elements are positives and which negatives. A term routes them as masks
(``inputs.pos_mask``, ``inputs.neg_mask``) or they are read from class-index targets: a label
equal to the background (default: the number of classes of ``pred``) is a negative, any
other valid label a positive, a negative label or ``ignore_index`` neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from lossmix.errors import LossInputError
from lossmix.utilities.checks import describe_value

__all__ = ["class_target", "positives_and_negatives", "relabel_ignored"]


def _num_classes(term: str, pred: Any, target: Tensor) -> int:
    if isinstance(pred, Tensor) and pred.dim() == target.dim() + 1:
        if pred.shape[:-1] == target.shape:
            return pred.shape[-1]
        if pred.shape[0] == target.shape[0] and pred.shape[2:] == target.shape[1:]:
            return pred.shape[1]
    raise LossInputError(
        f"term '{term}': cannot tell the background class from pred {describe_value(pred)} and "
        f"target {describe_value(target)}; set sampler.background to the background label."
    )


def class_target(kwargs: Mapping[str, Any], *, term: str, background: int | None) -> tuple[Tensor, int]:
    """The class-index target (first item of a ``(label, score)`` pair) and its background."""
    target = kwargs.get("target")
    if isinstance(target, (tuple, list)) and target:
        target = target[0]
    if not isinstance(target, Tensor) or target.is_floating_point() or target.dtype == torch.bool:
        raise LossInputError(
            f"term '{term}': the sampler/normaliser needs positives and negatives, but the "
            f"target is not a class-index tensor ({describe_value(target)}). Route explicit masks "
            f"with inputs.pos_mask (and inputs.neg_mask), or drop the sampler."
        )
    return target, background if background is not None else _num_classes(term, kwargs.get("pred"), target)


def positives_and_negatives(
    kwargs: Mapping[str, Any], *, term: str, background: int | None, ignore_index: int | None
) -> tuple[Tensor, Tensor]:
    """Positive and negative element masks, from routed masks or class-index targets (no sync).

    >>> pos, neg = positives_and_negatives(
    ...     {"target": torch.tensor([0, 2, 2, 1, -1])}, term="cls", background=2, ignore_index=None
    ... )
    >>> pos.tolist(), neg.tolist()
    ([True, False, False, True, False], [False, True, True, False, False])
    """
    if "pos_mask" in kwargs:
        pos = kwargs["pos_mask"].bool()
        neg = kwargs["neg_mask"].bool() if "neg_mask" in kwargs else ~pos
        return pos, neg
    target, background = class_target(kwargs, term=term, background=background)
    valid = target >= 0
    if ignore_index is not None:
        valid = valid & (target != ignore_index)
    return valid & (target != background), valid & (target == background)


def relabel_ignored(kwargs: dict[str, Any], counted: Tensor, *, term: str, background: int | None) -> None:
    """Give the elements outside ``counted`` the background label, as detection heads do: the
    sampler's weight is 0 there, and the loss never sees a label outside its classes."""
    target, label = class_target(kwargs, term=term, background=background)
    relabelled = torch.where(counted, target, torch.full_like(target, label))
    original = kwargs["target"]
    kwargs["target"] = (
        type(original)((relabelled, *original[1:])) if isinstance(original, (tuple, list)) else relabelled
    )
