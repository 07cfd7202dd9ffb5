"""Long-tailed detection losses: MMDetection's ``SeesawLoss`` and ``EQLV2Loss`` (LVIS).

Both keep class statistics across steps in buffers (so they are checkpointed), updated
under ``no_grad`` on calls in training mode with gradients enabled; evaluation calls and
the engine's gradient-free scoring passes (OHEM, learning a term's parts) read them
without changing them.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as TF
from torch import Tensor

from lossmix.errors import LossConfigError, LossInputError
from lossmix.functional import long_tail as F
from lossmix.losses.base import BaseLoss, ElementLoss
from lossmix.reduction import apply_weight
from lossmix.registry.registry import LOSSES
from lossmix.utilities.checks import check_bool, check_class_indices, check_float, check_int, check_positive
from lossmix.utilities.distributed import all_reduce_sum

__all__ = ["EQLV2Loss", "SeesawLoss"]


def _sigmoid_only(owner: str, use_sigmoid: object, wanted: bool) -> None:
    if use_sigmoid is not wanted:
        raise LossConfigError(
            f"{owner}: use_sigmoid={use_sigmoid!r} is not supported (MMDetection's {owner} is "
            f"{'sigmoid' if wanted else 'softmax'} only); use use_sigmoid={wanted}."
        )


@LOSSES.register()
class SeesawLoss(BaseLoss):
    """Seesaw loss for long-tailed instance segmentation, see :func:`lossmix.functional.seesaw_logits`.

    ``pred`` has ``num_classes + 2`` channels: the class logits, then two objectness
    logits (foreground, background). With labels in ``[0, num_classes]`` (the last is the
    background) the loss returns MMDetection's two sub-terms:

    * ``loss_cls_objectness``: softmax cross-entropy of the objectness logits against
      ``label == num_classes``, over every row;
    * ``loss_cls_classes``: Seesaw cross-entropy of the class logits over the foreground
      rows; ``'mean'`` without ``avg_factor`` divides by their number (MMDetection's mean
      over the selected rows; 0 without any), ``'none'`` gives 0 at the other rows.

    ``return_dict=False`` returns their sum. The cumulative class counts ``cum_samples``
    (``num_classes + 1``, a buffer) grow by the labels of every training call before the
    loss is computed, as in MMDetection. ``weight`` (MMDetection's ``label_weights``) is
    one per row.

    Args:
        num_classes: the number of classes, required (MMDetection defaults to LVIS's 1203).
        p: mitigation exponent (>= 0). q: compensation exponent (>= 0).
        eps: least own-class probability in the compensation ratio (> 0).
        return_dict: the two sub-terms (True) or their sum.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": (
            "(N, num_classes + 2) float logits: num_classes class logits, then the foreground and "
            "background objectness logits"
        ),
        "target": "(N,) int64 labels in [0, num_classes] (num_classes = background)",
        "weight": "(N,) float, one per row (MMDetection's label_weights)",
        "returns": (
            "{'loss_cls_objectness': (N,), 'loss_cls_classes': (N,) (0 at background rows)}; "
            "their sum (N,) with return_dict=False"
        ),
    }

    cum_samples: Tensor
    weight_aliases: ClassVar[tuple[str, ...]] = ("label_weights",)

    def __init__(
        self,
        *,
        num_classes: int,
        use_sigmoid: bool = False,
        p: float = 0.8,
        q: float = 2.0,
        eps: float = 1e-2,
        return_dict: bool = True,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = self.loss_name
        _sigmoid_only(name, use_sigmoid, False)
        self.use_sigmoid = False
        self.num_classes = check_int(name, "num_classes", num_classes, min=1)
        self.p = check_positive(name, "p", p, allow_zero=True)
        self.q = check_positive(name, "q", q, allow_zero=True)
        self.eps = check_positive(name, "eps", eps)
        self.return_dict = check_bool(name, "return_dict", return_dict)
        self.part_names = ("loss_cls_objectness", "loss_cls_classes") if self.return_dict else ("",)
        self.register_buffer("cum_samples", torch.zeros(self.num_classes + 1))

    def get_cls_channels(self, num_classes: int) -> int:
        """The classifier's channels: ``num_classes + 2``."""
        if num_classes != self.num_classes:
            raise LossConfigError(f"{self.loss_name}: get_cls_channels({num_classes}) != num_classes.")
        return num_classes + 2

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """Scores ``(N, num_classes + 1)``: class softmax × foreground objectness, then background."""
        classes = cls_score[..., : self.num_classes].softmax(-1)
        objectness = cls_score[..., self.num_classes :].softmax(-1)
        return torch.cat([classes * objectness[..., :1], objectness[..., 1:]], dim=-1)

    def elementwise(
        self, pred: Tensor, target: Tensor, weight: Tensor | None = None
    ) -> dict[str, ElementLoss] | ElementLoss:
        """Both sub-terms per row, with their means (see the class docs)."""
        c = self.num_classes
        if pred.dim() != 2 or pred.shape[1] != c + 2 or target.shape != pred.shape[:1]:
            raise LossInputError(
                f"{self.loss_name}: needs pred (N, num_classes + 2) = (N, {c + 2}) and labels (N,); "
                f"got pred {tuple(pred.shape)} and labels {tuple(target.shape)}."
            )
        check_class_indices(self.loss_name, target, c, background_ok=True)
        labels = target.long()
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                self.cum_samples.index_add_(0, labels, torch.ones_like(labels, dtype=self.cum_samples.dtype))
        fg = labels < c
        classes = F.seesaw_cross_entropy(
            pred[:, :c], torch.where(fg, labels, 0), self.cum_samples[:c], p=self.p, q=self.q, eps=self.eps
        )
        classes = torch.where(fg, classes, 0.0)
        objectness = TF.cross_entropy(pred[:, c:], (labels == c).long(), reduction="none")
        prepared = None if weight is None else self.prepare_weight(weight, objectness)
        classes_mean = apply_weight(classes, prepared).sum() / fg.sum().clamp(min=1)
        objectness_mean = apply_weight(objectness, prepared).mean()
        if not self.return_dict:
            return ElementLoss(classes + objectness, prepared, mean=classes_mean + objectness_mean)
        return {
            "loss_cls_objectness": ElementLoss(objectness, prepared, mean=objectness_mean),
            "loss_cls_classes": ElementLoss(classes, prepared, mean=classes_mean),
        }

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, p={self.p}, q={self.q}, eps={self.eps}, " + super().extra_repr()
        )


