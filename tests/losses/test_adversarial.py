"""GAN losses and image regularisers: MMagic's formulas, loss_weight rule, gradients, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lossmix import LOSSES, build_loss
from lossmix import functional as F
from lossmix.errors import LossConfigError, LossInputError
from lossmix.losses import (
    DiscShiftLoss,
    GANLoss,
    GradientPenaltyLoss,
    MaskedTVLoss,
    R1GradientPenalty,
)
from tests.losses.battery import assert_close, make_generator

F64 = torch.float64
GAN_TYPES = ["vanilla", "lsgan", "wgan", "wgan-logistic-ns", "hinge"]


def logits(dtype=F64, seed=0, scale=1.0):
    return torch.randn(6, 1, 3, 3, generator=make_generator(seed), dtype=F64).to(dtype) * scale


def mmagic_gan(x, gan_type, real, is_disc, real_val=1.0, fake_val=0.0):
    """MMagic's ``GANLoss.forward`` values (before loss_weight), from torch.nn pieces."""
    label = torch.full_like(x, real_val if real else fake_val)
    if gan_type == "vanilla":
        return nn.BCEWithLogitsLoss()(x, label)
    if gan_type == "lsgan":
        return nn.MSELoss()(x, label)
    if gan_type == "wgan":
        return -x.mean() if real else x.mean()
    if gan_type == "wgan-logistic-ns":
        return nn.functional.softplus(-x).mean() if real else nn.functional.softplus(x).mean()
    if is_disc:
        return nn.ReLU()(1 + (-x if real else x)).mean()
    return -x.mean()


@pytest.mark.parametrize("gan_type", GAN_TYPES)
@pytest.mark.parametrize("real", [True, False])
@pytest.mark.parametrize("is_disc", [True, False])
def test_gan_values_match_mmagic(gan_type: str, real: bool, is_disc: bool) -> None:
    x = logits()
    loss = GANLoss(gan_type=gan_type, loss_weight=2.5)
    scale = 1.0 if is_disc else 2.5
    assert_close(loss(x, real, is_disc=is_disc), scale * mmagic_gan(x, gan_type, real, is_disc), F64)


@pytest.mark.parametrize("gan_type", GAN_TYPES)
def test_loss_weight_only_on_the_generator_side(gan_type: str) -> None:
    x = logits(seed=1)
    plain, heavy = GANLoss(gan_type=gan_type), GANLoss(gan_type=gan_type, loss_weight=7.0)
    assert_close(heavy(x, True, is_disc=True), plain(x, True, is_disc=True), F64)
    assert_close(heavy(x, False, is_disc=True), plain(x, False, is_disc=True), F64)
    assert_close(heavy(x, True), 7.0 * plain(x, True), F64)


def test_hinge_generator_is_minus_x_whatever_the_target() -> None:
    x = logits(seed=2)
    loss = GANLoss(gan_type="hinge", reduction="none")
    assert_close(loss(x, True), -x, F64)
    assert_close(loss(x, False), -x, F64)


@pytest.mark.parametrize("gan_type", ["vanilla", "lsgan"])
def test_label_values(gan_type: str) -> None:
    x = logits(seed=3)
    loss = GANLoss(gan_type=gan_type, real_label_val=0.9, fake_label_val=0.2)
    assert_close(loss(x, True), mmagic_gan(x, gan_type, True, False, 0.9, 0.2), F64)
    assert_close(loss(x, False, is_disc=True), mmagic_gan(x, gan_type, False, True, 0.9, 0.2), F64)
    assert not torch.allclose(loss(x, True), GANLoss(gan_type=gan_type)(x, True))


@pytest.mark.parametrize("gan_type", GAN_TYPES)
def test_tensor_target_mixes_real_and_fake(gan_type: str) -> None:
    x = logits(seed=4)
    is_real = torch.tensor([True, False, True, True, False, False]).view(6, 1, 1, 1)
    loss = GANLoss(gan_type=gan_type, reduction="none")
    mixed = loss(x, is_real, is_disc=True)
    expected = torch.where(is_real, loss(x, True, is_disc=True), loss(x, False, is_disc=True))
    assert_close(mixed, expected, F64)
    assert_close(loss.elementwise(x, is_real, is_disc=True), expected, F64)


