"""Dice, Tversky and Jaccard: MMDetection's numbers, identities, ignore_index and empty targets."""

from __future__ import annotations

import pytest
import torch

from lossmix import LOSSES, build_loss
from lossmix.errors import LossConfigError, LossInputError
from lossmix.losses import DiceLoss, JaccardLoss, TverskyLoss
from lossmix.reduction import EPS32
from tests.losses.battery import assert_close, make_generator
from tests.losses.cases_segmentation import (
    IGNORE,
    binary_inputs,
    dice_value,
    index_inputs,
    reference,
    tversky_value,
)

F64 = torch.float64


def mmdet_dice(pred, target, *, eps=1e-3, naive_dice=False):
    """MMDetection v3's ``dice_loss`` kernel, transcribed (sigmoid applied before)."""
    inp = pred.sigmoid().flatten(1)
    tgt = target.flatten(1).float()
    a = torch.sum(inp * tgt, 1)
    if naive_dice:
        return 1 - (2 * a + eps) / (inp.sum(1) + tgt.sum(1) + eps)
    b = torch.sum(inp * inp, 1) + eps
    c = torch.sum(tgt * tgt, 1) + eps
    return 1 - 2 * a / (b + c)


@pytest.mark.parametrize("naive_dice", [False, True])
def test_dice_matches_mmdetection(naive_dice: bool) -> None:
    pred, target = binary_inputs(F64, make_generator(10), 1.0)
    expected = mmdet_dice(pred, target, naive_dice=naive_dice)
    loss = DiceLoss(naive_dice=naive_dice)
    assert_close(loss(pred, target, reduction_override="none"), expected, F64)
    assert_close(loss(pred, target), expected.mean(), F64)
    weight = torch.tensor([1.0, 0.0, 2.0, 0.5], dtype=F64)
    assert_close(
        loss(pred, target, weight=weight, avg_factor=2.0), (expected * weight).sum() / (2.0 + EPS32), F64
    )
    # MMDetection's positional order is (weight, reduction_override, avg_factor): by keyword
    # both calls are the same.
    assert_close(loss(pred, target, weight, reduction_override="sum"), (expected * weight).sum(), F64)


def test_dice_hand_numbers() -> None:
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    vnet = DiceLoss(activate=False, reduction="none")(probs, target)
    assert_close(vnet, torch.tensor([1 - 2 / 2.002, 1 - 1 / 1.502]))
    naive = DiceLoss(activate=False, naive_dice=True, reduction="none")(probs, target)
    assert_close(naive, torch.tensor([0.0, 1 - 1.001 / 2.001]))


def test_sigmoid_dice_pools_classes_unless_per_class() -> None:
    pred, target = binary_inputs(F64, make_generator(11), 1.0)
    pooled = DiceLoss(reduction="none")(pred, target)
    per_class = DiceLoss(per_class=True, reduction="none")(pred, target)
    assert_close(pooled, reference(dice_value)(pred, target), F64)
    assert_close(per_class, reference(dice_value, per_class=True)(pred, target), F64)
    assert not torch.allclose(pooled, per_class)


@pytest.mark.parametrize("loss_cls", [DiceLoss, TverskyLoss, JaccardLoss])
def test_ignored_pixels_do_not_count(loss_cls) -> None:
    pred, target = index_inputs(F64, make_generator(12), 1.0)
    loss = loss_cls(use_sigmoid=False, ignore_index=IGNORE, reduction="none")
    before = loss(pred, target)
    ignored = (target == IGNORE).unsqueeze(1).expand_as(pred)
    changed = torch.where(ignored, torch.full_like(pred, 50.0), pred)
    assert_close(loss(changed, target), before, F64)
    nan_pred = torch.where(ignored, torch.full_like(pred, float("nan")), pred).requires_grad_()
    value = loss(nan_pred, target).sum()
    (grad,) = torch.autograd.grad(value, nan_pred)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    assert torch.all(grad[ignored] == 0)
    # Ignoring a whole column equals cropping it away.
    target = target.clone()
    target[..., -1] = IGNORE
    crop = loss_cls(use_sigmoid=False, ignore_index=IGNORE, reduction="none")
    assert_close(loss(pred, target), crop(pred[..., :-1], target[..., :-1]), F64)


