"""The one loss template: every lossmix loss runs through :meth:`BaseLoss.forward`.

A loss is ``scale × reduce(weight × kernel(inputs))`` and its ``forward`` is always::

    resolve the reduction → check the call → kernel (elementwise) → element weight
      → reduce (empty input: a connected zero) → scale (loss_weight)

Subclasses never re-write ``forward`` (defining one raises ``TypeError``); they say
what differs through hooks:

* :meth:`~BaseLoss.elementwise` (required) is the kernel. **Its signature is the
  loss's inputs**: ``(pred, target)`` for most losses, ``(pred, target_is_real,
  is_disc)`` for a GAN objective, ``(discriminator, real_data, mask)`` for a gradient
  penalty. It returns the element-wise loss, or an :class:`ElementLoss` that adds the
  loss's own element weights and denominator (``(loss, count)``: a masked mean), or a
  mapping/tuple of those (sub-terms, named by :attr:`~BaseLoss.part_names`). A
  kernel that declares a ``weight`` parameter receives the caller's weight and applies
  it itself (GHM-C's label weights, MMagic's masked means, the mask head's labels).
* :meth:`~BaseLoss.prepare_weight` shapes the caller's weight (one per row, FSAF's
  reshape, the IoU family's ``mean(-1)``).
* :meth:`~BaseLoss.check_call` validates a call (``avg_factor`` with ``'sum'``).
* :meth:`~BaseLoss.reduced` is steps 2 and 4 in one torch call where torch has the loss
  with its reduction (``F.mse_loss``), for a call without weight or ``avg_factor``.
* :meth:`~BaseLoss.output_scale` is the factor of step 5 (``loss_weight``; a GAN
  loss's discriminator side is never scaled).

The call convention is MMDetection's: ``loss(*inputs, weight=None, avg_factor=None,
reduction_override=None)``, the three trailing arguments also positionally after the
kernel's inputs (``loss(pred, target, label_weights, avg_factor)``). A call that gives the
kernel's inputs positionally (``loss(pred, target)``; weight and ``avg_factor`` by keyword
if at all) runs from a call plan built once per loss (``docs/performance.md``): with no
weight and the default reduction it is kernel → reduce → scale and nothing else.
"""

from __future__ import annotations

import abc
import inspect
import re
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lossmix.errors import LossConfigError, LossInputError
from lossmix.reduction import REDUCTIONS, AvgFactor, apply_weight, check_reduction, weight_reduce_loss
from lossmix.utilities.checks import (
    check_class_indices,
    check_float,
    check_positive,
    check_same_shape,
    describe,
)

__all__ = [
    "CALL_KEYS",
    "BaseLoss",
    "ElementLoss",
    "call_parameters",
    "check_class_indices",
    "check_positive",
    "check_same_shape",
    "check_tensor_input",
    "named_inputs_spec",
    "positional_inputs",
    "shapes_from_docstring",
    "spec_call_inputs",
    "tensor_parameters",
    "torch_kernel_fits",
]

CALL_KEYS: tuple[str, ...] = ("weight", "avg_factor", "reduction_override")
_EMPTY = inspect.Parameter.empty


@dataclass
class ElementLoss:
    """An element-wise loss and what the loss itself says about weighting and its mean.

    Attributes:
        loss: the element-wise values; ``'none'`` returns ``weight × loss``.
        weight: the loss's own element weights (a mask, GHM's density weights), broadcast
            against ``loss``; the caller's weight multiplies them unless the kernel took it.
        avg_factor: the divisor of ``'mean'`` when the caller gives none, with MMDetection's
            rule ``sum / (avg_factor + eps)`` (``avg_non_ignore``'s count).
        mean: the value of ``'mean'`` itself when no divisor describes it (a per-sample
            masked mean); used when the caller gives no ``avg_factor``.
        own_mean: a caller's ``avg_factor`` is ignored (GHM-C normalises itself).
    """

    loss: Tensor
    weight: Tensor | None = None
    avg_factor: AvgFactor = None
    mean: Tensor | None = None
    own_mean: bool = False


@dataclass(frozen=True)
class _Spec:
    """A loss class's inputs, read once from its kernel's signature."""

    positional: tuple[str, ...]
    keywords: tuple[str, ...]
    required: tuple[str, ...]
    takes_weight: bool
    parameters: tuple[inspect.Parameter, ...]
    in_order: bool  # the inputs are the kernel's leading parameters: it can take them positionally


def _spec_of(kernel: Any) -> _Spec:
    params = [p for p in inspect.signature(kernel).parameters.values() if p.name != "self"]
    ordered = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    inputs = [p for p in ordered if p.name != "weight"]
    keywords = [p for p in params if p.kind is p.KEYWORD_ONLY]
    return _Spec(
        positional=tuple(p.name for p in inputs),
        keywords=tuple(p.name for p in keywords),
        required=tuple(p.name for p in inputs + keywords if p.default is _EMPTY),
        takes_weight=any(p.name == "weight" for p in params),
        parameters=tuple(inputs + keywords),
        in_order=ordered[: len(inputs)] == inputs,
    )


