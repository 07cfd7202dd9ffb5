"""Box (IoU) losses: reference values, identity limits, degenerate boxes, weights, bad input."""

from __future__ import annotations

import math

import pytest
import torch

import lossmix
from lossmix import functional as F
from lossmix.errors import LossConfigError, LossInputError
from lossmix.losses import BoundedIoULoss, CIoULoss, DIoULoss, GIoULoss, IoULoss
from tests.losses.battery import make_generator
from tests.losses.cases_boxes import (
    box_ciou_loss,
    jittered_pairs,
    per_box,
    random_boxes,
)

BOX_LOSSES = {
    "iou-log": lambda **kw: IoULoss(mode="log", **kw),
    "iou-linear": lambda **kw: IoULoss(mode="linear", **kw),
    "iou-square": lambda **kw: IoULoss(mode="square", **kw),
    "giou": lambda **kw: GIoULoss(**kw),
    "diou": lambda **kw: DIoULoss(**kw),
    "ciou": lambda **kw: CIoULoss(**kw),
    "bounded": lambda **kw: BoundedIoULoss(**kw),
}
PER_BOX = {k: v for k, v in BOX_LOSSES.items() if k != "bounded"}


def _t(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _boxes_around(centre: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    return torch.cat([centre - size / 2, centre + size / 2], -1)


# ------------------------------------------------------------------------------------------
# Reference values


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("iou-log", -math.log(1 / 7)),
        ("iou-linear", 1 - 1 / 7),
        ("iou-square", 1 - 1 / 49),
        ("giou", 1 - (1 / 7 - 2 / 9)),
        ("diou", 1 - (1 / 7 - 2 / 18)),
        ("ciou", 1 - (1 / 7 - 2 / 18)),  # same aspect ratio and IoU < 0.5: the DIoU value
    ],
)
def test_hand_computed_values(name: str, expected: float) -> None:
    # Overlap 1, union 7, enclosing box 3 x 3 (area 9, diagonal^2 18), centre distance^2 2.
    loss = BOX_LOSSES[name](reduction="none")(_t([0, 0, 2, 2]), _t([1, 1, 3, 3]))
    torch.testing.assert_close(loss, _t(expected).flatten(), rtol=1e-6, atol=1e-6)


def test_ciou_matches_reference_above_iou_half() -> None:
    pred, target = jittered_pairs((64,))(torch.float64, make_generator(11), 1.0)
    ious = F.aligned_box_iou(pred, target)
    assert (ious > 0.5).sum() >= 5 and (ious <= 0.5).sum() >= 5  # both branches of alpha
    loss = CIoULoss(reduction="none")(pred, target)
    torch.testing.assert_close(loss, per_box(box_ciou_loss)(pred, target), rtol=1e-9, atol=1e-9)


def test_ciou_alpha_gets_no_gradient() -> None:
    pred, target = jittered_pairs((64,))(torch.float64, make_generator(12), 1.0)
    pred.requires_grad_()
    (grad,) = torch.autograd.grad(CIoULoss(reduction="sum")(pred, target), pred)
    # The same loss with alpha passed in as a constant, written out in torch.
    ious = F.aligned_box_iou(pred, target).detach()
    v = (4 / math.pi**2) * (
        torch.atan((target[:, 2] - target[:, 0]) / (target[:, 3] - target[:, 1] + 1e-6))
        - torch.atan((pred[:, 2] - pred[:, 0]) / (pred[:, 3] - pred[:, 1] + 1e-6))
    ) ** 2
    alpha = torch.where(ious > 0.5, v / (1 - ious + v), 0).detach()
    assert (alpha > 0).any()
    expected_loss = F.diou_loss(pred, target) + alpha * v
    (expected,) = torch.autograd.grad(expected_loss.sum(), pred)
    torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-9)


