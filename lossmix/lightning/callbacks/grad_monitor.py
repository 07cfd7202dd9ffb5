"""Gradient monitors, every N steps: each term's gradient norm (``TermGradientMonitor``) and how
the tasks' gradients conflict (``GradientConflictMonitor``)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

import lossmix.mtl.functional as F
from lossmix.lightning.access import find_loss_mix, last_result_of, loss_step_of, term_logger_of
from lossmix.mix.loss_mix import LossMix, LossResult
from lossmix.mtl.task_gradients import task_jacobian
from lossmix.utilities.checks import check_int
from lossmix.utilities.compat import amp_loss_scale
from lossmix.utilities.modules import trainable_parameters

__all__ = ["GradientConflictMonitor", "TermGradientMonitor", "term_gradient_norms"]


def term_gradient_norms(terms: dict[str, Tensor], params: list[nn.Parameter]) -> Tensor:
    """‖∇_params term‖₂ for each term, stacked on the device (0 for a term without a path).

    Each norm is one ``torch.autograd.grad(term, params, retain_graph=True)``; the
    graph stays for the step's own backward.
    """
    norms = []
    for value in terms.values():
        if not value.requires_grad:
            norms.append(value.new_zeros((), dtype=torch.float32))
            continue
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        squares = [g.detach().float().pow(2).sum() for g in grads if g is not None]
        norms.append(
            torch.stack(squares).sum().sqrt() if squares else value.new_zeros((), dtype=torch.float32)
        )
    return torch.stack(norms)


def monitored_parameters(
    pl_module: pl.LightningModule, module: str | None, *, owner: str
) -> list[nn.Parameter]:
    """The trainable parameters of ``module`` (a name for ``get_submodule``), or of the whole
    model outside its loss mix."""
    if module is None:
        mix = find_loss_mix(pl_module)
        skip = {id(p) for p in mix.parameters()} if mix is not None else set()
        return [p for p in pl_module.parameters() if p.requires_grad and id(p) not in skip]
    return trainable_parameters(pl_module, module, owner=owner)


class _ParameterMonitor(pl.Callback):
    """Every ``every_n_steps``-th optimizer step, a look at the gradients of ``module``'s
    parameters (all the model's outside the loss mix by default)."""

    def __init__(self, every_n_steps: int = 50, module: str | None = None) -> None:
        self.every_n_steps = check_int(type(self).__name__, "every_n_steps", every_n_steps, min=1)
        self.module = module
        self._params: list[nn.Parameter] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._params = monitored_parameters(pl_module, self.module, owner=type(self).__name__)


class TermGradientMonitor(_ParameterMonitor):
    """Log ``{stage}/grad_norm/{term}`` (groups: ``{stage}/grad_norm/{group}/{term}``).

    On every ``every_n_steps``-th step, before the step's backward, each term's
    weighted value is differentiated with respect to the parameters of ``module``
    (a name for ``pl_module.get_submodule``) or, by default, every trainable
    parameter of the model outside the loss mix. The norms go through the
    :class:`~lossmix.lightning.TermLogger` buffer and reach the loggers at the next
    logging point, so choose ``every_n_steps`` as a multiple of
    ``Trainer(log_every_n_steps=...)``. Other steps cost nothing.

    Args:
        every_n_steps: how often, in optimizer steps (``>= 1``).
        module: the shared part of the model, e.g. ``backbone``; ``None``: all of it.
    """

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        step = loss_step_of(trainer, pl_module)
        result = last_result_of(pl_module)
        if step % self.every_n_steps or result is None or not self._params:
            return
        norms = term_gradient_norms(result.terms, self._params)
        prefix = f"{result.group}/" if result.group else ""
        logger = term_logger_of(pl_module)
        if logger is not None:
            logger.record_values("train", "grad_norm", [prefix + n for n in result.terms], norms)

    def state_dict(self) -> dict[str, Any]:
        return {"every_n_steps": self.every_n_steps, "module": self.module}


def _tasks(mix: LossMix, result: LossResult) -> dict[str, list[Tensor]]:
    """The result's terms added to the total, by term (its parts together)."""
    included = {t.name for t in mix.term_list(result.group) if t.in_total}
    tasks: dict[str, list[Tensor]] = {}
    for key, value in result.terms.items():
        name = key.partition(".")[0]
        if name in included:
            tasks.setdefault(name, []).append(value)
    return tasks


class GradientConflictMonitor(_ParameterMonitor):
    """Log how the task gradients conflict, every ``every_n_steps`` steps, before the backward.

    From the task gradients ``g_i`` on the parameters of ``module`` (default: the whole
    model outside the loss mix), one per term added to the total, and their Gramian
    ``G = J Jᵀ`` (:func:`lossmix.functional.gradient_conflicts`):

    =================================== =====================================================
    key                                 value
    =================================== =====================================================
    ``train/grad_cosine/{a}_vs_{b}``    ``cos(g_a, g_b)`` (negative: the tasks conflict)
    ``train/grad_magnitude/{a}_vs_{b}`` ``2‖g_a‖‖g_b‖ / (‖g_a‖² + ‖g_b‖²)`` (1: equal norms)
    ``train/grad_condition/gramian``    ``λ_max / λ_min`` of ``G`` (``inf``: dependent gradients)
    ``train/grad_share/{task}``         ``⟨g_i, Σg⟩ / ‖Σg‖²``, the task's share of the summed
                                        gradient (the shares add up to 1)
    =================================== =====================================================

    Each value is computed with one ``torch.autograd.grad`` per task (the graph is kept for
    the step's own backward; under AMP the losses are scaled like the step's, then
    unscaled) and goes through the :class:`~lossmix.lightning.TermLogger` buffer, so it
    reaches the loggers at the next logging point with no host sync of its own; choose
    ``every_n_steps`` as a multiple of ``Trainer(log_every_n_steps=...)``. Other steps
    cost nothing.

    Args:
        every_n_steps: how often, in optimizer steps (``>= 1``).
        module: the shared part of the model, e.g. ``trunk``; ``None``: all of it.
    """

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        step = loss_step_of(trainer, pl_module)
        result, mix, logger = last_result_of(pl_module), find_loss_mix(pl_module), term_logger_of(pl_module)
        if step % self.every_n_steps or result is None or mix is None or logger is None or not self._params:
            return
        tasks = _tasks(mix, result)
        scale = amp_loss_scale(trainer)
        ones = [[torch.ones_like(t) * scale for t in terms] for terms in tasks.values()]
        rows = task_jacobian(list(tasks.values()), ones, self._params).float() / scale
        stats = F.gradient_conflicts(rows @ rows.T)
        names = list(tasks)
        pairs = torch.triu_indices(len(names), len(names), offset=1)
        labels = [f"{names[i]}_vs_{names[j]}" for i, j in pairs.T.tolist()]
        prefix = f"{result.group}/" if result.group else ""
        for kind in ("cosine", "magnitude"):
            values = stats[kind][pairs[0], pairs[1]]
            logger.record_values("train", f"grad_{kind}", [prefix + n for n in labels], values)
        logger.record_values("train", "grad_condition", [prefix + "gramian"], stats["condition"].reshape(1))
        logger.record_values("train", "grad_share", [prefix + n for n in names], stats["share"])

    def state_dict(self) -> dict[str, Any]:
        return {"every_n_steps": self.every_n_steps, "module": self.module}