def named_inputs_spec(names: Sequence[str]) -> _Spec:
    """The inputs of a kernel called with the required arguments ``names`` (a wrapped function's
    own, ``("output", "gt")``), in that order; it takes no ``weight``."""
    params = tuple(inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names)
    return _Spec(tuple(names), (), tuple(names), False, params, in_order=True)


class BaseLoss(nn.Module, metaclass=abc.ABCMeta):
    """Base class of every loss: ``forward`` = kernel → element weight → reduce → scale.

    Args:
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: scalar applied after the reduction (so it scales every
            element under ``'none'``); a finite number.

    Class attributes subclasses may set:
        part_names: the sub-terms a kernel returning a mapping or tuple produces, so a
            term's log keys are known before its first call (``("",)``: one value; ``None``:
            unknown until the first call, as for a wrapped foreign function).
        weight_aliases: other keyword names of the ``weight`` argument (GHM-C's
            ``label_weight``).
        reshape_weight_by_numel: accept a weight with as many elements as the loss in
            another shape (FSAF's per-class focal weights).
        bool_targets: accept a bool ``target`` (masks); otherwise it is refused with the cast
            to use, before a kernel fails on it.
        fixed_params: float arguments the loss turns into something else once, at
            construction (LDAM's margins from ``max_m``): a schedule may not set them (every
            other float argument kept as an attribute is read at each call, so a schedule can).
        integer_pred: an integer ``pred`` (similarity counts, MMDetection's tests' int64
            costs) is cast to the default float dtype instead of refused.
        call_order: the order of ``weight``, ``avg_factor``, ``reduction_override`` when given
            positionally after the inputs (MMDetection's ``DiceLoss`` takes
            ``reduction_override`` before ``avg_factor``).
        shapes: what each call input is, ``{argument: "shape dtype, meaning"}`` (``returns``:
            the ``'none'`` output), shown by ``lossmix show NAME``; a loss that declares none
            is described from its docstring's ``Shapes:`` sentence.
    """

    shapes: ClassVar[Mapping[str, str]] = {}
    fixed_params: ClassVar[tuple[str, ...]] = ()
    part_names: tuple[str, ...] | None = ("",)
    weight_aliases: ClassVar[tuple[str, ...]] = ()
    reshape_weight_by_numel: ClassVar[bool] = False
    bool_targets: ClassVar[bool] = False
    call_order: ClassVar[tuple[str, ...]] = CALL_KEYS
    integer_pred: ClassVar[bool] = False
    _specs: ClassVar[dict[type, _Spec]] = {}
    _tensor_specs: ClassVar[dict[type, dict[str, bool]]] = {}
    #: built by ``__setattr__`` once ``reduction`` and ``loss_weight`` are set (``None``: bind)
    _call_plan: _CallPlan | None = None
    #: the plan's plainest call as one tuple of constants (:meth:`_CallPlan.direct`), read once
    #: per call (under ``torch.compile`` one guard, not one per field)
    _direct: _Direct | None = None
    #: the loss's own arguments the plan depends on (see :meth:`has_call_checks`): setting one
    #: builds the plan again
    plan_fields: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            raise TypeError(
                f"{cls.__name__} defines forward(); a lossmix loss customises the one template "
                "through hooks instead: elementwise() (its signature is the loss's inputs), "
                "prepare_weight(), check_call(), output_scale()."
            )

    def __init__(self, *, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction, owner=self.loss_name)
        self.loss_weight = check_float(self.loss_name, "loss_weight", loss_weight)

    @property
    def loss_name(self) -> str:
        """Name used in error messages."""
        return type(self).__name__

    # -- hooks ------------------------------------------------------------------------------
    @abc.abstractmethod
    def elementwise(self, *args: Any, **kwargs: Any) -> Any:
        """The kernel (step 2): the unreduced loss, an :class:`ElementLoss`, or parts of those.

        Its parameters are the loss's inputs (``pred, target`` for most losses)."""

    def prepare_weight(self, weight: Tensor, loss: Tensor) -> Tensor:
        """Shape ``weight`` to broadcast against ``loss``.

        Accepted: the loss's shape; one weight per row (``loss.shape[:-1]``,
        unsqueezed); anything broadcastable to it; and, for losses that set
        ``reshape_weight_by_numel`` (focal, as MMDetection's FSAF weights need), the
        same number of elements, reshaped.
        """
        if weight.shape == loss.shape:
            return weight
        if weight.dim() == loss.dim() - 1 and weight.shape == loss.shape[:-1]:
            return weight.unsqueeze(-1)
        if weight.dim() <= loss.dim():
            if _broadcasts_to(weight.shape, loss.shape):
                return weight
        if self.reshape_weight_by_numel and weight.numel() == loss.numel():
            return weight.reshape(loss.shape)
        raise LossInputError(
            f"{self.loss_name}: weight of shape {tuple(weight.shape)} does not fit the element-wise "
            f"loss of shape {tuple(loss.shape)}; give a weight of that shape, one per row "
            f"{tuple(loss.shape[:-1])}, or one broadcastable to it."
        )

    def check_call(
        self, reduction: str, avg_factor: AvgFactor, weight: Tensor | None, inputs: Mapping[str, Any]
    ) -> None:
        """Refuse a call before the kernel runs; by default ``avg_factor`` with ``'sum'``
        (MMDetection raises there too)."""
        if avg_factor is not None and reduction == "sum":
            raise LossConfigError(
                f"{self.loss_name}: avg_factor can not be used with reduction='sum'; use "
                "reduction='mean' with avg_factor (a sum divided by it), or drop avg_factor."
            )

    def has_call_checks(self) -> bool:
        """Whether a planned call without ``avg_factor`` runs :meth:`check_call` (by default:
        where a subclass overrides it). A loss whose checks depend on its own arguments says
        so here, naming those arguments in :attr:`plan_fields`."""
        return type(self).check_call is not BaseLoss.check_call

    def reduced(self, *args: Any, **kwargs: Any) -> Tensor | None:
        """Steps 2 and 4 in one torch call, where torch has the loss with its reduction
        (``F.mse_loss(pred, target, reduction=...)``), or ``None``: the element-wise way.

        Called as ``reduced(*inputs, reduction=...)`` (the kernel's inputs positionally),
        only for a call without weight or ``avg_factor`` whose reduction is ``'mean'`` or
        ``'sum'``. It returns the value :meth:`elementwise` followed by that reduction gives
        (an empty input included: a connected zero), or ``None`` where it cannot (a shape or
        dtype torch's kernel would treat differently); the template then runs
        :meth:`elementwise`, whose checks raise."""
        return None

    def output_scale(self, inputs: Mapping[str, Any]) -> float:
        """Step 5's factor for this call: ``loss_weight``."""
        return self.loss_weight

    def check_output(
        self,
        out: Any,
        reduction: str,
        avg_factor: AvgFactor,
        weight: Tensor | None,
        inputs: Mapping[str, Any],
    ) -> None:
        """Refuse the kernel's output before it is weighted and reduced (by default: accept);
        ``weight`` is the caller's, ``None`` when the kernel took it."""

    # -- the template -----------------------------------------------------------------------
    @classmethod
    def _spec(cls) -> _Spec:
        spec = BaseLoss._specs.get(cls)
        if spec is None:
            spec = BaseLoss._specs[cls] = _spec_of(cls.elementwise)
        return spec

    def call_spec(self) -> _Spec:
        """This loss's inputs: its class's kernel's (a wrapped function's own, see
        :class:`~lossmix.losses.wrappers.FunctionLoss`)."""
        return self._spec()

    @classmethod
    def _tensor_inputs(cls) -> dict[str, bool]:
        found = BaseLoss._tensor_specs.get(cls)
        if found is None:
            found = BaseLoss._tensor_specs[cls] = tensor_parameters(
                {p.name: p for p in cls._spec().parameters}
            )
        return found

    @classmethod
    def input_parameters(cls) -> dict[str, inspect.Parameter]:
        """The arguments a call takes: the kernel's inputs, then ``weight``, ``avg_factor``,
        ``reduction_override`` (what :class:`~lossmix.Term` routes)."""
        return spec_call_inputs(cls._spec())

    def call_inputs(self) -> dict[str, inspect.Parameter]:
        """:meth:`input_parameters` of this loss (a wrapped function: its own argument names)."""
        return spec_call_inputs(self.call_spec())

    @classmethod
    def input_shapes(cls) -> dict[str, str]:
        """Per call argument (and ``returns``), its shape, dtype and meaning.

        The declared :attr:`shapes`, else the docstring's ``Shapes:`` sentence; the
        template's own ``weight``, ``avg_factor`` and ``reduction_override`` are always
        described.

        >>> from lossmix.losses import GIoULoss
        >>> GIoULoss.input_shapes()["pred"]
        '(..., 4) float boxes (x1, y1, x2, y2)'
        """
        found = dict(TEMPLATE_SHAPES)
        found.update(cls.shapes or shapes_from_docstring(inspect.getdoc(cls) or ""))
        return found

    def resolve_reduction(self, reduction_override: str | None) -> str:
        """``reduction_override`` if given (a falsy value falls back), else ``self.reduction``."""
        if not reduction_override:
            return self.reduction
        return check_reduction(reduction_override, owner=f"{self.loss_name} reduction_override")

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in _PLANNED or name in self.plan_fields or name in _WRAPPING:
            self._build_plan()  # what the plan holds changed: build it again

    def _build_plan(self) -> None:
        plan = _CallPlan.of(self)
        object.__setattr__(self, "_call_plan", plan)  # plain data, no submodule
        object.__setattr__(self, "_direct", None if plan is None else plan.direct(self._unhooked()))

    def _unhooked(self) -> bool:
        """Whether ``Module.__call__`` would run this loss's ``forward`` and nothing else (no
        hook registered on it, no instance ``forward``, no ``Module.compile()``, no
        ``__call__`` of its class's own): then :meth:`call_plain` may leave it out."""
        state = self.__dict__
        if type(self).__call__ is not nn.Module.__call__ or "forward" in state:
            return False
        if state.get("_compiled_call_impl") is not None:
            return False
        return not any(state.get(hooks) for hooks in _HOOK_DICTS)

    def _hooked(self, handle: RemovableHandle) -> RemovableHandle:
        """A hook was registered on this loss: it is called through ``Module.__call__``,
        which runs it, until the hook's handle removes it."""
        self._build_plan()
        return _LossHookHandle(handle, self)

    def register_forward_pre_hook(self, *args: Any, **kwargs: Any) -> RemovableHandle:
        return self._hooked(super().register_forward_pre_hook(*args, **kwargs))

    def register_forward_hook(self, *args: Any, **kwargs: Any) -> RemovableHandle:
        return self._hooked(super().register_forward_hook(*args, **kwargs))

    def register_full_backward_pre_hook(self, *args: Any, **kwargs: Any) -> RemovableHandle:
        return self._hooked(super().register_full_backward_pre_hook(*args, **kwargs))

    def register_full_backward_hook(self, *args: Any, **kwargs: Any) -> RemovableHandle:
        return self._hooked(super().register_full_backward_hook(*args, **kwargs))

    def register_backward_hook(self, *args: Any, **kwargs: Any) -> RemovableHandle:
        return self._hooked(super().register_backward_hook(*args, **kwargs))

    def call_plain(self, args: tuple[Any, ...], bare: bool) -> Tensor | None:
        """``self(*args)`` by the direct way (kernel → reduce → scale), or ``None``: call the
        loss (:class:`~lossmix.Term`'s call with routed inputs only).

        Only where nothing can hook or wrap the call (``bare``: no global module hook; no
        hook registered on this loss, no instance ``forward``, no ``Module.compile()``):
        then ``Module.__call__``'s checks are left out, about a microsecond less per call and
        under ``torch.compile`` eight guards less per loss (its hook dicts). ``None`` also
        where the inputs need the plan's way (a check to run, an input to cast).
        """
        direct = self._direct
        if bare and direct is not None and direct[-1]:
            return self._call_direct(args, direct)
        return None

    def _call_direct(self, args: tuple[Any, ...], direct: _Direct) -> Tensor | None:
        """kernel → reduce → scale for a call with the kernel's inputs only, or ``None``
        where the inputs need the plan's way (a check to run, an input to cast)."""
        arity, reduction, scale, tensors_at, optional_at, pred_at, target_at, bool_targets, _ = direct
        if len(args) == arity and _inputs_fit(
            args, tensors_at, optional_at, pred_at, target_at, bool_targets
        ):
            value = self.reduced(*args, reduction=reduction)
            if value is not None:
                return value if scale == 1.0 else scale * value
        return None

    def _check_tensors(self, inputs: dict[str, Any], weight: Tensor | None) -> None:
        """Types, dtypes and devices that no kernel could use, named before a deep torch error
        (an integer ``pred`` of a loss with :attr:`integer_pred` is cast in ``inputs``)."""
        for arg, optional in type(self)._tensor_inputs().items():
            if arg in inputs:
                check_tensor_input(self.loss_name, arg, inputs[arg], optional=optional)
        if weight is not None:
            check_tensor_input(self.loss_name, "weight", weight, optional=True)
        pred, target = inputs.get("pred"), inputs.get("target")
        if (
            self.integer_pred
            and isinstance(pred, Tensor)
            and not pred.is_floating_point()
            and pred.dtype != torch.bool
        ):
            pred = inputs["pred"] = pred.to(torch.get_default_dtype())
        if isinstance(pred, Tensor) and not pred.is_floating_point():
            raise LossInputError(
                f"{self.loss_name}: pred is {describe(pred)}; predictions and logits must be floating "
                "point (cast with pred.float())."
            )
        if isinstance(target, Tensor) and target.dtype == torch.bool and not self.bool_targets:
            raise LossInputError(
                f"{self.loss_name}: target is {describe(target)}; give class indices "
                "(target.long()) or float targets (target.float())."
            )
        tensors = [(k, v) for k, v in inputs.items() if isinstance(v, Tensor)]
        if weight is not None:
            tensors.append(("weight", weight))
        devices = {v.device for _, v in tensors}
        if len(devices) > 1:
            where = ", ".join(f"{k} on {v.device}" for k, v in tensors)
            raise LossInputError(
                f"{self.loss_name}: the inputs are on different devices ({where}); move them to "
                "one device (the model's)."
            )

    def _check_call_values(self, avg_factor: Any, reduction_override: Any) -> None:
        """A string where ``avg_factor`` goes (a reduction passed in its place), or a number
        where ``reduction_override`` goes, named with the order this loss takes them in."""
        wrong = isinstance(avg_factor, str) or not (
            reduction_override is None or isinstance(reduction_override, str)
        )
        if wrong:
            order = ", ".join((*self._spec().positional, *self.call_order))
            raise LossInputError(
                f"{self.loss_name}: avg_factor={avg_factor!r}, reduction_override={reduction_override!r}: "
                f"a positional call takes ({order}); pass reduction_override='sum' by keyword."
            )

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
        """The kernel's inputs by name, and the positional arguments after them."""
        spec = self.call_spec()
        count = len(spec.positional)
        inputs = dict(zip(spec.positional, args[:count], strict=False))
        for key, value in kwargs.items():
            if key not in spec.positional and key not in spec.keywords:
                raise LossInputError(
                    f"{self.loss_name}: unexpected argument '{key}'; it takes "
                    f"{', '.join((*spec.positional, *spec.keywords, *CALL_KEYS))}."
                )
            if key in inputs:
                raise LossInputError(f"{self.loss_name}: '{key}' is given twice.")
            inputs[key] = value
        missing = [k for k in spec.required if k not in inputs]
        if missing:
            raise LossInputError(
                f"{self.loss_name}: missing input '{missing[0]}'; call it as "
                f"loss({', '.join(spec.positional)}, ...)."
            )
        return inputs, list(args[count:])

    def forward(
        self,
        *args: Any,
        weight: Tensor | None = None,
        avg_factor: AvgFactor = None,
        reduction_override: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """The weighted, reduced, scaled loss (a tensor, or parts of tensors).

        A call that gives exactly the kernel's inputs, positionally, with ``weight`` and
        ``avg_factor`` by keyword or not at all, takes the call plan (:class:`_CallPlan`,
        built once per loss): no binding, the configuration's checks already done, one
        comparison per tensor check. Any other call binds its arguments first; both end in
        the same kernel → weight → reduce → scale.
        """
        direct = self._direct
        if direct is not None and weight is None and avg_factor is None and reduction_override is None:
            value = None if kwargs else self._call_direct(args, direct)
            if value is not None:
                return value
        plan = self._call_plan
        if plan is None or kwargs or reduction_override is not None or len(args) != plan.arity:
            return self._forward_bound(args, weight, avg_factor, reduction_override, kwargs)
        if not plan.inputs_fit(args, weight) or isinstance(avg_factor, str):
            return self._forward_bound(args, weight, avg_factor, reduction_override, kwargs)
        reduction = plan.reduction
        if plan.check_call or avg_factor is not None:
            self.check_call(reduction, avg_factor, weight, dict(zip(plan.names, args, strict=True)))
        if plan.reduced and weight is None and avg_factor is None and reduction != "none":
            value = self.reduced(*args, reduction=reduction)
            if value is not None:
                return value if plan.scale == 1.0 else plan.scale * value
        if plan.takes_weight:
            out = self.elementwise(*args, weight=weight)
            weight = None  # applied by the kernel
        else:
            out = self.elementwise(*args)
        if plan.check_output:
            self.check_output(out, reduction, avg_factor, weight, dict(zip(plan.names, args, strict=True)))
        if isinstance(out, (Tensor, ElementLoss)):
            return self._reduce(out, weight, reduction, avg_factor, plan.scale)
        return self._reduce_parts(out, weight, reduction, avg_factor, plan.scale)

    def _forward_bound(
        self,
        args: tuple[Any, ...],
        weight: Tensor | None,
        avg_factor: AvgFactor,
        reduction_override: str | None,
        kwargs: dict[str, Any],
    ) -> Any:
        """Any call: the inputs bound by name (MMDetection's positional call included)."""
        for alias in self.weight_aliases:
            if alias in kwargs:
                if weight is not None:
                    raise LossInputError(
                        f"{self.loss_name}: give the weight once, as weight or {alias}=, not both."
                    )
                weight = kwargs.pop(alias)
        inputs, rest = self._bind(args, kwargs)
        if len(rest) > len(CALL_KEYS):
            raise LossInputError(f"{self.loss_name}: too many positional arguments.")
        given: dict[str, Any] = {
            "weight": weight,
            "avg_factor": avg_factor,
            "reduction_override": reduction_override,
        }
        for key, value in zip(self.call_order, rest, strict=False):
            if given[key] is not None:
                raise LossInputError(f"{self.loss_name}: '{key}' is given twice.")
            given[key] = value
        weight, avg_factor = given["weight"], given["avg_factor"]
        self._check_call_values(avg_factor, given["reduction_override"])
        reduction = self.resolve_reduction(given["reduction_override"])
        if reduction not in REDUCTIONS:  # a reduction set after construction
            check_reduction(reduction, owner=self.loss_name)
        self._check_tensors(inputs, weight)
        self.check_call(reduction, avg_factor, weight, inputs)
        if self.call_spec().takes_weight:
            out = self.elementwise(**inputs, weight=weight)
            weight = None  # applied by the kernel
        else:
            out = self.elementwise(**inputs)
        self.check_output(out, reduction, avg_factor, weight, inputs)
        scale = self.output_scale(inputs)
        if isinstance(out, (Tensor, ElementLoss)):
            return self._reduce(out, weight, reduction, avg_factor, scale)
        return self._reduce_parts(out, weight, reduction, avg_factor, scale)

    def _reduce_parts(
        self, out: Any, weight: Tensor | None, reduction: str, avg_factor: AvgFactor, scale: float
    ) -> Any:
        """Steps 3 to 5 of each part of a kernel that returns a mapping or a tuple of parts."""
        if isinstance(out, Mapping):
            return {k: self._reduce(v, weight, reduction, avg_factor, scale) for k, v in out.items()}
        if isinstance(out, tuple):
            return tuple(self._reduce(v, weight, reduction, avg_factor, scale) for v in out)
        return self._reduce(out, weight, reduction, avg_factor, scale)

    def _reduce(
        self, out: Any, weight: Tensor | None, reduction: str, avg_factor: AvgFactor, scale: float
    ) -> Tensor:
        """Steps 3 to 5 of one part: element weight, reduction (empty: a connected zero), scale.

        A scale of 1 multiplies nothing (``1.0 * x`` is ``x`` in every dtype, NaN included);
        ``'none'`` always returns a new tensor, never the kernel's own."""
        if isinstance(out, ElementLoss):
            loss, own, own_avg, mean = out.loss, out.weight, out.avg_factor, out.mean
            if out.own_mean:
                avg_factor = None  # the loss normalises itself
        else:
            loss, own, own_avg, mean = out, None, None, None
        if weight is not None:
            weight = self.prepare_weight(weight, loss)
            own = weight if own is None else own * weight
        if reduction == "none":
            return scale * apply_weight(loss, own)
        if own is not None:
            loss = apply_weight(loss, own)
        if loss.numel() == 0:  # nothing to score: a zero still connected to the inputs
            value = loss.sum()
        elif avg_factor is not None:  # 'mean': sum / (avg_factor + eps); 'sum' refuses it
            value = weight_reduce_loss(loss, None, reduction, avg_factor)
        elif reduction == "sum":
            value = loss.sum()
        elif mean is not None:
            value = mean
        elif own_avg is not None:
            value = weight_reduce_loss(loss, None, "mean", own_avg)
        else:
            value = loss.mean()
        return value if isinstance(scale, float) and scale == 1.0 else scale * value

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, loss_weight={self.loss_weight}"


def spec_call_inputs(spec: _Spec) -> dict[str, inspect.Parameter]:
    """A kernel's inputs, then the template's ``weight``, ``avg_factor``, ``reduction_override``."""
    params = {p.name: p for p in spec.parameters}
    for key in CALL_KEYS:
        params[key] = inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=None)
    return params


