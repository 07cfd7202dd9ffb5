"""Losses for imbalanced data beyond MMDetection: LDAM, logit adjustment and the asymmetric loss.

* :class:`LDAMLoss` (Cao et al., NeurIPS 2019) and :class:`LogitAdjustedLoss` (Menon et
  al., ICLR 2021) take the class counts (``class_counts``: a list, or ``datamodule``);
* :class:`AsymmetricLoss` (Ridnik et al., ICCV 2021) is a multi-label sigmoid loss.

The Lovász losses, for imbalanced segmentation, are in :mod:`lossmix.losses.lovasz`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch.nn.functional as TF
from torch import Tensor

from lossmix.errors import LossConfigError, LossInputError
from lossmix.functional import class_balance as FB
from lossmix.functional import imbalanced as FA
from lossmix.losses.base import BaseLoss
from lossmix.losses.class_balance import (
    DATAMODULE,
    ClassCountsMixin,
    check_class_counts,
    class_weight_argument,
    prior_log,
)
from lossmix.registry.registry import LOSSES
from lossmix.utilities.checks import (
    check_class_indices,
    check_float,
    check_optional_int,
    check_positive,
    check_same_shape,
)

__all__ = ["AsymmetricLoss", "LDAMLoss", "LogitAdjustedLoss"]

_IGNORE = -100


class _CountsLoss(ClassCountsMixin, BaseLoss):
    """A softmax cross-entropy on logits adjusted by the class counts (not registered)."""

    def register_counts(
        self, name: str, counts: Sequence[float] | Tensor | str, compute: Callable[[Tensor], Tensor]
    ) -> None:
        """Buffer ``name`` from ``counts`` now, or when the datamodule's arrive."""
        if isinstance(counts, str):
            if counts != DATAMODULE:
                raise LossConfigError(
                    f"{self.loss_name}: class_counts={counts!r} is not valid; give one count per class "
                    "or 'datamodule'."
                )
            self.register_class_buffer(name, None, compute)
            return
        self.register_class_buffer(name, compute(check_class_counts(self.loss_name, "class_counts", counts)))

    def check_indices(self, pred: Tensor, target: Tensor, ignore_index: int | None) -> None:
        expected = (pred.shape[0], *pred.shape[2:])
        if pred.dim() < 2 or target.is_floating_point() or tuple(target.shape) != expected:
            raise LossInputError(
                f"{self.loss_name}: needs pred (N, C, *) logits and class indices (N, *); got pred "
                f"{tuple(pred.shape)} and target {tuple(target.shape)} of dtype {target.dtype}."
            )
        check_class_indices(self.loss_name, target, pred.shape[1], ignore_index=ignore_index)


