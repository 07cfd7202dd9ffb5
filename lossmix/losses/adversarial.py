"""GAN losses and image regularisers with MMagic's semantics, on the one loss template.

These do not take ``(pred, target)``: :class:`GANLoss` takes a discriminator output and
a Python bool, the penalties take the discriminator itself. Their kernels'
signatures say so (see :mod:`lossmix.losses.base`), and the template gives them the
same weight, reduction, empty-input and scaling rules as every other loss.
:class:`AdversarialLoss` and :class:`GradientPenalty` are the two small bases.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch.nn.functional as TF
from torch import Tensor

from lossmix.errors import LossInputError
from lossmix.functional import adversarial as F
from lossmix.losses.base import BaseLoss, ElementLoss
from lossmix.reduction import mask_reduce_loss
from lossmix.registry.registry import LOSSES
from lossmix.utilities.checks import check_float, check_same_shape

__all__ = [
    "AdversarialLoss",
    "DiscShiftLoss",
    "GANLoss",
    "GradientPenalty",
    "GradientPenaltyLoss",
    "MaskedTVLoss",
    "R1GradientPenalty",
]


def _check_mask(owner: str, mask: Tensor, data: Tensor, *, channels_ok: bool = True) -> None:
    fits = mask.dim() == data.dim() and mask.shape[0] == data.shape[0]
    fits = fits and mask.shape[2:] == data.shape[2:]
    fits = fits and mask.shape[1] in ((1, data.shape[1]) if channels_ok else (1,))
    if not fits:
        raise LossInputError(
            f"{owner}: mask of shape {tuple(mask.shape)} does not fit data of shape "
            f"{tuple(data.shape)}; give a mask shaped (N, 1, ...) or (N, C, ...) like the data."
        )


class AdversarialLoss(BaseLoss):
    """Base of the losses on discriminator outputs: ``pred`` is ``D(x)``, no target tensor."""


@LOSSES.register()
class GANLoss(AdversarialLoss):
    """GAN objectives (vanilla, lsgan, wgan, wgan-logistic-ns, hinge, l1, smgan), MMagic's ``GANLoss``.

    Formulas: :func:`lossmix.functional.gan_loss`. Call as
    ``forward(pred, target_is_real, is_disc=False, mask=None, weight=None, avg_factor=None,
    reduction_override=None)`` with ``target_is_real`` a Python bool (or a bool
    tensor to mix real and fake samples). As in MMagic, **``loss_weight`` scales
    only the generator's loss** (``is_disc=False``); the discriminator's is never
    scaled. ``mask`` (the hole mask, ``(N, 1, H, W)``) is AOT-GAN's ``smgan`` input and
    is refused by the other types. lossmix adds ``reduction``, ``weight`` and
    ``avg_factor`` (MMagic always takes the mean).

    In a :class:`~lossmix.LossMix` term the loss keeps its ``loss_weight``
    (``owns_loss_weight``) so the generator-only rule holds; the term's own weight
    stays 1.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, *) float discriminator outputs D(x)",
        "target_is_real": "bool, or (N,) bool tensor mixing real and fake samples",
        "is_disc": "bool: the discriminator's loss (loss_weight not applied)",
        "mask": (
            "(N, 1, H, W) float hole mask for gan_type='smgan' (required there, pred then (N, C, h, w)); "
            "None for the other types"
        ),
        "weight": "float, pred's shape or broadcastable to it",
        "returns": "pred's shape (smgan: (N, C, H, W), pred resized to the mask's size)",
    }

    owns_loss_weight = True

    def __init__(
        self,
        *,
        gan_type: str,
        real_label_val: float = 1.0,
        fake_label_val: float = 0.0,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.gan_type = F.check_gan_type(gan_type, owner=self.loss_name)
        self.real_label_val = check_float(self.loss_name, "real_label_val", real_label_val)
        self.fake_label_val = check_float(self.loss_name, "fake_label_val", fake_label_val)

    def elementwise(
        self,
        pred: Tensor,
        target_is_real: bool | Tensor,
        is_disc: bool = False,
        mask: Tensor | None = None,
    ) -> Tensor:
        """The element-wise objective (:func:`lossmix.functional.gan_loss`)."""
        if not isinstance(target_is_real, bool | Tensor):
            raise LossInputError(
                f"{self.loss_name}: target_is_real={target_is_real!r} is not valid; give True "
                "(real), False (fake) or a bool tensor."
            )
        if not isinstance(is_disc, bool):
            raise LossInputError(f"{self.loss_name}: is_disc={is_disc!r} is not valid; give True or False.")
        if (mask is None) == (self.gan_type == "smgan"):
            raise LossInputError(
                f"{self.loss_name}: gan_type={self.gan_type!r} "
                + (
                    "needs the hole mask; route it with inputs.mask: <mask key>."
                    if mask is None
                    else "takes no mask (only 'smgan' does); drop inputs.mask."
                )
            )
        if mask is not None and (mask.dim() != 4 or pred.dim() != 4 or mask.shape[0] != pred.shape[0]):
            raise LossInputError(
                f"{self.loss_name}: smgan needs pred (N, C, h, w) and mask (N, 1, H, W); got "
                f"pred of shape {tuple(pred.shape)} and mask of shape {tuple(mask.shape)}."
            )
        return F.gan_loss(
            pred,
            gan_type=self.gan_type,
            target_is_real=target_is_real,
            is_disc=is_disc,
            real_label_val=self.real_label_val,
            fake_label_val=self.fake_label_val,
            mask=mask,
        )

    def output_scale(self, inputs: Mapping[str, Any]) -> float:
        """``loss_weight`` on the generator's side only (MMagic's rule)."""
        return 1.0 if inputs.get("is_disc", False) is True else self.loss_weight

    def extra_repr(self) -> str:
        return (
            f"gan_type={self.gan_type!r}, real_label_val={self.real_label_val}, "
            f"fake_label_val={self.fake_label_val}, " + super().extra_repr()
        )


class GradientPenalty(BaseLoss):
    """Base of the gradient penalties: the discriminator is routed like any input.

    The kernel computes ``g = ∂ΣD(x)/∂x`` (``create_graph=True``) and the penalty per
    pixel (``'pixel'``, norms over channels) or per sample (``'HWC'``). A mask multiplies
    ``g`` and divides the penalty by ``mean(mask)`` (MMagic's numbers).
    """

    def __init__(
        self, *, norm_mode: str = "pixel", reduction: str = "mean", loss_weight: float = 1.0
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.norm_mode = F.check_norm_mode(norm_mode, owner=self.loss_name)

    def check_discriminator(self, discriminator: Any) -> None:
        """The discriminator must be callable (a module)."""
        if not callable(discriminator):
            raise LossInputError(
                f"{self.loss_name}: discriminator is a {type(discriminator).__name__}, not a "
                "module; route the discriminator itself, e.g. inputs.discriminator: disc with "
                "outputs['disc'] = self.disc."
            )

    def masked_penalty(self, grad: Tensor, mask: Tensor | None, discriminator: Any, data: Tensor) -> Tensor:
        """The element-wise penalty of ``grad`` (times ``mask``), divided by ``mean(mask)``.

        With no samples the penalty is empty, and is tied to the discriminator through
        ``0 · ΣD(data)`` so the zero the template returns still reaches its parameters.
        """
        if data.shape[0] == 0:
            scores: Tensor = discriminator(data)
            return self.penalty(grad) + 0.0 * scores.sum()
        if mask is not None:
            _check_mask(self.loss_name, mask, grad)
            grad = grad * mask
        loss = self.penalty(grad)
        if mask is not None:
            loss = loss / mask.to(loss.dtype).mean()
        return loss

    def penalty(self, grad: Tensor) -> Tensor:
        """The penalty of given discriminator gradients (the pure kernel)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"norm_mode={self.norm_mode!r}, " + super().extra_repr()


@LOSSES.register()
class GradientPenaltyLoss(GradientPenalty):
    """WGAN-GP gradient penalty at real/fake interpolates, MMagic's ``GradientPenaltyLoss``.

    ``forward(discriminator, real_data, fake_data, mask=None, *, generator=None)``:
    ``x̂ = a·real + (1 − a)·fake`` with one ``a ~ U(0, 1)`` per sample (from
    ``generator`` if given), detached; ``g = ∂ΣD(x̂)/∂x̂`` with ``create_graph=True``;
    the penalty :func:`lossmix.functional.wgan_gp_penalty` per pixel (``'pixel'``, norm
    over channels) or per sample (``'HWC'``). A mask multiplies ``g`` and the result is
    divided by ``mean(mask)`` (MMagic's numbers: a masked-out pixel still adds
    ``(0 − 1)² = 1`` to the mean). ``'none'`` gives the ``(N, *)`` / ``(N,)`` penalties.
    MMagic's module ignores ``norm_mode`` (always ``'pixel'``); here it is used.
    :meth:`penalty` is the penalty of given gradients.
    """

    shapes: ClassVar[dict[str, str]] = {
        "discriminator": "the discriminator module (callable on images)",
        "real_data": "(N, C, H, W) float real images",
        "fake_data": "(N, C, H, W) float generated images",
        "mask": "(N, 1, H, W) or (N, C, H, W) float, or None",
        "generator": "torch.Generator for the interpolation, or None",
        "returns": "(N, H, W) per pixel ('pixel') or (N,) per sample ('HWC')",
    }

    def penalty(self, grad: Tensor) -> Tensor:
        return F.wgan_gp_penalty(grad, norm_mode=self.norm_mode)

    def elementwise(
        self,
        discriminator: Any,
        real_data: Tensor,
        fake_data: Tensor,
        mask: Tensor | None = None,
        *,
        generator: Any = None,
    ) -> Tensor:
        """The penalty at interpolates of ``real_data`` and ``fake_data``."""
        self.check_discriminator(discriminator)
        check_same_shape(self.loss_name, real_data, fake_data, what="fake_data")
        interpolates = F.interpolate_samples(real_data, fake_data, generator=generator)
        grad = F.discriminator_gradients(discriminator, interpolates)
        return self.masked_penalty(grad, mask, discriminator, interpolates)


@LOSSES.register()
class R1GradientPenalty(GradientPenalty):
    """R1 gradient penalty at real data, MMagic's ``r1_gradient_penalty_loss``.

    ``forward(discriminator, real_data, mask=None, *, loss_scaler=None)``:
    ``g = ∂ΣD(x)/∂x`` at ``x = real_data.clone()`` with ``create_graph=True``; the
    penalty :func:`lossmix.functional.r1_penalty`: ``‖g‖²`` over channels per pixel
    (``'pixel'``, mean over ``N, H, W``) or ``Σg²`` per sample (``'HWC'``, mean over
    ``N``, StyleGAN2's setting). A mask multiplies ``g`` and divides the result by
    ``mean(mask)``. ``loss_scaler`` (an AMP ``GradScaler``) scales ``D(x)`` and
    unscales ``g`` without a host sync. :meth:`penalty` is the penalty of given gradients.
    """

    shapes: ClassVar[dict[str, str]] = {
        "discriminator": "the discriminator module (callable on images)",
        "real_data": "(N, C, H, W) float real images",
        "mask": "(N, 1, H, W) or (N, C, H, W) float, or None",
        "loss_scaler": "an AMP GradScaler, or None",
        "returns": "(N, H, W) per pixel ('pixel') or (N,) per sample ('HWC')",
    }

    def penalty(self, grad: Tensor) -> Tensor:
        return F.r1_penalty(grad, norm_mode=self.norm_mode)

    def elementwise(
        self, discriminator: Any, real_data: Tensor, mask: Tensor | None = None, *, loss_scaler: Any = None
    ) -> Tensor:
        """The penalty at ``real_data``."""
        self.check_discriminator(discriminator)
        real = real_data.clone().requires_grad_()
        grad = F.discriminator_gradients(discriminator, real, loss_scaler=loss_scaler)
        return self.masked_penalty(grad, mask, discriminator, real)


@LOSSES.register()
class DiscShiftLoss(AdversarialLoss):
    """PGGAN's drift penalty ``loss_weight · mean(x²)`` on discriminator outputs (MMagic).

    Note MMagic's default ``loss_weight=0.1``. ``forward(pred, weight=None,
    avg_factor=None, reduction_override=None)``; kernel
    :func:`lossmix.functional.disc_shift_loss`.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, *) float discriminator outputs D(x)",
        "weight": "float, pred's shape or broadcastable to it",
        "returns": "pred's shape",
    }

    def __init__(self, *, reduction: str = "mean", loss_weight: float = 0.1) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)

    def elementwise(self, pred: Tensor) -> Tensor:
        return F.disc_shift_loss(pred)


