"""Losses on the embeddings of a pretrained network, with MMagic's arguments and numbers:
face identity (``FaceIdLoss``) and text-image similarity (``CLIPLoss``).

The network is the user's (an allow-listed ``_target_`` node or a module), frozen and kept
in eval mode (:func:`lossmix.losses.encoders.build_encoder`); lossmix never downloads one.
The element loss is one value per sample (``(N, T)`` for CLIP: per image and text), so
``'mean'`` is MMagic's value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch.nn.functional as TF
from torch import Tensor, nn

from lossmix.errors import LossConfigError
from lossmix.losses.base import BaseLoss
from lossmix.losses.encoders import build_encoder
from lossmix.losses.perceptual import check_rgb
from lossmix.registry.registry import LOSSES
from lossmix.utilities.checks import check_bool, check_int

__all__ = ["CLIPLoss", "FaceIdLoss"]


@LOSSES.register(scopes=("mmagic",))
class FaceIdLoss(BaseLoss):
    """Identity loss (MMagic's ``FaceIdLoss``): 1 − ⟨f̂(x), f̂(y)⟩ of unit face embeddings, per sample.

    :math:`\\hat f` is the face network's embedding, L2-normalised (ArcFace's backbone ends
    with that normalisation, so this is MMagic's number there), of ``gt`` detached. With
    ``crop_face`` the images first go through MMagic's ArcFace preprocessing: average-pooled
    to 256 × 256 unless 256 rows high, cropped to rows 35:223 and columns 32:220, pooled to
    112 × 112.

    Args:
        facenet: the face network (an allow-listed ``_target_`` node or a module) mapping
            ``(N, 3, h, w)`` to ``(N, D)``; MMagic's default downloads ArcFace, lossmix never does.
        crop_face: apply the preprocessing above.

    Shapes: ``pred``, ``gt`` ``(N, 3, H, W)``; ``(N,)`` under ``'none'``.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, 3, H, W) float RGB images (the range facenet expects)",
        "gt": "(N, 3, H, W) float RGB ground-truth images (detached)",
        "weight": "(N,) float, one per sample",
        "returns": "(N,), 1 - cosine similarity of the face embeddings",
    }

    def __init__(
        self,
        *,
        facenet: Mapping[str, Any] | nn.Module,
        crop_face: bool = True,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.facenet = build_encoder(self.loss_name, "facenet", facenet)
        self.crop_face = check_bool(self.loss_name, "crop_face", crop_face)

    def _embed(self, image: Tensor) -> Tensor:
        if self.crop_face:
            if image.shape[2] != 256:
                image = TF.adaptive_avg_pool2d(image, (256, 256))
            image = TF.adaptive_avg_pool2d(image[:, :, 35:223, 32:220], (112, 112))
        feats: Tensor = self.facenet(image)
        return TF.normalize(feats.flatten(1), dim=1)

    def elementwise(self, pred: Tensor, gt: Tensor) -> Tensor:
        check_rgb(self.loss_name, pred, gt)
        return 1.0 - (self._embed(pred) * self._embed(gt).detach()).sum(1)


@LOSSES.register(scopes=("mmagic",))
class CLIPLoss(BaseLoss):
    """StyleCLIP's text-image loss (MMagic's ``CLIPLoss``): 1 − cos(E_I(x'), E_T(t)) per image and text.

    :math:`x'` is the image upsampled ``scale_factor`` times (nearest) and average-pooled with
    kernel ``scale_factor · in_size // pool_size`` (MMagic's ``CLIPLossModel``). MMagic computes
    ``1 - logits_per_image / 100``, which is this for CLIP's trained logit scale of 100.

    Args:
        clip_model: the CLIP network (an allow-listed ``_target_`` node or a module) with
            ``encode_image`` and ``encode_text`` (OpenAI CLIP's API). MMagic's ``clip_model``
            options ``in_size``, ``scale_factor``, ``pool_size`` are this loss's own.
        in_size, scale_factor, pool_size: the resizing above.

    Shapes: ``image`` ``(N, 3, H, W)``; ``text`` the tokens ``(T, L)``; ``(N, T)`` under ``'none'``.
    """

    shapes: ClassVar[dict[str, str]] = {
        "image": "(N, 3, H, W) float RGB images; H = W = in_size gives CLIP its pool_size input",
        "text": "(T, L) int64 text tokens, as clip_model.encode_text takes them (OpenAI CLIP: L = 77)",
        "weight": "(N, T) float per image and text, or (N,) per image",
        "returns": "(N, T), 1 - cosine similarity per image and text",
    }

    def __init__(
        self,
        *,
        clip_model: Mapping[str, Any] | nn.Module,
        in_size: int = 1024,
        scale_factor: int = 7,
        pool_size: int = 224,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.clip = build_encoder(
            self.loss_name, "clip_model", clip_model, methods=("encode_image", "encode_text")
        )
        self.scale_factor = check_int(self.loss_name, "scale_factor", scale_factor, min=1)
        self.kernel = (
            check_int(self.loss_name, "in_size", in_size, min=1)
            * self.scale_factor
            // check_int(self.loss_name, "pool_size", pool_size, min=1)
        )
        if self.kernel < 1:
            raise LossConfigError(
                f"{self.loss_name}: scale_factor · in_size // pool_size = {self.kernel}; it must be >= 1."
            )

    def elementwise(self, image: Tensor, text: Tensor) -> Tensor:
        check_rgb(self.loss_name, image)
        resized = TF.avg_pool2d(TF.interpolate(image, scale_factor=self.scale_factor), self.kernel)
        net: Any = self.clip.net  # checked at build time to have encode_image and encode_text
        image_feats = TF.normalize(net.encode_image(resized), dim=-1)
        text_feats = TF.normalize(net.encode_text(text), dim=-1)
        return 1.0 - image_feats @ text_feats.t()
