"""Argument and input checks every loss, sampler, weighting and callback shares.

Each check names its owner (``FocalLoss``, ``term 'cls'``), the argument and what
would be valid, and raises lossmix's own errors: :class:`~lossmix.errors.LossConfigError`
for constructor arguments, :class:`~lossmix.errors.LossInputError` for tensors given
at call time. Value checks on tensors never read device data (no host sync) except
:func:`check_class_indices` on CPU tensors, which says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import torch
from torch import Tensor

from lossmix.errors import LossConfigError, LossInputError, did_you_mean

__all__ = [
    "check_bool",
    "check_choice",
    "check_class_indices",
    "check_float",
    "check_fused",
    "check_index_or_dense_target",
    "check_int",
    "check_optional_int",
    "check_positive",
    "check_same_shape",
    "class_vector",
    "describe",
    "describe_value",
    "is_number",
]


def is_number(value: Any) -> bool:
    """A finite real number that is not a bool.

    >>> is_number(2), is_number(True), is_number(float("nan"))
    (True, False, False)
    """
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def check_bool(owner: str, name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False`` (not ``1``, not ``'yes'``), else raise."""
    if not isinstance(value, bool):
        raise LossConfigError(f"{owner}: {name}={value!r} is not valid; use True or False.")
    return value


def check_fused(owner: str, value: Any) -> bool | None:
    """A loss's ``fused`` switch: ``None`` (automatic), ``True`` or ``False``, else raise.

    >>> check_fused("FocalLoss", None), check_fused("FocalLoss", False)
    (None, False)
    """
    if value is not None and not isinstance(value, bool):
        raise LossConfigError(
            f"{owner}: fused={value!r} is not valid; use None (automatic: the fused kernel where it "
            "is exact and faster), True (the fused kernel wherever it applies) or False (the plain "
            "formula)."
        )
    return value


def check_int(owner: str, name: str, value: Any, *, min: int | None = None) -> int:
    """``value`` as an int if it is an integer (not a bool) ``>= min``, else raise."""
    if isinstance(value, bool) or not isinstance(value, Integral) or (min is not None and value < min):
        bound = f" >= {min}" if min is not None else ""
        raise LossConfigError(f"{owner}: {name}={value!r} is not valid; {name} must be an integer{bound}.")
    return int(value)


