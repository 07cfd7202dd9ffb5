"""Registered loss modules with MMDetection's and MMagic's arguments; importing this fills
``LOSSES`` and its scopes (``mmdet``, ``mmagic``)."""

from lossmix.losses import adversarial as _adversarial
from lossmix.losses import cross_entropy as _cross_entropy
from lossmix.losses import custom_classes as _custom_classes
from lossmix.losses import deblurgan as _deblurgan
from lossmix.losses import dice as _dice
from lossmix.losses import embedding as _embedding
from lossmix.losses import focal as _focal
from lossmix.losses import ghm as _ghm
from lossmix.losses import heatmap as _heatmap
from lossmix.losses import imbalanced as _imbalanced
from lossmix.losses import iou as _iou
from lossmix.losses import long_tail as _long_tail
from lossmix.losses import lovasz as _lovasz
from lossmix.losses import path_regularizer as _path_regularizer
from lossmix.losses import perceptual as _perceptual
from lossmix.losses import pixel as _pixel
from lossmix.losses import regression as _regression
from lossmix.losses import tracking as _tracking
from lossmix.losses.adversarial import *  # noqa: F403
from lossmix.losses.base import WeightedLoss
from lossmix.losses.cross_entropy import *  # noqa: F403
from lossmix.losses.custom_classes import *  # noqa: F403
from lossmix.losses.deblurgan import *  # noqa: F403
from lossmix.losses.dice import *  # noqa: F403
from lossmix.losses.embedding import *  # noqa: F403
from lossmix.losses.focal import *  # noqa: F403
from lossmix.losses.ghm import *  # noqa: F403
from lossmix.losses.heatmap import *  # noqa: F403
from lossmix.losses.imbalanced import *  # noqa: F403
from lossmix.losses.iou import *  # noqa: F403
from lossmix.losses.long_tail import *  # noqa: F403
from lossmix.losses.lovasz import *  # noqa: F403
from lossmix.losses.path_regularizer import *  # noqa: F403
from lossmix.losses.perceptual import *  # noqa: F403
from lossmix.losses.pixel import *  # noqa: F403
from lossmix.losses.regression import *  # noqa: F403
from lossmix.losses.tracking import *  # noqa: F403
from lossmix.losses.wrappers import FunctionLoss, LossInput, TorchLoss, loss_inputs

# isort: split
from lossmix.losses import scopes as _scopes  # noqa: F401  (last: it fills the scopes)

__all__ = [
    "FunctionLoss",
    "LossInput",
    "TorchLoss",
    "WeightedLoss",
    *_adversarial.__all__,
    *_cross_entropy.__all__,
    *_custom_classes.__all__,
    *_deblurgan.__all__,
    *_dice.__all__,
    *_embedding.__all__,
    *_focal.__all__,
    *_ghm.__all__,
    *_heatmap.__all__,
    *_imbalanced.__all__,
    *_iou.__all__,
    *_long_tail.__all__,
    *_lovasz.__all__,
    *_path_regularizer.__all__,
    *_perceptual.__all__,
    *_pixel.__all__,
    *_regression.__all__,
    *_tracking.__all__,
    "loss_inputs",
]
