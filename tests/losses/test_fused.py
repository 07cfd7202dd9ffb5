"""Fused kernels equal the plain path: values and gradients, every reduction, weight shape and
``avg_factor``, the cross-entropy's options, soft and index focal targets, extreme logits,
empty input. (The rules, gradcheck and compile: ``test_fused_rules.py``.)"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from lossmix.losses import CrossEntropyCustomLoss, CrossEntropyLoss, FocalCustomLoss, FocalLoss, GIoULoss

# float32 to 1e-6 of the plain path, float64 to float64 rounding
TOL = {torch.float32: {"rtol": 1e-6, "atol": 1e-6}, torch.float64: {"rtol": 1e-12, "atol": 1e-14}}
N, C = 24, 5
# CrossEntropyLoss says that ignored labels still count in the mean, on both paths alike
pytestmark = pytest.mark.filterwarnings("ignore:CrossEntropyLoss.*avg_non_ignore")


def _logits(dtype: torch.dtype, gen: torch.Generator, scale: float, *spatial: int) -> Tensor:
    return torch.randn(N, C, *spatial, generator=gen, dtype=dtype) * scale


def _focal_index(dtype, gen, scale):
    labels = torch.randint(0, C + 1, (N,), generator=gen)  # C: the background (all negative)
    return _logits(dtype, gen, scale), labels


def _focal_soft(dtype, gen, scale):
    return _logits(dtype, gen, scale), torch.rand(N, C, generator=gen, dtype=dtype)


def _ce_index(dtype, gen, scale, *spatial: int, ignore: int = -100):
    labels = torch.randint(0, C, (N, *spatial), generator=gen)
    labels.view(-1)[::4] = ignore
    return _logits(dtype, gen, scale, *spatial), labels


def _boxes(dtype, gen, scale):
    xy = torch.rand(N, 2, generator=gen, dtype=dtype) * 50
    target = torch.cat([xy, xy + 1 + torch.rand(N, 2, generator=gen, dtype=dtype) * 20], -1)
    pred = target + torch.randn(N, 4, generator=gen, dtype=dtype) * 5
    pred[:3] = target[:3]  # exact matches: ties of min/max between pred and target
    pred[3, 2:] = pred[3, :2] - 1  # an inverted box
    return pred, target


@dataclass
class Case:
    id: str
    make: Callable[..., nn.Module]
    inputs: Callable[[torch.dtype, torch.Generator, float], tuple[Tensor, Tensor]]
    weights: dict[str, Callable[[Tensor], tuple[int, ...]]]
    extreme: bool = True  # logits at ±1e4 (not boxes)

    def __str__(self) -> str:
        return self.id


ROW = {"row": lambda pred: (N,)}
WEIGHT = [None, 0.5, [0.5, 1.0, 2.0, 0.25, 3.0]]
CASES = [
    Case("focal", lambda **k: FocalLoss(**k), _focal_index, {**ROW, "element": lambda p: (N, C)}),
    Case("focal-soft", lambda **k: FocalLoss(**k), _focal_soft, {**ROW, "element": lambda p: (N, C)}),
    Case(
        "focal-gamma0.5-noalpha",
        lambda **k: FocalLoss(gamma=0.5, alpha=None, **k),
        _focal_index,
        {**ROW, "fsaf-numel": lambda p: (N * C,)},
    ),
    Case("focal-gamma0-bce", lambda **k: FocalLoss(gamma=0.0, **k), _focal_soft, ROW),
    Case("focal-custom", lambda **k: FocalCustomLoss(num_classes=C, **k), _focal_index, ROW),
    Case("ce", lambda **k: CrossEntropyLoss(**k), _ce_index, ROW),
    Case("ce-avg-non-ignore", lambda **k: CrossEntropyLoss(avg_non_ignore=True, **k), _ce_index, ROW),
    Case("ce-class-weight", lambda **k: CrossEntropyLoss(class_weight=WEIGHT[2], **k), _ce_index, ROW),
    Case("ce-smoothing", lambda **k: CrossEntropyLoss(label_smoothing=0.1, **k), _ce_index, ROW),
    Case(
        "ce-weight-smoothing-ignore255",
        lambda **k: CrossEntropyLoss(class_weight=WEIGHT[2], label_smoothing=0.2, ignore_index=255, **k),
        lambda d, g, s: _ce_index(d, g, s, ignore=255),
        ROW,
    ),
    Case(
        "ce-spatial",
        lambda **k: CrossEntropyLoss(label_smoothing=0.1, **k),
        lambda d, g, s: _ce_index(d, g, s, 3, 2),
        {"element": lambda p: (N, 3, 2)},
    ),
    Case("ce-custom", lambda **k: CrossEntropyCustomLoss(num_classes=C - 1, **k), _ce_index, ROW),
    Case("giou", lambda **k: GIoULoss(**k), _boxes, {**ROW, "per-coordinate": lambda p: (N, 4)}, False),
]
# (reduction, avg_factor): avg_factor is read by 'mean' only ('none' ignores it, 'sum' refuses it)
REDUCTIONS = [("none", None), ("mean", None), ("sum", None), ("mean", 7.0)]


def _step(case: Case, fused: bool, pred: Tensor, target: Tensor, reduction: str, **call: Any):
    """The loss and its gradient with respect to ``pred`` for a fixed cotangent."""
    x = pred.detach().requires_grad_()
    out = case.make(fused=fused, reduction=reduction)(x, target, **call)
    cotangent = torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view(out.shape)
    (grad,) = torch.autograd.grad(out, x, cotangent)
    return out.detach(), grad


def _compare(case: Case, dtype: torch.dtype, scale: float, reduction: str, **call: Any) -> None:
    pred, target = case.inputs(dtype, torch.Generator().manual_seed(0), scale)
    if "weight" in call and callable(call["weight"]):
        gen = torch.Generator().manual_seed(1)
        shape = call["weight"](pred)
        call["weight"] = (torch.rand(shape, generator=gen, dtype=dtype) * 2).masked_fill(
            torch.rand(shape, generator=gen) < 0.3, 0.0
        )
    plain_value, plain_grad = _step(case, False, pred, target, reduction, **call)
    fused_value, fused_grad = _step(case, True, pred, target, reduction, **call)
    assert torch.isfinite(fused_value).all() and torch.isfinite(fused_grad).all()
    torch.testing.assert_close(fused_value, plain_value, **TOL[dtype])
    torch.testing.assert_close(fused_grad, plain_grad, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(("reduction", "avg_factor"), REDUCTIONS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_fused_equals_plain_without_weight(case, reduction, avg_factor, dtype):
    _compare(case, dtype, 1.0, reduction, avg_factor=avg_factor)


@pytest.mark.parametrize(("reduction", "avg_factor"), REDUCTIONS)
@pytest.mark.parametrize(
    ("case", "weight"),
    [(c, w) for c in CASES for w in c.weights],
    ids=lambda v: str(v) if isinstance(v, str) else v.id,
)
def test_fused_equals_plain_with_weights(case, weight, reduction, avg_factor):
    _compare(case, torch.float32, 1.0, reduction, weight=case.weights[weight], avg_factor=avg_factor)


@pytest.mark.parametrize("scale", [1e4, -1e4])
@pytest.mark.parametrize("case", [c for c in CASES if c.extreme], ids=str)
def test_extreme_logits_stay_finite_and_equal(case, scale):
    _compare(case, torch.float32, scale, "sum")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_empty_input_gives_a_connected_zero(case, reduction):
    pred, target = case.inputs(torch.float32, torch.Generator().manual_seed(0), 1.0)
    x = pred[:0].detach().requires_grad_()
    out = case.make(fused=True, reduction=reduction)(x, target[:0])
    assert out.item() == 0.0 and out.grad_fn is not None
    out.backward()
    assert x.grad is not None and x.grad.shape == x.shape