def test_bounded_iou_per_coordinate_values() -> None:
    # Same left/top edges; target twice as tall: dx = dw = 0 (up to eps), dy and dh not.
    loss = BoundedIoULoss(reduction="none")(_t([0, 0, 2, 2]), _t([0, 0, 2, 4]))
    ldy = 1 - 2 / (6 + 1e-3)
    ldh = 1 - 2 / (4 + 1e-3)
    expected = _t([0.5 * (1e-3 / 2.001) ** 2 / 0.2, ldy - 0.1, 0.5 * (1e-3 / 2.001) ** 2 / 0.2, ldh - 0.1])
    torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------------
# Identity limits


def test_diou_equals_linear_iou_when_centres_coincide() -> None:
    gen = make_generator(20)
    centre = torch.rand(16, 2, generator=gen, dtype=torch.float64) * 10
    pred = _boxes_around(centre, torch.rand(16, 2, generator=gen, dtype=torch.float64) * 4 + 0.5)
    target = _boxes_around(centre, torch.rand(16, 2, generator=gen, dtype=torch.float64) * 4 + 0.5)
    diou = DIoULoss(reduction="none")(pred, target)
    # The two unions differ by eps (union + eps vs max(union, eps)): a 1e-7 relative gap.
    torch.testing.assert_close(
        diou, IoULoss(mode="linear", reduction="none")(pred, target), rtol=0, atol=1e-6
    )
    assert not torch.allclose(diou, GIoULoss(reduction="none")(pred, target))


def test_giou_equals_linear_iou_when_one_box_contains_the_other() -> None:
    outer = random_boxes((16,), make_generator(21))
    size = outer[:, 2:] - outer[:, :2]
    inner_lo = (
        outer[:, :2] + size * torch.rand(16, 2, generator=make_generator(22), dtype=torch.float64) * 0.4
    )
    inner = torch.cat([inner_lo, inner_lo + size * 0.5], -1)
    for pred, target in ((inner, outer), (outer, inner)):
        giou = GIoULoss(reduction="none")(pred, target)
        torch.testing.assert_close(
            giou, IoULoss(mode="linear", reduction="none")(pred, target), rtol=1e-12, atol=1e-12
        )
        assert (giou > 0.1).all()


def test_ciou_equals_diou_when_aspect_ratios_match() -> None:
    gen = make_generator(23)
    target = random_boxes((16,), gen)
    t_size = target[:, 2:] - target[:, :2]
    # Predictions with the target's aspect ratio, rescaled and shifted so both IoU branches occur.
    scale = 0.7 + 0.6 * torch.rand(16, 1, generator=gen, dtype=torch.float64)
    centre = (target[:, :2] + target[:, 2:]) / 2 + 0.3 * torch.randn(
        16, 2, generator=gen, dtype=torch.float64
    )
    pred = _boxes_around(centre, t_size * scale)
    assert (F.aligned_box_iou(pred, target) > 0.5).any()
    torch.testing.assert_close(
        CIoULoss(reduction="none")(pred, target), DIoULoss(reduction="none")(pred, target), rtol=0, atol=1e-9
    )


@pytest.mark.parametrize("name", list(BOX_LOSSES))
def test_identical_boxes_give_zero(name: str) -> None:
    boxes = random_boxes((10,), make_generator(24))
    # Bounded IoU's default eps=1e-3 leaves terms of order (eps / side)^2 / beta; shrink it.
    kwargs = {"eps": 1e-9} if name == "bounded" else {}
    loss = BOX_LOSSES[name](reduction="none", **kwargs)(boxes, boxes.clone())
    torch.testing.assert_close(loss, torch.zeros_like(loss), rtol=0, atol=1e-6)


