"""Lightning callbacks: weight schedules, the non-finite guard, gradient monitors, curves."""

from lossmix.lightning.callbacks.curves import LossCurves, plot_loss_curves
from lossmix.lightning.callbacks.grad_monitor import (
    GradientConflictMonitor,
    TermGradientMonitor,
    term_gradient_norms,
)
from lossmix.lightning.callbacks.guard import NonFiniteLoss, NonFiniteLossGuard
from lossmix.lightning.callbacks.schedule import LossWeightSchedule, Schedule
from lossmix.lightning.callbacks.weighting import TaskWeightingUpdates

__all__ = [
    "GradientConflictMonitor",
    "LossCurves",
    "LossWeightSchedule",
    "NonFiniteLoss",
    "NonFiniteLossGuard",
    "Schedule",
    "TaskWeightingUpdates",
    "TermGradientMonitor",
    "plot_loss_curves",
    "term_gradient_norms",
]
