"""The Lightning layer: the ``CompositeLoss`` mixin, its callbacks, and ``SafeCheckpointIO``."""

from lossmix.lightning.callbacks import (
    ClassCountsFromData,
    CompiledStep,
    GradientConflictMonitor,
    LossCurves,
    LossSchedule,
    NonFiniteLoss,
    NonFiniteLossGuard,
    TaskWeightingUpdates,
    TermGradientMonitor,
)
from lossmix.lightning.checkpoint_io import SafeCheckpointIO
from lossmix.lightning.mixin import CompositeLoss, LossState
from lossmix.lightning.term_logger import TermLogger

__all__ = [
    "ClassCountsFromData",
    "CompiledStep",
    "CompositeLoss",
    "GradientConflictMonitor",
    "LossCurves",
    "LossSchedule",
    "LossState",
    "NonFiniteLoss",
    "NonFiniteLossGuard",
    "SafeCheckpointIO",
    "TaskWeightingUpdates",
    "TermGradientMonitor",
    "TermLogger",
]