@LOSSES.register()
class EQLV2Loss(BaseLoss):
    """Equalization loss v2, see :func:`lossmix.functional.eqlv2_weights`.

    ``pred`` has ``num_classes + 1`` sigmoid logits, the last an objectness (background)
    logit; labels lie in ``[0, num_classes]``. Each element's BCE is weighted by the
    class weights of its row's target (positive or negative) from the accumulated
    gradient ratio, and summed over the classes: the loss is one value per row, so
    ``'mean'`` is MMDetection's ``Σ / N``. After each training call the gradient
    magnitudes of the call are added to ``pos_grad`` / ``neg_grad`` (buffers, summed over
    ranks first with ``use_distributed``) and ``pos_neg = pos_grad / (neg_grad + 1e-10)``.

    MMDetection ignores ``weight``, ``avg_factor`` and the reduction; here they apply as
    for any loss (with none of them the numbers are MMDetection's), and a zero-weight row
    adds no gradient statistics. ``class_weight`` must stay None (MMDetection stores it
    and never uses it); ``vis_grad`` is accepted for MMDetection's configs and draws
    nothing, as there.

    Args:
        num_classes: the number of classes (MMDetection's default: LVIS v1's 1203).
        mu, gamma: centre and slope of the mapping of the gradient ratio. alpha: the
            positive weight's gain. test_with_obj: scale the class scores of
            :meth:`get_activation` by ``1 - objectness``.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, num_classes + 1) float sigmoid logits, the last the objectness (background) logit",
        "target": "(N,) int64 labels in [0, num_classes] (num_classes = background)",
        "weight": "(N,) float, one per row (a zero-weight row adds no gradient statistics)",
        "returns": "(N,), the weighted BCE summed over the num_classes + 1 logits",
    }

    pos_grad: Tensor
    neg_grad: Tensor
    pos_neg: Tensor

    def __init__(
        self,
        *,
        num_classes: int = 1203,
        use_sigmoid: bool = True,
        class_weight: None = None,
        use_distributed: bool = False,
        mu: float = 0.8,
        alpha: float = 4.0,
        gamma: float = 12.0,
        vis_grad: bool = False,
        test_with_obj: bool = True,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = self.loss_name
        _sigmoid_only(name, use_sigmoid, True)
        if class_weight is not None:
            raise LossConfigError(
                f"{name}: class_weight={class_weight!r} has no effect on EQL v2 (MMDetection stores it "
                "and never uses it); drop it."
            )
        self.use_sigmoid = True
        self.num_classes = check_int(name, "num_classes", num_classes, min=1)
        self.use_distributed = check_bool(name, "use_distributed", use_distributed)
        self.mu = check_float(name, "mu", mu)
        self.alpha = check_float(name, "alpha", alpha)
        self.gamma = check_float(name, "gamma", gamma)
        self.vis_grad = check_bool(name, "vis_grad", vis_grad)
        self.test_with_obj = check_bool(name, "test_with_obj", test_with_obj)
        self.register_buffer("pos_grad", torch.zeros(self.num_classes))
        self.register_buffer("neg_grad", torch.zeros(self.num_classes))
        # a high initial ratio makes both weights 1 at the start (MMDetection's 100)
        self.register_buffer("pos_neg", torch.full((self.num_classes,), 100.0))

    def get_channel_num(self, num_classes: int) -> int:
        """The classifier's channels: ``num_classes + 1``."""
        return num_classes + 1

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """Sigmoid scores, the classes times ``1 - objectness`` when ``test_with_obj``."""
        scores = torch.sigmoid(cls_score)
        if not self.test_with_obj:
            return scores
        return torch.cat([scores[:, :-1] * (1 - scores[:, -1:]), scores[:, -1:]], dim=1)

    def elementwise(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> ElementLoss:
        """Per row, the sum over the classes of the EQL v2-weighted BCE."""
        c = self.num_classes
        if pred.dim() != 2 or pred.shape[1] != c + 1 or target.shape != pred.shape[:1]:
            raise LossInputError(
                f"{self.loss_name}: needs pred (N, num_classes + 1) = (N, {c + 1}) and labels (N,); "
                f"got pred {tuple(pred.shape)} and labels {tuple(target.shape)}."
            )
        check_class_indices(self.loss_name, target, c + 1)
        onehot = TF.one_hot(target.long(), c + 1).to(pred.dtype)
        pos_w, neg_w = F.eqlv2_weights(
            self.pos_neg.to(pred.dtype), mu=self.mu, gamma=self.gamma, alpha=self.alpha
        )
        element_weight = pos_w * onehot + neg_w * (1 - onehot)
        loss = (TF.binary_cross_entropy_with_logits(pred, onehot, reduction="none") * element_weight).sum(1)
        prepared = None if weight is None else self.prepare_weight(weight, loss)
        if self.training and torch.is_grad_enabled():
            rows = element_weight if prepared is None else element_weight * prepared.unsqueeze(-1)
            self._collect(pred, onehot, rows)
        return ElementLoss(loss, prepared)

    def _collect(self, pred: Tensor, onehot: Tensor, weight: Tensor) -> None:
        pos, neg = F.eqlv2_gradients(pred, onehot, weight)
        with torch.no_grad():
            if self.use_distributed:
                pos, neg = all_reduce_sum(torch.stack([pos, neg])).unbind()
            self.pos_grad += pos.to(self.pos_grad.dtype)
            self.neg_grad += neg.to(self.neg_grad.dtype)
            self.pos_neg.copy_(self.pos_grad / (self.neg_grad + 1e-10))

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, mu={self.mu}, alpha={self.alpha}, gamma={self.gamma}, "
            + super().extra_repr()
        )
