"""``TermGradientMonitor``: each term's gradient norm on the shared parameters, every N steps."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from lossmix.errors import LossConfigError, did_you_mean
from lossmix.lightning.access import find_loss_mix, last_result_of, loss_step_of, term_logger_of
from lossmix.validation import check_int

__all__ = ["TermGradientMonitor", "term_gradient_norms"]


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


class TermGradientMonitor(pl.Callback):
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

    def __init__(self, every_n_steps: int = 50, module: str | None = None) -> None:
        self.every_n_steps = check_int("TermGradientMonitor", "every_n_steps", every_n_steps, min=1)
        self.module = module
        self._params: list[nn.Parameter] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.module is None:
            mix = find_loss_mix(pl_module)
            skip = {id(p) for p in mix.parameters()} if mix is not None else set()
            self._params = [p for p in pl_module.parameters() if p.requires_grad and id(p) not in skip]
            return
        try:
            layer = pl_module.get_submodule(self.module)
        except AttributeError:
            names = [n for n, _ in pl_module.named_modules() if n]
            raise LossConfigError(
                f"TermGradientMonitor: module '{self.module}' is not in "
                f"{type(pl_module).__name__}.{did_you_mean(self.module, names)} "
                f"Modules: {', '.join(names)}."
            ) from None
        self._params = [p for p in layer.parameters() if p.requires_grad]

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