def test_disjoint_boxes() -> None:
    pred, target = _t([0, 0, 1, 1], [0, 0, 1, 1]), _t([2, 2, 3, 3], [5, 0, 6, 1])
    log = IoULoss(reduction="none")(pred, target)
    torch.testing.assert_close(log, torch.full((2,), -math.log(1e-6), dtype=torch.float64))
    log_eps = IoULoss(eps=1e-3, reduction="none")(pred, target)
    torch.testing.assert_close(log_eps, torch.full((2,), -math.log(1e-3), dtype=torch.float64))
    for mode, expected in (("linear", 1 - 1e-6), ("square", 1 - 1e-12)):  # IoU clamped to eps
        torch.testing.assert_close(
            IoULoss(mode=mode, reduction="none")(pred, target),
            torch.full((2,), expected, dtype=torch.float64),
        )
    # GIoU: enclosing 3 x 3 (area 9) and 6 x 1 (area 6) with union 2.
    torch.testing.assert_close(GIoULoss(reduction="none")(pred, target), _t(1 + 7 / 9, 1 + 4 / 6).flatten())
    assert (DIoULoss(reduction="none")(pred, target) > 1).all()


def test_square_mode_is_one_minus_iou_squared() -> None:
    pred, target = jittered_pairs()(torch.float64, make_generator(25), 1.0)
    ious = F.aligned_box_iou(pred, target).clamp(min=1e-6)
    torch.testing.assert_close(IoULoss(mode="square", reduction="none")(pred, target), 1 - ious**2)


# ------------------------------------------------------------------------------------------
# Degenerate boxes: finite values and gradients, also when masked by a zero weight


DEGENERATE_PRED = [
    [1.0, 1.0, 1.0, 3.0],  # zero width
    [1.0, 1.0, 3.0, 1.0],  # zero height
    [2.0, 2.0, 2.0, 2.0],  # a point
    [3.0, 3.0, 1.0, 1.0],  # inverted
    [5.0, 5.0, 4.0, 9.0],  # inverted x only
    [0.0, 0.0, 0.0, 0.0],  # the origin point, also as target below
    [0.0, 0.0, 1.0, -1e-6],  # h = -eps: a pole of atan(w / (h + eps)) and of union + eps
    [0.0, 0.0, -1e-3, 1.0],  # w = -1e-3: a pole of bounded IoU's w_t / (w_p + eps)
]
DEGENERATE_TARGET = [
    [1.0, 1.0, 1.0, 3.0],
    [1.0, 1.0, 2.0, 2.0],
    [2.0, 2.0, 2.0, 2.0],
    [1.0, 1.0, 3.0, 3.0],
    [4.0, 4.0, 4.0, 8.0],
    [0.0, 0.0, 0.0, 0.0],
    [2.0, 2.0, 2.0, 2.0],
    [0.0, 0.0, 1.0, 1.0],
]