#: the attributes the call plan reads: setting one builds the plan again
_PLANNED = frozenset({"reduction", "loss_weight"})
#: set on an instance, these change how ``Module.__call__`` runs it (an instance ``forward``,
#: a wrapper's; ``Module.compile()``): :meth:`BaseLoss.call_plain` then calls through it
_WRAPPING = frozenset({"forward", "_compiled_call_impl"})
#: the hook dicts ``Module.__call__`` checks before it runs ``forward`` alone
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


class _LossHookHandle(RemovableHandle):
    """The handle of a hook on a lossmix loss: removing the hook lets the loss take the
    direct way again once nothing else hooks it (a model summary's hooks, for instance)."""

    def __init__(self, handle: RemovableHandle, loss: BaseLoss) -> None:
        self.__dict__.update(handle.__dict__)
        self.loss_ref = weakref.ref(loss)

    def remove(self) -> None:
        super().remove()
        loss = getattr(self, "loss_ref", lambda: None)()  # (none after unpickling)
        if loss is not None:
            loss._build_plan()


_BOOL = torch.bool
_STRIDED = torch.strided


class _CallPlan(NamedTuple):
    """What a call of one loss needs that its configuration already decides (built once).

    ``BaseLoss.__setattr__`` builds it again when ``reduction`` or ``loss_weight`` changes;
    the kernel's float hyper-parameters (what schedules set) are not in it: the kernel
    reads them at each call. Plain data, so ``deepcopy``, pickling and ``state_dict``
    see nothing new.
    """

    arity: int  # the kernel's positional inputs, given positionally
    names: tuple[str, ...]
    reduction: str
    scale: float
    takes_weight: bool
    check_call: bool  # a subclass's check_call (the base one only refuses avg_factor + 'sum')
    check_output: bool  # a subclass's check_output (a function returning one value)
    reduced: bool  # the loss has a reduced kernel (BaseLoss.reduced)
    pred_at: int  # where pred and target are among the inputs (-1: not an input)
    target_at: int
    bool_targets: bool
    tensors_at: tuple[int, ...]  # the inputs that must be tensors
    optional_at: tuple[int, ...]  # the tensor inputs that may be None

    @staticmethod
    def of(loss: BaseLoss) -> _CallPlan | None:
        """The plan of ``loss``, or ``None`` where every call binds its arguments (a loss
        whose step 5 depends on the inputs, or whose kernel's inputs cannot be given
        positionally)."""
        cls = type(loss)
        reduction, loss_weight = loss.__dict__.get("reduction"), loss.__dict__.get("loss_weight")
        if reduction not in REDUCTIONS or not isinstance(loss_weight, float):
            return None
        if cls.output_scale is not BaseLoss.output_scale or cls.resolve_reduction is not (
            BaseLoss.resolve_reduction
        ):
            return None
        if cls.call_spec is not BaseLoss.call_spec:
            return None  # inputs named per instance (a wrapped function's own): bound by name
        spec = cls._spec()
        if any(name not in spec.positional for name in spec.required):
            return None  # a required keyword-only input
        if not spec.in_order:
            return None  # a weight parameter before an input: the inputs go by name
        names = spec.positional
        tensors = tensor_parameters({p.name: p for p in spec.parameters})
        return _CallPlan(
            arity=len(names),
            names=names,
            reduction=reduction,
            scale=loss_weight,
            takes_weight=spec.takes_weight,
            check_call=loss.has_call_checks(),
            check_output=cls.check_output is not BaseLoss.check_output,
            reduced=_reduced_applies(cls),
            pred_at=names.index("pred") if "pred" in names else -1,
            target_at=names.index("target") if "target" in names else -1,
            bool_targets=cls.bool_targets,
            tensors_at=tuple(i for i, n in enumerate(names) if tensors.get(n) is False),
            optional_at=tuple(i for i, n in enumerate(names) if tensors.get(n) is True),
        )

    def direct(self, bare: bool) -> _Direct | None:
        """What a call with the kernel's inputs only (no weight, ``avg_factor`` or override)
        needs, as one tuple: ``(arity, reduction, scale, tensors_at, optional_at, pred_at, target_at,
        bool_targets, bare)`` (``bare``: the loss may be called without ``Module.__call__``,
        see :meth:`BaseLoss.call_plain`); ``None`` where such a call does more than kernel →
        reduce → scale (no reduced kernel, a subclass's call checks, ``reduction='none'``)."""
        if not self.reduced or self.check_call or self.reduction == "none":
            return None
        return (
            self.arity,
            self.reduction,
            self.scale,
            self.tensors_at,
            self.optional_at,
            self.pred_at,
            self.target_at,
            self.bool_targets,
            bare,
        )

    def inputs_fit(self, args: tuple[Any, ...], weight: Tensor | None) -> bool:
        """Whether :meth:`BaseLoss._check_tensors` would pass, one comparison per check (a
        call that fails goes the bound way, which names the input or casts an integer pred)."""
        if not _inputs_fit(
            args, self.tensors_at, self.optional_at, self.pred_at, self.target_at, self.bool_targets
        ):
            return False
        if weight is None:
            return True
        device = next((v.device for v in args if isinstance(v, Tensor)), None)
        return isinstance(weight, Tensor) and (device is None or weight.device == device)


