"""StyleGAN2's generator path-length regulariser (MMagic's ``gen_path_regularizer``; in the
``mmagic`` scope also as ``GeneratorPathRegularizerComps``), with its running mean as a
checkpointed buffer.

As a term it is lazy the way StyleGAN2 runs it: ``every: 4`` computes it on every fourth
step with its weight × 4 (``loss_weight: 2`` gives StyleGAN2's ``g_reg_weight = 2 × 4 = 8``),
and a skipped step gives a connected zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral
from typing import Any, ClassVar

import torch
from torch import Tensor

from lossmix.errors import LossInputError
from lossmix.functional import path_regularizer as FP
from lossmix.losses.base import BaseLoss
from lossmix.registry.registry import LOSSES
from lossmix.utilities.checks import check_bool, check_float, check_int
from lossmix.utilities.distributed import all_reduce_mean

__all__ = ["GeneratorPathRegularizer"]


@LOSSES.register()
class GeneratorPathRegularizer(BaseLoss):
    """Path-length regularisation of a StyleGAN2 generator (MMagic's ``gen_path_regularizer``).

    ``forward(generator, num_batches, *, loss_scaler=None)``: the generator is called as
    MMagic calls it, ``generator(None, num_batches=n, return_latents=True)``, and returns
    ``{'fake_img': x, 'latent': w}`` with ``w`` ``(n, L, D)`` (or ``(n, D)``) in the graph of
    ``x``. Then (:mod:`lossmix.functional.path_regularizer`):

    .. math::
        a_i = \\sqrt{\\operatorname{mean}_\\ell \\textstyle\\sum_d (J_w^\\top y)_{i\\ell d}^2},\\quad
        y \\sim \\mathcal{N}(0, 1)/\\sqrt{HW}, \\qquad
        \\bar a' = \\bar a + \\delta(\\operatorname{mean}(a) - \\bar a), \\qquad
        \\ell_i = (a_i - \\bar a')^2

    ``'mean'`` is MMagic's penalty (``weight=1``); ``'none'`` the ``(n,)`` per-sample values.
    :math:`\\bar a` is the buffer ``mean_path_length``, set to :math:`\\bar a'` on every call in
    training mode (a checkpoint carries it; evaluation leaves it alone).

    Args:
        pl_batch_shrink: generate ``max(1, num_batches // pl_batch_shrink)`` samples (an
            integer >= 1; StyleGAN2 uses 2). ``num_batches = 0`` generates none (a zero).
        decay: :math:`\\delta`, in ``[0, 1]``.
        pl_batch_size: generate exactly this many samples instead (``None``: as above).
        sync_mean_buffer: average :math:`\\bar a'` over ranks (one collective per call).
    """

    shapes: ClassVar[dict[str, str]] = {
        "generator": (
            "the StyleGAN2 generator module: generator(None, num_batches=n, return_latents=True) -> "
            "{'fake_img': (n, C, H, W) float, 'latent': (n, L, D) or (n, D) float in its graph}"
        ),
        "num_batches": (
            "int >= 0, the batch size: n = max(1, num_batches // pl_batch_shrink), or pl_batch_size; "
            "0 generates none"
        ),
        "loss_scaler": "an AMP GradScaler (scales the images' sum, unscales the gradient), or None",
        "weight": "(n,) float, one per generated sample",
        "returns": "(n,), the per-sample path-length penalties",
    }

    mean_path_length: Tensor

    def __init__(
        self,
        *,
        pl_batch_shrink: int = 1,
        decay: float = 0.01,
        pl_batch_size: int | None = None,
        sync_mean_buffer: bool = False,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        owner = self.loss_name
        self.pl_batch_shrink = check_int(owner, "pl_batch_shrink", pl_batch_shrink, min=1)
        self.decay = check_float(owner, "decay", decay, low=0.0, high=1.0)
        self.pl_batch_size = (
            None if pl_batch_size is None else check_int(owner, "pl_batch_size", pl_batch_size, min=1)
        )
        self.sync_mean_buffer = check_bool(owner, "sync_mean_buffer", sync_mean_buffer)
        self.register_buffer("mean_path_length", torch.tensor(0.0))

    def samples(self, num_batches: Any) -> int:
        """How many samples a call with ``num_batches`` generates (MMagic's rule)."""
        if isinstance(num_batches, bool) or not isinstance(num_batches, Integral) or num_batches < 0:
            raise LossInputError(
                f"{self.loss_name}: num_batches={num_batches!r} is not valid; give the batch size as "
                "an int (e.g. outputs['batch_size'] = real.shape[0])."
            )
        if num_batches == 0:
            return 0
        if self.pl_batch_size is not None:
            return self.pl_batch_size
        return max(1, int(num_batches) // self.pl_batch_shrink)

    def elementwise(self, generator: Any, num_batches: int, *, loss_scaler: Any = None) -> Tensor:
        """The per-sample penalties ``(n,)``; moves ``mean_path_length`` in training mode."""
        if not callable(generator):
            raise LossInputError(
                f"{self.loss_name}: generator is a {type(generator).__name__}, not a module; route the "
                "generator itself (inputs.generator: gen with outputs['gen'] = self.gen)."
            )
        count = self.samples(num_batches)
        with torch.enable_grad():
            out = generator(None, num_batches=count, return_latents=True)
            if not isinstance(out, Mapping) or not {"fake_img", "latent"} <= set(out):
                raise LossInputError(
                    f"{self.loss_name}: generator(None, num_batches=n, return_latents=True) must return "
                    f"{{'fake_img': images, 'latent': latents}}; got {type(out).__name__}."
                )
            grad = FP.path_gradients(out["fake_img"], out["latent"], loss_scaler=loss_scaler)
        lengths = FP.path_lengths(grad)
        if _more_precise(lengths.dtype, self.mean_path_length.dtype):
            # a float64 generator keeps a float64 running mean (a float32 buffer would round it
            # on every step and drift from the generator's own arithmetic)
            self.mean_path_length = self.mean_path_length.to(lengths.dtype)
        moved = FP.moved_path_mean(lengths, self.mean_path_length.to(lengths.dtype), decay=self.decay)
        if self.sync_mean_buffer:
            (synced,) = all_reduce_mean([moved.detach()])
            moved = moved + (synced.to(moved.dtype) - moved.detach())  # the mean of all ranks, local gradient
        penalty = FP.path_length_penalty(lengths, moved)
        if count == 0:  # no samples: an empty penalty still tied to the generator (a connected zero)
            images: Tensor = out["fake_img"]
            return penalty + 0.0 * images.sum()
        if self.training:
            self.mean_path_length.copy_(moved.detach())
        return penalty

    def extra_repr(self) -> str:
        return (
            f"pl_batch_shrink={self.pl_batch_shrink}, decay={self.decay}, "
            f"pl_batch_size={self.pl_batch_size}, " + super().extra_repr()
        )


def _more_precise(dtype: torch.dtype, than: torch.dtype) -> bool:
    """Whether floating ``dtype`` carries more mantissa bits than floating ``than``."""
    if not (dtype.is_floating_point and than.is_floating_point):
        return False
    return torch.finfo(dtype).eps < torch.finfo(than).eps
