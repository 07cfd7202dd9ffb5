"""MMagic's pixel, matting and GAN losses and its config habits: scopes, published numbers,
formulas written out here, gradients, extremes and one-line errors.

The published numbers are those of MMagic 1.x's own tests
(``tests/test_models/test_losses/test_pixelwise_loss.py``, ``test_composition_loss.py``,
``test_gradient_loss.py``, ``test_gan_loss.py``).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as TF

import lossmix
from lossmix import LOSSES, LossMix, build_loss
from lossmix.app.checks import check_loss_config, term_rows
from lossmix.errors import LossConfigError, LossInputError
from lossmix.losses import (
    CharbonnierCompLoss,
    CharbonnierLoss,
    GANLoss,
    GradientLoss,
    L1CompositionLoss,
    L1Loss,
    MaskedL1Loss,
    MaskedMSELoss,
    MSECompositionLoss,
    MSELoss,
    PSNRLoss,
)
from tests.losses.battery import assert_close, make_generator

F64 = torch.float64


def hole_example():
    """MMagic's example: a (1, 1, 64, 64) mask with a 32 × 32 hole, pred = mask, target = 2·mask."""
    weight = torch.zeros(1, 1, 64, 64)
    weight[0, 0, :32, :32] = 1
    return weight.clone(), weight * 2, weight


# -- the scope rule -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["L1Loss", "MSELoss"])
def test_mmagic_scope_divides_by_the_mask_sum(name):
    pred, target, mask = hole_example()
    assert build_loss({"type": f"mmagic.{name}"})(pred, target, weight=mask).item() == 1.0
    assert build_loss({"type": name, "default_scope": "mmagic"})(pred, target, weight=mask).item() == 1.0
    assert build_loss({"type": name})(pred, target, weight=mask).item() == 0.25  # MMDetection's
    assert build_loss({"type": f"mmdet.{name}"})(pred, target, weight=mask).item() == 0.25
    assert build_loss({"type": name}, default_scope="mmagic")(pred, target, weight=mask).item() == 1.0


def test_scoped_entries_are_the_right_classes():
    assert LOSSES.get("mmagic.L1Loss") is MaskedL1Loss and LOSSES.get("mmagic.MSELoss") is MaskedMSELoss
    assert LOSSES.get("mmdet.L1Loss") is L1Loss is LOSSES.get("L1Loss")
    assert LOSSES.get("mmdet.MSELoss") is MSELoss
    assert LOSSES.get("mmagic.CharbonnierLoss") is CharbonnierLoss
    assert LOSSES.get("FocalLoss", default_scope="mmagic") is LOSSES.get("FocalLoss")  # falls back
    assert "mmagic.L1Loss" in LOSSES and "mmagic.FocalLoss" not in LOSSES


def test_a_whole_mix_and_a_term_take_a_default_scope():
    pred, target, mask = hole_example()
    terms = {
        "hole": {"type": "L1Loss", "inputs": {"pred": "p", "target": "t", "weight": "m"}},
        "det": {
            "type": "L1Loss",
            "default_scope": None,
            "inputs": {"pred": "p", "target": "t", "weight": "m"},
        },
    }
    mix = LossMix.from_config({"default_scope": "mmagic", **terms})
    result = mix({"p": pred, "t": target}, {"m": mask})
    assert result.terms["hole"].item() == 1.0 and result.terms["det"].item() == 0.25
    plain = LossMix.from_config({"hole": {**terms["hole"], "default_scope": "mmagic"}})
    assert plain({"p": pred, "t": target}, {"m": mask}).terms["hole"].item() == 1.0
    check_loss_config({"default_scope": "mmagic", **terms})
    rows = term_rows({"default_scope": "mmagic", **terms})
    assert [r["loss"] for r in rows] == ["mmagic.L1Loss", "L1Loss"]