@pytest.mark.parametrize("gan_type", GAN_TYPES)
def test_gan_reductions_weight_and_avg_factor(gan_type: str) -> None:
    x = logits(seed=5)
    loss = GANLoss(gan_type=gan_type, loss_weight=3.0)
    elems = loss(x, False, reduction_override="none")
    assert elems.shape == x.shape
    assert_close(loss(x, False, reduction_override="sum"), elems.sum(), F64)
    weight = torch.rand(6, 1, 3, 3, generator=make_generator(9), dtype=F64)
    assert_close(
        loss(x, False, weight=weight, avg_factor=4.0),
        (elems * weight).sum() / (4.0 + torch.finfo(torch.float32).eps),
        F64,
    )


@pytest.mark.parametrize("gan_type", GAN_TYPES)
@pytest.mark.parametrize("is_disc", [True, False])
def test_gan_gradcheck_float64(gan_type: str, is_disc: bool) -> None:
    x = logits(seed=6).requires_grad_()
    loss = GANLoss(gan_type=gan_type, loss_weight=1.5)
    for real in (True, False):
        assert torch.autograd.gradcheck(lambda p, r=real: loss(p, r, is_disc=is_disc), (x,))


@pytest.mark.parametrize("gan_type", GAN_TYPES)
@pytest.mark.parametrize("real", [True, False])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_gan_finite_at_extreme_logits(gan_type: str, real: bool, sign: float) -> None:
    x = (torch.ones(4, 1) * 1e4 * sign).requires_grad_()
    value = GANLoss(gan_type=gan_type)(x, real, is_disc=True)
    (grad,) = torch.autograd.grad(value, x)
    assert torch.isfinite(value) and torch.isfinite(grad).all()


def test_stable_forms_are_exact_at_extreme_logits() -> None:
    x = torch.tensor([1e4, -1e4])
    assert_close(F.gan_loss(x, gan_type="vanilla", target_is_real=True), torch.tensor([0.0, 1e4]))
    assert_close(F.gan_loss(x, gan_type="wgan-logistic-ns", target_is_real=False), torch.tensor([1e4, 0.0]))


def test_gan_kernel_compiles_fullgraph() -> None:
    x = logits(torch.float32, seed=7)
    is_real = torch.rand(6, 1, 1, 1, generator=make_generator(1)) > 0.5
    for gan_type in GAN_TYPES:

        def kernel(p, r, gan_type=gan_type):
            return F.gan_loss(p, gan_type=gan_type, target_is_real=r, is_disc=True)

        torch._dynamo.reset()
        compiled = torch.compile(kernel, fullgraph=True, backend="aot_eager")
        assert_close(compiled(x, is_real), kernel(x, is_real))


def test_bad_gan_type_lists_the_valid_ones() -> None:
    with pytest.raises(LossConfigError, match=r"gan_type='lsgn'.*vanilla.*hinge.*Did you mean"):
        GANLoss(gan_type="lsgn")
    with pytest.raises(LossConfigError, match=r"gan_type='smgn'.*Did you mean 'smgan'"):
        F.gan_loss(torch.zeros(2), gan_type="smgn", target_is_real=True)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"real_label_val": float("nan")}, "real_label_val"),
        ({"fake_label_val": "0"}, "fake_label_val"),
        ({"reduction": "avg"}, "reduction"),
        ({"loss_weight": None}, "loss_weight"),
    ],
)
def test_bad_gan_arguments_raise(kwargs, name) -> None:
    with pytest.raises(ValueError, match=name):
        GANLoss(gan_type="vanilla", **kwargs)


