"""The battery every ``WeightedLoss`` goes through, driven by per-family ``LossCase`` lists.

A family file (``tests/losses/cases_<family>.py``) exposes ``CASES: list[LossCase]``;
``test_battery.py`` runs every generic property below on every case. Family-specific
tests (reference values, identity limits, bad input) live in ``test_<family>.py``.
"""

from __future__ import annotations

from collections.abc import Callable
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
        float_target: whether the target is a float tensor that gradcheck may perturb
            (it never is: gradcheck only differentiates pred).
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

    def __str__(self) -> str:
        return self.id


def make_generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_close(actual: Tensor, expected: Tensor, dtype: torch.dtype = torch.float32) -> None:
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(actual.to(expected.dtype), expected, rtol=rtol, atol=atol)
