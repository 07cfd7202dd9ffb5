"""Generic properties of every loss module, run on every case of every family."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
import torch

from lossmix.reduction import EPS32
from tests.losses.battery import LossCase, assert_close, make_generator


def _collect() -> list[LossCase]:
    cases: list[LossCase] = []
    here = Path(__file__).parent
    for info in sorted(pkgutil.iter_modules([str(here)]), key=lambda m: m.name):
        if info.name.startswith("cases_"):
            cases += importlib.import_module(f"tests.losses.{info.name}").CASES
    return cases


CASES = _collect()


def _weight(case: LossCase, pred: torch.Tensor, target: torch.Tensor, like: torch.Tensor):
    shape = case.weight_shape(pred, target) if case.weight_shape else like.shape
    gen = make_generator(7)
    w = torch.rand(shape, generator=gen, dtype=like.dtype)
    return torch.where(torch.rand(shape, generator=gen) < 0.3, torch.zeros_like(w), w)


def _broadcast(weight: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    while weight.dim() < loss.dim():
        weight = weight.unsqueeze(-1)
    return weight


@pytest.mark.parametrize("case", CASES, ids=str)
def test_reductions_agree_with_none(case: LossCase) -> None:
    pred, target = case.inputs(torch.float64, make_generator(), 1.0)
    elems = case.run(case.make(reduction="none"), pred, target)
    assert_close(case.run(case.make(reduction="mean"), pred, target), elems.mean(), torch.float64)
    assert_close(case.run(case.make(reduction="sum"), pred, target), elems.sum(), torch.float64)
    assert_close(case.run(case.make(), pred, target, reduction_override="sum"), elems.sum(), torch.float64)
    assert_close(
        case.run(case.make(reduction="sum"), pred, target, reduction_override="none"), elems, torch.float64
    )


@pytest.mark.parametrize("case", [c for c in CASES if c.reference is not None], ids=str)
def test_matches_reference(case: LossCase) -> None:
    pred, target = case.inputs(torch.float64, make_generator(1), 1.0)
    assert_close(
        case.run(case.make(reduction="none"), pred, target), case.reference(pred, target), torch.float64
    )


@pytest.mark.parametrize("case", CASES, ids=str)
def test_weight_avg_factor_and_loss_weight(case: LossCase) -> None:
    pred, target = case.inputs(torch.float64, make_generator(2), 1.0)
    elems = case.run(case.make(reduction="none"), pred, target)
    weight = _weight(case, pred, target, elems)
    weighted = elems * _broadcast(weight, elems)
    if case.extra.get("masked_mean"):  # MMagic semantics: a mean over the weighted elements
        expected = weighted.sum() / (_broadcast(weight, elems).expand_as(elems).sum() + 1e-12)
    elif case.extra.get("nonzero_mean"):  # a mean over the elements of non-zero weight
        expected = weighted.sum() / ((_broadcast(weight, elems).expand_as(elems) > 0).sum() + EPS32)
    else:
        expected = weighted.mean()
    assert_close(case.run(case.make(), pred, target, weight=weight), expected, torch.float64)
    assert_close(
        case.run(case.make(), pred, target, weight=weight, avg_factor=3.0),
        weighted.sum() / (3.0 + EPS32),
        torch.float64,
    )
    assert_close(case.run(case.make(reduction="none"), pred, target, avg_factor=3.0), elems, torch.float64)
    assert_close(case.run(case.make(loss_weight=2.5), pred, target), 2.5 * elems.mean(), torch.float64)
    with pytest.raises(ValueError, match="avg_factor"):
        case.run(case.make(reduction="sum"), pred, target, avg_factor=3.0)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_zero_weight_is_connected_zero(case: LossCase) -> None:
    pred, target = case.inputs(torch.float32, make_generator(3), 1.0)
    pred = pred.detach().requires_grad_()
    elems = case.run(case.make(reduction="none"), pred, target)
    weight = torch.zeros(case.weight_shape(pred, target) if case.weight_shape else elems.shape)
    loss = case.run(case.make(), pred, target, weight=weight)
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, pred, allow_unused=True)
    assert grad is not None and torch.all(grad == 0)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_gradcheck_float64(case: LossCase) -> None:
    pred, target = case.inputs(torch.float64, make_generator(4), 1.0)
    pred = pred.detach().requires_grad_()
    module = case.make()
    assert torch.autograd.gradcheck(lambda p: case.run(module, p, target), (pred,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_extreme_inputs_stay_finite(case: LossCase) -> None:
    for scale in case.extreme_scales:
        pred, target = case.inputs(torch.float32, make_generator(5), scale)
        pred = pred.detach().requires_grad_()
        loss = case.run(case.make(), pred, target)
        (grad,) = torch.autograd.grad(loss, pred)
        assert torch.isfinite(loss), f"{case.id}: loss not finite at scale {scale}"
        assert torch.isfinite(grad).all(), f"{case.id}: gradient not finite at scale {scale}"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bfloat16_autocast_stays_finite(case: LossCase) -> None:
    pred, target = case.inputs(torch.float32, make_generator(6), case.autocast_scale)
    pred = pred.detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = case.run(case.make(), pred, target)
    (grad,) = torch.autograd.grad(loss.float(), pred)
    assert torch.isfinite(loss.float()) and torch.isfinite(grad).all()


@pytest.mark.parametrize("case", [c for c in CASES if c.kernel is not None], ids=str)
def test_kernel_compiles_fullgraph(case: LossCase) -> None:
    pred, target = case.inputs(torch.float32, make_generator(8), 1.0)
    torch._dynamo.reset()
    compiled = torch.compile(case.kernel, fullgraph=True, backend="aot_eager")
    assert_close(compiled(pred, target), case.kernel(pred, target))


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("bad", ["avg", "", None, "MEAN"])
def test_bad_reduction_raises(case: LossCase, bad: object) -> None:
    with pytest.raises(ValueError, match="reduction"):
        case.make(reduction=bad)
    pred, target = case.inputs(torch.float32, make_generator(9), 1.0)
    if bad:
        with pytest.raises(ValueError, match="reduction"):
            case.run(case.make(), pred, target, reduction_override=bad)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_registered_and_buildable(case: LossCase) -> None:
    import lossmix

    module = case.make()
    name = type(module).__name__
    if name not in lossmix.LOSSES:  # registered in a scope only (mmagic.PSNRLoss)
        name = case.id
    assert lossmix.LOSSES.get(name) is type(module)
    info = lossmix.LOSSES.describe(name)
    assert "reduction" in info.params and "loss_weight" in info.params
    assert info.summary