@pytest.mark.parametrize("name", list(BOX_LOSSES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_degenerate_boxes_are_finite(name: str, dtype: torch.dtype) -> None:
    pred = torch.tensor(DEGENERATE_PRED, dtype=dtype, requires_grad=True)
    target = torch.tensor(DEGENERATE_TARGET, dtype=dtype)
    loss = BOX_LOSSES[name](reduction="none")(pred, target)
    (grad,) = torch.autograd.grad(loss.sum(), pred)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("name", list(BOX_LOSSES))
def test_zero_weighted_degenerate_boxes_give_zero_finite_gradient(name: str) -> None:
    good_pred, good_target = jittered_pairs((4,))(torch.float32, make_generator(26), 1.0)
    pred = torch.cat([good_pred, torch.tensor(DEGENERATE_PRED)]).requires_grad_()
    target = torch.cat([good_target, torch.tensor(DEGENERATE_TARGET)])
    weight = torch.cat([torch.ones(4), torch.zeros(len(DEGENERATE_PRED))])
    loss = BOX_LOSSES[name]()(pred, target, weight=weight)
    (grad,) = torch.autograd.grad(loss, pred)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert (grad[4:] == 0).all() and (grad[:4] != 0).any()
    elems = BOX_LOSSES[name](reduction="none")(pred.detach(), target)
    expected = BOX_LOSSES[name](reduction="sum")(good_pred, good_target) / elems.numel()
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("name", list(BOX_LOSSES))
@pytest.mark.parametrize("scale", [1e-4, 1e4])
def test_identical_boxes_at_extreme_scales_are_finite(name: str, scale: float) -> None:
    # At 1e4, union + eps rounds to union in float32, so the IoU is exactly 1 (CIoU's 0/0 risk).
    boxes = (random_boxes((8,), make_generator(27)) * scale).float().requires_grad_()
    loss = BOX_LOSSES[name]()(boxes, boxes.detach().clone())
    (grad,) = torch.autograd.grad(loss, boxes)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


# ------------------------------------------------------------------------------------------
# Weights, shapes, dtypes, empty input


@pytest.mark.parametrize("name", list(PER_BOX))
@pytest.mark.parametrize("shape", [(6,), (2, 3)])
def test_per_coordinate_weight_is_averaged_per_box(name: str, shape: tuple[int, ...]) -> None:
    pred, target = jittered_pairs(shape)(torch.float64, make_generator(28), 1.0)
    weight = torch.rand(*shape, 4, generator=make_generator(29), dtype=torch.float64)
    loss = PER_BOX[name](reduction="none")(pred, target)
    assert loss.shape == shape
    make = PER_BOX[name]
    torch.testing.assert_close(make()(pred, target, weight=weight), (loss * weight.mean(-1)).mean())
    torch.testing.assert_close(
        make()(pred, target, weight=weight, avg_factor=2.0),
        make()(pred, target, weight=weight.mean(-1), avg_factor=2.0),
    )


def test_bounded_iou_weight_per_coordinate_or_per_box() -> None:
    pred, target = jittered_pairs((6,))(torch.float64, make_generator(30), 1.0)
    loss = BoundedIoULoss(reduction="none")(pred, target)
    assert loss.shape == (6, 4)
    weight = torch.rand(6, 4, generator=make_generator(31), dtype=torch.float64)
    torch.testing.assert_close(BoundedIoULoss()(pred, target, weight=weight), (loss * weight).mean())
    torch.testing.assert_close(
        BoundedIoULoss()(pred, target, weight=weight[:, 0]), (loss * weight[:, :1]).mean()
    )


@pytest.mark.parametrize("name", list(BOX_LOSSES))
def test_misshaped_weight_raises_with_both_shapes(name: str) -> None:
    pred, target = jittered_pairs((6,))(torch.float32, make_generator(32), 1.0)
    with pytest.raises(LossInputError, match=r"\(5,\).*\(6"):
        BOX_LOSSES[name]()(pred, target, weight=torch.ones(5))


@pytest.mark.parametrize("name", list(BOX_LOSSES))
@pytest.mark.parametrize(
    ("pred_shape", "target_shape"),
    [
        ((3, 4), (4, 4)),
        ((3, 5), (3, 5)),
        ((2, 3, 4), (6, 4)),
        ((4,), (1, 4)),
    ],
)
def test_bad_box_shapes_raise_with_both_shapes(name: str, pred_shape, target_shape) -> None:
    with pytest.raises(LossInputError, match="boxes") as info:
        BOX_LOSSES[name]()(torch.rand(pred_shape), torch.rand(target_shape))
    assert str(pred_shape) in str(info.value) and str(target_shape) in str(info.value)


@pytest.mark.parametrize("name", list(BOX_LOSSES))
def test_empty_input_gives_connected_zero(name: str) -> None:
    pred = torch.zeros(0, 4, requires_grad=True)
    target = torch.zeros(0, 4)
    for kwargs in ({}, {"weight": torch.zeros(0)}, {"avg_factor": 0.0}):
        loss = BOX_LOSSES[name]()(pred, target, **kwargs)
        assert loss.shape == () and loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, pred)
        assert grad.shape == (0, 4)
    assert BOX_LOSSES[name](reduction="sum")(pred, target).item() == 0.0
    assert BOX_LOSSES[name](reduction="none")(pred, target).shape[0] == 0


@pytest.mark.parametrize("name", list(BOX_LOSSES))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_computed_in_float32(name: str, dtype: torch.dtype) -> None:
    pred, target = jittered_pairs()(torch.float32, make_generator(33), 1.0)
    pred, target = pred.to(dtype), target.to(dtype)
    loss = BOX_LOSSES[name](reduction="none")(pred, target)
    assert loss.dtype == dtype
    expected = BOX_LOSSES[name](reduction="none")(pred.float(), target.float())
    torch.testing.assert_close(loss.float(), expected.to(dtype).float())


def test_kernels_keep_leading_dims() -> None:
    pred, target = jittered_pairs((2, 3))(torch.float32, make_generator(34), 1.0)
    for kernel in (F.iou_loss, F.giou_loss, F.diou_loss, F.ciou_loss, F.aligned_box_iou):
        assert kernel(pred, target).shape == (2, 3)
        flat = kernel(pred.reshape(6, 4), target.reshape(6, 4))
        torch.testing.assert_close(kernel(pred, target), flat.reshape(2, 3))
    assert F.bounded_iou_loss(pred, target).shape == (2, 3, 4)


# ------------------------------------------------------------------------------------------
# Arguments


@pytest.mark.parametrize("name", list(BOX_LOSSES))
@pytest.mark.parametrize("eps", [0, -1e-6, float("nan"), "1e-6", True])
def test_bad_eps_raises(name: str, eps: object) -> None:
    with pytest.raises(LossConfigError, match="eps"):
        BOX_LOSSES[name](eps=eps)


@pytest.mark.parametrize("beta", [0, -0.2, float("inf")])
def test_bounded_iou_bad_beta_raises(beta: float) -> None:
    with pytest.raises(LossConfigError, match="beta"):
        BoundedIoULoss(beta=beta)


@pytest.mark.parametrize("beta", [0.05, 0.5])
def test_bounded_iou_beta_changes_the_smooth_l1_threshold(beta: float) -> None:
    pred, target = jittered_pairs()(torch.float64, make_generator(35), 1.0)
    from tests.losses.cases_boxes import box_bounded_iou_loss

    torch.testing.assert_close(
        BoundedIoULoss(beta=beta, reduction="none")(pred, target),
        per_box(box_bounded_iou_loss, beta=beta)(pred, target),
    )


@pytest.mark.parametrize("mode", ["Log", "l1", "", None, 1])
def test_unknown_iou_mode_raises_listing_modes(mode: object) -> None:
    with pytest.raises(LossConfigError, match=r"mode=.*'log', 'linear', 'square'"):
        IoULoss(mode=mode)
    if isinstance(mode, str):
        with pytest.raises(ValueError, match="mode"):
            F.iou_loss(torch.zeros(1, 4), torch.zeros(1, 4), mode=mode)


def test_linear_true_is_deprecated_and_means_linear_mode() -> None:
    pred, target = jittered_pairs()(torch.float32, make_generator(36), 1.0)
    with pytest.warns(DeprecationWarning, match="mode='linear'"):
        loss = IoULoss(linear=True)
    assert loss.mode == "linear"
    torch.testing.assert_close(loss(pred, target), IoULoss(mode="linear")(pred, target))


@pytest.mark.parametrize("linear", [1, "yes", None])
def test_non_bool_linear_raises(linear: object) -> None:
    with pytest.raises(LossConfigError, match="linear"):
        IoULoss(linear=linear)


def test_linear_true_with_square_mode_raises() -> None:
    with pytest.raises(LossConfigError, match=r"linear=True.*square"):
        IoULoss(linear=True, mode="square")


def test_built_from_config_with_arguments() -> None:
    pred, target = jittered_pairs()(torch.float32, make_generator(37), 1.0)
    built = lossmix.build_loss({"type": "IoULoss", "mode": "square", "eps": 1e-3, "loss_weight": 2.0})
    torch.testing.assert_close(built(pred, target), 2.0 * IoULoss(mode="square", eps=1e-3)(pred, target))
    with pytest.raises(LossConfigError, match="beta"):
        lossmix.build_loss({"type": "GIoULoss", "beta": 0.1})
