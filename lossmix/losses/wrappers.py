"""Adapters that give any ``torch.nn`` loss or plain function lossmix's conventions.

:data:`lossmix.LOSSES` builds ``_target_: torch.nn.SmoothL1Loss`` as a :class:`TorchLoss`
and a function (registered, or named by an allowed ``_target_``) as a
:class:`FunctionLoss` through the two adapters at the end of this module.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lossmix.errors import LossConfigError, LossInputError
from lossmix.losses.base import BaseLoss, named_inputs_spec, shapes_from_docstring, spec_call_inputs
from lossmix.registry.registry import LOSSES, bind_arguments, check_keys, signature_parameters

__all__ = ["FunctionLoss", "LossInput", "TorchLoss", "loss_inputs"]


def _takes_reduction(fn: Callable[..., Any]) -> bool:
    try:
        return "reduction" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


_MISMATCH = re.compile(
    r"size of tensor|must match the size|same size|shape|dimension|dtype|scalar type|"
    r"not implemented for|same device|broadcast",
    re.IGNORECASE,
)
_ACCELERATOR = re.compile(
    r"out of memory|CUDA error|device-side assert|cuDNN|CUBLAS|NCCL|HIP error", re.IGNORECASE
)


def is_input_mismatch(err: BaseException) -> bool:
    """Whether a foreign loss's error means its inputs do not fit (shapes, dtypes, devices).

    Out-of-memory and accelerator errors, and anything else, are not: they propagate as
    they are, so a user chasing an OOM is not sent to the term's routing.
    """
    if isinstance(err, torch.OutOfMemoryError) or _ACCELERATOR.search(str(err)):
        return False
    return isinstance(err, ValueError) or (isinstance(err, RuntimeError) and bool(_MISMATCH.search(str(err))))


def _call_kernel(owner: str, fn: Callable[..., Tensor], pred: Any, target: Any, **kwargs: Any) -> Tensor:
    """Call a foreign loss; a shape, dtype or device mismatch becomes an error naming the loss
    and the shapes, anything else propagates unchanged."""
    try:
        out = fn(pred, target, **kwargs)
    except (LossConfigError, LossInputError):
        raise
    except (RuntimeError, ValueError) as err:
        if not is_input_mismatch(err):
            raise
        shapes = f"pred {_shape(pred)}, target {_shape(target)}"
        raise LossInputError(f"{owner}: {err} ({shapes}); check what the term routes to it.") from err
    parts = out.values() if isinstance(out, Mapping) else out if isinstance(out, tuple) else [out]
    if not all(isinstance(part, Tensor) for part in parts):
        raise LossInputError(
            f"{owner}: returned {type(out).__name__} {out!r}, not a tensor; a loss function must "
            "return a tensor (element-wise, or a scalar), or a dict or tuple of tensors."
        )
    return out


def function_input_names(fn: Callable[..., Any]) -> tuple[str, str]:
    """The names of a loss function's two inputs: its first two positional arguments.

    torch's own functions (``torch.nn.functional.l1_loss(input, target)``) take lossmix's
    ``pred, target``, as the ``torch.nn`` loss classes do; so does a function without a
    signature.

    >>> def my_loss(output, gt, margin=1.0): ...
    >>> function_input_names(my_loss)
    ('output', 'gt')
    """
    if str(getattr(fn, "__module__", None) or "").split(".")[0] == "torch":
        return _PRED_TARGET
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return _PRED_TARGET
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:2]
    return (names[0], names[1]) if len(names) == 2 else _PRED_TARGET


_PRED_TARGET = ("pred", "target")


def _shape(value: Any) -> str:
    return f"of shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__


class TorchLoss(BaseLoss):
    """Wrap a ``torch.nn`` loss class so it gets ``weight``/``avg_factor``/``loss_weight``.

    The wrapped loss is built with ``reduction='none'``; lossmix then weights
    and reduces its element-wise output.

    Args:
        loss_cls: e.g. ``torch.nn.SmoothL1Loss``.
        reduction, loss_weight: as for every lossmix loss.
        **kwargs: the torch loss's own arguments (``beta=0.5``, ``pos_weight=...``).

    >>> import torch
    >>> loss = TorchLoss(torch.nn.SmoothL1Loss, beta=0.5, loss_weight=2.0)
    >>> loss(torch.zeros(3), torch.ones(3))
    tensor(1.5000)
    """

    part_names = None  # whatever the wrapped loss returns

    def __init__(
        self,
        loss_cls: type[nn.Module],
        *,
        reduction: str = "mean",
        loss_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        self._wrapped_name = getattr(loss_cls, "__name__", str(loss_cls))
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        if _takes_reduction(loss_cls):
            kwargs["reduction"] = "none"
        self.loss = loss_cls(**kwargs)

    @property
    def loss_name(self) -> str:
        return getattr(self, "_wrapped_name", "TorchLoss")

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        return _call_kernel(self.loss_name, self.loss, pred, target)


class FunctionLoss(BaseLoss):
    """Make a plain function ``fn(pred, target, **kwargs) -> Tensor`` a lossmix loss.

    Its first two arguments are the loss's inputs, under the function's own names (a term
    routes ``inputs: {output: ..., gt: ...}`` to ``fn(output, gt)``); the others are its
    hyper-parameters. If ``fn`` takes a ``reduction`` argument
    (``torch.nn.functional.l1_loss``) it is called with ``reduction='none'``; otherwise its
    output is taken as element-wise. A function that returns one value for non-scalar
    inputs has reduced them itself: it is used as is under ``reduction='mean'`` with no
    ``avg_factor`` and no element ``weight``, and any other reduction is refused (it cannot
    apply to one value).

    >>> import torch
    >>> def squared(output, gt):
    ...     return (output - gt) ** 2
    >>> FunctionLoss(squared, reduction="sum")(output=torch.zeros(2), gt=torch.ones(2))
    tensor(2.)
    """

    part_names = None  # a function may return a dict or tuple of sub-terms

    def __init__(
        self,
        fn: Callable[..., Tensor],
        *,
        reduction: str = "mean",
        loss_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        if not callable(fn):
            raise LossConfigError(f"FunctionLoss: {fn!r} is not callable.")
        self.fn = fn
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.reduces_itself = not _takes_reduction(fn)
        if not self.reduces_itself:
            kwargs["reduction"] = "none"
        self.kwargs = kwargs
        self._inputs = named_inputs_spec(function_input_names(fn))

    @property
    def loss_name(self) -> str:
        return getattr(getattr(self, "fn", None), "__name__", "FunctionLoss")

    def call_spec(self) -> Any:
        return self._inputs

    def elementwise(self, *args: Tensor, **inputs: Tensor) -> Tensor:
        first, second = (inputs[name] for name in self._inputs.positional)
        return _call_kernel(self.loss_name, self.fn, first, second, **self.kwargs)

    def check_output(
        self, out: Any, reduction: str, avg_factor: Any, weight: Tensor | None, inputs: Mapping[str, Any]
    ) -> None:
        """A function that returned one value for non-scalar inputs reduced them itself: only
        ``reduction='mean'`` without ``avg_factor`` or element weights takes it as it is."""
        if not self.reduces_itself or (reduction == "mean" and avg_factor is None and weight is None):
            return
        parts = out.values() if isinstance(out, Mapping) else out if isinstance(out, tuple) else [out]
        if not any(isinstance(v, Tensor) and v.dim() > 0 for v in inputs.values()):
            return
        if any(isinstance(part, Tensor) and part.dim() == 0 for part in parts):
            asked = (
                f"reduction={reduction!r}"
                if reduction != "mean"
                else "avg_factor (a normalizer)"
                if avg_factor is not None
                else "an element weight"
            )
            raise LossConfigError(
                f"{self.loss_name} returns one value (it reduces its inputs itself), so {asked} cannot "
                "apply to it; return the element-wise loss (no .mean()/.sum()) for lossmix to weight "
                "and reduce, or use reduction: mean with no normalizer and no weight."
            )

    def extra_repr(self) -> str:
        return f"fn={self.loss_name}, " + super().extra_repr()


_COMMON: dict[str, Any] = {"reduction": "mean", "loss_weight": 1.0}


def is_torch_loss(obj: Any) -> bool:
    """True for a ``torch.nn`` loss class (a subclass of ``torch.nn.modules.loss._Loss``)."""
    return inspect.isclass(obj) and issubclass(obj, nn.modules.loss._Loss)


class TorchLossAdapter:
    """Builds a ``torch.nn`` loss class as a :class:`TorchLoss`."""

    _LEGACY: ClassVar[tuple[str, ...]] = ("size_average", "reduce", "reduction")

    def accepts(self, obj: Any) -> bool:
        return is_torch_loss(obj)

    def parameters(self, obj: Any) -> tuple[dict[str, Any], bool]:
        params, var_kw = signature_parameters(obj)
        return {**{k: v for k, v in params.items() if k not in self._LEGACY}, **_COMMON}, var_kw

    def build(self, obj: Any, label: str, kwargs: dict[str, Any]) -> nn.Module:
        own = {k: v for k, v in kwargs.items() if k not in _COMMON}
        bind_arguments(label, obj, own)
        return TorchLoss(obj, **kwargs)


class FunctionLossAdapter:
    """Builds a function ``fn(pred, target, **kwargs)`` as a :class:`FunctionLoss`."""

    def accepts(self, obj: Any) -> bool:
        return inspect.isfunction(obj) or inspect.isbuiltin(obj)

    def parameters(self, obj: Any) -> tuple[dict[str, Any], bool]:
        params, var_kw = signature_parameters(obj)
        names = list(params)
        own = {k: params[k] for k in names[2:] if k != "reduction"}
        return {**own, **_COMMON}, var_kw

    def build(self, obj: Any, label: str, kwargs: dict[str, Any]) -> nn.Module:
        own = {k: v for k, v in kwargs.items() if k not in _COMMON}
        params, var_kw = self.parameters(obj)
        check_keys(label, own, params, var_kw)
        try:
            signature = inspect.signature(obj)
        except (TypeError, ValueError):  # a built-in without a signature: checked by the call
            return FunctionLoss(obj, **kwargs)
        try:
            signature.bind(None, None, **own)
        except TypeError as err:
            raise LossConfigError(
                f"{label}: {err}; a loss function takes (pred, target, **hyper-parameters)."
            ) from None
        return FunctionLoss(obj, **kwargs)


@dataclass(frozen=True)
class LossInput:
    """One argument of a loss's call, as ``lossmix show NAME`` prints it."""

    name: str
    required: bool
    default: Any
    description: str