#: :meth:`_CallPlan.direct`'s tuple
_Direct = tuple[int, str, float, tuple[int, ...], tuple[int, ...], int, int, bool, bool]


def _inputs_fit(
    args: tuple[Any, ...],
    tensors_at: tuple[int, ...],
    optional_at: tuple[int, ...],
    pred_at: int,
    target_at: int,
    bool_targets: bool,
) -> bool:
    """:meth:`_CallPlan.inputs_fit` without a weight: the tensor inputs are dense tensors (an
    optional one may be ``None``), ``pred`` floats, ``target`` not bool (unless the loss takes
    bool targets), every tensor on one device."""
    for at in tensors_at:
        if not isinstance(args[at], Tensor) or args[at].layout is not _STRIDED:
            return False
    for at in optional_at:
        value = args[at]
        if value is not None and (not isinstance(value, Tensor) or value.layout is not _STRIDED):
            return False
    if pred_at >= 0:
        pred = args[pred_at]
        if isinstance(pred, Tensor) and not pred.is_floating_point():
            return False
    if target_at >= 0 and not bool_targets:
        target = args[target_at]
        if isinstance(target, Tensor) and target.dtype is _BOOL:
            return False
    device = None
    for value in args:
        if isinstance(value, Tensor):
            if device is None:
                device = value.device
            elif value.device != device:
                return False
    return True


