"""MMagic's pixel and matting losses: masked means, PSNR, Sobel gradients, alpha composition.

MMagic's ``L1Loss`` and ``MSELoss`` share their names with MMDetection's but not their
numbers: with a ``weight`` (a hole mask) and ``'mean'``, MMagic divides by the mask's sum
(:func:`lossmix.reduction.mask_reduce_loss`), MMDetection by the element count. MMagic's
are :class:`MaskedL1Loss` and :class:`MaskedMSELoss`, registered under those names and as
``L1Loss``/``MSELoss`` in the ``mmagic`` scope (``type: mmagic.L1Loss``, or ``default_scope:
mmagic``); the bare ``L1Loss`` stays MMDetection's. The other losses here exist only in
MMagic and are registered under their bare names and in the ``mmagic`` scope.
"""

from __future__ import annotations

import abc
import warnings
from typing import ClassVar

from torch import Tensor

from lossmix.errors import LossConfigError, LossInputError
from lossmix.functional import pixel as FI
from lossmix.functional import regression as FR
from lossmix.losses.base import BaseLoss, ElementLoss
from lossmix.losses.regression import masked_mean_loss
from lossmix.registry.registry import LOSSES
from lossmix.utilities.checks import check_bool, check_positive, check_same_shape

__all__ = [
    "CharbonnierCompLoss",
    "CompositionLoss",
    "GradientLoss",
    "L1CompositionLoss",
    "MSECompositionLoss",
    "MaskedL1Loss",
    "MaskedMSELoss",
    "MaskedMeanLoss",
    "PSNRLoss",
]


def _check_images(owner: str, *images: Tensor) -> None:
    for image in images:
        if image.dim() != 4:
            raise LossInputError(
                f"{owner}: an input of shape {tuple(image.shape)} is not valid; give images (N, C, H, W)."
            )


