"""Feature losses with MMagic's arguments and numbers: perceptual/style (VGG), transferal
perceptual (TTSR) and LightCNN features (DIC-GAN); face identity and CLIP are in
:mod:`lossmix.losses.identity`.

Each network is frozen (:mod:`lossmix.losses.encoders`): the built-in VGG or LightCNN
loading a weights file you give (``pretrained: null`` is a random initialisation), or an
allow-listed ``_target_`` network. The element loss is **one value per sample** ``(N,)``,
so ``'mean'`` is MMagic's value (its criteria average whole tensors, and every sample has
the same size) and a ``weight`` is ``(N,)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from lossmix.errors import LossConfigError, LossInputError
from lossmix.functional import perceptual as FI
from lossmix.losses.base import BaseLoss
from lossmix.losses.encoders import LightCNNFeatures, VGGFeatures, build_encoder, check_vgg_type
from lossmix.registry.registry import LOSSES
from lossmix.utilities.checks import check_bool, check_float, check_same_shape

__all__ = ["LightCNNFeatureLoss", "PerceptualLoss", "TransferalPerceptualLoss"]


def _layer_weights(owner: str, key: str, value: Any, vgg_type: str) -> dict[str, float]:
    if not isinstance(value, Mapping) or not value:
        raise LossConfigError(
            f"{owner}: {key}={value!r} is not valid; give layer index → weight, e.g. {{'4': 1.0, '9': 1.0}}."
        )
    return {
        VGGFeatures.check_layer(owner, vgg_type, layer): check_float(owner, f"{key}[{layer!r}]", weight)
        for layer, weight in value.items()
    }


def check_rgb(owner: str, *images: Tensor) -> None:
    """Raise :class:`LossInputError` unless every image is ``(N, 3, H, W)``."""
    for image in images:
        if image.dim() != 4 or image.shape[1] != 3:
            raise LossInputError(
                f"{owner}: an image of shape {tuple(image.shape)} is not valid; give RGB images (N, 3, H, W)."
            )


def _zeros_like_rows(value: Tensor) -> Tensor:
    """A per-sample zero still connected to ``value`` (a part whose weight is 0)."""
    return value.flatten(1).sum(1) * 0.0


@LOSSES.register(scopes=("mmagic",))
class PerceptualLoss(BaseLoss):
    """VGG perceptual loss and Gram-matrix style loss (MMagic's ``PerceptualLoss``); parts
    ``percep`` and ``style``.

    .. math::
        \\ell_{percep} = w_p \\sum_k \\lambda_k\\, d(\\phi_k(x), \\phi_k(y)), \\qquad
        \\ell_{style} = w_s \\sum_k \\mu_k\\, d(G(\\phi_k(x)), G(\\phi_k(y)))

    with :math:`\\phi_k` the VGG features at layer ``k`` (:class:`~lossmix.losses.encoders.VGGFeatures`),
    :math:`G` :func:`lossmix.functional.gram_matrix`, :math:`d` the per-sample mean L1 or
    MSE (:func:`lossmix.functional.feature_distance`), and ``y`` detached. ``norm_img`` first
    maps ``[-1, 1]`` images to ``[0, 1]``; ``use_input_norm`` then applies ImageNet's mean and
    std. A part whose weight is 0 is a connected zero (MMagic returns ``None``). One VGG
    serves both parts (MMagic builds a second copy for ``layer_weights_style``: the same
    weights, so the same numbers).

    Args:
        layer_weights: VGG layer index → weight :math:`\\lambda_k` (``{'4': 1.0, '9': 1.0}``).
        layer_weights_style: :math:`\\mu_k`; ``None``: ``layer_weights``.
        vgg_type: ``vgg16`` or ``vgg19`` (``vgg11``, ``vgg13`` too).
        use_input_norm, norm_img: as above.
        perceptual_weight, style_weight: :math:`w_p`, :math:`w_s`.
        pretrained: a weights file in torchvision's layout, ``torchvision://<vgg_type>`` (read
            from torchvision's cache, never downloaded), or ``None``: random init.
        criterion: ``'l1'`` or ``'mse'``.

    Shapes: ``pred``, ``target`` ``(N, 3, H, W)``; each part ``(N,)`` under ``'none'``.

    >>> import torch
    >>> loss = PerceptualLoss(layer_weights={"2": 1.0}, vgg_type="vgg16", pretrained=None)
    >>> {k: v.item() for k, v in loss(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)).items()}
    {'percep': 0.0, 'style': 0.0}
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, 3, H, W) float RGB images in [-1, 1] (norm_img=True) or [0, 1] (norm_img=False)",
        "target": "(N, 3, H, W) float RGB images, pred's shape and range (detached)",
        "weight": "(N,) float, one per sample",
        "returns": "{'percep': (N,), 'style': (N,)}, one value per sample each",
    }

    part_names = ("percep", "style")

    def __init__(
        self,
        *,
        layer_weights: Mapping[str, float],
        layer_weights_style: Mapping[str, float] | None = None,
        vgg_type: str = "vgg19",
        use_input_norm: bool = True,
        perceptual_weight: float = 1.0,
        style_weight: float = 1.0,
        norm_img: bool = True,
        pretrained: str | None = "torchvision://vgg19",
        criterion: str = "l1",
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        owner = self.loss_name
        if (
            isinstance(pretrained, str)
            and pretrained.startswith("torchvision://")
            and pretrained != f"torchvision://{vgg_type}"
        ):
            raise LossConfigError(
                f"{owner}: pretrained='{pretrained}' does not match vgg_type={vgg_type!r}; use "
                f"pretrained: torchvision://{vgg_type}, a file of {vgg_type} weights, or null."
            )
        check_vgg_type(owner, vgg_type)
        self.layer_weights = _layer_weights(owner, "layer_weights", layer_weights, vgg_type)
        style = layer_weights if layer_weights_style is None else layer_weights_style
        self.layer_weights_style = _layer_weights(owner, "layer_weights_style", style, vgg_type)
        self.perceptual_weight = check_float(owner, "perceptual_weight", perceptual_weight, low=0.0)
        self.style_weight = check_float(owner, "style_weight", style_weight, low=0.0)
        self.norm_img = check_bool(owner, "norm_img", norm_img)
        self.criterion = FI.check_criterion(criterion, owner=owner)
        layers = sorted({*self.layer_weights, *self.layer_weights_style}, key=int)
        self.vgg = VGGFeatures(
            layers=layers,
            vgg_type=vgg_type,
            use_input_norm=check_bool(owner, "use_input_norm", use_input_norm),
            pretrained=pretrained,
            owner=owner,
        )

    def _weighted(
        self, fx: dict[str, Tensor], ft: dict[str, Tensor], weights: dict[str, float], gram: bool
    ) -> Tensor:
        total: Tensor | None = None
        for layer, weight in weights.items():
            a, b = (FI.gram_matrix(fx[layer]), FI.gram_matrix(ft[layer])) if gram else (fx[layer], ft[layer])
            term = FI.feature_distance(a, b, criterion=self.criterion) * weight
            total = term if total is None else total + term
        assert total is not None  # layer weights are never empty
        return total

    def elementwise(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        check_rgb(self.loss_name, pred, target)
        if self.norm_img:
            pred, target = (pred + 1.0) * 0.5, (target + 1.0) * 0.5
        fx, ft = self.vgg(pred), self.vgg(target.detach())
        first = next(iter(fx.values()))
        percep = (
            self._weighted(fx, ft, self.layer_weights, gram=False) * self.perceptual_weight
            if self.perceptual_weight > 0
            else _zeros_like_rows(first)
        )
        style = (
            self._weighted(fx, ft, self.layer_weights_style, gram=True) * self.style_weight
            if self.style_weight > 0
            else _zeros_like_rows(first)
        )
        return {"percep": percep, "style": style}

    def extra_repr(self) -> str:
        return (
            f"layer_weights={self.layer_weights}, perceptual_weight={self.perceptual_weight}, "
            f"style_weight={self.style_weight}, criterion={self.criterion!r}, " + super().extra_repr()
        )


@LOSSES.register(scopes=("mmagic",))
class TransferalPerceptualLoss(BaseLoss):
    """TTSR's transferal perceptual loss (MMagic's ``TransferalPerceptualLoss``).

    .. math::
        \\ell = \\sum_i d(m_i \\odot s_i,\\; t_i \\odot s_i)

    over the levels ``i`` of ``maps`` and ``textures`` (tuples of ``(N, C_i, H_i, W_i)``), with
    :math:`d` the per-sample mean MSE or L1. With ``use_attention``, :math:`s_0 =
    \\sigma(a)` and, for ``i ≥ 1``, :math:`s_i` the raw ``soft_attention`` ``a`` ``(N, 1, h, w)``
    resized bicubically to :math:`(2^i h, 2^i w)` (MMagic's rule: only the first level goes
    through the sigmoid); without, :math:`s_i = 1`. Returns ``(N,)`` under ``'none'``.
    """

    shapes: ClassVar[dict[str, str]] = {
        "maps": (
            "sequence of L float feature maps (N, C_i, H_i, W_i), level i at (2^i h, 2^i w) "
            "with use_attention"
        ),
        "soft_attention": (
            "(N, 1, h, w) float attention logits (only its size is read without use_attention)"
        ),
        "textures": "sequence of L float texture features, each of maps[i]'s shape",
        "weight": "(N,) float, one per sample",
        "returns": "(N,), the sum over the levels of the per-sample distances",
    }

    def __init__(
        self,
        *,
        use_attention: bool = True,
        criterion: str = "mse",
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.use_attention = check_bool(self.loss_name, "use_attention", use_attention)
        self.criterion = FI.check_criterion(criterion, owner=self.loss_name)

    def elementwise(
        self, maps: Sequence[Tensor], soft_attention: Tensor, textures: Sequence[Tensor]
    ) -> Tensor:
        if not isinstance(maps, Sequence) or not isinstance(textures, Sequence) or len(maps) != len(textures):
            raise LossInputError(
                f"{self.loss_name}: maps and textures must be sequences of the same length (one tensor "
                f"per level); got {type(maps).__name__} and {type(textures).__name__}."
            )
        h, w = soft_attention.shape[-2:]
        total: Tensor | None = None
        for level, (fmap, texture) in enumerate(zip(maps, textures, strict=True)):
            if fmap.shape != texture.shape:
                raise LossInputError(
                    f"{self.loss_name}: level {level}: maps of shape {tuple(fmap.shape)} and textures of "
                    f"shape {tuple(texture.shape)} must match."
                )
            if not self.use_attention:
                soft: Tensor | float = 1.0
            elif level == 0:
                soft = torch.sigmoid(soft_attention)
            else:
                size = (h * 2**level, w * 2**level)
                soft = TF.interpolate(soft_attention, size=size, mode="bicubic", align_corners=False)
            term = FI.feature_distance(fmap * soft, texture * soft, criterion=self.criterion)
            total = term if total is None else total + term
        if total is None:
            raise LossInputError(f"{self.loss_name}: maps is empty; give one tensor per level.")
        return total


@LOSSES.register(scopes=("mmagic",))
class LightCNNFeatureLoss(BaseLoss):
    """DIC-GAN's face-feature loss (MMagic's ``LightCNNFeatureLoss``): the per-sample mean
    L1/MSE between LightCNN features of ``pred`` and ``gt`` (detached).

    Args:
        pretrained: MMagic's ``light_cnn_feature.pth`` (a path; never downloaded), or
            ``None``: random init.
        criterion: ``'l1'`` or ``'mse'``.
        encoder: another feature network instead of the built-in LightCNN (an allow-listed
            ``_target_`` node or a module); ``pretrained`` must then be ``None``.

    Shapes: ``pred``, ``gt`` ``(N, 3, 128, 128)`` for LightCNN; ``(N,)`` under ``'none'``.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, 3, 128, 128) float images for the built-in LightCNN (with encoder: what it takes)",
        "gt": "float ground-truth images, pred's shape (detached)",
        "weight": "(N,) float, one per sample",
        "returns": "(N,), the per-sample mean L1/MSE of the features",
    }

    def __init__(
        self,
        *,
        pretrained: str | None,
        criterion: str = "l1",
        encoder: Mapping[str, Any] | nn.Module | None = None,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.criterion = FI.check_criterion(criterion, owner=self.loss_name)
        if encoder is not None and pretrained is not None:
            raise LossConfigError(
                f"{self.loss_name}: pretrained={pretrained!r} loads the built-in LightCNN, but encoder "
                "replaces it; set pretrained: null (the encoder loads its own weights)."
            )
        self.model: nn.Module = (
            build_encoder(self.loss_name, "encoder", encoder)
            if encoder is not None
            else LightCNNFeatures(pretrained=pretrained, owner=self.loss_name)
        )

    def elementwise(self, pred: Tensor, gt: Tensor) -> Tensor:
        check_same_shape(self.loss_name, pred, gt, what="gt")
        return FI.feature_distance(self.model(pred), self.model(gt).detach(), criterion=self.criterion)
