"""Lightning callbacks: schedules, the non-finite guard, gradient monitors, curves, class counts."""

from lossmix.lightning.callbacks.accumulation import AccumulationScope
from lossmix.lightning.callbacks.class_counts import ClassCountsFromData
from lossmix.lightning.callbacks.compiled import CompiledStep
from lossmix.lightning.callbacks.curves import LossCurves, plot_loss_curves
from lossmix.lightning.callbacks.grad_monitor import (
    GradientConflictMonitor,
    TermGradientMonitor,
    term_gradient_norms,
)
from lossmix.lightning.callbacks.guard import NonFiniteLoss, NonFiniteLossGuard
from lossmix.lightning.callbacks.preflight import PreflightBatch
from lossmix.lightning.callbacks.schedule import LossSchedule, Schedule
from lossmix.lightning.callbacks.task_weighting import TaskWeightingUpdates

__all__ = [
    "AccumulationScope",
    "ClassCountsFromData",
    "CompiledStep",
    "GradientConflictMonitor",
    "LossCurves",
    "LossSchedule",
    "NonFiniteLoss",
    "NonFiniteLossGuard",
    "PreflightBatch",
    "Schedule",
    "TaskWeightingUpdates",
    "TermGradientMonitor",
    "plot_loss_curves",
    "term_gradient_norms",
]