def _owner(cls: type, name: str) -> type:
    """The class of ``cls``'s MRO that defines ``name``."""
    return next(c for c in cls.__mro__ if name in c.__dict__)


def _reduced_applies(cls: type[BaseLoss]) -> bool:
    """Whether ``cls`` takes its :meth:`BaseLoss.reduced`: one is defined, by the class that
    defines :meth:`~BaseLoss.elementwise` or a subclass of it (a subclass that changes the
    kernel or its checks, e.g. a channel check, does not inherit a parent's reduced way)."""
    if cls.reduced is BaseLoss.reduced:
        return False
    return issubclass(_owner(cls, "reduced"), _owner(cls, "elementwise"))


def torch_kernel_fits(pred: Tensor, target: Tensor) -> bool:
    """Whether torch's own reduced loss gives the template's value on ``pred`` and ``target``
    (for :meth:`BaseLoss.reduced`): one shape and one dtype (torch's losses broadcast with a
    warning and refuse mixed dtypes in backward), and at least one element (torch's mean of
    nothing is NaN, the template's a connected zero). Metadata only: no host sync."""
    return pred.shape == target.shape and pred.dtype == target.dtype and pred.numel() > 0


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    """Whether a tensor of ``shape`` broadcasts to ``target`` without changing it."""
    if len(shape) > len(target):
        return False
    return all(a in (1, b) for a, b in zip(reversed(shape), reversed(target), strict=False))