@LOSSES.register()
class LDAMLoss(_CountsLoss):
    """Label-distribution-aware margin loss, see :func:`lossmix.functional.ldam_logits`.

    The margins :math:`\\Delta_c \\propto n_c^{-1/4}` (:func:`lossmix.functional.ldam_margins`,
    the largest ``max_m``) come from ``class_counts``; the loss is
    ``CrossEntropyLoss`` semantics on the scaled, shifted logits: ``class_weight`` (a
    list or a class-weight spec, e.g. the paper's deferred re-weighting with
    ``{method: effective_number, beta: 0.9999, counts: ...}``) weights row ``i`` by
    :math:`w_{y_i}`, and rows labelled ``ignore_index`` give 0.

    Args:
        class_counts: samples per class (each > 0), or ``'datamodule'``.
        max_m: the largest margin (> 0). s: the logit scale (> 0; 30 in the paper, for
            normalised logits).
        class_weight: optional per-class weights or a class-weight spec.
        ignore_index: a label to skip.

    Shapes: ``pred`` ``(N, C, *)``; ``target`` ``(N, *)``; returns ``(N, *)``.
    """

    fixed_params = ("max_m",)  # the margins are computed from it once, with the class counts

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, C, *) float logits, C = len(class_counts)",
        "target": "(N, *) int64 class indices in [0, C), or ignore_index",
        "weight": "(N, *) float, target's shape or broadcastable to it",
        "returns": "(N, *), class_weight[target] times the cross-entropy, 0 at ignore_index",
    }

    margins: Tensor | None
    class_weight: Tensor | None

    def __init__(
        self,
        *,
        class_counts: Sequence[float] | Tensor | str,
        max_m: float = 0.5,
        s: float = 30.0,
        class_weight: Sequence[float] | Tensor | Mapping[str, Any] | None = None,
        ignore_index: int | None = None,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = self.loss_name
        self.max_m = check_positive(name, "max_m", max_m)
        self.s = check_positive(name, "s", s)
        self.ignore_index = check_optional_int(name, "ignore_index", ignore_index)
        self.register_counts("margins", class_counts, lambda n: FB.ldam_margins(n, max_m=self.max_m))
        vector, spec = class_weight_argument(name, "class_weight", class_weight)
        self.register_class_buffer("class_weight", vector, None if spec is None else spec.weights)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        self.check_indices(pred, target, self.ignore_index)
        margins = self.class_buffer("margins", pred.shape[1], label="class_counts")
        weight = self.class_buffer("class_weight", pred.shape[1])
        assert margins is not None  # registered from counts, so set once class_buffer passes
        logits = FB.ldam_logits(pred, target, margins.to(pred.device), scale=self.s)
        ignore = _IGNORE if self.ignore_index is None else self.ignore_index
        weight = None if weight is None else weight.to(pred.device, pred.dtype)
        return TF.cross_entropy(logits, target.long(), weight=weight, ignore_index=ignore, reduction="none")

    def extra_repr(self) -> str:
        return f"max_m={self.max_m}, s={self.s}, " + super().extra_repr()


@LOSSES.register()
class LogitAdjustedLoss(_CountsLoss):
    """Logit-adjusted softmax cross-entropy, see :func:`lossmix.functional.logit_adjusted_logits`.

    The class priors :math:`\\pi_c = n_c / \\sum_k n_k` come from ``class_counts``; training
    on :math:`z + \\tau \\log \\pi` makes the plain argmax of ``z`` balanced at test time.

    Args:
        class_counts: samples per class (each > 0), or ``'datamodule'``.
        tau: the adjustment's temperature (>= 0; 1 in the paper).
        ignore_index: a label to skip.

    Shapes: ``pred`` ``(N, C, *)``; ``target`` ``(N, *)``; returns ``(N, *)``.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, C, *) float logits, C = len(class_counts)",
        "target": "(N, *) int64 class indices in [0, C), or ignore_index",
        "weight": "(N, *) float, target's shape or broadcastable to it",
        "returns": "(N, *), the cross-entropy of the adjusted logits, 0 at ignore_index",
    }

    log_prior: Tensor | None

    def __init__(
        self,
        *,
        class_counts: Sequence[float] | Tensor | str,
        tau: float = 1.0,
        ignore_index: int | None = None,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.tau = check_positive(self.loss_name, "tau", tau, allow_zero=True)
        self.ignore_index = check_optional_int(self.loss_name, "ignore_index", ignore_index)
        self.register_counts("log_prior", class_counts, prior_log)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        self.check_indices(pred, target, self.ignore_index)
        log_prior = self.class_buffer("log_prior", pred.shape[1], label="class_counts")
        assert log_prior is not None  # registered from counts, so set once class_buffer passes
        logits = FB.logit_adjusted_logits(pred, log_prior.to(pred.device), tau=self.tau)
        ignore = _IGNORE if self.ignore_index is None else self.ignore_index
        return TF.cross_entropy(logits, target.long(), ignore_index=ignore, reduction="none")

    def extra_repr(self) -> str:
        return f"tau={self.tau}, " + super().extra_repr()


@LOSSES.register()
class AsymmetricLoss(BaseLoss):
    """Asymmetric loss for multi-label classification, see :func:`lossmix.functional.asymmetric_loss`.

    The authors' implementation returns the sum over every element: ``reduction='sum'``.

    Args:
        gamma_pos, gamma_neg: focusing exponents of positives and negatives (>= 0).
        clip: the probability margin of negatives, in ``[0, 1)``. eps: the log's clamp.

    Shapes: ``pred`` (logits), ``target`` (0/1 or soft): ``(N, C)``.
    """

    def __init__(
        self,
        *,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        clip: float = 0.05,
        eps: float = 1e-8,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = self.loss_name
        self.gamma_pos = check_positive(name, "gamma_pos", gamma_pos, allow_zero=True)
        self.gamma_neg = check_positive(name, "gamma_neg", gamma_neg, allow_zero=True)
        self.clip = check_float(name, "clip", clip, low=0.0, high=1.0, high_open=True)
        self.eps = check_positive(name, "eps", eps)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        check_same_shape(self.loss_name, pred, target)
        return FA.asymmetric_loss(
            pred, target, gamma_pos=self.gamma_pos, gamma_neg=self.gamma_neg, clip=self.clip, eps=self.eps
        )

    def extra_repr(self) -> str:
        return (
            f"gamma_pos={self.gamma_pos}, gamma_neg={self.gamma_neg}, clip={self.clip}, "
            + super().extra_repr()
        )