def loss_inputs(entry: Any) -> list[LossInput]:
    """The call arguments of a registered loss (a lossmix loss class, a ``torch.nn`` loss
    class or a function), each with its shape, dtype and meaning where declared.

    >>> from lossmix.losses import GIoULoss
    >>> [(i.name, i.required) for i in loss_inputs(GIoULoss)][:3]
    [('pred', True), ('target', True), ('weight', False)]
    """
    if inspect.isclass(entry) and issubclass(entry, BaseLoss):
        shapes = entry.input_shapes()
        params = entry.input_parameters()
    else:
        own = shapes_from_docstring(inspect.getdoc(entry) or "")
        if is_torch_loss(entry):
            shapes, params = {**TorchLoss.input_shapes(), **own}, TorchLoss.input_parameters()
        elif inspect.isclass(entry):  # any other nn.Module: what its forward takes, no more
            shapes, params = own, _forward_parameters(entry)
        else:  # a function: its own two input names, then the template's call keys
            shapes = {**FunctionLoss.input_shapes(), **own}
            params = spec_call_inputs(named_inputs_spec(function_input_names(entry)))
    unknown = "not declared (see the loss's docstring)"
    return [
        LossInput(
            name,
            param.default is param.empty,
            None if param.default is param.empty else param.default,
            shapes.get(name, unknown),
        )
        for name, param in params.items()
    ]


def _forward_parameters(cls: type) -> dict[str, inspect.Parameter]:
    try:
        params = list(inspect.signature(cls.forward).parameters.values())[1:]  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        return {}
    return {p.name: p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


LOSSES.add_adapter(TorchLossAdapter())
LOSSES.add_adapter(FunctionLossAdapter())
