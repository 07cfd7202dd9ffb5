"""The battery every ``BaseLoss`` goes through, driven by per-family ``LossCase`` lists.

A family file (``tests/losses/cases_<family>.py``) exposes ``CASES: list[LossCase]``;
``test_battery.py`` runs every generic property below on every case. Family-specific
tests (reference values, identity limits, bad input) live in ``test_<family>.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

# dtype → (rtol, atol) used whenever two computations of one loss are compared.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-7, 1e-9),
    torch.float32: (1e-4, 1e-6),
    torch.bfloat16: (2e-2, 2e-2),
}

Inputs = tuple[Tensor, Tensor]


@dataclass
class LossCase:
    """How to build a loss and feed it.

    Attributes:
        id: pytest id.
        make: ``make(**overrides) -> nn.Module`` (overrides: reduction, loss_weight).
        inputs: ``inputs(dtype, generator, scale) -> (pred, target)``; ``scale`` multiplies
            the logits/predictions (1 for ordinary values, 1e4 and 100 for extremes).
        reference: optional independent element-wise reference ``(pred, target) -> loss``
            equal to the ``'none'`` output.
        kernel: optional ``(pred, target) -> Tensor`` calling the functional kernel, used to
            check ``torch.compile(fullgraph=True)``.
        weight_shape: shape of an element weight, from ``(pred, target)``; default: the
            ``'none'`` output's shape.
        call_kwargs: optional ``(pred, target) -> dict`` of further inputs of the call
            (AssociativeEmbeddingLoss's ``match``), computed from the inputs so that
            cutting them to zero rows cuts these too.
        extra: flags of family-specific semantics (``masked_mean``: MMagic's mean over the
            weighted elements; ``nonzero_mean``: a mean over the elements of non-zero weight).

    A loss returning parts (a dict or tuple of sub-terms) is checked on their sum.
    """

    id: str
    make: Callable[..., nn.Module]
    inputs: Callable[[torch.dtype, torch.Generator, float], Inputs]
    reference: Callable[[Tensor, Tensor], Tensor] | None = None
    kernel: Callable[[Tensor, Tensor], Tensor] | None = None
    weight_shape: Callable[[Tensor, Tensor], tuple[int, ...]] | None = None
    extreme_scales: tuple[float, ...] = (1e4,)
    autocast_scale: float = 100.0
    extra: dict[str, Any] = field(default_factory=dict)
    call_kwargs: Callable[[Tensor, Tensor], dict[str, Any]] | None = None

    def __str__(self) -> str:
        return self.id

    def run(self, module: nn.Module, pred: Tensor, target: Tensor, **kwargs: Any) -> Tensor:
        """``module(pred, target, **call_kwargs, **kwargs)``, parts summed into one tensor."""
        extra = self.call_kwargs(pred, target) if self.call_kwargs else {}
        return total(module(pred, target, **extra, **kwargs))


def total(out: Any) -> Tensor:
    """A loss's value, or the sum of its parts (a dict or tuple of sub-terms)."""
    if isinstance(out, Mapping):
        out = tuple(out.values())
    if isinstance(out, (tuple, list)):
        value = out[0]
        for part in out[1:]:
            value = value + part
        return value
    return out


def make_generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_close(actual: Tensor, expected: Tensor, dtype: torch.dtype = torch.float32) -> None:
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(actual.to(expected.dtype), expected, rtol=rtol, atol=atol)