class MaskedMeanLoss(BaseLoss):
    """Base of MMagic's masked-mean losses: a mask ``weight`` divides ``'mean'`` by its sum.

    Args:
        sample_wise: with a mask and ``'mean'``, average per sample first, then over ``N``
            (every sample counts the same whatever its hole size).
        reduction, loss_weight: as every loss.
    """

    def __init__(
        self, *, sample_wise: bool = False, reduction: str = "mean", loss_weight: float = 1.0
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.sample_wise = check_bool(self.loss_name, "sample_wise", sample_wise)

    def masked(self, loss: Tensor, weight: Tensor | None) -> ElementLoss:
        """``loss`` with MMagic's masked mean (:func:`~lossmix.losses.regression.masked_mean_loss`)."""
        return masked_mean_loss(self, loss, weight, sample_wise=self.sample_wise)

    def extra_repr(self) -> str:
        return f"sample_wise={self.sample_wise}, " + super().extra_repr()


@LOSSES.register()
@LOSSES.register(name="L1Loss", scopes=("mmagic",), default=False)
class MaskedL1Loss(MaskedMeanLoss):
    """MMagic's ``L1Loss`` (``mmagic.L1Loss``): ``|p − t|`` with a masked mean (the mask sum divides).

    Shapes: ``pred``, ``target`` ``(N, C, H, W)`` (any same shape); ``weight`` ``(N, 1, H, W)``
    or ``(N, C, H, W)``: ``'mean'`` is :math:`\\sum |p - t| w / (\\sum w + 10^{-12})`, the sum
    counting channels; any other weight shape follows MMDetection's mean over elements.

    >>> import torch
    >>> mask = torch.zeros(1, 1, 4, 4); mask[..., :2, :2] = 1
    >>> MaskedL1Loss()(mask, 2 * mask, weight=mask)
    tensor(1.)
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, C, H, W) float images (any shape)",
        "target": "float, pred's shape",
        "weight": (
            "(N, 1, H, W) or (N, C, H, W) float mask: 'mean' divides by its (channel-expanded) sum; "
            "a weight of fewer dims broadcasts, mean over elements"
        ),
        "returns": "pred's shape, |pred - target| times the mask",
    }

    def elementwise(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> ElementLoss:
        check_same_shape(self.loss_name, pred, target)
        return self.masked(FR.l1_loss(pred, target), weight)


@LOSSES.register()
@LOSSES.register(name="MSELoss", scopes=("mmagic",), default=False)
class MaskedMSELoss(MaskedMeanLoss):
    """MMagic's ``MSELoss`` (``mmagic.MSELoss``): (p − t)² with a masked mean (the mask sum divides).

    Shapes and weights as :class:`MaskedL1Loss`.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, C, H, W) float images (any shape)",
        "target": "float, pred's shape",
        "weight": (
            "(N, 1, H, W) or (N, C, H, W) float mask: 'mean' divides by its (channel-expanded) sum; "
            "a weight of fewer dims broadcasts, mean over elements"
        ),
        "returns": "pred's shape, (pred - target)^2 times the mask",
    }

    def elementwise(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> ElementLoss:
        check_same_shape(self.loss_name, pred, target)
        return self.masked(FR.mse_loss(pred, target), weight)


@LOSSES.register()
class PSNRLoss(BaseLoss):
    """HINet's PSNR loss, see :func:`lossmix.functional.psnr_loss`.

    ``'none'`` gives one value per sample ``(N,)``; its mean is MMagic's number
    (``0`` for an error of 1, ``-80`` for identical images). ``luma=True`` scores the luma
    channel of RGB in ``[0, 1]`` (:func:`lossmix.functional.rgb_to_y`), as HINet's ``toY``
    does. MMagic's ``PSNRLoss`` accepts ``toY`` but ignores it, so ``toY: true`` is refused
    here (it would differ from MMagic by up to 5 dB): write ``luma: true``, or use
    ``mmagic.PSNRLoss`` (:class:`MMagicPSNRLoss`) for MMagic's numbers.

    Shapes: ``pred``, ``target`` ``(N, C, H, W)`` (``C = 3`` with ``luma``); ``weight`` ``(N,)``.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, C, H, W) float images, in [0, 1] for -PSNR in dB; RGB (C = 3) in [0, 1] with luma",
        "target": "(N, C, H, W) float images, pred's shape and range",
        "weight": "(N,) float, one per sample",
        "returns": "(N,), 10 log10(MSE + 1e-8) per sample (-PSNR in dB for data in [0, 1])",
    }

    def __init__(
        self, *, luma: bool = False, toY: bool = False, reduction: str = "mean", loss_weight: float = 1.0
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.luma = check_bool(self.loss_name, "luma", luma)
        if self._refuses_to_y(check_bool(self.loss_name, "toY", toY)):
            raise LossConfigError(
                f"{self.loss_name}: toY=True is MMagic's argument, which MMagic's PSNRLoss ignores (it "
                "scores every channel); write luma: true to score the luma channel, or type: "
                "mmagic.PSNRLoss for MMagic's numbers."
            )

    def _refuses_to_y(self, to_y: bool) -> bool:
        return to_y

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        check_same_shape(self.loss_name, pred, target)
        _check_images(self.loss_name, pred)
        if self.luma:
            if pred.shape[1] != 3:
                raise LossInputError(
                    f"{self.loss_name}: luma needs RGB images (N, 3, H, W); got {tuple(pred.shape)}."
                )
            pred, target = FI.rgb_to_y(pred), FI.rgb_to_y(target)
        return FI.psnr_loss(pred, target)

    def extra_repr(self) -> str:
        return ("luma=True, " if self.luma else "") + super().extra_repr()


@LOSSES.register(name="PSNRLoss", scopes=("mmagic",), default=False)
class MMagicPSNRLoss(PSNRLoss):
    """MMagic's ``PSNRLoss`` (``mmagic.PSNRLoss``): :class:`PSNRLoss` that accepts ``toY`` and,
    as MMagic does, ignores it (every channel is scored; warned once). ``luma=True`` still
    scores the luma channel.
    """

    def _refuses_to_y(self, to_y: bool) -> bool:
        if to_y:
            warnings.warn(
                "mmagic.PSNRLoss: toY=True is ignored, as in MMagic (every channel is scored); "
                "write luma: true to score the luma channel.",
                UserWarning,
                stacklevel=4,
            )
        return False


@LOSSES.register(scopes=("mmagic",))
class GradientLoss(BaseLoss):
    """Sobel-gradient L1 of matting (MMagic's ``GradientLoss``), see
    :func:`lossmix.functional.sobel_gradients`.

    The element loss is :math:`|\\partial_x p - \\partial_x t| + |\\partial_y p - \\partial_y t|`;
    with a mask ``weight`` its ``'mean'`` is MMagic's sum of two masked means (each divides by
    the mask's sum). Shapes: ``(N, C, H, W)`` (MMagic: ``C = 1``; each channel on its own here).
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, C, H, W) float, e.g. alpha mattes (MMagic: C = 1)",
        "target": "(N, C, H, W) float, pred's shape",
        "weight": (
            "(N, 1, H, W) or (N, C, H, W) float mask: 'mean' divides by its (channel-expanded) sum; "
            "a weight of fewer dims broadcasts, mean over elements"
        ),
        "returns": "(N, C, H, W), |d_x pred - d_x target| + |d_y pred - d_y target| (Sobel)",
    }

    def elementwise(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> ElementLoss:
        check_same_shape(self.loss_name, pred, target)
        _check_images(self.loss_name, pred)
        pred_x, pred_y = FI.sobel_gradients(pred)
        target_x, target_y = FI.sobel_gradients(target)
        loss = FR.l1_loss(pred_x, target_x) + FR.l1_loss(pred_y, target_y)
        return masked_mean_loss(self, loss, weight, sample_wise=False)


class CompositionLoss(MaskedMeanLoss):
    """Base of the matting composition losses: the merged image against the original.

    ``forward(pred_alpha, fg, bg, ori_merged, weight=None)`` with ``pred_alpha``
    ``(N, 1, H, W)``, ``fg``, ``bg``, ``ori_merged`` ``(N, 3, H, W)`` and ``weight`` the
    unknown-region mask ``(N, 1, H, W)`` (trimap == 128); the merged image is
    :func:`lossmix.functional.alpha_composite` and the masked mean MMagic's.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred_alpha": "(N, 1, H, W) float alpha matte in [0, 1] (or (N, C, H, W), one per channel)",
        "fg": "(N, C, H, W) float foreground images (MMagic: C = 3)",
        "bg": "(N, C, H, W) float background images, fg's shape",
        "ori_merged": "(N, C, H, W) float original merged images, fg's shape",
        "weight": (
            "(N, 1, H, W) or (N, C, H, W) float unknown-region mask (trimap == 128): 'mean' divides "
            "by its (channel-expanded) sum; a weight of fewer dims broadcasts, mean over elements"
        ),
        "returns": "(N, C, H, W), the pixel loss of the merged image against ori_merged",
    }

    @abc.abstractmethod
    def pixel_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """The element-wise loss between the merged and the original image."""

    def elementwise(
        self, pred_alpha: Tensor, fg: Tensor, bg: Tensor, ori_merged: Tensor, weight: Tensor | None = None
    ) -> ElementLoss:
        _check_images(self.loss_name, pred_alpha, fg, bg, ori_merged)
        check_same_shape(self.loss_name, fg, bg, what="bg")
        check_same_shape(self.loss_name, fg, ori_merged, what="ori_merged")
        fits = pred_alpha.shape[0] == fg.shape[0] and pred_alpha.shape[2:] == fg.shape[2:]
        if not fits or pred_alpha.shape[1] not in (1, fg.shape[1]):
            raise LossInputError(
                f"{self.loss_name}: pred_alpha of shape {tuple(pred_alpha.shape)} does not fit fg of "
                f"shape {tuple(fg.shape)}; give an alpha matte (N, 1, H, W)."
            )
        merged = FI.alpha_composite(pred_alpha, fg, bg)
        return self.masked(self.pixel_loss(merged, ori_merged), weight)


@LOSSES.register(scopes=("mmagic",))
class L1CompositionLoss(CompositionLoss):
    """L1 composition loss of matting (MMagic's ``L1CompositionLoss``), see :class:`CompositionLoss`."""

    def pixel_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        return FR.l1_loss(pred, target)


@LOSSES.register(scopes=("mmagic",))
class MSECompositionLoss(CompositionLoss):
    """MSE composition loss of matting (MMagic's ``MSECompositionLoss``), see :class:`CompositionLoss`."""

    def pixel_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        return FR.mse_loss(pred, target)


@LOSSES.register(scopes=("mmagic",))
class CharbonnierCompLoss(CompositionLoss):
    """Charbonnier composition loss (MMagic's ``CharbonnierCompLoss``): √(d² + ε) of the merged
    image, see :class:`CompositionLoss`."""

    def __init__(
        self,
        *,
        eps: float = 1e-12,
        sample_wise: bool = False,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(sample_wise=sample_wise, reduction=reduction, loss_weight=loss_weight)
        self.eps = check_positive(self.loss_name, "eps", eps)

    def pixel_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        return FR.charbonnier_loss(pred, target, eps=self.eps)
