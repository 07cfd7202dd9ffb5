"""Regression losses: torch equivalence, formula values, masked means, weights, building."""

from __future__ import annotations

import math

import pytest
import torch

import lossmix
from lossmix import functional as F
from lossmix.errors import LossConfigError, LossInputError
from lossmix.losses import BalancedL1Loss, CharbonnierLoss, L1Loss, MSELoss, SmoothL1Loss
from lossmix.reduction import EPS32
from tests.losses.battery import make_generator


def _pair(shape=(6, 4), seed=0, dtype=torch.float64):
    gen = make_generator(seed)
    return (
        torch.randn(shape, generator=gen, dtype=dtype) * 2,
        torch.randn(shape, generator=gen, dtype=dtype),
    )


# ------------------------------------------------------------------------------------------
# Smooth L1, L1, MSE against torch


@pytest.mark.parametrize("beta", [0.05, 0.5, 1.0, 3.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_smooth_l1_equals_torch(beta: float, reduction: str) -> None:
    pred, target = _pair()
    pred.requires_grad_()
    loss = SmoothL1Loss(beta=beta, reduction=reduction)(pred, target)
    expected = torch.nn.functional.smooth_l1_loss(pred, target, beta=beta, reduction=reduction)
    torch.testing.assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss.sum(), pred)
    (expected_grad,) = torch.autograd.grad(expected.sum(), pred)
    torch.testing.assert_close(grad, expected_grad)


def test_smooth_l1_beta_matters() -> None:
    pred, target = _pair()
    assert not torch.allclose(SmoothL1Loss(beta=0.5)(pred, target), SmoothL1Loss(beta=1.0)(pred, target))


@pytest.mark.parametrize("beta", [0, 0.0, -1.0, float("nan"), float("inf"), "1", None, True])
def test_smooth_l1_bad_beta_raises(beta: object) -> None:
    with pytest.raises(LossConfigError, match="beta"):
        SmoothL1Loss(beta=beta)


@pytest.mark.parametrize(
    ("loss_cls", "torch_fn"),
    [
        (L1Loss, torch.nn.functional.l1_loss),
        (MSELoss, torch.nn.functional.mse_loss),
    ],
)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_l1_and_mse_equal_torch(loss_cls, torch_fn, reduction: str) -> None:
    pred, target = _pair((3, 2, 5), seed=1)
    torch.testing.assert_close(
        loss_cls(reduction=reduction)(pred, target), torch_fn(pred, target, reduction=reduction)
    )


@pytest.mark.parametrize("loss_cls", [L1Loss, SmoothL1Loss])
def test_empty_input_gives_zero_like_mmdetection(loss_cls) -> None:
    pred = torch.zeros(0, 4, requires_grad=True)
    assert loss_cls()(pred, torch.zeros(0, 4)).item() == 0.0


# ------------------------------------------------------------------------------------------
# Balanced L1


def _balanced_formula(d: float, alpha: float, gamma: float, beta: float) -> float:
    b = math.exp(gamma / alpha) - 1
    if d < beta:
        return alpha / b * (b * d + 1) * math.log(b * d / beta + 1) - alpha * d
    return gamma * d + gamma / b - alpha * beta


@pytest.mark.parametrize(
    ("alpha", "gamma", "beta"),
    [
        (0.5, 1.5, 1.0),
        (0.25, 1.0, 0.5),
        (1.0, 2.0, 2.0),
    ],
)
def test_balanced_l1_continuous_at_beta(alpha: float, gamma: float, beta: float) -> None:
    target = torch.zeros(3, dtype=torch.float64)
    pred = torch.tensor([beta - 1e-9, beta, beta + 1e-9], dtype=torch.float64)
    loss = BalancedL1Loss(alpha=alpha, gamma=gamma, beta=beta, reduction="none")(pred, target)
    torch.testing.assert_close(loss, loss[1].expand(3), rtol=0, atol=1e-8)
    # The inner branch reaches gamma*beta + gamma/b - alpha*beta at d = beta.
    b = math.exp(gamma / alpha) - 1
    assert loss[0].item() == pytest.approx(gamma * beta + gamma / b - alpha * beta, abs=1e-8)


def test_balanced_l1_gradient_continuous_at_beta_one() -> None:
    # With beta = 1 the slope of the inner branch at d = 1 is gamma, the outer branch's slope.
    pred = torch.tensor([1 - 1e-7, 1 + 1e-7], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(BalancedL1Loss(reduction="sum")(pred, torch.zeros(2)), pred)
    torch.testing.assert_close(grad, torch.full((2,), 1.5, dtype=torch.float64), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("alpha", "gamma", "beta"),
    [
        (0.5, 1.5, 1.0),
        (0.25, 1.0, 0.5),
        (1.0, 2.0, 2.0),
    ],
)
def test_balanced_l1_values_from_formula(alpha: float, gamma: float, beta: float) -> None:
    d = [0.0, 0.1, 0.4999, 0.7, 1.0, 1.9, 2.0, 3.5]
    target = torch.zeros(len(d), dtype=torch.float64)
    pred = torch.tensor(d, dtype=torch.float64) * torch.tensor([1, -1] * 4)  # |d| matters
    loss = BalancedL1Loss(alpha=alpha, gamma=gamma, beta=beta, reduction="none")(pred, target)
    expected = torch.tensor([_balanced_formula(x, alpha, gamma, beta) for x in d], dtype=torch.float64)
    torch.testing.assert_close(loss, expected)


def test_balanced_l1_documented_value() -> None:
    # alpha=0.5, gamma=1.5: b = e^3 - 1; d = 2 >= beta: 1.5*2 + 1.5/b - 0.5.
    value = F.balanced_l1_loss(torch.tensor([2.0]), torch.tensor([0.0]))
    assert value.item() == pytest.approx(3 + 1.5 / (math.e**3 - 1) - 0.5, rel=1e-6)


@pytest.mark.parametrize("arg", ["alpha", "gamma", "beta"])
@pytest.mark.parametrize("value", [0, -0.5, float("nan")])
def test_balanced_l1_bad_args_raise(arg: str, value: float) -> None:
    with pytest.raises(LossConfigError, match=arg):
        BalancedL1Loss(**{arg: value})


# ------------------------------------------------------------------------------------------
# Charbonnier with MMagic's masked mean


def _mmagic_masked(loss: torch.Tensor, mask: torch.Tensor, sample_wise: bool) -> torch.Tensor:
    """MMagic's ``mask_reduce_loss`` for 'mean', written from REFERENCE §6.1."""
    loss = loss * mask
    mask = mask.expand_as(loss)
    if sample_wise:
        per_sample = mask.sum(dim=(1, 2, 3), keepdim=True)
        return (loss / (per_sample + 1e-12)).sum() / mask.size(0)
    return loss.sum() / (mask.sum() + 1e-12)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("sample_wise", [False, True])
def test_charbonnier_masked_mean_matches_mmagic(channels: int, sample_wise: bool) -> None:
    gen = make_generator(40)
    pred = torch.randn(3, 3, 4, 5, generator=gen, dtype=torch.float64)
    target = torch.randn(3, 3, 4, 5, generator=gen, dtype=torch.float64)
    mask = (torch.rand(3, channels, 4, 5, generator=gen) < 0.5).to(torch.float64)
    mask[0] = 0
    mask[0, 0, 0, 0] = 1  # one sample with a single pixel: weights differ between the two rules
    elems = torch.sqrt((pred - target) ** 2 + 1e-6)
    loss = CharbonnierLoss(eps=1e-6, sample_wise=sample_wise, loss_weight=0.5)(pred, target, mask)
    torch.testing.assert_close(loss, 0.5 * _mmagic_masked(elems, mask, sample_wise))
    other = CharbonnierLoss(eps=1e-6, sample_wise=not sample_wise)(pred, target, mask)
    assert not torch.allclose(loss, 0.5 * other)


def test_charbonnier_masked_sum_and_none() -> None:
    pred, target = _pair((2, 3, 4, 4), seed=41)
    mask = (torch.rand(2, 1, 4, 4, generator=make_generator(42)) < 0.5).double()
    elems = torch.sqrt((pred - target) ** 2 + 1e-12)
    torch.testing.assert_close(CharbonnierLoss(reduction="sum")(pred, target, mask), (elems * mask).sum())
    torch.testing.assert_close(CharbonnierLoss(reduction="none")(pred, target, mask), elems * mask)


def test_charbonnier_avg_factor_replaces_the_masked_denominator() -> None:
    pred, target = _pair((2, 3, 4, 4), seed=43)
    mask = (torch.rand(2, 1, 4, 4, generator=make_generator(44)) < 0.5).double()
    elems = torch.sqrt((pred - target) ** 2 + 1e-12)
    torch.testing.assert_close(
        CharbonnierLoss()(pred, target, mask, avg_factor=7.0), (elems * mask).sum() / (7.0 + EPS32)
    )


def test_charbonnier_mask_with_wrong_channels_raises_with_both_shapes() -> None:
    pred, target = _pair((2, 3, 4, 4), seed=45)
    with pytest.raises(ValueError, match=r"\(2, 2, 4, 4\).*\(2, 3, 4, 4\)"):
        CharbonnierLoss()(pred, target, torch.ones(2, 2, 4, 4))


def test_charbonnier_never_zero_and_eps_checked() -> None:
    x = torch.zeros(4)
    assert CharbonnierLoss(eps=1e-6)(x, x).item() == pytest.approx(1e-3)
    with pytest.raises(LossConfigError, match="eps"):
        CharbonnierLoss(eps=0)


# ------------------------------------------------------------------------------------------
# Weight shapes


@pytest.mark.parametrize(
    ("weight_shape", "expanded"),
    [
        ((6, 4), lambda w: w),
        ((6,), lambda w: w[:, None]),  # one weight per row
        ((6, 1), lambda w: w),
        ((1, 4), lambda w: w),
        ((), lambda w: w),
    ],
)
def test_broadcastable_weight_shapes_are_accepted(weight_shape, expanded) -> None:
    pred, target = _pair(seed=46)
    weight = torch.rand(weight_shape, generator=make_generator(47), dtype=torch.float64)
    elems = (pred - target).abs()
    torch.testing.assert_close(L1Loss()(pred, target, weight=weight), (elems * expanded(weight)).mean())


@pytest.mark.parametrize("weight_shape", [(5,), (6, 3), (2, 6, 4), (3, 4)])
def test_misshaped_weight_raises_naming_both_shapes(weight_shape) -> None:
    pred, target = _pair(seed=48)
    with pytest.raises(LossInputError, match="weight") as info:
        SmoothL1Loss()(pred, target, weight=torch.ones(weight_shape))
    assert str(tuple(weight_shape)) in str(info.value) and "(6, 4)" in str(info.value)


# ------------------------------------------------------------------------------------------
# Building from a torch.nn target


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"avg_factor": 5.0},
        {"weight": "rows"},
        {"weight": "elements", "avg_factor": 3.0},
        {"reduction_override": "none"},
        {"reduction_override": "sum", "weight": "elements"},
    ],
)
def test_torch_smooth_l1_target_equals_lossmix_smooth_l1(kwargs: dict) -> None:
    pred, target = _pair(seed=49)
    weights = {"rows": torch.rand(6, dtype=torch.float64), "elements": torch.rand(6, 4, dtype=torch.float64)}
    call = {k: weights.get(v, v) if k == "weight" else v for k, v in kwargs.items()}
    built = lossmix.build_loss({"_target_": "torch.nn.SmoothL1Loss", "beta": 0.5, "loss_weight": 2.5})
    native = SmoothL1Loss(beta=0.5, loss_weight=2.5)
    torch.testing.assert_close(built(pred, target, **call), native(pred, target, **call))
    plain = lossmix.build_loss({"_target_": "torch.nn.SmoothL1Loss", "beta": 0.5})
    torch.testing.assert_close(plain(pred, target), SmoothL1Loss(beta=0.5)(pred, target))
