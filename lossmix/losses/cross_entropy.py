"""MMDetection's ``CrossEntropyLoss`` over :mod:`lossmix.functional.cross_entropy`."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from torch import Tensor
from torch._C._functorch import is_functorch_wrapped_tensor
from torch.compiler import is_compiling

from lossmix.errors import LossConfigError, LossInputError
from lossmix.functional.cross_entropy import (
    cross_entropy,
    mask_cross_entropy,
    one_hot_targets,
    sigmoid_cross_entropy,
)
from lossmix.functional.fused import fused_applies, fused_cross_entropy
from lossmix.losses.base import BaseLoss, ElementLoss
from lossmix.losses.class_balance import ClassCountsMixin, class_weight_argument
from lossmix.reduction import AvgFactor
from lossmix.registry.registry import LOSSES
from lossmix.utilities.checks import (
    check_bool,
    check_class_indices,
    check_float,
    check_fused,
    check_optional_int,
    check_same_shape,
)
from lossmix.utilities.torch_kernels import binary_cross_entropy_with_logits
from lossmix.utilities.torch_kernels import cross_entropy as torch_cross_entropy

__all__ = ["CrossEntropyLoss"]

IGNORE_INDEX = -100  # torch's and MMDetection's default when ignore_index is None
#: an ignore index no class label can have (int64's least value): torch's kernel refuses every
#: label outside ``[0, C)`` under it
NO_LABEL = -(2**63)
#: the settings :meth:`CrossEntropyLoss.reduced` depends on: setting one plans it again
_REDUCED_FIELDS = frozenset(
    {"use_mask", "use_sigmoid", "avg_non_ignore", "fused", "ignore_index", "label_smoothing", "class_weight"}
)


@LOSSES.register()
class CrossEntropyLoss(ClassCountsMixin, BaseLoss):
    """Softmax, sigmoid or mask cross-entropy with MMDetection's arguments and normalisation.

    * **softmax** (default): :func:`lossmix.functional.cross_entropy`, one value per
      row. ``class_weight`` weights row ``i`` by ``w[y_i]``; ``'mean'`` still divides
      by the number of rows (MMDetection's rule, unlike torch's division by
      :math:`\\sum_i w_{y_i}`: pass ``avg_factor = class_weight[target].sum()`` for
      torch's value). Ignored rows give 0 but count in the mean, unless
      ``avg_non_ignore=True``, which (for ``'mean'`` without ``avg_factor``) divides
      by the number of non-ignored target elements, as MMDetection counts them: rows
      for index targets, rows × C for a float target shaped like ``pred`` (class
      probabilities).
    * **sigmoid** (``use_sigmoid=True``): :func:`lossmix.functional.sigmoid_cross_entropy`,
      one value per class. Index targets ``(N,)`` become one-hot rows, the label
      ``C = pred.size(1)`` an all-negative (background) row. Elements with
      ``target < 0`` or ``target == ignore_index`` are masked out;
      ``avg_non_ignore=True`` divides by the number of valid *elements* (rows × C).
      ``class_weight`` acts as ``pos_weight``. ``label_smoothing`` ``s`` maps the
      binary targets to ``t (1 - s) + s / 2``. ``pred`` ``(N,)`` with labels ``(N,)``
      is one binary logit per row (labels 0/1), as MMDetection accepts it.
    * **mask** (``use_mask=True``): :func:`lossmix.functional.mask_cross_entropy`; the
      ``weight`` slot carries the RoI class labels, as in
      ``loss_mask(mask_pred, mask_targets, labels)``. Only ``'mean'`` without
      ``avg_factor``, ``class_weight``, ``ignore_index`` or ``label_smoothing``.
      Returns a 0-dim tensor (MMDetection: shape ``[1]``).

    ``class_weight`` is a list of one weight per class, or a class-weight spec computed
    from class counts (``{method: effective_number, beta: 0.999, counts: [...]}``, or
    ``counts: datamodule``; see :mod:`lossmix.losses.class_balance`): a class-balanced
    cross-entropy (Cui et al. 2019).

    ``forward`` also takes ``ignore_index``, which overrides the constructor's for
    one call. Class indices out of range raise (``LossInputError``) rather than
    being silently masked as in MMDetection's sigmoid path.

    ``fused=True`` (softmax with class-index targets only) takes
    :func:`lossmix.functional.fused_cross_entropy` (loss and gradient in one forward pass,
    the same numbers); ``None`` (automatic) and ``False`` keep torch's ``cross_entropy``,
    which the fused kernel did not beat on CPU (1.05-1.8× the time, the same peak memory,
    ``benchmarks/RESULTS.md``).

    Shapes: ``pred``: ``(N, C, *)`` (sigmoid also ``(N,)``); ``target``: ``(N, *)`` indices
    or ``(N, C, *)``; ``weight``: one per row ``(N, *)`` or per element.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, C, *) float logits; sigmoid: (N, C) or (N,); use_mask: (R, C, H, W) mask logits",
        "target": (
            "(N, *) int64 class indices (sigmoid: C = background) or (N, C, *) float "
            "probabilities; use_mask: (R, H, W) float masks"
        ),
        "ignore_index": "int or None: this call's ignored label (overrides the constructor's)",
        "weight": "(N, *) float per row, or pred's shape per element; use_mask: (R,) int64 RoI class labels",
        "returns": "(N, *) per row (softmax), (N, C) per element (sigmoid), 0-dim (mask)",
    }

    class_weight: Tensor | None
    #: :meth:`_plan_reduced`'s tuple (this default: no reduced way)
    _reduced_by: tuple[str | None, int, float, bool | None] = (None, IGNORE_INDEX, 0.0, False)

    def __init__(
        self,
        *,
        use_sigmoid: bool = False,
        use_mask: bool = False,
        class_weight: Sequence[float] | Tensor | Mapping[str, Any] | None = None,
        ignore_index: int | None = None,
        avg_non_ignore: bool = False,
        label_smoothing: float = 0.0,
        fused: bool | None = None,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        name = self.loss_name
        self.use_sigmoid = check_bool(name, "use_sigmoid", use_sigmoid)
        self.use_mask = check_bool(name, "use_mask", use_mask)
        if use_sigmoid and use_mask:
            raise LossConfigError(f"{name}: use_sigmoid=True and use_mask=True exclude each other; pick one.")
        self.fused = check_fused(name, fused)
        if self.fused and (use_sigmoid or use_mask):
            raise LossConfigError(
                f"{name}: fused=True needs the softmax cross-entropy (use_sigmoid=False, "
                "use_mask=False); use fused=None or False here."
            )
        self.ignore_index = check_optional_int(name, "ignore_index", ignore_index)
        self.avg_non_ignore = check_bool(name, "avg_non_ignore", avg_non_ignore)
        self.label_smoothing = check_float(name, "label_smoothing", label_smoothing, low=0.0, high=1.0)
        vector, spec = class_weight_argument(name, "class_weight", class_weight)
        self.register_class_buffer("class_weight", vector, None if spec is None else spec.weights)
        self._plan_reduced()  # (the buffer is registered, not set: build it here)
        if use_mask and (
            class_weight is not None or ignore_index is not None or label_smoothing or reduction != "mean"
        ):
            raise LossConfigError(
                f"{name}: use_mask=True supports only reduction='mean' without class_weight, "
                "ignore_index or label_smoothing (as MMDetection's mask_cross_entropy)."
            )
        if ignore_index is not None and not avg_non_ignore and reduction == "mean":
            warnings.warn(
                f"{name}: avg_non_ignore is False, so ignored labels still count in the mean; "
                "set avg_non_ignore=True to average over non-ignored labels as torch's "
                "cross_entropy does.",
                UserWarning,
                stacklevel=2,
            )

    def elementwise(
        self, pred: Tensor, target: Tensor, weight: Tensor | None = None, *, ignore_index: int | None = None
    ) -> ElementLoss:
        """The element-wise cross-entropy (per row, or per class with a sigmoid), the caller's
        weight prepared, and the non-ignored count as ``avg_non_ignore``'s divisor.

        ``ignore_index`` overrides the constructor's for one call. With ``use_mask=True``
        the ``weight`` slot carries the RoI class labels.
        """
        if self.use_mask:
            return ElementLoss(self._mask_loss(pred, target, weight))
        ignore = self.ignore_index if ignore_index is None else ignore_index
        loss, count = self.masked_loss(pred, target, ignore, count=self.avg_non_ignore)
        prepared = None if weight is None else self.prepare_weight(weight, loss)
        return ElementLoss(loss, prepared, avg_factor=count)

    def reduced(self, pred: Tensor, target: Tensor, *, reduction: str) -> Tensor | None:
        """The reduced loss in one torch call where torch's equals MMDetection's: the softmax
        cross-entropy on class indices, without class weights, fused kernel or
        ``avg_non_ignore``; the sigmoid one on dense targets of pred's dtype, its ignored
        elements selected away (never multiplied: a NaN there stays out). Anything else, an
        empty input or an index torch refuses: ``None`` (the element-wise way, whose checks
        name the problem). The call plan has checked that every input lies on one device.

        MMDetection's softmax ``'mean'`` divides by every row, ignored ones included; torch's
        by the non-ignored rows. They agree when no label is ignored, which on the CPU the
        kernel itself tells without a host read: called with an ignore index no label can
        have (:data:`NO_LABEL`), torch's one-kernel mean raises on any label outside
        ``[0, C)``, an ignored one included, and this loss then takes torch's sum divided by
        every row for this call and the next ones. Elsewhere (an accelerator's index check
        is an asynchronous assert, a compiled graph has no exceptions) the sum and one
        division run always.
        """
        way, ignore, smoothing, fused = self._reduced_by  # (one read: under torch.compile one guard)
        if way is None:
            return None
        if way == "sigmoid":
            return self._reduced_sigmoid(pred, target, reduction, ignore, smoothing)
        compiling = is_compiling()
        if (
            pred.dim() < 2
            or target.is_floating_point()
            or target.shape != (pred.shape[0], *pred.shape[2:])
            or not target.numel()
            # (the automatic choice never fuses a compiled call: not asked there)
            or ((fused or (fused is None and not compiling)) and fused_applies(fused, "cross_entropy", pred))
        ):
            return None
        state = self.__dict__
        if compiling:
            total = torch_cross_entropy(pred, target, "sum", ignore_index=ignore, label_smoothing=smoothing)
            return total if reduction == "sum" else total / target.numel()
        if not target.is_cpu:  # an asynchronous device assert, as the element-wise way
            check_class_indices(self.loss_name, target, pred.size(1), ignore_index=ignore)
        elif (
            reduction == "mean"
            and not state.get("_labels_ignored")
            and not 0 <= ignore < pred.size(1)  # an ignored label is one torch refuses
        ):
            try:
                return torch_cross_entropy(
                    pred, target, "mean", ignore_index=NO_LABEL, label_smoothing=smoothing
                )
            except (IndexError, RuntimeError):
                state["_labels_ignored"] = True  # (or a bad one): the summed way from now on
        try:
            total = torch_cross_entropy(pred, target, "sum", ignore_index=ignore, label_smoothing=smoothing)
        except (IndexError, RuntimeError):
            return None  # the element-wise way reads the indices and names the bad one
        return total if reduction == "sum" else total / target.numel()

    def _plan_reduced(self) -> None:
        """What :meth:`reduced` reads of the configuration, as one tuple (``_reduced_by``):
        ``(way, ignore_index, label_smoothing, fused)`` (``ignore_index`` :data:`IGNORE_INDEX`
        where ``None``), ``way`` ``'sigmoid'``, ``'softmax'``
        or ``None`` (no reduced way: the mask loss, class weights, ``avg_non_ignore``'s
        softmax). Built again whenever one of :data:`_REDUCED_FIELDS` is set."""
        state = self.__dict__
        if any(f not in state for f in ("use_mask", "use_sigmoid", "avg_non_ignore", "fused")):
            return  # (still in __init__: built once everything is set)
        way: str | None = "sigmoid" if state["use_sigmoid"] else "softmax"
        if (
            state["use_mask"]
            or self._buffers.get("class_weight") is not None
            or self.needs_class_counts
            or (way == "softmax" and state["avg_non_ignore"])
        ):
            way = None
        ignore = state.get("ignore_index")
        ignore = IGNORE_INDEX if ignore is None else ignore
        reduced_by = (way, ignore, state.get("label_smoothing", 0.0), state["fused"])
        object.__setattr__(self, "_reduced_by", reduced_by)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in _REDUCED_FIELDS:
            self._plan_reduced()

    def _reduced_sigmoid(
        self, pred: Tensor, target: Tensor, reduction: str, ignore: int, smoothing: float
    ) -> Tensor | None:
        """The sigmoid cross-entropy's ``reduced``: ignored elements (``target < 0`` or the
        ignore index, NaN targets too) selected away before the mean over every element. On
        the CPU, outside a compiled graph, a batch without one takes torch's one-kernel
        reduction (reading the mask there costs less than selecting and reducing apart)."""
        if smoothing or not (pred.shape == target.shape and pred.dtype == target.dtype):
            return None
        if not pred.numel():
            return None
        if (
            target.is_cpu
            and not is_compiling()
            and not is_functorch_wrapped_tensor(target)  # (a vmap over the targets cannot read it)
            and ignore < 0  # then an ignored element is a negative one
            and target.min().item() >= 0  # (False for a NaN, which is ignored as well)
        ):
            return binary_cross_entropy_with_logits(pred, target, reduction)
        kept, _ = self._sigmoid(pred, target, None, ignore, True, False)
        return kept.sum() if reduction == "sum" else kept.mean()

    def _mask_loss(self, pred: Tensor, target: Tensor, label: Tensor | None) -> Tensor:
        if label is None:
            raise LossInputError(
                f"{self.loss_name}: use_mask=True needs the RoI class labels in the weight slot: "
                "loss(mask_pred, mask_target, labels)."
            )
        if (
            pred.dim() < 2
            or label.shape != pred.shape[:1]
            or target.shape != (pred.shape[0], *pred.shape[2:])
        ):
            raise LossInputError(
                f"{self.loss_name}: use_mask=True needs pred (R, C, H, W), target (R, H, W) and "
                f"labels (R,); got pred {tuple(pred.shape)}, target {tuple(target.shape)}, labels "
                f"{tuple(label.shape)}."
            )
        check_class_indices(self.loss_name, label, pred.size(1))
        return mask_cross_entropy(pred, target, label=label)

    plan_fields: ClassVar[frozenset[str]] = frozenset({"use_mask"})

    def has_call_checks(self) -> bool:
        """Only ``use_mask`` checks a call (built before it is set: checked)."""
        return bool(self.__dict__.get("use_mask", True))

    def check_call(
        self, reduction: str, avg_factor: AvgFactor, weight: Tensor | None, inputs: Mapping[str, Any]
    ) -> None:
        super().check_call(reduction, avg_factor, weight, inputs)
        if self.use_mask and (
            reduction != "mean" or avg_factor is not None or (inputs.get("ignore_index") is not None)
        ):
            raise LossInputError(
                f"{self.loss_name}: use_mask=True needs the RoI class labels in the weight slot "
                "(loss(mask_pred, mask_target, labels)), reduction 'mean', and no avg_factor or "
                "ignore_index."
            )

    def masked_loss(
        self, pred: Tensor, target: Tensor, ignore_index: int | None, *, count: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """The element-wise loss and the number of non-ignored elements (a tensor; ``None``
        unless ``count``: counting is two more kernels, forward and backward)."""
        ignore = IGNORE_INDEX if ignore_index is None else ignore_index
        # A sigmoid pred (N,) with labels (N,) is one binary logit per row, as in MMDetection.
        binary = self.use_sigmoid and pred.dim() == 1 and target.dim() == 1
        if pred.dim() < 2 and not binary:
            raise LossInputError(
                f"{self.loss_name}: pred of shape {tuple(pred.shape)} needs a class dimension: (N, C, *)"
                + (
                    " (or, with use_sigmoid=True, one logit per row (N,) and labels (N,))."
                    if pred.dim()
                    else "."
                )
            )
        num_classes = 1 if binary else pred.size(1)
        weight = self.class_buffer("class_weight", num_classes)
        if weight is not None:
            weight = weight.to(pred.dtype)
        dense = target.dim() == pred.dim()
        if dense:
            check_same_shape(self.loss_name, pred, target)
        else:
            self._check_index_shape(pred, target)
        fused = (
            not dense and not self.use_sigmoid and fused_applies(self.fused, "cross_entropy", pred, weight)
        )
        # torch's own softmax cross-entropy refuses an index out of range on the CPU, so there
        # the indices are read (and the error named) only when it does
        after = not (dense or self.use_sigmoid or fused) and target.device.type == "cpu"
        if not dense and not after:
            check_class_indices(
                self.loss_name, target, num_classes, ignore_index=ignore, background_ok=self.use_sigmoid
            )
        if self.use_sigmoid:
            return self._sigmoid(pred, target, weight, ignore, dense, count)
        kernel = fused_cross_entropy if fused else cross_entropy
        args: dict[str, Any] = {
            "class_weight": weight,
            "ignore_index": ignore,
            "label_smoothing": self.label_smoothing,
        }
        if not after or is_compiling():
            loss = kernel(pred, target, **args)
        else:
            try:
                loss = kernel(pred, target, **args)
            except (IndexError, RuntimeError):
                check_class_indices(self.loss_name, target, num_classes, ignore_index=ignore)
                raise
        # MMDetection's count: every target element that is not ignore_index (per element
        # of a dense target, not per row).
        return loss, (target != ignore).sum() if count else None

    def _sigmoid(
        self, pred: Tensor, target: Tensor, weight: Tensor | None, ignore: int, dense: bool, count: bool
    ) -> tuple[Tensor, Tensor | None]:
        # MMDetection's valid elements: label >= 0 and not ignore_index (a negative ignore_index,
        # -100 by default, is already below 0: one comparison)
        valid = target >= 0 if ignore < 0 else (target >= 0) & (target != ignore)
        if dense:
            # an ignored element's label (a NaN one too) would make the kernel's derivative there
            # NaN, which the selection below cannot stop in backward (0 × NaN): set it to 0
            target = target.where(valid, 0)  # (the method: no module-level name under torch.compile)
        else:
            target = one_hot_targets(target, pred.size(1), dtype=pred.dtype)
            valid = valid.unsqueeze(1).expand_as(target)
        if weight is not None:
            weight = weight.view(-1, *([1] * (pred.dim() - 2))) if pred.dim() > 1 else weight
        loss = sigmoid_cross_entropy(pred, target, pos_weight=weight, label_smoothing=self.label_smoothing)
        return loss.where(valid, 0.0), valid.sum() if count else None

    def _check_index_shape(self, pred: Tensor, target: Tensor) -> None:
        expected = (pred.shape[0], *pred.shape[2:])
        if target.is_floating_point() or tuple(target.shape) != expected:
            raise LossInputError(
                f"{self.loss_name}: pred of shape {tuple(pred.shape)} needs class indices "
                f"(integer) of shape {expected} or targets of the shape of pred; got target of "
                f"shape {tuple(target.shape)} and dtype {target.dtype}."
            )

    def extra_repr(self) -> str:
        mode = "sigmoid" if self.use_sigmoid else "mask" if self.use_mask else "softmax"
        return (
            f"mode={mode}, ignore_index={self.ignore_index}, "
            f"avg_non_ignore={self.avg_non_ignore}, " + super().extra_repr()
        )
