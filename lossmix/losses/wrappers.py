"""Adapters that give any ``torch.nn`` loss or plain function lossmix's conventions."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from lossmix.errors import LossConfigError, LossInputError
from lossmix.losses.base import WeightedLoss

__all__ = ["FunctionLoss", "TorchLoss"]


def _takes_reduction(fn: Callable[..., Any]) -> bool:
    try:
        return "reduction" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _call_kernel(owner: str, fn: Callable[..., Tensor], pred: Any, target: Any, **kwargs: Any
                 ) -> Tensor:
    """Call a foreign loss; a shape or dtype failure becomes an error naming the loss and shapes."""
    try:
        return fn(pred, target, **kwargs)
    except (LossConfigError, LossInputError):
        raise
    except (RuntimeError, ValueError) as err:
        shapes = f"pred {_shape(pred)}, target {_shape(target)}"
        raise LossInputError(f"{owner}: {err} ({shapes}); check what the term routes to it.") from err


def _shape(value: Any) -> str:
    return f"of shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__


class TorchLoss(WeightedLoss):
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


class FunctionLoss(WeightedLoss):
    """Make a plain function ``fn(pred, target, **kwargs) -> Tensor`` a lossmix loss.

    If ``fn`` takes a ``reduction`` argument (``torch.nn.functional.l1_loss``)
    it is called with ``reduction='none'``; otherwise its output is taken as
    element-wise (a scalar output is fine too: it is then weighted as a whole).

    >>> import torch
    >>> def squared(pred, target):
    ...     return (pred - target) ** 2
    >>> FunctionLoss(squared, reduction="sum")(torch.zeros(2), torch.ones(2))
    tensor(2.)
    """

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
        if _takes_reduction(fn):
            kwargs["reduction"] = "none"
        self.kwargs = kwargs

    @property
    def loss_name(self) -> str:
        return getattr(getattr(self, "fn", None), "__name__", "FunctionLoss")

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        return _call_kernel(self.loss_name, self.fn, pred, target, **self.kwargs)

    def extra_repr(self) -> str:
        return f"fn={self.loss_name}, " + super().extra_repr()
