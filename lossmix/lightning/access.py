"""How the Lightning layer reaches a module's loss mix, step, last result and term logger.

Callbacks work with any ``LightningModule`` that has a ``loss_mix`` (the
:class:`~lossmix.CompositeLoss` mixin gives it one); these functions are the only
place that looks.
"""

from __future__ import annotations

import contextlib
from typing import Any

import lightning.pytorch as pl
from torch import Tensor

from lossmix.errors import LossConfigError
from lossmix.lightning.term_logger import TermLogger
from lossmix.mix.loss_mix import LossMix, LossResult

__all__ = [
    "dry_run_of",
    "find_loss_mix",
    "last_result_of",
    "loss_mix_of",
    "loss_step_of",
    "reevaluate_tasks_of",
    "term_logger_of",
]


def find_loss_mix(pl_module: Any) -> LossMix | None:
    """The module's :class:`~lossmix.LossMix`, or ``None`` when it has none."""
    mix = getattr(pl_module, "loss_mix", None)
    return mix if isinstance(mix, LossMix) else None


def loss_mix_of(pl_module: Any, *, needed_by: str) -> LossMix:
    """The module's :class:`~lossmix.LossMix`; a clear error when it has none."""
    mix = find_loss_mix(pl_module)
    if mix is None:
        raise LossConfigError(f"{needed_by} needs a CompositeLoss module with configure_loss() called.")
    return mix


def loss_step_of(trainer: pl.Trainer, pl_module: Any) -> int:
    """The step lazy terms and schedules count: the module's ``loss_step()``
    (:class:`~lossmix.CompositeLoss`), else the trainer's ``global_step``."""
    loss_step = getattr(pl_module, "loss_step", None)
    return int(loss_step()) if callable(loss_step) else int(trainer.global_step)


def last_result_of(pl_module: Any) -> LossResult | None:
    """The last :class:`~lossmix.LossResult` the module computed (``None`` before any)."""
    result = getattr(pl_module, "last_loss_result", None)
    return result if isinstance(result, LossResult) else None


def term_logger_of(pl_module: Any) -> TermLogger | None:
    """The :class:`~lossmix.lightning.TermLogger` the module logs through (``None``: none)."""
    term_logger = getattr(pl_module, "term_logger", None)
    logger = term_logger() if callable(term_logger) else None
    return logger if isinstance(logger, TermLogger) else None


def reevaluate_tasks_of(pl_module: Any, batch: Any, batch_idx: int) -> Tensor | None:
    """The task losses of ``batch`` with the module's current parameters, without gradients or
    logging (:meth:`~lossmix.CompositeLoss.reevaluate_tasks`); ``None`` when the module has none."""
    reevaluate = getattr(pl_module, "reevaluate_tasks", None)
    losses = reevaluate(batch, batch_idx) if callable(reevaluate) else None
    return losses if isinstance(losses, Tensor) else None


def dry_run_of(pl_module: Any) -> contextlib.AbstractContextManager[None]:
    """The module's dry run (:meth:`~lossmix.CompositeLoss.loss_dry_run`: checked, not
    logged, no backward or optimizer step); nothing for another module."""
    dry_run = getattr(pl_module, "loss_dry_run", None)
    return dry_run() if callable(dry_run) else contextlib.nullcontext()
