"""Every registered loss, given nothing to score, returns a connected zero.

An empty input (no rows: no boxes, no positives, an empty batch) must give value 0, no
NaN, and a gradient of zeros that still reaches the input (so DDP sees every parameter
and the term's log key exists on every rank). The battery's cases are cut to zero rows;
the losses that do not take ``(pred, target)`` have their own empty calls below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import lossmix
from lossmix.losses import (
    GHMC,
    GHMR,
    CrossEntropyLoss,
    DiscShiftLoss,
    GANLoss,
    GradientPenaltyLoss,
    MaskedTVLoss,
    R1GradientPenalty,
)
from tests.losses.battery import make_generator
from tests.losses.test_battery import CASES

REDUCTIONS = ("mean", "sum", "none")


def _cut(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value[:0]
    if isinstance(value, (tuple, list)):
        return type(value)(_cut(v) for v in value)
    return value


def _check_connected_zero(out: Tensor, pred: Tensor, reduction: str) -> None:
    if reduction == "none":
        assert out.numel() == 0
        value = out.sum()
    else:
        assert out.dim() == 0 and torch.isfinite(out) and out.item() == 0.0, out
        value = out
    (grad,) = torch.autograd.grad(value, pred, allow_unused=True)
    assert grad is not None, "the zero is not connected to pred"
    assert grad.shape == pred.shape and torch.all(grad == 0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_battery_case_on_empty_input(case, reduction):
    pred, target = case.inputs(torch.float64, make_generator(), 1.0)
    pred = _cut(pred).detach().requires_grad_()
    target = _cut(target)
    loss = case.make(reduction=reduction)
    _check_connected_zero(case.run(loss, pred, target), pred, reduction)
    if reduction == "mean":
        _check_connected_zero(case.run(loss, pred, target, avg_factor=4.0), pred, reduction)
        weight_shape = case.weight_shape(pred, target) if case.weight_shape else None
        if weight_shape is not None:
            weight = torch.ones(weight_shape, dtype=torch.float64)
            _check_connected_zero(case.run(loss, pred, target, weight=weight), pred, reduction)


def _disc() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(1)).double()


# name -> (build(reduction), call(module) -> (output, pred))
Call = Callable[[nn.Module], tuple[Tensor, Tensor]]


def _pred(*shape: int) -> Tensor:
    return torch.zeros(shape, dtype=torch.float64, requires_grad=True)


def _gan(is_disc: bool) -> Call:
    def call(module: nn.Module) -> tuple[Tensor, Tensor]:
        pred = _pred(0, 1)
        return module(pred, True, is_disc=is_disc), pred

    return call


def _ghmc(module: nn.Module) -> tuple[Tensor, Tensor]:
    pred = _pred(0, 3)
    return module(pred, torch.zeros(0, dtype=torch.long), torch.ones(0)), pred


def _ghmr(module: nn.Module) -> tuple[Tensor, Tensor]:
    pred = _pred(0, 4)
    return module(pred, torch.zeros(0, 4, dtype=torch.float64), torch.ones(0, 4)), pred


def _disc_shift(module: nn.Module) -> tuple[Tensor, Tensor]:
    pred = _pred(0, 1)
    return module(pred), pred


def _tv(module: nn.Module) -> tuple[Tensor, Tensor]:
    pred = _pred(0, 2, 4, 4)
    return module(pred, torch.ones(0, 1, 4, 4, dtype=torch.float64)), pred


def _gp(module: nn.Module) -> tuple[Tensor, Tensor]:
    disc = nn.Conv2d(2, 1, 1).double()
    real, fake = _pred(0, 2, 4, 4), _pred(0, 2, 4, 4)
    out = module(disc, real, fake)
    return out, next(disc.parameters())  # interpolates are detached: the zero reaches D


def _r1(module: nn.Module) -> tuple[Tensor, Tensor]:
    disc = nn.Conv2d(2, 1, 1).double()
    real = _pred(0, 2, 4, 4)
    out = module(disc, real)
    return out, next(disc.parameters())  # the input is cloned: the zero reaches D instead


def _mask_ce(module: nn.Module) -> tuple[Tensor, Tensor]:
    pred = _pred(0, 3, 4, 4)
    out = module(pred, torch.zeros(0, 4, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.long))
    return out, pred


OWN_CALLS: dict[str, tuple[Callable[..., nn.Module], Call, tuple[str, ...]]] = {
    "GANLoss-generator": (lambda **kw: GANLoss(gan_type="vanilla", **kw), _gan(False), REDUCTIONS),
    "GANLoss-disc-hinge": (lambda **kw: GANLoss(gan_type="hinge", **kw), _gan(True), REDUCTIONS),
    "GANLoss-wgan": (lambda **kw: GANLoss(gan_type="wgan", **kw), _gan(True), REDUCTIONS),
    "GHMC": (lambda **kw: GHMC(**kw), _ghmc, REDUCTIONS),
    "GHMC-momentum": (lambda **kw: GHMC(momentum=0.75, **kw), _ghmc, REDUCTIONS),
    "GHMR": (lambda **kw: GHMR(**kw), _ghmr, REDUCTIONS),
    "GHMR-momentum": (lambda **kw: GHMR(momentum=0.75, **kw), _ghmr, REDUCTIONS),
    "DiscShiftLoss": (lambda **kw: DiscShiftLoss(**kw), _disc_shift, REDUCTIONS),
    "MaskedTVLoss": (lambda **kw: MaskedTVLoss(**kw), _tv, REDUCTIONS),
    "GradientPenaltyLoss": (lambda **kw: GradientPenaltyLoss(**kw), _gp, REDUCTIONS),
    "R1GradientPenalty": (lambda **kw: R1GradientPenalty(norm_mode="HWC", **kw), _r1, REDUCTIONS),
    "CrossEntropyLoss-mask": (lambda **kw: CrossEntropyLoss(use_mask=True, **kw), _mask_ce, ("mean",)),
}


@pytest.mark.parametrize("name", sorted(OWN_CALLS))
def test_own_signature_losses_on_empty_input(name):
    build, call, reductions = OWN_CALLS[name]
    for reduction in reductions:
        out, wrt = call(build(reduction=reduction))
        _check_connected_zero(out, wrt, reduction)


def test_every_registered_loss_is_covered():
    covered = {type(case.make()).__name__ for case in CASES}
    covered |= {type(build()).__name__ for build, _, _ in OWN_CALLS.values()}
    builtin = {
        n
        for n in lossmix.LOSSES.names()
        if getattr(lossmix.LOSSES.get(n), "__module__", "").startswith("lossmix.losses")
    }
    missing = sorted(builtin - covered)
    assert not missing, f"no empty-input check for {missing}"