@LOSSES.register()
class MaskedTVLoss(BaseLoss):
    """Masked total variation: masked L1 between vertical and horizontal neighbours (MMagic).

    ``forward(pred, mask=None, reduction_override=None)`` with ``pred`` ``(N, C, H, W)``
    and ``mask`` ``(N, 1, H, W)`` or ``(N, C, H, W)``. ``'mean'`` is MMagic's
    ``loss_weight · (masked_mean|Δy| + masked_mean|Δx|)``, each a
    :func:`lossmix.reduction.mask_reduce_loss` with the mask of the upper/left pixel of
    the pair. ``mask=None`` means all ones (MMagic crashes there). ``'none'`` is the
    ``(N, C, H, W)`` map ``(|Δy| + |Δx|)·mask`` (pairs start at the pixel, the last
    row/column has no pair), and ``'sum'`` its sum. Kernel:
    :func:`lossmix.functional.tv_differences`.
    """

    shapes: ClassVar[dict[str, str]] = {
        "pred": "(N, C, H, W) float images",
        "mask": "(N, 1, H, W) or (N, C, H, W) float, or None (all ones)",
        "returns": "(N, C, H, W)",
    }

    def elementwise(self, pred: Tensor, mask: Tensor | None = None) -> ElementLoss:
        """The ``(N, C, H, W)`` map ``|Δy| + |Δx|`` weighted by ``mask``, and MMagic's mean."""
        if pred.dim() != 4:
            raise LossInputError(
                f"{self.loss_name}: pred of shape {tuple(pred.shape)} is not valid; give (N, C, H, W)."
            )
        if mask is not None:
            _check_mask(self.loss_name, mask, pred)
        dy, dx = F.tv_differences(pred)
        mask_y = None if mask is None else mask[:, :, :-1, :]
        mask_x = None if mask is None else mask[:, :, :, :-1]
        mean = mask_reduce_loss(dy, mask_y) + mask_reduce_loss(dx, mask_x)
        return ElementLoss(TF.pad(dy, (0, 0, 0, 1)) + TF.pad(dx, (0, 1)), mask, mean=mean)