#: the template's own call arguments, the same for every loss
TEMPLATE_SHAPES: Mapping[str, str] = {
    "weight": "float, broadcasts to the element-wise loss (the 'none' output): element weights",
    "avg_factor": "number or 0-dim tensor: the denominator of 'mean' (e.g. the number of positives)",
    "reduction_override": "'none' | 'mean' | 'sum' for this call",
}


def shapes_from_docstring(doc: str) -> dict[str, str]:
    """``{argument: description}`` from a docstring's ``Shapes:`` sentence.

    ``"Shapes: ``pred``, ``target``: ``(N, C)`` logits; returns ``(N,)``."`` gives
    ``{"pred": "(N, C) logits", "target": "(N, C) logits", "returns": "(N,)"}``.
    """
    match = re.search(r"(?:\*\*Shapes\.\*\*|Shapes:)\s*(.*?)(?:\n\s*\n|$)", doc, re.S)
    if match is None:
        return {}
    text = " ".join(match.group(1).split())
    found: dict[str, str] = {}
    for segment in re.split(r";\s+", text.rstrip(".")):
        if segment.startswith("returns"):
            found["returns"] = segment[len("returns") :].strip().replace("``", "")
            continue
        names, colon, description = segment.partition(": ")
        keys = re.findall(r"``(\w+)``", names)
        if colon and keys and not re.sub(r"``\w+``|[,\s]|\(.*?\)|and", "", names):
            for key in keys:
                found[key] = description.strip().replace("``", "")
    return found


