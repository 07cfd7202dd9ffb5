"""DeblurGAN-v2's adversarial losses (MMagic's ``AdvLoss``): GAN, LSGAN, WGAN-GP and the
relativistic RaGAN / RaGAN-LS with their pools of past discriminator outputs.

MMagic's ``AdvLoss(loss_type)`` returns one of five criterion objects called as
``loss(net, fakeB, realB, model='discriminator')``; here it is one loss with that call,
on the one template. The relativistic pools are MMagic's 50 most recent samples' outputs;
only their mean is ever used, and every sample's output has the same size, so each pool
keeps one mean per sample in a ring buffer (``fake_pool``, ``real_pool``, with their
counts): checkpointed, and updated on the device without a host sync.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as TF
from torch import Tensor

from lossmix.errors import LossInputError
from lossmix.functional import adversarial as FA
from lossmix.losses.base import BaseLoss
from lossmix.registry.registry import LOSSES
from lossmix.utilities.checks import check_choice, check_int

__all__ = ["ADV_LOSS_TYPES", "AdvLoss"]

ADV_LOSS_TYPES: tuple[str, ...] = ("wgan-gp", "lsgan", "gan", "ragan", "ragan-ls")
_WGAN_GP_WEIGHT = 10.0  # DeblurGAN-v2's λ


def _mean(x: Tensor) -> Tensor:
    """The mean, 0 (connected) for an empty tensor."""
    return x.sum() / max(x.numel(), 1)


def _bce(x: Tensor, real: bool) -> Tensor:
    label = torch.full_like(x, 1.0 if real else 0.0)
    return _mean(TF.binary_cross_entropy_with_logits(x, label, reduction="none"))


@LOSSES.register(scopes=("mmagic",))
class AdvLoss(BaseLoss):
    """DeblurGAN-v2's discriminator and generator losses (MMagic's ``AdvLoss``).

    ``forward(net, fakeB, realB, model='discriminator')``, with ``net`` the discriminator,
    D_f = D(fake) (the fake detached on the discriminator's side) and D_r = D(real):

    ========  ==============================================  ==============================================
    type      ``model='discriminator'``                       ``model='generator'``
    ========  ==============================================  ==============================================
    gan       ½(BCE(D_f, 0) + BCE(D_r, 1))                    BCE(D_f, 1)
    lsgan     ½(mean|D_f| + mean|D_r − 1|) (MMagic's l1)      mean|D_f − 1|
    wgan-gp   mean D_f − mean D_r + 10·GP (per pixel)         −mean D_f
    ragan     ½(BCE(D_r − M_f, 1) + BCE(D_f − M_r, 0))        ½(BCE(D_r − M_f, 0) + BCE(D_f − M_r, 1))
    ragan-ls  ½(mean(D_r − M_f − 1)² + mean(D_f − M_r + 1)²)  ½(mean(D_r − M_f + 1)² + mean(D_f − M_r − 1)²)
    ========  ==============================================  ==============================================

    ``M_f``, ``M_r`` are the means of the pools of the last ``pool_size``
    samples' outputs, which the discriminator's side updates with this batch first (the
    generator's reads them; empty pools read 0, where MMagic fails). The value is already
    reduced (MMagic's), so ``reduction`` leaves it as is.
    """

    shapes: ClassVar[dict[str, str]] = {
        "net": "the discriminator module, called on fakeB and realB: (N, C, H, W) -> (N, *) float outputs",
        "fakeB": "(N, C, H, W) float generated images (detached on the discriminator's side)",
        "realB": (
            "(N, C, H, W) float real images, fakeB's shape (unused by the generator's gan, lsgan, wgan-gp)"
        ),
        "model": "'discriminator' (default) or 'generator': whose loss",
        "weight": "0-dim float: the loss is already one value",
        "returns": "0-dim, already reduced (the same under every reduction)",
    }

    def __init__(
        self, *, loss_type: str, pool_size: int = 50, reduction: str = "mean", loss_weight: float = 1.0
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.loss_type = check_choice(self.loss_name, "loss_type", loss_type, ADV_LOSS_TYPES)
        self.pool_size = check_int(self.loss_name, "pool_size", pool_size, min=1)
        for side in ("fake", "real"):
            self.register_buffer(f"{side}_pool", torch.zeros(self.pool_size))
            self.register_buffer(f"{side}_count", torch.zeros((), dtype=torch.long))

    # -- the pools --------------------------------------------------------------------------
    def _add(self, side: str, preds: Tensor) -> None:
        pool, count = getattr(self, f"{side}_pool"), getattr(self, f"{side}_count")
        items = preds.detach().flatten(1).mean(1)[-self.pool_size :]
        index = (count + torch.arange(items.shape[0], device=count.device)) % self.pool_size
        pool.index_copy_(0, index, items.to(pool.dtype))
        count.add_(items.shape[0])

    def pool_mean(self, side: str) -> Tensor:
        """The mean of ``side``'s pool (``'fake'`` or ``'real'``), 0 while it is empty."""
        pool, count = getattr(self, f"{side}_pool"), getattr(self, f"{side}_count")
        valid = torch.arange(self.pool_size, device=pool.device) < count
        stored = count.clamp(min=1, max=self.pool_size).to(pool.dtype)
        mean: Tensor = torch.where(valid, pool, torch.zeros_like(pool)).sum() / stored
        return mean

    # -- the kernel -------------------------------------------------------------------------
    def elementwise(self, net: Any, fakeB: Tensor, realB: Tensor, model: str = "discriminator") -> Tensor:
        if not callable(net):
            raise LossInputError(
                f"{self.loss_name}: net is a {type(net).__name__}, not a module; route the "
                "discriminator itself (inputs.net: disc)."
            )
        disc = check_choice(self.loss_name, "model", model, ("discriminator", "generator")) == "discriminator"
        fake = fakeB.detach() if disc else fakeB
        pred_fake: Tensor = net(fake)
        if self.loss_type in ("ragan", "ragan-ls"):
            if disc:
                self._add("fake", pred_fake)
            pred_real: Tensor = net(realB)
            if disc:
                self._add("real", pred_real)
            return self._relativistic(pred_fake, pred_real, disc)
        if not disc:
            if self.loss_type == "gan":
                return _bce(pred_fake, True)
            if self.loss_type == "lsgan":
                return _mean((pred_fake - 1.0).abs())
            return -_mean(pred_fake)
        pred_real = net(realB)
        if self.loss_type == "gan":
            return 0.5 * (_bce(pred_fake, False) + _bce(pred_real, True))
        if self.loss_type == "lsgan":
            return 0.5 * (_mean(pred_fake.abs()) + _mean((pred_real - 1.0).abs()))
        return (
            _mean(pred_fake) - _mean(pred_real) + _WGAN_GP_WEIGHT * self._gradient_penalty(net, realB, fakeB)
        )

    def _gradient_penalty(self, net: Any, real: Tensor, fake: Tensor) -> Tensor:
        interpolates = FA.interpolate_samples(real.detach(), fake.detach())
        grad = FA.discriminator_gradients(net, interpolates)
        return _mean(FA.wgan_gp_penalty(grad, norm_mode="pixel"))

    def _relativistic(self, pred_fake: Tensor, pred_real: Tensor, disc: bool) -> Tensor:
        fake_mean = self.pool_mean("fake").to(pred_real.dtype)
        real_mean = self.pool_mean("real").to(pred_fake.dtype)
        rel_real, rel_fake = pred_real - fake_mean, pred_fake - real_mean
        if self.loss_type == "ragan":
            return 0.5 * (_bce(rel_real, disc) + _bce(rel_fake, not disc))
        sign = 1.0 if disc else -1.0
        return 0.5 * (_mean((rel_real - sign) ** 2) + _mean((rel_fake + sign) ** 2))

    def extra_repr(self) -> str:
        return f"loss_type={self.loss_type!r}, pool_size={self.pool_size}, " + super().extra_repr()
