"""Focal-family losses: thin modules over :mod:`lossmix.functional.focal`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

from torch import Tensor

from lossmix.errors import LossConfigError, LossInputError
from lossmix.functional import focal as F
from lossmix.functional.cross_entropy import one_hot_targets
from lossmix.functional.fused import fused_applies, fused_sigmoid_focal_loss
from lossmix.losses.base import BaseLoss
from lossmix.losses.class_balance import ClassCountsMixin, ClassWeightSpec, class_weight_argument
from lossmix.losses.cross_entropy import IGNORE_INDEX
from lossmix.registry.registry import LOSSES
from lossmix.utilities.checks import (
    check_bool,
    check_class_indices,
    check_fused,
    check_index_or_dense_target,
    check_positive,
    check_same_shape,
    is_number,
)

__all__ = ["DistributionFocalLoss", "FocalLoss", "QualityFocalLoss", "VarifocalLoss"]


def _check_sigmoid_only(owner: str, use_sigmoid: bool) -> None:
    if not use_sigmoid:
        raise LossConfigError(
            f"{owner}: use_sigmoid=False is not supported (MMDetection has only the sigmoid "
            "version); use use_sigmoid=True."
        )


@LOSSES.register()
class FocalLoss(ClassCountsMixin, BaseLoss):
    """Focal loss: sigmoid (RetinaNet, MMDetection's ``FocalLoss``) or softmax.

    * ``use_sigmoid=True`` (default): :func:`lossmix.functional.sigmoid_focal_loss` per
      class. ``target`` is class indices ``(N,)`` with background ``C = pred.size(1)``
      (an all-negative row), or a float target shaped like ``pred`` (one-hot or soft).
      ``activated=True`` takes probabilities instead of logits.
    * ``use_sigmoid=False``: :func:`lossmix.functional.softmax_focal_loss` per row, with
      class indices in ``[0, C)``; rows labelled ``ignore_index`` (when set) give 0 and
      still count in the mean. ``alpha`` may then be a per-class list of ``C`` numbers,
      or a class-weight spec from class counts (a class-balanced focal loss, Cui et al.
      2019; see :mod:`lossmix.losses.class_balance`).

    ``alpha=None`` or a negative number (torchvision's ``-1``) disables the balancing
    factor. ``'mean'`` without ``avg_factor`` divides by all elements (N·C for the
    sigmoid version); detection heads pass ``avg_factor = num_pos``. A weight ``(N,)``
    applies per row; a weight with N·C elements in another shape is reshaped to
    ``(N, C)`` (MMDetection's FSAF per-class weights).

    ``fused`` (sigmoid on logits only): ``True`` takes
    :func:`lossmix.functional.fused_sigmoid_focal_loss` (loss and gradient in one forward
    pass, the same numbers); ``None`` (automatic) takes it where
    :func:`lossmix.functional.fused_applies` says it is exact and was measured faster (on CPU
    in float32 with a gradient, from 16K logits: 0.85× the plain step's time and 0.45× its
    peak memory at 1M logits, 0.65× and 0.30× at 8M, ``benchmarks/RESULTS.md``); ``False`` never.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, C) float logits (probabilities with activated=True)",
        "target": (
            "(N,) int64 class indices, C = background (sigmoid) or in [0, C) (softmax); "
            "or (N, C) float one-hot/soft"
        ),
        "weight": "(N,) per row, or N·C elements per class (reshaped to (N, C))",
        "returns": "(N, C) (sigmoid) or (N,) (softmax)",
    }

    reshape_weight_by_numel = True
    class_alpha: Tensor | None

    def __init__(
        self,
        *,
        use_sigmoid: bool = True,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | Tensor | Mapping[str, Any] | None = 0.25,
        activated: bool = False,
        ignore_index: int | None = None,
        fused: bool | None = None,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = self.loss_name
        self.use_sigmoid = check_bool(name, "use_sigmoid", use_sigmoid)
        self.activated = check_bool(name, "activated", activated)
        self.gamma = check_positive(name, "gamma", gamma, allow_zero=True)
        if self.activated and not self.use_sigmoid:
            raise LossConfigError(
                f"{name}: activated=True needs use_sigmoid=True (it means pred holds sigmoid probabilities)."
            )
        self.fused = check_fused(name, fused)
        if self.fused and (self.activated or not self.use_sigmoid):
            raise LossConfigError(
                f"{name}: fused=True needs use_sigmoid=True and activated=False (the fused kernel is "
                "the sigmoid focal loss on logits); use fused=None or False here."
            )
        if ignore_index is not None and (
            self.use_sigmoid or isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
        ):
            raise LossConfigError(
                f"{name}: ignore_index={ignore_index!r} is not valid; it must be an int and is "
                "used only with use_sigmoid=False (sigmoid targets mark background with C)."
            )
        self.ignore_index = ignore_index
        self.alpha: float | None = None
        per_class: Tensor | None = None
        spec: ClassWeightSpec | None = None
        if alpha is None or is_number(alpha):
            value = None if alpha is None else float(cast(float, alpha))
            if value is not None and value > 1:
                raise LossConfigError(
                    f"{name}: alpha={alpha!r} is not valid; use a number in "
                    "[0, 1], or None / a negative number for no balancing."
                )
            self.alpha = None if value is None or value < 0 else value
        elif self.use_sigmoid:
            raise LossConfigError(
                f"{name}: alpha={alpha!r} is not valid; the sigmoid focal loss "
                "takes one number in [0, 1], or None / a negative number."
            )
        else:
            per_class, spec = class_weight_argument(
                name, "alpha", cast("Sequence[float] | Tensor | Mapping[str, Any]", alpha)
            )
        self.register_class_buffer("class_alpha", per_class, None if spec is None else spec.weights)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        if self.use_sigmoid:
            dense = check_index_or_dense_target(self.loss_name, pred, target)
            if not self.activated and fused_applies(self.fused, "sigmoid_focal_loss", pred, target):
                return fused_sigmoid_focal_loss(pred, target, gamma=self.gamma, alpha=self.alpha)
            if dense:
                target = target.to(pred.dtype)
            else:
                target = one_hot_targets(target, pred.size(1), dtype=pred.dtype)
            return F.sigmoid_focal_loss(
                pred, target, gamma=self.gamma, alpha=self.alpha, activated=self.activated
            )
        expected = (pred.shape[0], *pred.shape[2:])
        if pred.dim() < 2 or target.is_floating_point() or tuple(target.shape) != expected:
            raise LossInputError(
                f"{self.loss_name}: softmax focal needs pred (N, C, *) and class indices "
                f"(integer) of shape (N, *); got pred {tuple(pred.shape)} and target "
                f"{tuple(target.shape)} of dtype {target.dtype}."
            )
        ignore = IGNORE_INDEX if self.ignore_index is None else self.ignore_index
        check_class_indices(self.loss_name, target, pred.size(1), ignore_index=self.ignore_index)
        alpha: float | Tensor | None = self.alpha
        class_alpha = self.class_buffer("class_alpha", pred.size(1), label="alpha")
        if class_alpha is not None:
            alpha = class_alpha
        return F.softmax_focal_loss(pred, target, gamma=self.gamma, alpha=alpha, ignore_index=ignore)

    def extra_repr(self) -> str:
        alpha = self.alpha if self.class_alpha is None else self.class_alpha.tolist()
        return f"use_sigmoid={self.use_sigmoid}, gamma={self.gamma}, alpha={alpha}, " + super().extra_repr()


@LOSSES.register()
class VarifocalLoss(BaseLoss):
    """Varifocal loss (VarifocalNet), see :func:`lossmix.functional.varifocal_loss`.

    Shapes: ``pred``, ``target`` (IoU-aware scores, 0 for negatives): ``(N, C)``.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, C) float logits",
        "target": "(N, C) float IoU-aware scores, 0 for negatives",
        "weight": "(N,) per row or (N, C)",
        "returns": "(N, C)",
    }

    def __init__(
        self,
        *,
        use_sigmoid: bool = True,
        alpha: float = 0.75,
        gamma: float = 2.0,
        iou_weighted: bool = True,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        _check_sigmoid_only(self.loss_name, use_sigmoid)
        self.use_sigmoid = True
        self.alpha = check_positive(self.loss_name, "alpha", alpha, allow_zero=True)
        self.gamma = check_positive(self.loss_name, "gamma", gamma, allow_zero=True)
        self.iou_weighted = check_bool(self.loss_name, "iou_weighted", iou_weighted)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        check_same_shape(self.loss_name, pred, target)
        return F.varifocal_loss(
            pred, target, alpha=self.alpha, gamma=self.gamma, iou_weighted=self.iou_weighted
        )


@LOSSES.register()
class QualityFocalLoss(BaseLoss):
    """Quality focal loss (GFL), see :func:`lossmix.functional.quality_focal_loss`, summed
    over classes: one value per row.

    ``target`` is MMDetection's ``(label, score)``: class indices ``(N,)`` with background
    ``C = pred.size(1)`` and quality scores ``(N,)``; or a dense float target shaped like
    ``pred`` (MMDetection v3). ``activated=True`` takes probabilities instead of logits.

    Shapes: ``pred``: ``(N, C)``; returns ``(N,)`` with ``'none'``; ``weight``: ``(N,)``.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, C) float logits (probabilities with activated=True)",
        "target": "(labels (N,) int64, C = background; scores (N,) float), or (N, C) float dense scores",
        "weight": "(N,) float per row",
        "returns": "(N,), one per row",
    }

    def __init__(
        self,
        *,
        use_sigmoid: bool = True,
        beta: float = 2.0,
        activated: bool = False,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        _check_sigmoid_only(self.loss_name, use_sigmoid)
        self.use_sigmoid = True
        self.beta = check_positive(self.loss_name, "beta", beta, allow_zero=True)
        self.activated = check_bool(self.loss_name, "activated", activated)

    def dense_target(self, pred: Tensor, target: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        """The ``(N, C)`` soft target from ``(label, score)`` or a dense tensor."""
        if pred.dim() != 2:
            raise LossInputError(f"{self.loss_name}: pred of shape {tuple(pred.shape)} must be (N, C).")
        if isinstance(target, Tensor):
            check_same_shape(self.loss_name, pred, target)
            return target
        if not isinstance(target, (tuple, list)) or len(target) != 2:
            raise LossInputError(
                f"{self.loss_name}: target must be (label, score) or a tensor "
                f"shaped like pred; got {type(target).__name__}."
            )
        label, score = target
        if label.shape != pred.shape[:1] or score.shape != pred.shape[:1]:
            raise LossInputError(
                f"{self.loss_name}: pred of shape {tuple(pred.shape)} needs label and score of "
                f"shape {tuple(pred.shape[:1])}; got {tuple(label.shape)} and {tuple(score.shape)}."
            )
        check_class_indices(self.loss_name, label, pred.size(1), background_ok=True)
        onehot = one_hot_targets(label, pred.size(1), dtype=pred.dtype)
        return onehot * score.to(pred.dtype).unsqueeze(1)

    def elementwise(self, pred: Tensor, target: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        dense = self.dense_target(pred, target)
        return F.quality_focal_loss(pred, dense, beta=self.beta, activated=self.activated).sum(1)


@LOSSES.register()
class DistributionFocalLoss(BaseLoss):
    """Distribution focal loss (GFL), see :func:`lossmix.functional.distribution_focal_loss`.

    Targets outside ``[0, n]`` are clamped to it (MMDetection would index out of range
    at ``n``; GFL heads clamp to ``n - 0.01``).

    Shapes: ``pred``: ``(N, n + 1)`` logits; ``target``: ``(N,)`` floats; returns ``(N,)``.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, n + 1) float logits over the n + 1 bins",
        "target": "(N,) float distances in [0, n]",
        "weight": "(N,) float",
        "returns": "(N,)",
    }

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.dim() != 2 or target.shape != pred.shape[:1]:
            raise LossInputError(
                f"{self.loss_name}: pred must be (N, n + 1) and target (N,) in [0, n]; got pred of "
                f"shape {tuple(pred.shape)} and target of shape {tuple(target.shape)}."
            )
        return F.distribution_focal_loss(pred, target)