def test_sample_wise_is_mmagic_only():
    with pytest.raises(LossConfigError, match="sample_wise"):
        build_loss({"type": "L1Loss", "sample_wise": True})
    pred, target, mask = hole_example()
    loss = build_loss({"type": "mmagic.L1Loss", "sample_wise": True})
    pred2, target2, mask2 = (torch.cat([x, x]) for x in (pred, target, mask))
    mask2[1] = 0  # the second sample has no hole: it counts 0, and counts as a sample
    assert loss(pred2, target2, weight=mask2).item() == 0.5


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"type": "mmagx.L1Loss"}, r"unknown scope 'mmagx'; scopes: mmagic, mmdet\. Did you mean 'mmagic'\?"),
        ({"type": "L1Loss", "default_scope": "mmagx"}, r"unknown loss scope 'mmagx'; scopes: mmagic, mmdet"),
        ({"type": "mmagic.FocalLoss"}, r"scope 'mmagic' has no 'FocalLoss'.*bare name 'FocalLoss'"),
        (
            {"type": "mmdet.PerceptualLoss"},
            r"scope 'mmdet' has no 'PerceptualLoss'.*It has: AssociativeEmbeddingLoss, BalancedL1Loss",
        ),
        ({"type": "mmagic.L1Los"}, r"Did you mean 'L1Loss'"),
    ],
)
def test_bad_scopes_are_one_line_errors(node, message):
    with pytest.raises(LossConfigError, match=message) as info:
        build_loss(node)
    assert "\n" not in str(info.value)
    with pytest.raises(LossConfigError, match=message):
        check_loss_config({"t": {**node, "inputs": {"pred": "p", "target": "t"}}})


def test_a_bad_mix_scope_names_the_key():
    with pytest.raises(LossConfigError, match=r"loss\.default_scope: unknown loss scope 'nope'"):
        check_loss_config({"default_scope": "nope", "a": {"type": "L1Loss"}})
    with pytest.raises(LossConfigError, match=r"the mix's default_scope: unknown loss scope"):
        LossMix.from_config({"default_scope": "nope", "a": {"type": "L1Loss"}})


def test_a_dotted_type_outside_the_scopes_still_goes_through_the_allow_list():
    assert type(build_loss({"type": "lossmix.losses.L1Loss"})) is L1Loss
    with pytest.raises(LossConfigError, match=r"refused.*If 'os' is meant as a loss scope"):
        build_loss({"type": "os.system", "command": "true"})


def test_lossmix_list_shows_the_scopes(capsys):
    from lossmix.app.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "Loss scopes" in out and "mmagic.L1Loss" in out and "mmdet.FocalLoss" in out
    assert "MaskedL1Loss" in out and "differs" in out


# -- MMagic's published numbers -------------------------------------------------------------------
def test_pixel_losses_published_values():
    pred, target, weight = hole_example()
    for cls in (MaskedL1Loss, MaskedMSELoss):
        assert cls()(pred, target).item() == 0.25
        none = cls(loss_weight=0.5, reduction="none")(pred, target, weight=weight)
        assert none.shape == (1, 1, 64, 64) and torch.equal(none, weight * 0.5)
        assert cls(loss_weight=0.5, reduction="sum")(pred, target, weight=weight).item() == 512
    assert math.isclose(CharbonnierLoss()(pred, target).item(), 0.25, rel_tol=1e-5)
    assert math.isclose(
        CharbonnierLoss(loss_weight=0.5, reduction="sum")(pred, target).item(), 512, rel_tol=1e-5
    )


def test_psnr_published_values():
    assert PSNRLoss()(torch.ones(1, 1, 64, 64), torch.zeros(1, 1, 64, 64)).item() == 0.0
    assert PSNRLoss()(torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 64)).item() == -80.0


def test_psnr_luma_scores_the_luma():
    pred, target = torch.rand(2, 3, 5, 5, generator=make_generator(0)), torch.rand(2, 3, 5, 5)
    coef = torch.tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1)
    y = [((x * coef).sum(1, keepdim=True) + 16.0) / 255.0 for x in (pred, target)]
    expected = 10 / math.log(10) * torch.log(((y[0] - y[1]) ** 2).mean((1, 2, 3)) + 1e-8).mean()
    assert_close(PSNRLoss(luma=True)(pred, target), expected)
    with pytest.raises(LossInputError, match="luma needs RGB"):
        PSNRLoss(luma=True)(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))


def test_gradient_loss_published_values():
    pred, target, weight = hole_example()
    assert math.isclose(GradientLoss()(pred, target).item(), 0.1860352, rel_tol=1e-6)
    none = GradientLoss(loss_weight=0.5, reduction="none")(pred, target, weight=weight)
    assert none.shape == (1, 1, 64, 64) and math.isclose(none.sum().item(), 252, rel_tol=1e-6)
    assert math.isclose(
        GradientLoss(loss_weight=0.5, reduction="sum")(pred, target, weight=weight).item(), 252
    )


def composition_example():
    weight = torch.zeros(1, 1, 64, 64)
    weight[0, 0, :32, :32] = 1
    return (
        weight * 0.5,
        torch.zeros(1, 3, 64, 64),
        torch.ones(1, 3, 64, 64) * 4,
        torch.ones(1, 3, 64, 64),
        weight,
    )


