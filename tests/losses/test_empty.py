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
    AdvLoss,
    CharbonnierCompLoss,
    CLIPLoss,
    CrossEntropyLoss,
    DiscShiftLoss,
    FaceIdLoss,
    GANLoss,
    GeneratorPathRegularizer,
    GradientPenaltyLoss,
    L1CompositionLoss,
    LightCNNFeatureLoss,
    MaskedTVLoss,
    MSECompositionLoss,
    PerceptualLoss,
    R1GradientPenalty,
    TransferalPerceptualLoss,
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


def _smgan(is_disc: bool) -> Call:
    def call(module: nn.Module) -> tuple[Tensor, Tensor]:
        pred = _pred(0, 1, 2, 2)
        return module(pred, False, is_disc=is_disc, mask=torch.ones(0, 1, 4, 4, dtype=torch.float64)), pred

    return call


def _composition(module: nn.Module) -> tuple[Tensor, Tensor]:
    alpha = _pred(0, 1, 4, 4)
    images = (torch.zeros(0, 3, 4, 4, dtype=torch.float64) for _ in range(3))
    return module(alpha, *images, weight=torch.ones(0, 1, 4, 4, dtype=torch.float64)), alpha


def _images(module: nn.Module) -> tuple[Tensor, Tensor]:
    pred = _pred(0, 3, 8, 8)
    out = module(pred, torch.zeros(0, 3, 8, 8, dtype=torch.float64))
    parts = list(out.values()) if isinstance(out, dict) else [out]  # PerceptualLoss: percep, style
    return sum(parts[1:], parts[0]), pred


def _transferal(module: nn.Module) -> tuple[Tensor, Tensor]:
    maps = [_pred(0, 4, 2, 2), _pred(0, 2, 4, 4)]
    textures = [torch.zeros(0, 4, 2, 2, dtype=torch.float64), torch.zeros(0, 2, 4, 4, dtype=torch.float64)]
    return module(maps, torch.zeros(0, 1, 2, 2, dtype=torch.float64), textures), maps[0]


class _Clip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 4).double()

    def encode_image(self, image: Tensor) -> Tensor:
        return self.proj(image.mean((2, 3)))

    def encode_text(self, tokens: Tensor) -> Tensor:
        return tokens.to(torch.float64)


def _clip(module: nn.Module) -> tuple[Tensor, Tensor]:
    image = _pred(0, 3, 4, 4)
    return module(image, torch.ones(2, 4, dtype=torch.float64)), image


def _adv(model: str) -> Call:
    def call(module: nn.Module) -> tuple[Tensor, Tensor]:
        disc = nn.Conv2d(3, 1, 1).double()
        out = module(disc, _pred(0, 3, 4, 4), _pred(0, 3, 4, 4), model=model)
        return out, next(disc.parameters())

    return call


def _path(module: nn.Module) -> tuple[Tensor, Tensor]:
    mapping, synthesis = nn.Linear(2, 2).double(), nn.Linear(2, 3).double()

    def generator(z: None, num_batches: int, return_latents: bool) -> dict[str, Tensor]:
        latent = mapping(torch.randn(num_batches, 2, dtype=torch.float64))
        return {"fake_img": synthesis(latent), "latent": latent}

    return module(generator, 0), mapping.weight


def _net(**kw: object) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(192, 4)).double()


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
    "GANLoss-smgan-disc": (lambda **kw: GANLoss(gan_type="smgan", **kw), _smgan(True), REDUCTIONS),
    "GANLoss-smgan-gen": (lambda **kw: GANLoss(gan_type="smgan", **kw), _smgan(False), REDUCTIONS),
    "L1CompositionLoss": (lambda **kw: L1CompositionLoss(**kw), _composition, REDUCTIONS),
    "MSECompositionLoss": (lambda **kw: MSECompositionLoss(**kw), _composition, REDUCTIONS),
    "CharbonnierCompLoss": (lambda **kw: CharbonnierCompLoss(**kw), _composition, REDUCTIONS),
    "PerceptualLoss": (
        lambda **kw: PerceptualLoss(
            layer_weights={"2": 1.0}, vgg_type="vgg16", pretrained=None, **kw
        ).double(),
        _images,
        REDUCTIONS,
    ),
    "TransferalPerceptualLoss": (lambda **kw: TransferalPerceptualLoss(**kw), _transferal, REDUCTIONS),
    "LightCNNFeatureLoss": (
        lambda **kw: LightCNNFeatureLoss(pretrained=None, encoder=_net(), **kw),
        _images,
        REDUCTIONS,
    ),
    "FaceIdLoss": (lambda **kw: FaceIdLoss(facenet=_net(), crop_face=False, **kw), _images, REDUCTIONS),
    "CLIPLoss": (lambda **kw: CLIPLoss(clip_model=_Clip(), in_size=4, pool_size=4, **kw), _clip, REDUCTIONS),
    "AdvLoss-ragan-disc": (lambda **kw: AdvLoss(loss_type="ragan", **kw), _adv("discriminator"), ("mean",)),
    "AdvLoss-wgan-gp-disc": (
        lambda **kw: AdvLoss(loss_type="wgan-gp", **kw),
        _adv("discriminator"),
        ("mean",),
    ),
    "AdvLoss-gan-gen": (lambda **kw: AdvLoss(loss_type="gan", **kw), _adv("generator"), ("mean",)),
    "GeneratorPathRegularizer": (lambda **kw: GeneratorPathRegularizer(**kw), _path, REDUCTIONS),
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
    registry = lossmix.LOSSES
    entries = [registry.get(n) for n in registry.names()]
    entries += [registry.get(f"{s}.{n}") for s in registry.scopes() for n in registry.scope_names(s)]
    builtin = {e.__name__ for e in entries if getattr(e, "__module__", "").startswith("lossmix.losses")}
    missing = sorted(builtin - covered)
    assert not missing, f"no empty-input check for {missing}"