def positional_inputs(module: nn.Module) -> tuple[str, ...] | None:
    """A lossmix loss's inputs in the order its call plan takes them positionally (``None``:
    another module, or a loss whose calls always bind by name)."""
    if not isinstance(module, BaseLoss) or module._call_plan is None:
        return None
    return module._call_plan.names


def call_parameters(module: nn.Module) -> dict[str, inspect.Parameter]:
    """The named arguments a loss module's call takes (``*args``/``**kwargs`` left out).

    A lossmix loss answers from its kernel's signature; any other module from its
    ``forward``.
    """
    if isinstance(module, BaseLoss):
        return module.call_inputs()
    params = dict(inspect.signature(module.forward).parameters)
    return {k: p for k, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


_TENSOR = re.compile(r"^(?:torch\.)?Tensor(?P<optional>\s*\|\s*None)?$")


def tensor_parameters(params: Mapping[str, inspect.Parameter]) -> dict[str, bool]:
    """The arguments annotated ``Tensor`` (→ ``False``) or ``Tensor | None`` (→ ``True``: may
    be ``None``), and ``weight`` (a tensor or ``None``), read once from a signature."""
    found: dict[str, bool] = {}
    for name, param in params.items():
        annotation = param.annotation
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        match = _TENSOR.match(text) if annotation is not Tensor else None
        if annotation is Tensor or match is not None:
            found[name] = bool(match and match.group("optional"))
    if "weight" in params:
        found["weight"] = True
    return found


def check_tensor_input(owner: str, arg: str, value: Any, *, optional: bool, key: str | None = None) -> None:
    """Refuse a value no kernel can take as a tensor input (a list, dict, number, string,
    NumPy array, ``None`` for a required input, a sparse tensor), naming the input and its key.

    >>> check_tensor_input("L1Loss", "pred", [1.0], optional=False, key="box")
    Traceback (most recent call last):
    ...
    lossmix.errors.LossInputError: L1Loss: input 'pred' (key 'box') is a list, not a dense tensor; ...
    """
    if isinstance(value, Tensor):
        if value.layout is torch.strided:
            return
        problem, fix = f"a sparse tensor ({value.layout})", "convert it with .to_dense()"
    elif value is None:
        if optional:
            return
        problem, fix = "None", "route a tensor to it (the model's output or the batch's key)"
    else:
        numpy = type(value).__module__ == "numpy"
        name = f"numpy.{type(value).__name__}" if numpy else type(value).__name__
        problem = f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
        fix = (
            "convert it with torch.as_tensor(...) in the model or the data pipeline"
            if numpy or isinstance(value, (list, tuple, int, float))
            else "route the key holding the tensor itself (a nested key is reached as 'head.cls')"
        )
    where = f" (key '{key}')" if key is not None else ""
    raise LossInputError(f"{owner}: input '{arg}'{where} is {problem}, not a dense tensor; {fix}.")