@pytest.mark.parametrize(
    ("cls", "mean"), [(L1CompositionLoss, 2.5), (MSECompositionLoss, 7.0), (CharbonnierCompLoss, 2.5)]
)
def test_composition_losses_published_values(cls, mean):
    alpha, fg, bg, merged, weight = composition_example()
    assert math.isclose(cls()(alpha, fg, bg, merged).item(), mean, rel_tol=1e-6)
    none = cls(loss_weight=0.5, reduction="none")(alpha, fg, bg, merged, weight=weight)
    assert none.shape == (1, 3, 64, 64)
    torch.testing.assert_close(none, torch.ones(1, 3, 64, 64) * weight * 0.5, atol=1e-6, rtol=0)
    total = cls(loss_weight=0.5, reduction="sum")(alpha, fg, bg, merged, weight=weight).item()
    assert math.isclose(total, 1536, rel_tol=1e-6)


@pytest.mark.parametrize("cls", [L1CompositionLoss, MSECompositionLoss, CharbonnierCompLoss])
def test_composition_matches_its_formula_with_a_mask(cls):
    gen = make_generator(3)
    alpha = torch.rand(2, 1, 5, 5, generator=gen, dtype=F64)
    fg, bg, merged = (torch.rand(2, 3, 5, 5, generator=gen, dtype=F64) for _ in range(3))
    mask = (torch.rand(2, 1, 5, 5, generator=gen) > 0.5).to(F64)
    diff = alpha * fg + (1 - alpha) * bg - merged
    elems = {L1CompositionLoss: diff.abs(), MSECompositionLoss: diff**2}.get(cls, torch.sqrt(diff**2 + 1e-12))
    expected = (elems * mask).sum() / (mask.expand_as(elems).sum() + 1e-12)
    assert_close(cls()(alpha, fg, bg, merged, weight=mask), expected, F64)
    alpha.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a: (
            cls(eps=1e-6)(a, fg, bg, merged, weight=mask)
            if cls is CharbonnierCompLoss
            else cls()(a, fg, bg, merged, weight=mask)
        ),
        (alpha,),
    )


def test_composition_bad_shapes_raise():
    alpha, fg, bg, merged, _ = composition_example()
    with pytest.raises(LossInputError, match="pred_alpha of shape"):
        L1CompositionLoss()(torch.zeros(1, 2, 64, 64), fg, bg, merged)
    with pytest.raises(LossInputError, match="pred_alpha of shape"):
        L1CompositionLoss()(alpha[:, :, :32], fg, bg, merged)
    with pytest.raises(LossInputError, match="ori_merged"):
        L1CompositionLoss()(alpha, fg, bg, merged[:, :2])


# -- GAN: smgan and l1 ---------------------------------------------------------------------------
def test_smgan_published_values():
    x = torch.ones(1, 3, 6, 6) * 2
    mask = torch.ones(1, 3, 6, 6)
    loss = GANLoss(gan_type="smgan", loss_weight=2.0)
    assert math.isclose(loss(x, True, is_disc=False, mask=mask).item(), 2.0, rel_tol=1e-6)
    assert math.isclose(loss(x, False, is_disc=False, mask=mask).item(), 8.0, rel_tol=1e-6)
    assert math.isclose(loss(x, True, is_disc=True, mask=mask).item(), 1.0, rel_tol=1e-6)
    assert abs(loss(x, False, is_disc=True, mask=mask).item() - 3.786323) < 1e-6
    assert math.isclose(loss(x, True, is_disc=False, mask=torch.ones(1, 3, 6, 5)).item(), 2.0, rel_tol=1e-6)


def _blur_reference(mask: torch.Tensor) -> torch.Tensor:
    """MMagic's GaussianBlur: a 71 × 71, σ = 10 kernel, zero padding 35, per channel."""
    g = torch.tensor([math.exp(-((x - 35) ** 2) / 200.0) for x in range(71)], dtype=F64)
    g = g / g.sum()
    kernel = torch.outer(g, g).to(mask.dtype)
    c = mask.shape[1]
    return TF.conv2d(mask, kernel.expand(c, 1, 71, 71), padding=35, groups=c)


