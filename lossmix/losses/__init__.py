"""Registered loss modules with MMDetection's arguments; importing this fills ``LOSSES``."""

from lossmix.losses import adversarial, cross_entropy, dice, focal, ghm, iou, regression
from lossmix.losses.adversarial import *  # noqa: F403
from lossmix.losses.base import WeightedLoss
from lossmix.losses.cross_entropy import *  # noqa: F403
from lossmix.losses.dice import *  # noqa: F403
from lossmix.losses.focal import *  # noqa: F403
from lossmix.losses.ghm import *  # noqa: F403
from lossmix.losses.iou import *  # noqa: F403
from lossmix.losses.regression import *  # noqa: F403
from lossmix.losses.wrappers import FunctionLoss, TorchLoss

__all__ = [
    "FunctionLoss",
    "TorchLoss",
    "WeightedLoss",
    *adversarial.__all__,
    *cross_entropy.__all__,
    *dice.__all__,
    *focal.__all__,
    *ghm.__all__,
    *iou.__all__,
    *regression.__all__,
]