def check_optional_int(owner: str, name: str, value: Any) -> int | None:
    """``None``, or an integer label such as an ``ignore_index``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise LossConfigError(f"{owner}: {name}={value!r} is not valid; give an integer (e.g. 255) or None.")
    return int(value)


def check_float(
    owner: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float if it is a finite number in the range, else raise.

    ``low``/``high`` bound it (inclusive unless ``low_open``/``high_open``).

    >>> check_float("FocalLoss", "gamma", 2)
    2.0
    >>> check_float("FocalLoss", "alpha", 1.5, low=0.0, high=1.0)
    Traceback (most recent call last):
    ...
    lossmix.errors.LossConfigError: FocalLoss: alpha=1.5 is not valid; alpha must be a number in [0, 1].
    """
    ok = is_number(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise LossConfigError(
            f"{owner}: {value_text(name, value)} is not valid; {name} must be "
            f"{_range_text(low, high, low_open, high_open)}."
        )
    return float(value)


def value_text(name: str, value: Any) -> str:
    """``name=value`` as a message shows it."""
    return f"{name}={value!r}"


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is None and high is None:
        return "a finite number"
    if high is None:
        return f"a number {'>' if low_open else '>='} {low:g}"
    if low is None:
        return f"a number {'<' if high_open else '<='} {high:g}"
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    return f"a number in {left}{low:g}, {high:g}{right}"


def check_positive(owner: str, name: str, value: Any, *, allow_zero: bool = False) -> float:
    """``value`` as a float if it is a finite number > 0 (``>= 0`` with ``allow_zero``)."""
    return check_float(owner, name, value, low=0.0, low_open=not allow_zero)


def check_choice(owner: str, name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else raise with the closest one.

    >>> check_choice("GANLoss", "gan_type", "lsgn", ["vanilla", "lsgan"])
    Traceback (most recent call last):
    ...
    lossmix.errors.LossConfigError: GANLoss: gan_type='lsgn' is not valid; ... Did you mean 'lsgan'?
    """
    if not isinstance(value, str) or value not in choices:
        raise LossConfigError(
            f"{owner}: {name}={value!r} is not valid; use one of {list(choices)}."
            f"{did_you_mean(str(value), choices)}"
        )
    return value


def describe(value: Any) -> str:
    """``a float32 tensor of shape (2, 3)`` or ``a list``, for messages."""
    if isinstance(value, Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def check_same_shape(owner: str, pred: Tensor, target: Tensor, *, what: str = "target") -> None:
    """Raise :class:`LossInputError` naming both shapes unless ``pred`` and ``target`` match."""
    if pred.shape != target.shape:
        raise LossInputError(
            f"{owner}: pred of shape {tuple(pred.shape)} and {what} of shape "
            f"{tuple(target.shape)} must have the same shape."
        )


def check_class_indices(
    owner: str,
    target: Tensor,
    num_classes: int,
    *,
    ignore_index: int | None = None,
    background_ok: bool = False,
) -> None:
    """Check integer class indices lie in ``[0, num_classes)`` (``]`` with ``background_ok``).

    Value checks read tensor data, so they run eagerly on CPU tensors only; on an
    accelerator they become an asynchronous device assert (no host sync) and under
    ``torch.compile`` they are skipped.
    """
    if target.is_floating_point() or torch.compiler.is_compiling():
        return
    high = num_classes + 1 if background_ok else num_classes

    def valid_mask() -> Tensor:
        valid = (target >= 0) & (target < high)
        return valid | (target == ignore_index) if ignore_index is not None else valid

    if target.device.type != "cpu":
        torch._assert_async(valid_mask().all(), f"{owner}: class index out of range")
        return
    if not target.numel():
        return
    # one reduction, two numbers read: all in range (ignore_index or not) is the common case
    low, top = torch.aminmax(target)
    if int(low) >= 0 and int(top) < high:
        return
    valid = valid_mask()
    if bool(valid.all()):
        return
    bad = target[~valid]
    allowed = f"[0, {high - 1}]" + ("" if ignore_index is None else f" or {ignore_index}")
    hint = " (num_classes means background)" if background_ok else ""
    raise LossInputError(
        f"{owner}: class indices must lie in {allowed}{hint} for pred with {num_classes} "
        f"classes; got values {sorted(set(bad.tolist()))[:5]}. Check num_classes or the labels."
    )


def check_index_or_dense_target(owner: str, pred: Tensor, target: Tensor) -> bool:
    """Check ``target`` is float targets shaped like ``pred`` ``(N, C, *)`` (then return True) or
    class indices ``(N, *)`` in ``[0, C]``, ``C = pred.size(1)`` the background (return False)."""
    if pred.dim() < 2:
        raise LossInputError(
            f"{owner}: pred of shape {tuple(pred.shape)} needs a class dimension: (N, C, *)."
        )
    if target.dim() == pred.dim():
        check_same_shape(owner, pred, target)
        return True
    expected = (pred.shape[0], *pred.shape[2:])
    if target.is_floating_point() or target.dtype == torch.bool or tuple(target.shape) != expected:
        raise LossInputError(
            f"{owner}: pred of shape {tuple(pred.shape)} needs class indices (integer) of shape "
            f"{expected} or targets of the shape of pred; got target of shape "
            f"{tuple(target.shape)} and dtype {target.dtype}."
        )
    check_class_indices(owner, target, pred.size(1), background_ok=True)
    return False


def class_vector(owner: str, name: str, value: Sequence[float] | Tensor | None) -> Tensor | None:
    """A per-class list or tensor as a finite, non-negative 1-D float tensor (or None)."""
    if value is None:
        return None
    try:
        vector = torch.as_tensor(value, dtype=torch.float32).detach().clone()
    except (TypeError, ValueError, RuntimeError) as err:
        raise LossConfigError(
            f"{owner}: {name}={value!r} is not valid; give a list of one number per class."
        ) from err
    if vector.dim() != 1 or vector.numel() == 0:
        raise LossConfigError(
            f"{owner}: {name} must be a flat list of one number per class; got shape {tuple(vector.shape)}."
        )
    if not bool(torch.isfinite(vector).all()) or bool((vector < 0).any()):
        raise LossConfigError(f"{owner}: {name} entries must be finite numbers >= 0; got {value!r}.")
    return vector


def describe_value(value: Any) -> str:
    """A value as an error message names it: a tensor's dtype and shape, else its type.

    >>> describe_value(torch.zeros(2, 3)), describe_value([1])
    ('a torch.float32 tensor of shape (2, 3)', 'a list')
    """
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"