def test_smgan_matches_its_formula_with_a_resize():
    gen = make_generator(5)
    pred = torch.randn(2, 1, 4, 4, generator=gen, dtype=F64)
    mask = (torch.rand(2, 1, 8, 8, generator=gen) > 0.6).to(F64)
    up = TF.interpolate(pred, size=(8, 8), mode="bilinear", align_corners=True)
    loss = GANLoss(gan_type="smgan", loss_weight=3.0)
    assert_close(loss(pred, False, is_disc=True, mask=mask), ((up - _blur_reference(mask)) ** 2).mean(), F64)
    assert_close(loss(pred, True, is_disc=True, mask=mask), ((up - 1) ** 2).mean(), F64)
    gen_value = ((up - 1) ** 2).mean() * mask / mask.mean()
    assert_close(loss(pred, True, is_disc=False, mask=mask), 3.0 * gen_value.mean(), F64)
    pred.requires_grad_()
    assert torch.autograd.gradcheck(lambda p: loss(p, False, is_disc=True, mask=mask), (pred,))


def test_smgan_is_finite_at_extremes_and_for_an_empty_mask():
    pred = (torch.randn(2, 1, 4, 4) * 1e4).requires_grad_()
    loss = GANLoss(gan_type="smgan")
    for is_disc in (True, False):
        value = loss(pred, False, is_disc=is_disc, mask=torch.zeros(2, 1, 8, 8))
        (grad,) = torch.autograd.grad(value, pred)
        assert torch.isfinite(value) and torch.isfinite(grad).all()


def test_l1_gan_type():
    x = torch.randn(3, 1, 2, 2, generator=make_generator(6), dtype=F64)
    loss = GANLoss(gan_type="l1", loss_weight=2.0)
    assert_close(loss(x, True), 2.0 * (x - 1).abs().mean(), F64)
    assert_close(loss(x, False, is_disc=True), x.abs().mean(), F64)


def test_mask_goes_with_smgan_only():
    with pytest.raises(LossInputError, match="smgan.*needs the hole mask"):
        GANLoss(gan_type="smgan")(torch.zeros(1, 1, 2, 2), True)
    with pytest.raises(LossInputError, match="takes no mask"):
        GANLoss(gan_type="vanilla")(torch.zeros(1, 1, 2, 2), True, mask=torch.ones(1, 1, 2, 2))
    with pytest.raises(LossInputError, match=r"pred \(N, C, h, w\) and mask"):
        GANLoss(gan_type="smgan")(torch.zeros(2, 1), True, mask=torch.ones(2, 1, 2, 2))


# -- data_info, loss_name ----------------------------------------------------------------------
def _pair():
    gen = make_generator(9)
    return torch.randn(2, 3, generator=gen), torch.randn(2, 3, generator=gen)


def test_data_info_is_inputs():
    pred, target = _pair()
    a = LossMix.from_config({"l1": {"type": "L1Loss", "data_info": {"pred": "p", "target": "t"}}})
    b = LossMix.from_config({"l1": {"type": "L1Loss", "inputs": {"pred": "p", "target": "t"}}})
    assert torch.equal(a({"p": pred}, {"t": target}).total, b({"p": pred}, {"t": target}).total)
    both = {"l1": {"type": "L1Loss", "inputs": {"pred": "p"}, "data_info": {"pred": "p"}}}
    with pytest.raises(LossConfigError, match="term 'l1': give inputs or data_info"):
        LossMix.from_config(both)
    with pytest.raises(LossConfigError, match="term 'l1': give inputs or data_info"):
        check_loss_config(both)


def test_same_loss_names_are_summed_into_one_logged_value():
    pred, target = _pair()
    mix = LossMix.from_config(
        {
            "a": {
                "type": "L1Loss",
                "loss_weight": 2.0,
                "loss_name": "loss_pix",
                "data_info": {"pred": "p", "target": "t"},
            },
            "b": {"type": "MSELoss", "loss_name": "loss_pix", "data_info": {"pred": "p", "target": "t"}},
            "c": {"type": "MSELoss", "loss_name": "loss_mse", "inputs": {"pred": "p", "target": "t"}},
        }
    )
    result = mix({"p": pred, "t": target})
    l1, mse = (pred - target).abs().mean(), ((pred - target) ** 2).mean()
    assert list(result.terms) == ["loss_pix", "loss_mse"]
    assert_close(result.terms["loss_pix"], 2 * l1 + mse)
    assert_close(result.raw["loss_pix"], 2 * l1 + mse) and result.weights["loss_pix"] == 1.0
    assert_close(result.raw["loss_mse"], mse) and result.weights["loss_mse"] == 1.0
    assert_close(result.total, 2 * l1 + 2 * mse)
    assert mix.find_term("a").log_name == "loss_pix"  # terms are still found by their names


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        (
            {
                "a": {"type": "L1Loss", "loss_name": "x"},
                "b": {"type": "L1Loss", "loss_name": "x", "in_total": False},
            },
            "share loss_name 'x'.*only one is in the total",
        ),
        ({"a": {"type": "L1Loss", "loss_name": "loss.l1"}}, r"loss_name='loss\.l1' is not valid"),
        (
            {
                "a": {"type": "L1Loss", "loss_name": "x"},
                "b": {"type": "L1Loss", "loss_name": "x"},
                "weighting": {"type": "uncertainty"},
            },
            "shares its loss_name",
        ),
    ],
)
def test_bad_loss_names(terms, message):
    with pytest.raises(LossConfigError, match=message):
        LossMix.from_config(terms)