def test_ignore_index_with_float_targets_is_per_element() -> None:
    pred, target = binary_inputs(F64, make_generator(13), 1.0)
    target[:, :, 0, :] = IGNORE
    loss = DiceLoss(ignore_index=IGNORE, reduction="none")
    cropped = DiceLoss(reduction="none")(pred[:, :, 1:], target[:, :, 1:])
    assert_close(loss(pred, target), cropped, F64)


def test_empty_target_smooth_is_mmdetection() -> None:
    empty = torch.zeros(1, 6)
    assert_close(DiceLoss(activate=False)(empty, empty), torch.tensor(1.0))
    assert_close(DiceLoss(activate=False, naive_dice=True)(empty, empty), torch.tensor(0.0))


@pytest.mark.parametrize(
    "loss",
    [
        DiceLoss(activate=False, empty_target="zero"),
        DiceLoss(activate=False, naive_dice=True, empty_target="zero"),
        TverskyLoss(activate=False, alpha=0.3, beta=0.7),
        JaccardLoss(activate=False),
    ],
    ids=repr,
)
def test_empty_target_zero_policy(loss) -> None:
    empty = torch.zeros(2, 6)
    assert_close(loss(empty, empty), torch.tensor(0.0))
    false_positives = torch.tensor([[0.9] * 6, [1.0, 0, 0, 0, 0, 0]])
    assert torch.all(loss(false_positives, empty, reduction_override="none") > 0.99)


def test_empty_target_zero_adds_eps_to_the_vnet_numerator() -> None:
    pred, target = binary_inputs(F64, make_generator(14), 1.0)
    smooth = DiceLoss(reduction="none")(pred, target)
    zero = DiceLoss(empty_target="zero", reduction="none")(pred, target)
    assert_close(
        zero, smooth - 2e-3 / ((pred.sigmoid() ** 2).flatten(1).sum(1) + target.flatten(1).sum(1) + 2e-3), F64
    )


def test_empty_target_skip_excludes_samples_from_the_mean() -> None:
    pred, target = binary_inputs(F64, make_generator(15), 1.0)
    target[1] = 0
    target[3] = 0
    kept = torch.tensor([0, 2])
    base = DiceLoss(reduction="none")(pred, target)
    loss = DiceLoss(empty_target="skip")
    none = loss(pred, target, reduction_override="none")
    assert_close(none, torch.stack([base[0], base.new_zeros(()), base[2], base.new_zeros(())]), F64)
    assert_close(loss(pred, target), base[kept].mean(), F64)
    assert_close(loss(pred, target, reduction_override="sum"), base[kept].sum(), F64)
    weight = torch.tensor([2.0, 5.0, 0.5, 1.0], dtype=F64)
    assert_close(loss(pred, target, weight=weight), (base * weight)[kept].sum() / 2, F64)
    assert_close(loss(pred, target, avg_factor=4.0), base[kept].sum() / (4.0 + EPS32), F64)


def test_empty_target_skip_all_empty_is_connected_zero() -> None:
    pred = torch.randn(3, 2, 4, requires_grad=True)
    loss = DiceLoss(empty_target="skip")(pred, torch.zeros(3, 2, 4))
    (grad,) = torch.autograd.grad(loss, pred)
    assert loss.item() == 0.0 and torch.all(grad == 0)