def test_bad_gan_call_arguments_raise() -> None:
    loss = GANLoss(gan_type="wgan")
    with pytest.raises(LossInputError, match="target_is_real"):
        loss(torch.zeros(2), "real")
    with pytest.raises(LossInputError, match="is_disc"):
        loss(torch.zeros(2), True, is_disc=1)
    with pytest.raises(ValueError, match="avg_factor"):
        loss(torch.zeros(2), True, avg_factor=2.0, reduction_override="sum")


# -- DiscShiftLoss ------------------------------------------------------------------------------


def test_disc_shift_default_weight_and_value() -> None:
    x = logits(seed=8)
    assert DiscShiftLoss().loss_weight == 0.1
    assert_close(DiscShiftLoss()(x), 0.1 * (x**2).mean(), F64)
    assert_close(DiscShiftLoss(loss_weight=1.0, reduction="none")(x), x**2, F64)
    weight = torch.rand(x.shape, dtype=F64, generator=make_generator(2))
    assert_close(DiscShiftLoss(reduction="sum")(x, weight), 0.1 * (x**2 * weight).sum(), F64)


def test_disc_shift_gradcheck() -> None:
    x = logits(seed=9).requires_grad_()
    assert torch.autograd.gradcheck(DiscShiftLoss(), (x,))


# -- MaskedTVLoss -------------------------------------------------------------------------------


def tv_reference(x, mask=None):
    """MMagic: masked-mean L1 of (i, j)-(i+1, j) and (i, j)-(i, j+1), the first pixel's mask."""
    n, c, h, w = x.shape
    mask = torch.ones(n, 1, h, w, dtype=x.dtype) if mask is None else mask
    total = 0.0
    for di, dj in ((1, 0), (0, 1)):
        num = den = 0.0
        for b in range(n):
            for k in range(c):
                for i in range(h - di):
                    for j in range(w - dj):
                        m = mask[b, min(k, mask.shape[1] - 1), i, j]
                        num += m * abs(x[b, k, i, j] - x[b, k, i + di, j + dj])
                        den += m
        total += num / (den + 1e-12)
    return total


@pytest.mark.parametrize("mask_channels", [None, 1, 3])
def test_masked_tv_matches_mmagic(mask_channels) -> None:
    x = torch.randn(2, 3, 4, 5, generator=make_generator(10), dtype=F64)
    mask = None
    if mask_channels is not None:
        mask = (torch.rand(2, mask_channels, 4, 5, generator=make_generator(11)) > 0.4).to(F64)
    assert_close(MaskedTVLoss(loss_weight=2.0)(x, mask), 2.0 * tv_reference(x, mask), F64)


def test_masked_tv_none_and_sum() -> None:
    x = torch.randn(2, 3, 4, 5, generator=make_generator(12), dtype=F64)
    mask = (torch.rand(2, 1, 4, 5, generator=make_generator(13)) > 0.4).to(F64)
    none = MaskedTVLoss(reduction="none")(x, mask)
    assert none.shape == x.shape
    dy = (x[:, :, :-1] - x[:, :, 1:]).abs() * mask[:, :, :-1]
    dx = (x[..., :-1] - x[..., 1:]).abs() * mask[..., :-1]
    assert_close(none.sum(), dy.sum() + dx.sum(), F64)
    assert_close(MaskedTVLoss(reduction="sum")(x, mask), dy.sum() + dx.sum(), F64)
    assert_close(MaskedTVLoss()(x, mask, reduction_override="sum"), dy.sum() + dx.sum(), F64)
    assert torch.all(none[:, :, -1, -1] == 0)


def test_masked_tv_gradcheck() -> None:
    x = torch.randn(2, 2, 3, 4, generator=make_generator(14), dtype=F64, requires_grad=True)
    mask = (torch.rand(2, 1, 3, 4, generator=make_generator(15)) > 0.3).to(F64)
    assert torch.autograd.gradcheck(lambda p: MaskedTVLoss()(p, mask), (x,))
    assert torch.autograd.gradcheck(lambda p: MaskedTVLoss()(p), (x,))