def test_config_check_knows_the_mmagic_keys():
    check_loss_config(
        {"a": {"type": "L1Loss", "loss_name": "loss_l1", "data_info": {"pred": "p", "target": "t"}}}
    )
    with pytest.raises(LossConfigError, match=r"loss_name=3 is a int, but loss_name expects str"):
        check_loss_config({"a": {"type": "L1Loss", "loss_name": 3}})


def test_every_loss_of_the_mmagic_table_is_listed():
    table = [
        "PerceptualLoss", "PSNRLoss", "CharbonnierCompLoss", "AdvLoss", "TransferalPerceptualLoss",
        "LightCNNFeatureLoss", "L1CompositionLoss", "MSECompositionLoss", "GradientLoss", "FaceIdLoss",
        "CLIPLoss", "GANLoss", "L1Loss", "MSELoss", "CharbonnierLoss", "GeneratorPathRegularizerComps",
    ]  # fmt: skip
    for name in table:
        assert f"mmagic.{name}" in LOSSES, name
        assert LOSSES.describe(f"mmagic.{name}").summary
    assert set(lossmix.LOSSES.scopes()) == {"mmagic", "mmdet"}


def test_new_kernels_compile_fullgraph():
    from lossmix import functional as F

    gen = make_generator(11)
    x, y = torch.randn(2, 3, 8, 8, generator=gen), torch.randn(2, 3, 8, 8, generator=gen)
    mask = (torch.rand(2, 1, 8, 8, generator=gen) > 0.5).float()

    def path(a, b):
        lengths = F.path_lengths(a.flatten(2))
        return F.path_length_penalty(lengths, F.moved_path_mean(lengths, b.mean(), decay=0.01))

    kernels = {
        "gram": lambda a, b: F.gram_matrix(a) - F.gram_matrix(b),
        "distance": lambda a, b: F.feature_distance(a, b, criterion="mse"),
        "blur": lambda a, b: F.gaussian_blur(a, size=5, sigma=2.0),
        "composite": lambda a, b: F.alpha_composite(torch.sigmoid(a[:, :1]), a, b),
        "luma": lambda a, b: F.rgb_to_y(a),
        "smgan": lambda a, b: F.gan_loss(
            a[:, :1, :4, :4], gan_type="smgan", target_is_real=False, is_disc=True, mask=mask
        ),
        "path": path,
    }
    for name, kernel in kernels.items():
        torch._dynamo.reset()
        compiled = torch.compile(kernel, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(x, y), kernel(x, y), msg=name)


@pytest.mark.parametrize("cls", [L1CompositionLoss, MSECompositionLoss, CharbonnierCompLoss])
def test_composition_finite_at_extreme_inputs(cls):
    gen = make_generator(13)
    alpha = (torch.rand(2, 1, 4, 4, generator=gen) * 1e4).requires_grad_()
    fg, bg, merged = (torch.randn(2, 3, 4, 4, generator=gen) * 1e4 for _ in range(3))
    mask = (torch.rand(2, 1, 4, 4, generator=gen) > 0.5).float()
    for weight in (None, mask):
        value = cls()(alpha, fg, bg, merged, weight=weight)
        (grad,) = torch.autograd.grad(value, alpha)
        assert torch.isfinite(value) and torch.isfinite(grad).all()


def test_l1_gan_type_gradcheck_and_extremes():
    x = torch.randn(3, 1, 2, 2, generator=make_generator(14), dtype=F64).requires_grad_()
    loss = GANLoss(gan_type="l1")
    assert torch.autograd.gradcheck(lambda p: loss(p, False, is_disc=True), (x,))
    big = (x.detach() * 1e4).requires_grad_()
    (grad,) = torch.autograd.grad(loss(big, True), big)
    assert torch.isfinite(grad).all()
