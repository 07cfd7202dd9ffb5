"""The reduction contract: MMDetection's ``weight_reduce_loss`` table and MMagic's masked mean.

Expected values are computed here independently, with plain torch ops or Python loops
(MMDetection's ``mmdet/models/losses/utils.py``, MMagic's ``mask_reduce_loss``).
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from lossmix.reduction import (
    EPS32,
    REDUCTIONS,
    check_reduction,
    mask_reduce_loss,
    reduce_loss,
    weight_reduce_loss,
    weighted_loss,
)

EPS = torch.finfo(torch.float32).eps  # MMDetection's guard: avg_factor + eps


def sample(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def check_exact(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# weight_reduce_loss: the table
# ---------------------------------------------------------------------------------------------


def test_eps_is_float32_eps():
    assert EPS32 == EPS == 2.0**-23
    assert REDUCTIONS == ("none", "mean", "sum")


@pytest.mark.parametrize("with_weight", [False, True])
@pytest.mark.parametrize("avg_factor", [None, 3.0, 7])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_weight_reduce_loss_table(reduction, avg_factor, with_weight):
    loss = sample(4, 5, seed=1) * 3 - 1  # some negative elements too
    weight = (sample(4, 5, seed=2) > 0.4).double() * 2.5 if with_weight else None
    weighted = loss * weight if with_weight else loss

    if reduction == "sum" and avg_factor is not None:
        with pytest.raises(ValueError, match=r'avg_factor.*reduction="sum".*reduction="mean"'):
            weight_reduce_loss(loss, weight, reduction, avg_factor)
        return

    out = weight_reduce_loss(loss, weight, reduction, avg_factor)
    if reduction == "none":  # avg_factor is silently ignored
        expected = weighted
    elif reduction == "sum":
        expected = weighted.sum()
    elif avg_factor is None:  # mean over all elements, the weight sum is ignored
        expected = weighted.sum() / loss.numel()
    else:
        expected = weighted.sum() / (avg_factor + EPS)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=0)
    if reduction != "none":
        assert out.dim() == 0


def test_mean_with_avg_factor_is_exactly_sum_over_avg_factor_plus_eps():
    for dtype in (torch.float32, torch.float64):
        loss = sample(17, seed=3, dtype=dtype)
        out = weight_reduce_loss(loss, None, "mean", 5.0)
        check_exact(out, loss.sum() / (5.0 + EPS))
        assert out.dtype == dtype
    assert out != loss.sum() / 5.0  # float64 shows that the eps is really there


def test_defaults_are_mean_without_weight():
    loss = sample(3, 4, seed=4)
    torch.testing.assert_close(weight_reduce_loss(loss), loss.mean())


@pytest.mark.parametrize("fix", ['reduction="mean"', "drop avg_factor"])
def test_sum_with_avg_factor_message_names_avg_factor_and_the_fix(fix):
    with pytest.raises(ValueError) as info:
        weight_reduce_loss(torch.ones(3), reduction="sum", avg_factor=2.0)
    assert "avg_factor" in str(info.value)
    assert fix in str(info.value)


def test_avg_factor_zero_with_nonzero_sum_is_sum_over_eps():
    loss = torch.tensor([1.0, 2.0, 0.5])
    out = weight_reduce_loss(loss, None, "mean", 0)
    assert torch.isfinite(out)
    check_exact(out, loss.sum() / EPS)
    assert out > 1e6  # enormous and silent, MMDetection's documented behaviour


def test_avg_factor_zero_with_zero_sum_is_zero():
    out = weight_reduce_loss(torch.ones(3), torch.zeros(3), "mean", 0.0)
    assert out == 0 and torch.isfinite(out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_avg_factor_as_a_0dim_tensor(dtype):
    loss = sample(6, seed=5, dtype=dtype)
    weight = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0], dtype=dtype)
    af = torch.tensor(4.0, dtype=dtype)
    out = weight_reduce_loss(loss, weight, "mean", af)
    assert isinstance(out, torch.Tensor) and out.dim() == 0
    torch.testing.assert_close(out, weight_reduce_loss(loss, weight, "mean", 4.0))
    torch.testing.assert_close(out, (loss * weight).sum() / (4.0 + EPS))


def test_avg_factor_tensor_keeps_its_gradient():
    loss = sample(5, seed=6).requires_grad_()
    af = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    out = weight_reduce_loss(loss, None, "mean", af)
    out.backward()
    torch.testing.assert_close(loss.grad, torch.full_like(loss, 1 / (2.0 + EPS)))
    torch.testing.assert_close(af.grad, -loss.detach().sum() / (2.0 + EPS) ** 2)


@pytest.mark.parametrize("wshape", [(4, 1), (1, 5), (5,), (), (4, 5)])
def test_weight_broadcasts(wshape):
    loss = sample(4, 5, seed=7)
    weight = sample(*wshape, seed=8) + 0.5
    out = weight_reduce_loss(loss, weight, "none")
    assert out.shape == (4, 5)
    full = weight.expand(4, 5)
    for i in range(4):
        for j in range(5):
            assert out[i, j].item() == pytest.approx(loss[i, j].item() * full[i, j].item())
    torch.testing.assert_close(weight_reduce_loss(loss, weight, "sum"), out.sum())


def test_integer_and_bool_weights_are_cast_to_the_loss_dtype():
    loss = sample(4, seed=9, dtype=torch.float32)
    for weight in (torch.tensor([1, 0, 2, 0]), torch.tensor([True, False, True, False])):
        out = weight_reduce_loss(loss, weight, "none")
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, loss * weight.float())


# ---------------------------------------------------------------------------------------------
# zero weights: the torch.where rule and the connected zero
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("reduction,avg_factor", [("mean", None), ("mean", 2.0), ("sum", None)])
def test_nonfinite_at_zero_weight_does_not_leak(bad, reduction, avg_factor):
    loss = torch.tensor([1.0, bad, 3.0, bad])
    weight = torch.tensor([1.0, 0.0, 2.0, 0.0])
    out = weight_reduce_loss(loss, weight, reduction, avg_factor)
    assert torch.isfinite(out)
    total = torch.tensor(1.0 + 6.0)
    expected = {None: total / 4 if reduction == "mean" else total, 2.0: total / (2.0 + EPS)}
    torch.testing.assert_close(out, expected[avg_factor])
    # ... while a plain multiply (MMDetection's loss * weight) would let it through
    assert not torch.isfinite((loss * weight).sum())


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nonfinite_at_zero_weight_is_zero_under_none(bad):
    loss = torch.tensor([[bad, 2.0], [3.0, bad]])
    weight = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    out = weight_reduce_loss(loss, weight, "none")
    check_exact(out, torch.tensor([[0.0, 2.0], [3.0, 0.0]]))


def test_nonfinite_at_zero_weight_with_broadcast_weight():
    loss = torch.tensor([[1.0, 2.0], [math.nan, math.inf]])
    weight = torch.tensor([[1.0], [0.0]])  # drops the whole second row
    out = weight_reduce_loss(loss, weight, "sum")
    check_exact(out, torch.tensor(3.0))


@pytest.mark.parametrize("reduction,avg_factor", [("mean", None), ("mean", 3.0), ("sum", None)])
def test_all_zero_weight_gives_a_connected_zero(reduction, avg_factor):
    pred = sample(3, 4, seed=10).requires_grad_()
    target = sample(3, 4, seed=11)
    out = weight_reduce_loss((pred - target).abs(), torch.zeros(3, 4), reduction, avg_factor)
    assert out == 0
    assert out.requires_grad and out.grad_fn is not None
    out.backward()
    assert pred.grad is not None
    check_exact(pred.grad, torch.zeros_like(pred))


def test_masked_nan_in_a_constant_gives_a_finite_zero_gradient():
    pred = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    offset = torch.tensor([0.0, math.nan, 0.0])  # NaN that does not depend on pred
    out = weight_reduce_loss(pred * 2 + offset, torch.tensor([1.0, 0.0, 1.0]), "sum")
    out.backward()
    check_exact(out.detach(), torch.tensor(8.0))
    check_exact(pred.grad, torch.tensor([2.0, 0.0, 2.0]))


# ---------------------------------------------------------------------------------------------
# weighted_loss decorator
# ---------------------------------------------------------------------------------------------


def smooth_kernel(pred, target, beta=1.0):
    """Smooth L1, element-wise (a test kernel)."""
    d = (pred - target).abs()
    return torch.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)


def test_weighted_loss_keeps_metadata():
    fn = weighted_loss(smooth_kernel)
    assert fn.__name__ == "smooth_kernel"
    assert fn.__doc__ == smooth_kernel.__doc__
    assert fn.__module__ == smooth_kernel.__module__
    assert fn.__qualname__ == smooth_kernel.__qualname__
    assert fn.__wrapped__ is smooth_kernel


@pytest.mark.parametrize("beta", [0.3, 1.0, 2.0])
@pytest.mark.parametrize(
    "reduction,avg_factor", [("none", None), ("mean", None), ("mean", 4.0), ("sum", None)]
)
def test_weighted_loss_passes_hyper_parameters_through_kwargs(beta, reduction, avg_factor):
    fn = weighted_loss(smooth_kernel)
    pred, target = sample(3, 4, seed=12) * 3, sample(3, 4, seed=13)
    weight = sample(3, 4, seed=14)
    out = fn(pred, target, weight, reduction, avg_factor, beta=beta)
    d = (pred - target).abs()
    elem = torch.where(d < beta, 0.5 * d**2 / beta, d - 0.5 * beta) * weight
    expected = {"none": elem, "sum": elem.sum()}.get(reduction)
    if reduction == "mean":
        expected = elem.mean() if avg_factor is None else elem.sum() / (avg_factor + EPS)
    torch.testing.assert_close(out, expected)
    # keywords work as well as positions, and the default beta is the kernel's own
    kw = fn(pred, target, weight=weight, reduction=reduction, avg_factor=avg_factor, beta=beta)
    torch.testing.assert_close(kw, out)
    if beta == 1.0:
        torch.testing.assert_close(fn(pred, target, weight, reduction, avg_factor), out)


def test_weighted_loss_refuses_sum_with_avg_factor():
    with pytest.raises(ValueError, match="avg_factor"):
        weighted_loss(smooth_kernel)(torch.ones(2), torch.zeros(2), reduction="sum", avg_factor=1)


# ---------------------------------------------------------------------------------------------
# reduce_loss / check_reduction
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_reduce_loss(reduction):
    loss = sample(3, 4, seed=15)
    expected = {"none": loss, "mean": loss.sum() / 12, "sum": loss.sum()}[reduction]
    torch.testing.assert_close(reduce_loss(loss, reduction), expected)
    assert check_reduction(reduction) == reduction


BAD_REDUCTIONS = ["avg", "Mean", "", "elementwise_mean", None, 1, ("mean",)]


@pytest.mark.parametrize("bad", BAD_REDUCTIONS)
@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda r: check_reduction(r), id="check_reduction"),
        pytest.param(lambda r: reduce_loss(torch.ones(2), r), id="reduce_loss"),
        pytest.param(lambda r: weight_reduce_loss(torch.ones(2), None, r), id="weight_reduce_loss"),
        pytest.param(
            lambda r: weight_reduce_loss(torch.ones(2), torch.ones(2), r, 1.0),
            id="weight_reduce_loss+avg_factor",
        ),
        pytest.param(
            lambda r: mask_reduce_loss(torch.ones(1, 1, 2), torch.ones(1, 1, 2), r), id="mask_reduce_loss"
        ),
    ],
)
def test_unknown_reduction_raises_listing_the_valid_ones(call, bad):
    with pytest.raises(ValueError) as info:
        call(bad)
    message = str(info.value)
    assert repr(bad) in message
    for name in ("'none'", "'mean'", "'sum'"):
        assert name in message


def test_check_reduction_names_its_owner():
    with pytest.raises(ValueError, match=r"^FocalLoss: reduction='avg'"):
        check_reduction("avg", owner="FocalLoss")


# ---------------------------------------------------------------------------------------------
# mask_reduce_loss: MMagic's formulas (REFERENCE §6.1)
# ---------------------------------------------------------------------------------------------

N, C, H, W = 3, 3, 4, 5


def loop_masked_mean(loss: torch.Tensor, mask: torch.Tensor, sample_wise: bool) -> float:
    """MMagic's masked mean written as loops: the mask is expanded over C (denominator counts
    channels); sample_wise takes the ratio per sample, then the mean over N."""
    n, c, h, w = loss.shape
    ratios, num_all, den_all = [], 0.0, 0.0
    for i in range(n):
        num = den = 0.0
        for ch in range(c):
            mch = ch if mask.shape[1] == c else 0
            for y in range(h):
                for x in range(w):
                    m = mask[i, mch, y, x].item()
                    num += loss[i, ch, y, x].item() * m
                    den += m
        ratios.append(num / (den + 1e-12))
        num_all += num
        den_all += den
    return sum(ratios) / n if sample_wise else num_all / (den_all + 1e-12)


def masks(channels: int) -> torch.Tensor:
    mask = (sample(N, channels, H, W, seed=16) > 0.5).double()
    mask[1] = 0  # a sample with an empty mask
    mask[2, 0, 0, 0] = 1
    return mask


@pytest.mark.parametrize("sample_wise", [False, True])
@pytest.mark.parametrize("channels", [1, C])
@pytest.mark.parametrize("soft", [False, True])
def test_mask_reduce_loss_mean(channels, sample_wise, soft):
    loss = sample(N, C, H, W, seed=17) * 2
    mask = masks(channels)
    if soft:
        mask = mask * (sample(N, channels, H, W, seed=18) + 0.1)
    out = mask_reduce_loss(loss, mask, "mean", sample_wise=sample_wise)
    assert out.dim() == 0
    assert out.item() == pytest.approx(loop_masked_mean(loss, mask, sample_wise), rel=1e-12)


def test_one_channel_mask_denominator_counts_channels():
    loss = torch.full((1, C, 2, 2), 2.0)
    mask = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    # numerator 2 * 2 pixels * C channels, denominator 2 pixels * C channels -> 2 (not 2 * C)
    out = mask_reduce_loss(loss, mask)
    torch.testing.assert_close(out, torch.tensor(2.0 * 2 * C / (2 * C + 1e-12)))


def test_sample_wise_weighs_every_sample_the_same():
    loss = torch.stack([torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 5.0)])
    mask = torch.zeros(2, 1, 2, 2)
    mask[0] = 1  # 4 pixels of loss 1
    mask[1, 0, 0, 0] = 1  # 1 pixel of loss 5
    torch.testing.assert_close(mask_reduce_loss(loss, mask, sample_wise=True), torch.tensor(3.0))
    pixel_wise = mask_reduce_loss(loss, mask, sample_wise=False)
    torch.testing.assert_close(pixel_wise, torch.tensor((4 * 1.0 + 5.0) / (5 + 1e-12)))


@pytest.mark.parametrize("sample_wise", [False, True])
@pytest.mark.parametrize("channels", [1, C])
def test_mask_reduce_loss_sum_and_none(channels, sample_wise):
    loss = sample(N, C, H, W, seed=19)
    mask = masks(channels)
    expected = loss * mask.expand(N, C, H, W)
    none = mask_reduce_loss(loss, mask, "none", sample_wise=sample_wise)
    assert none.shape == (N, C, H, W)
    torch.testing.assert_close(none, expected)
    total = mask_reduce_loss(loss, mask, "sum", sample_wise=sample_wise)
    torch.testing.assert_close(total, expected.sum())


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mask_reduce_loss_without_weight_is_reduce_loss(reduction):
    loss = sample(N, C, H, W, seed=20)
    expected = reduce_loss(loss, reduction)
    torch.testing.assert_close(mask_reduce_loss(loss, None, reduction), expected)


def test_mask_reduce_loss_nan_under_the_mask_does_not_leak():
    loss = sample(1, 1, 2, 2, seed=21)
    loss[0, 0, 1, 1] = math.nan
    mask = torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]], dtype=loss.dtype)
    out = mask_reduce_loss(loss, mask)
    assert torch.isfinite(out)
    torch.testing.assert_close(out, loss.flatten()[:3].sum() / (3 + 1e-12))


def test_mask_reduce_loss_empty_mask_gives_a_connected_zero():
    pred = sample(2, C, H, W, seed=22).requires_grad_()
    out = mask_reduce_loss(pred.abs(), torch.zeros(2, 1, H, W, dtype=pred.dtype))
    assert out == 0
    out.backward()
    check_exact(pred.grad, torch.zeros_like(pred))


@pytest.mark.parametrize(
    "wshape",
    [(N, H, W), (N, 2, H, W), (N, C + 1, H, W), (N, 1, 1, H, W), (H, W)],
)
def test_mis_shaped_mask_raises_with_both_shapes(wshape):
    loss = sample(N, C, H, W, seed=23)
    with pytest.raises(ValueError) as info:
        mask_reduce_loss(loss, torch.ones(wshape, dtype=loss.dtype))
    message = str(info.value)
    assert str(tuple(wshape)) in message
    assert str((N, C, H, W)) in message
    assert re.search(r"\(N, 1, \.\.\.\).*\(N, C, \.\.\.\)", message)


def test_reduction_module_exports():
    import lossmix
    import lossmix.reduction as red

    assert lossmix.weight_reduce_loss is red.weight_reduce_loss
    assert lossmix.mask_reduce_loss is red.mask_reduce_loss
    assert lossmix.weighted_loss is red.weighted_loss