def test_empty_target_skip_leaves_empty_classes_out_of_the_class_mean() -> None:
    pred, target = index_inputs(F64, make_generator(16), 1.0)
    kw = {"use_sigmoid": False, "ignore_index": IGNORE, "reduction": "none"}
    skip = DiceLoss(empty_target="skip", **kw)(pred, target)
    counted = DiceLoss(**kw)(pred, target)
    assert_close(
        skip,
        reference(dice_value, skip_empty=True, use_sigmoid=False, ignore_index=IGNORE)(pred, target),
        F64,
    )
    assert_close(skip[[0, 2, 3]], counted[[0, 2, 3]], F64)  # every class present there
    assert not torch.allclose(skip[1], counted[1])  # class 2 absent from sample 1


@pytest.mark.parametrize("use_sigmoid", [True, False])
def test_tversky_half_half_is_naive_dice(use_sigmoid: bool) -> None:
    inputs = binary_inputs if use_sigmoid else index_inputs
    pred, target = inputs(F64, make_generator(17), 1.0)
    pred.requires_grad_()
    kw = {"use_sigmoid": use_sigmoid, "ignore_index": IGNORE, "reduction": "sum"}
    tversky = TverskyLoss(alpha=0.5, beta=0.5, eps=0.01, **kw)(pred, target)
    dice = DiceLoss(naive_dice=True, eps=0.02, **kw)(pred, target)
    assert_close(tversky, dice, F64)
    assert_close(torch.autograd.grad(tversky, pred)[0], torch.autograd.grad(dice, pred)[0], F64)


@pytest.mark.parametrize("use_sigmoid", [True, False])
def test_tversky_one_one_is_jaccard(use_sigmoid: bool) -> None:
    inputs = binary_inputs if use_sigmoid else index_inputs
    pred, target = inputs(F64, make_generator(18), 1.0)
    kw = {"use_sigmoid": use_sigmoid, "ignore_index": IGNORE, "reduction": "none", "eps": 0.1}
    assert_close(TverskyLoss(alpha=1.0, beta=1.0, **kw)(pred, target), JaccardLoss(**kw)(pred, target), F64)


def test_tversky_is_per_class_not_micro_averaged() -> None:
    pred, target = index_inputs(F64, make_generator(19), 1.0)
    kw = {"use_sigmoid": False, "ignore_index": IGNORE, "reduction": "none"}
    fp_heavy = TverskyLoss(alpha=0.2, beta=0.8, **kw)(pred, target)
    fn_heavy = TverskyLoss(alpha=0.8, beta=0.2, **kw)(pred, target)
    # pooled over classes FP = FN, so only alpha + beta would matter (kornia's pitfall)
    assert not torch.allclose(fp_heavy, fn_heavy)
    ref = reference(
        lambda p, t: tversky_value(p, t, alpha=0.2, beta=0.8), use_sigmoid=False, ignore_index=IGNORE
    )
    assert_close(fp_heavy, ref(pred, target), F64)


def test_focal_tversky_exponent_applies_per_class() -> None:
    pred, target = binary_inputs(F64, make_generator(20), 1.0)
    kw = {"per_class": True, "reduction": "none"}
    plain = TverskyLoss(gamma=1.0, **kw)(pred, target)
    focal = TverskyLoss(gamma=2.0, **kw)(pred, target)
    ref = reference(lambda p, t: tversky_value(p, t, alpha=0.5, beta=0.5, gamma=2.0), per_class=True)
    assert_close(focal, ref(pred, target), F64)
    # γ acts before the class mean (SMP applies it after): mean of squares > square of mean
    assert torch.all(focal > plain**2)
    single = TverskyLoss(gamma=2.0, reduction="none")(pred, target)
    assert_close(single, TverskyLoss(reduction="none")(pred, target) ** 2, F64)


def test_jaccard_hand_numbers() -> None:
    probs = torch.tensor([[0.5, 0.5, 0.0]])
    target = torch.tensor([[1.0, 0.0, 0.0]])
    value = JaccardLoss(activate=False, eps=1e-3)(probs, target)
    assert_close(value, torch.tensor(1 - 0.501 / 1.501))


