"""V3Det's large-vocabulary classification losses: MMDetection's ``CrossEntropyCustomLoss`` and
``FocalCustomLoss``.

Both are the ordinary losses with a required ``num_classes`` that fixes the classifier's
channels (``get_cls_channels``) and how its scores are read at inference
(``get_activation``); lossmix also checks ``pred``'s channels against it on every call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lossmix.errors import LossConfigError, LossInputError
from lossmix.losses.base import ElementLoss
from lossmix.losses.cross_entropy import CrossEntropyLoss
from lossmix.losses.focal import FocalLoss
from lossmix.registry.registry import LOSSES
from lossmix.utilities.checks import check_int

__all__ = ["CrossEntropyCustomLoss", "FocalCustomLoss"]


def _check_channels(owner: str, pred: Tensor, channels: int, num_classes: int, layout: str) -> None:
    if pred.dim() < 2 or pred.shape[1] != channels:
        raise LossInputError(
            f"{owner}: pred of shape {tuple(pred.shape)} needs {channels} channels in dim 1 for "
            f"num_classes={num_classes} ({layout}); check num_classes or the classifier's outputs."
        )


def _same_classes(owner: str, mine: int, asked: int) -> None:
    if asked != mine:
        raise LossConfigError(f"{owner}: get_cls_channels({asked}) does not match num_classes={mine}.")


@LOSSES.register()
class CrossEntropyCustomLoss(CrossEntropyLoss):
    """:class:`CrossEntropyLoss` for a classifier with custom channels (V3Det).

    Softmax: ``num_classes + 1`` channels, the background last; sigmoid: ``num_classes``.
    Every other argument and every number is :class:`CrossEntropyLoss`'s.

    Args:
        num_classes: the number of (foreground) classes, required.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        use_sigmoid: bool = False,
        use_mask: bool = False,
        class_weight: Sequence[float] | Tensor | None = None,
        ignore_index: int | None = None,
        avg_non_ignore: bool = False,
        label_smoothing: float = 0.0,
        fused: bool | None = None,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(
            use_sigmoid=use_sigmoid,
            use_mask=use_mask,
            class_weight=class_weight,
            ignore_index=ignore_index,
            avg_non_ignore=avg_non_ignore,
            label_smoothing=label_smoothing,
            fused=fused,
            reduction=reduction,
            loss_weight=loss_weight,
        )
        self.num_classes = check_int(self.loss_name, "num_classes", num_classes, min=1)

    def get_cls_channels(self, num_classes: int) -> int:
        """The classifier's channels: ``num_classes + 1`` (softmax) or ``num_classes``."""
        _same_classes(self.loss_name, self.num_classes, num_classes)
        return num_classes if self.use_sigmoid else num_classes + 1

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """Scores ``(N, num_classes + 1)``, the background last: a softmax, or sigmoid class
        scores with ``clamp(1 - Σ, 0, 1)`` as the background."""
        fine = cls_score[:, : self.num_classes]
        if not self.use_sigmoid:
            return torch.cat([fine, cls_score[:, -1:]], dim=-1).softmax(-1)
        scores = fine.sigmoid()
        return torch.cat([scores, (1 - scores.sum(1, keepdim=True)).clamp(min=0, max=1)], dim=1)

    def elementwise(
        self, pred: Tensor, target: Tensor, weight: Tensor | None = None, *, ignore_index: int | None = None
    ) -> ElementLoss:
        if not self.use_mask:
            layout = "sigmoid" if self.use_sigmoid else "softmax, the background last"
            _check_channels(
                self.loss_name, pred, self.get_cls_channels(self.num_classes), self.num_classes, layout
            )
        return super().elementwise(pred, target, weight, ignore_index=ignore_index)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, " + super().extra_repr()


@LOSSES.register()
class FocalCustomLoss(FocalLoss):
    """The sigmoid :class:`FocalLoss` for a classifier with custom channels (V3Det).

    ``pred`` has ``num_classes`` channels; class-index targets use ``num_classes`` as the
    background. ``activated=True`` takes probabilities (MMDetection stores the flag and
    applies the logit version regardless).

    Args:
        num_classes: the number of classes, required.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        use_sigmoid: bool = True,
        gamma: float = 2.0,
        alpha: float = 0.25,
        activated: bool = False,
        fused: bool | None = None,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        if use_sigmoid is not True:
            raise LossConfigError(
                f"FocalCustomLoss: use_sigmoid={use_sigmoid!r} is not supported (only the sigmoid "
                "focal loss, as in MMDetection); use True."
            )
        super().__init__(
            gamma=gamma,
            alpha=alpha,
            activated=activated,
            fused=fused,
            reduction=reduction,
            loss_weight=loss_weight,
        )
        self.num_classes = check_int(self.loss_name, "num_classes", num_classes, min=1)

    def get_cls_channels(self, num_classes: int) -> int:
        """The classifier's channels: ``num_classes``."""
        _same_classes(self.loss_name, self.num_classes, num_classes)
        return num_classes

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """Sigmoid scores of the ``num_classes`` classes."""
        return cls_score[:, : self.num_classes].sigmoid()

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_channels(self.loss_name, pred, self.num_classes, self.num_classes, "sigmoid")
        return super().elementwise(pred, target)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, " + super().extra_repr()
