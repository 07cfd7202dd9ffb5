"""The Lightning layer: the ``CompositeLoss`` mixin and its callbacks."""

from lossmix.lightning.callbacks import (
    ClassCountsFromData,
    CompiledStep,
    GradientConflictMonitor,
    LossCurves,
    LossSchedule,
    LossWeightSchedule,
    NonFiniteLoss,
    NonFiniteLossGuard,
    TaskWeightingUpdates,
    TermGradientMonitor,
)
from lossmix.lightning.logging import TermLogger
from lossmix.lightning.mixin import CompositeLoss

__all__ = [
    "ClassCountsFromData",
    "CompiledStep",
    "CompositeLoss",
    "GradientConflictMonitor",
    "LossCurves",
    "LossSchedule",
    "LossWeightSchedule",
    "NonFiniteLoss",
    "NonFiniteLossGuard",
    "TaskWeightingUpdates",
    "TermGradientMonitor",
    "TermLogger",
]