@pytest.mark.parametrize("loss_cls", [DiceLoss, TverskyLoss, JaccardLoss])
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"eps": 0.0}, "eps"),
        ({"eps": -1.0}, "eps"),
        ({"empty_target": "ignore"}, "empty_target"),
        ({"use_sigmoid": "yes"}, "use_sigmoid"),
        ({"activate": 1}, "activate"),
        ({"use_sigmoid": False, "per_class": False}, "per_class"),
        ({"ignore_index": 2.5}, "ignore_index"),
        ({"ignore_index": True}, "ignore_index"),
        ({"loss_weight": float("nan")}, "loss_weight"),
    ],
)
def test_bad_arguments_raise(loss_cls, kwargs, name) -> None:
    with pytest.raises(LossConfigError, match=name):
        loss_cls(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"alpha": -0.1}, "alpha"),
        ({"beta": float("inf")}, "beta"),
        ({"alpha": 0.0, "beta": 0.0}, "alpha"),
        ({"gamma": 0.0}, "gamma"),
    ],
)
def test_bad_tversky_arguments_raise(kwargs, name) -> None:
    with pytest.raises(LossConfigError, match=name):
        TverskyLoss(**kwargs)


def test_bad_naive_dice_raises() -> None:
    with pytest.raises(LossConfigError, match="naive_dice"):
        DiceLoss(naive_dice="false")


def test_empty_target_error_suggests_the_close_name() -> None:
    with pytest.raises(LossConfigError, match="Did you mean 'skip'"):
        DiceLoss(empty_target="skp")


@pytest.mark.parametrize("loss_cls", [DiceLoss, TverskyLoss, JaccardLoss])
@pytest.mark.parametrize(
    ("kwargs", "pred_shape", "target_shape", "dtype"),
    [
        ({}, (2, 3, 4), (2, 3, 5), torch.float32),
        ({"per_class": True}, (2, 3, 4), (2, 4), torch.float32),
        ({"use_sigmoid": False}, (2, 3, 4, 4), (2, 4, 5), torch.long),
        ({"use_sigmoid": False}, (2, 3, 4, 4), (2, 3, 4, 5), torch.float32),
    ],
)
def test_shape_mismatch_names_both_shapes(loss_cls, kwargs, pred_shape, target_shape, dtype) -> None:
    loss = loss_cls(**kwargs)
    pred, target = torch.zeros(pred_shape), torch.zeros(target_shape, dtype=dtype)
    with pytest.raises(LossInputError) as info:
        loss(pred, target)
    assert str(tuple(pred_shape)) in str(info.value) and str(tuple(target_shape)) in str(info.value)


def test_softmax_needs_a_class_dimension_and_valid_indices() -> None:
    with pytest.raises(LossInputError, match="class dimension"):
        DiceLoss(use_sigmoid=False)(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(LossInputError, match="class indices"):
        DiceLoss(use_sigmoid=False)(torch.zeros(1, 3, 2), torch.tensor([[0, 3]]))


def test_softmax_accepts_float_one_hot_targets() -> None:
    pred, target = index_inputs(F64, make_generator(21), 1.0)
    target = target % 3
    one_hot = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).to(F64)
    loss = DiceLoss(use_sigmoid=False, reduction="none")
    assert_close(loss(pred, one_hot), loss(pred, target), F64)


def test_weight_must_fit_per_sample_losses() -> None:
    pred, target = binary_inputs(torch.float32, make_generator(22), 1.0)
    with pytest.raises(LossInputError, match="weight"):
        DiceLoss()(pred, target, weight=torch.ones(3))


@pytest.mark.parametrize("name", ["DiceLoss", "TverskyLoss", "JaccardLoss"])
def test_built_from_config(name: str) -> None:
    loss = build_loss({"type": name, "use_sigmoid": False, "empty_target": "skip"})
    assert type(loss).__name__ == name and loss.empty_target == "skip"
    assert "empty_target" in LOSSES.describe(name).params