def test_masked_tv_bad_shapes_raise() -> None:
    with pytest.raises(LossInputError, match=r"\(2, 3, 4\)"):
        MaskedTVLoss()(torch.zeros(2, 3, 4))
    with pytest.raises(LossInputError, match=r"\(2, 2, 4, 5\).*\(2, 3, 4, 5\)"):
        MaskedTVLoss()(torch.zeros(2, 3, 4, 5), torch.ones(2, 2, 4, 5))


# -- gradient penalties -------------------------------------------------------------------------


class LinearD(nn.Module):
    """D(x) = Σ w·x per sample: its input gradient is w everywhere."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight).flatten(1).sum(1)


def conv_d(weight: torch.Tensor):
    """A tiny non-linear discriminator whose gradient depends on its input."""

    def disc(x):
        return torch.tanh(nn.functional.conv2d(x, weight, padding=1)).flatten(1).sum(1)

    return disc


def images(seed=0, shape=(3, 2, 4, 4)):
    return torch.randn(shape, generator=make_generator(seed), dtype=F64)


def test_gp_with_a_linear_discriminator() -> None:
    w = images(1, (2, 4, 4))
    d = LinearD(w)
    real, fake = images(2), images(3)
    pixel = GradientPenaltyLoss(loss_weight=10.0)(d, real, fake)
    assert_close(pixel, 10.0 * ((w.norm(dim=0) - 1) ** 2).mean(), F64)
    hwc = GradientPenaltyLoss(norm_mode="HWC")(d, real, fake)
    assert_close(hwc, (w.flatten().norm() - 1) ** 2, F64)
    (grad,) = torch.autograd.grad(pixel, d.weight)  # create_graph: D's weights get a gradient
    assert grad.abs().sum() > 0


def test_gp_interpolates_per_sample_with_the_generator() -> None:
    weight = torch.randn(1, 2, 3, 3, generator=make_generator(4), dtype=F64)
    d = conv_d(weight)
    real, fake = images(5), images(6)
    loss = GradientPenaltyLoss(reduction="none")
    got = loss(d, real, fake, generator=torch.Generator().manual_seed(3))
    alpha = torch.rand(3, 1, 1, 1, generator=torch.Generator().manual_seed(3)).to(F64)
    x = (alpha * real + (1 - alpha) * fake).requires_grad_()
    (g,) = torch.autograd.grad(d(x).sum(), x)
    assert_close(got, (g.norm(dim=1) - 1) ** 2, F64)
    again = loss(d, real, fake, generator=torch.Generator().manual_seed(3))
    assert_close(again, got, F64)


def test_gp_mask_divides_by_its_mean() -> None:
    weight = torch.randn(1, 2, 3, 3, generator=make_generator(7), dtype=F64)
    real, fake = images(8), images(9)
    mask = (torch.rand(3, 1, 4, 4, generator=make_generator(10)) > 0.5).to(F64)
    loss = GradientPenaltyLoss()
    got = loss(conv_d(weight), real, fake, mask, generator=torch.Generator().manual_seed(1))
    alpha = torch.rand(3, 1, 1, 1, generator=torch.Generator().manual_seed(1)).to(F64)
    x = (alpha * real + (1 - alpha) * fake).requires_grad_()
    (g,) = torch.autograd.grad(conv_d(weight)(x).sum(), x)
    assert_close(got, ((g * mask).norm(dim=1) - 1).pow(2).mean() / mask.mean(), F64)


def test_gp_gradcheck_in_the_discriminator_weights() -> None:
    real, fake = images(11, (2, 2, 3, 3)), images(12, (2, 2, 3, 3))
    weight = torch.randn(1, 2, 3, 3, generator=make_generator(13), dtype=F64, requires_grad=True)
    loss = GradientPenaltyLoss()

    def penalty(w):
        return loss(conv_d(w), real, fake, generator=torch.Generator().manual_seed(0))

    assert torch.autograd.gradcheck(penalty, (weight,))


def test_r1_with_a_linear_discriminator() -> None:
    w = images(14, (2, 4, 4))
    real = images(15)
    assert_close(R1GradientPenalty()(LinearD(w), real), (w**2).sum(0).mean(), F64)
    assert_close(
        R1GradientPenalty(norm_mode="HWC", loss_weight=80.0)(LinearD(w), real), 80.0 * (w**2).sum(), F64
    )
    mask = (torch.rand(3, 1, 4, 4, generator=make_generator(16)) > 0.5).to(F64)
    assert_close(
        R1GradientPenalty()(LinearD(w), real, mask), ((w * mask) ** 2).sum(1).mean() / mask.mean(), F64
    )


def test_r1_gradcheck_and_none() -> None:
    real = images(17, (2, 2, 3, 3))
    weight = torch.randn(1, 2, 3, 3, generator=make_generator(18), dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w: R1GradientPenalty()(conv_d(w), real), (weight,))
    none = R1GradientPenalty(reduction="none")(conv_d(weight), real)
    x = real.clone().requires_grad_()
    (g,) = torch.autograd.grad(conv_d(weight)(x).sum(), x)
    assert_close(none, (g**2).sum(1), F64)
    assert R1GradientPenalty(norm_mode="HWC", reduction="none")(conv_d(weight), real).shape == (2,)


def test_r1_loss_scaler_is_undone() -> None:
    w = images(19, (2, 4, 4)).float()
    real = images(20).float()
    plain = R1GradientPenalty()(LinearD(w), real)
    scaled = R1GradientPenalty()(LinearD(w), real, loss_scaler=torch.amp.GradScaler("cpu"))
    assert_close(scaled, plain)


@pytest.mark.parametrize("loss_cls", [GradientPenaltyLoss, R1GradientPenalty])
def test_bad_norm_mode_raises(loss_cls) -> None:
    with pytest.raises(LossConfigError, match=r"norm_mode='hwc'.*Did you mean 'HWC'"):
        loss_cls(norm_mode="hwc")


def test_gp_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(LossInputError, match=r"\(3, 2, 4, 4\).*\(3, 2, 4, 5\)"):
        GradientPenaltyLoss()(LinearD(images(1, (2, 4, 4))), images(2), torch.zeros(3, 2, 4, 5))
    with pytest.raises(LossInputError, match="mask"):
        R1GradientPenalty()(LinearD(images(1, (2, 4, 4))), images(2), torch.ones(3, 4, 4))


@pytest.mark.parametrize("norm_mode", ["pixel", "HWC"])
def test_penalty_kernels_compile_and_are_nan_free_at_zero(norm_mode: str) -> None:
    grad = torch.randn(2, 3, 4, 4, generator=make_generator(21))
    grad[0] = 0
    torch._dynamo.reset()
    for kernel in (F.wgan_gp_penalty, F.r1_penalty):
        compiled = torch.compile(kernel, fullgraph=True, backend="aot_eager")
        assert_close(compiled(grad, norm_mode=norm_mode), kernel(grad, norm_mode=norm_mode))
    g = grad.clone().requires_grad_()
    (back,) = torch.autograd.grad(F.wgan_gp_penalty(g, norm_mode=norm_mode).sum(), g)
    assert torch.isfinite(back).all()


# -- registry -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["GANLoss", "GradientPenaltyLoss", "R1GradientPenalty", "DiscShiftLoss", "MaskedTVLoss"]
)
def test_registered_and_describable(name: str) -> None:
    assert name in LOSSES
    info = LOSSES.describe(name)
    assert info.summary and "reduction" in info.params and "loss_weight" in info.params


def test_gan_loss_built_from_config_needs_gan_type() -> None:
    assert build_loss({"type": "GANLoss", "gan_type": "hinge"}).gan_type == "hinge"
    with pytest.raises(LossConfigError, match="gan_type"):
        build_loss({"type": "GANLoss"})


@pytest.mark.parametrize(
    "make",
    [
        lambda: R1GradientPenalty()(42, torch.randn(2, 3, 4, 4)),
        lambda: GradientPenaltyLoss()("disc", torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)),
    ],
)
def test_penalties_name_a_discriminator_that_is_not_a_module(make):
    with pytest.raises(LossInputError, match="discriminator is a"):
        make()
