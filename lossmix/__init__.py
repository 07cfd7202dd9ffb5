"""lossmix: compose weighted loss terms for PyTorch Lightning from Hydra configs.

>>> import lossmix
>>> "FocalLoss" in lossmix.LOSSES
True
"""

from typing import TYPE_CHECKING, Any

from lossmix import functional, losses, samplers
from lossmix.errors import LossConfigError, LossInputError, LossRunError
from lossmix.mix.loss_mix import LossMix, LossResult
from lossmix.mix.normalizers import Normalizer
from lossmix.mix.term import Term
from lossmix.reduction import mask_reduce_loss, weight_reduce_loss, weighted_loss
from lossmix.registry.registry import (
    AGGREGATORS,
    LOSSES,
    SAMPLERS,
    WEIGHTINGS,
    allow_targets,
    allowed_prefixes,
    build_loss,
    build_sampler,
)

if TYPE_CHECKING:  # imported on first use (below): the engine works without Lightning
    from lossmix.lightning.mixin import CompositeLoss

__version__ = "0.1.0"

__all__ = [
    "AGGREGATORS",
    "LOSSES",
    "SAMPLERS",
    "WEIGHTINGS",
    "CompositeLoss",
    "LossConfigError",
    "LossInputError",
    "LossMix",
    "LossResult",
    "LossRunError",
    "Normalizer",
    "Term",
    "__version__",
    "allow_targets",
    "allowed_prefixes",
    "build_loss",
    "build_sampler",
    "functional",
    "losses",
    "mask_reduce_loss",
    "samplers",
    "weight_reduce_loss",
    "weighted_loss",
]


def __getattr__(name: str) -> Any:
    # The Lightning layer is imported on first use, so the engine works without Lightning.
    if name == "CompositeLoss":
        from lossmix.lightning import CompositeLoss

        return CompositeLoss
    raise AttributeError(f"module 'lossmix' has no attribute {name!r}")
