"""Dynamic task weighting: per-term factors learned or updated during training.

Formulas: Kendall, Gal & Cipolla (CVPR 2018), Chen et al. (GradNorm, ICML 2018), Liu, Johns
& Davison (DWA, CVPR 2019).

A weighting is built from the ``weighting:`` key of a loss config and held by
:class:`~lossmix.LossMix` as a submodule, so its parameters are in
``model.parameters()`` (the optimizer sees them) and its buffers are in the
checkpoint. It never calls ``.backward()``: it returns factors and, where the
method has one, a regulariser that joins the total Lightning backpropagates.

The tasks are the terms added to the total. Each task's loss ``L_i`` is its
weighted contribution (``loss_weight`` × schedule × lazy k); the weighting
multiplies it by a factor ``λ_i``, so the effective weight logged as
``{stage}/weight/{term}`` is ``loss_weight × schedule × λ_i``.

=========== =============================================== =========================
``type``    total                                           state
=========== =============================================== =========================
uncertainty Σ ½·e^{−s_i}·L_i + ½·s_i                        parameter ``log_vars``
dwa         Σ λ_i·L_i, λ = K·softmax(w/T), w = L(t−1)/L(t−2)  buffers (epoch history)
gradnorm    Σ w_i·L_i (+ L_grad, which moves only w)        parameter ``weights``
=========== =============================================== =========================

The cheap scalarizers (FAMO, RLW, GLS, IMTL-L, DB-MTL's log-loss balancing) are in
:mod:`lossmix.mtl.scalarizers`, registered in the same :data:`WEIGHTINGS`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lossmix.errors import LossConfigError
from lossmix.registry.foreign_nodes import check_bool_keys
from lossmix.registry.nodes import is_term_node
from lossmix.registry.registry import WEIGHTINGS
from lossmix.utilities.checks import check_float, check_positive
from lossmix.utilities.distributed import all_reduce_sum
from lossmix.utilities.modules import trainable_parameters

__all__ = [
    "WEIGHTINGS",
    "WEIGHTING_KEY",
    "BaseWeighting",
    "DynamicWeightAverage",
    "GradNorm",
    "UncertaintyWeighting",
    "build_weighting",
]

WEIGHTING_KEY = "weighting"


class BaseWeighting(nn.Module, metaclass=abc.ABCMeta):
    """Base class: ``forward(losses, training=...) -> (factors, regulariser or None)``.

    Args:
        tasks: the names of the weighted terms, in order.
    """

    needs_step_hooks = False
    #: ``post_step(losses)`` wants the task losses re-evaluated after each optimizer step (FAMO).
    needs_post_step_losses = False

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__()
        if not tasks:
            raise LossConfigError(f"{WEIGHTING_KEY}: there are no terms in the total to weight.")
        self.tasks = list(tasks)

    @abc.abstractmethod
    def forward(self, losses: Tensor, *, training: bool) -> tuple[Tensor, Tensor | None]:
        """One factor per task for the stacked task ``losses``, and an optional regulariser."""

    def bind(self, module: nn.Module) -> None:
        """Find what the weighting needs in the model (GradNorm's shared layer)."""

    def epoch_end(self) -> None:
        """Called once per training epoch, after its last step (DWA)."""

    def step_end(self) -> None:
        """Called after each optimizer step (GradNorm's renormalisation)."""

    def post_step(self, losses: Tensor) -> None:
        """The task losses of the step's batch re-evaluated after the optimizer step (FAMO)."""


WEIGHTINGS.require_base(BaseWeighting)


@WEIGHTINGS.register(name="uncertainty")
class UncertaintyWeighting(BaseWeighting):
    """Kendall, Gal & Cipolla (2018): total Σ ½·e^{−s_i}·L_i + ½·s_i with learned s_i = log σ_i².

    The factor is ½·e^{−s_i}; the regulariser ½·Σ s_i is logged as
    ``{stage}/loss/weighting``. The optimal s_i is log L_i, where the task adds
    ½ + ½·log L_i: the total goes negative once a loss falls below 1/e. That is
    the method, not a bug: compare runs by the per-term values, not by the total.

    Args:
        tasks: the weighted terms.
        init: initial log-variance (0: factor ½; LibMTL uses −0.5).
    """

    def __init__(self, tasks: Sequence[str], *, init: float = 0.0) -> None:
        super().__init__(tasks)
        init = check_float(f"{WEIGHTING_KEY}: uncertainty", "init", init)
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), init))

    def forward(self, losses: Tensor, *, training: bool) -> tuple[Tensor, Tensor | None]:
        log_vars = self.log_vars.to(losses.dtype)
        return 0.5 * torch.exp(-log_vars), 0.5 * log_vars.sum()


@WEIGHTINGS.register(name="dwa")
class DynamicWeightAverage(BaseWeighting):
    """Liu, Johns & Davison (2019): λ_k = K·exp(w_k/T) / Σ_i exp(w_i/T), w_k = L_k(t−1)/L_k(t−2).

    ``L_k(t)`` is the mean of task k's training loss over epoch t, summed on the
    device each step and averaged over ranks at epoch end (one collective), so
    every rank holds the same λ. The first two epochs use λ = 1. The running sums
    and the last two epoch means are buffers: a resumed run continues the history.

    Args:
        tasks: the weighted terms.
        temperature: T > 0 (2 in the paper); larger T flattens the weights.
    """

    epoch_sum: Tensor
    epoch_count: Tensor
    history: Tensor
    epochs_seen: Tensor
    lambdas: Tensor

    def __init__(self, tasks: Sequence[str], *, temperature: float = 2.0) -> None:
        super().__init__(tasks)
        # > 0; the paper uses 2
        self.temperature = check_positive(f"{WEIGHTING_KEY}: dwa", "temperature", temperature)
        k = len(self.tasks)
        self.register_buffer("epoch_sum", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("epoch_count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("history", torch.ones(2, k, dtype=torch.float64))  # L(t-1), L(t-2)
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("lambdas", torch.ones(k))

    def forward(self, losses: Tensor, *, training: bool) -> tuple[Tensor, Tensor | None]:
        if training:
            self.epoch_sum += losses.detach().to(self.epoch_sum.dtype)
            self.epoch_count += 1
        return self.lambdas.to(losses.dtype).clone(), None

    def epoch_end(self) -> None:
        totals = all_reduce_sum(torch.cat([self.epoch_sum, self.epoch_count.reshape(1)]))
        seen = totals[-1] > 0
        means = totals[:-1] / totals[-1].clamp(min=1)
        self.history.copy_(torch.where(seen, torch.stack([means, self.history[0]]), self.history))
        self.epochs_seen += seen.long()
        ratio = self.history[0] / self.history[1].clamp(min=torch.finfo(torch.float64).tiny)
        dwa = len(self.tasks) * torch.softmax(ratio / self.temperature, dim=0)
        self.lambdas.copy_(torch.where(self.epochs_seen >= 2, dwa, torch.ones_like(dwa)))
        self.epoch_sum.zero_()
        self.epoch_count.zero_()


@WEIGHTINGS.register(name="gradnorm")
class GradNorm(BaseWeighting):
    """Chen et al. (2018): weights w_i trained so each task's gradient norm on a shared layer
    follows its relative training rate.

    With G_i = ‖∇_W(w_i·L_i)‖₂ on the shared layer W, Ḡ = mean_i G_i,
    r_i = (L_i/L_i(0)) / mean_j(L_j/L_j(0)):
    ``L_grad = Σ_i |G_i − Ḡ·r_i^α|``, with the target Ḡ·r_i^α held constant. The task
    losses use w detached, and L_grad depends on w only, so adding it to the total
    lets the optimizer update w from L_grad alone (DDP averages its gradient like any
    other). After each optimizer step w is renormalised to Σw = K. Cost: one extra
    backward per task through W on each training step. L_i(0) is the first
    training step's loss on this rank (a buffer).

    Args:
        tasks: the weighted terms.
        shared: the name of the last shared layer in the LightningModule
            (``model.get_submodule(shared)``), e.g. ``backbone.4``.
        alpha: asymmetry α (1.5 in LibMTL; 0 pulls all gradient norms together).
    """

    needs_step_hooks = True
    initial_losses: Tensor
    started: Tensor

    def __init__(self, tasks: Sequence[str], *, shared: str | None = None, alpha: float = 1.5) -> None:
        super().__init__(tasks)
        if not shared or not isinstance(shared, str):
            raise LossConfigError(
                f"{WEIGHTING_KEY}: gradnorm needs 'shared', the name of the last shared layer "
                "in your model, e.g. {type: gradnorm, shared: backbone.4}."
            )
        self.shared = shared
        self.alpha = check_float(f"{WEIGHTING_KEY}: gradnorm", "alpha", alpha, low=0.0)
        self.weights = nn.Parameter(torch.ones(len(self.tasks)))
        self.register_buffer("initial_losses", torch.ones(len(self.tasks)))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))
        self._shared_params: list[nn.Parameter] = []

    def bind(self, module: nn.Module) -> None:
        self._shared_params = trainable_parameters(
            module, self.shared, owner=f"{WEIGHTING_KEY}: gradnorm", what="shared layer"
        )

    def forward(self, losses: Tensor, *, training: bool) -> tuple[Tensor, Tensor | None]:
        factors = self.weights.detach().to(losses.dtype)
        if not training or not losses.requires_grad:
            return factors, None
        if not self._shared_params:
            raise LossConfigError(
                f"{WEIGHTING_KEY}: gradnorm is not bound to a model; call "
                "mix.weighting.bind(model) (the Lightning callback does it in setup)."
            )
        norms = torch.stack([_grad_norm(loss, self._shared_params) for loss in losses])
        detached = losses.detach()
        self.initial_losses.copy_(torch.where(self.started, self.initial_losses, detached))
        self.started.fill_(True)
        rate = detached / self.initial_losses.clamp(min=torch.finfo(detached.dtype).tiny)
        rate = rate / rate.mean()
        scaled = self.weights * norms  # G_i = w_i·‖∇_W L_i‖: differentiable in w only
        target = (scaled.detach().mean() * rate**self.alpha).detach()
        return factors, (scaled - target).abs().sum()

    def step_end(self) -> None:
        with torch.no_grad():
            positive = self.weights.clamp(min=1e-6)
            self.weights.copy_(positive * (len(self.tasks) / positive.sum()))


def _grad_norm(loss: Tensor, params: list[nn.Parameter]) -> Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    norms = [g.detach().pow(2).sum() for g in grads if g is not None]
    return torch.stack(norms).sum().sqrt() if norms else loss.new_zeros(())


def build_weighting(node: Any, tasks: Sequence[str], *, allowed_targets: Sequence[str] = ()) -> BaseWeighting:
    """Build from ``{type: uncertainty | dwa | gradnorm, **args}`` (or an allowed ``_target_``)
    over ``tasks``."""
    if isinstance(node, BaseWeighting):
        return node
    if isinstance(node, str):
        node = {"type": node}
    check_bool_keys(node, WEIGHTING_KEY)
    if not is_term_node(node):
        raise LossConfigError(
            f"{WEIGHTING_KEY}: expected e.g. {{type: uncertainty}}; got {node!r}. "
            f"'{WEIGHTING_KEY}' is reserved for dynamic task weighting and cannot name a term."
        )
    if "tasks" in node:
        raise LossConfigError(
            f"{WEIGHTING_KEY}: 'tasks' is not a key of the weighting node; the tasks are the terms "
            "added to the total."
        )
    try:
        weighting: BaseWeighting = WEIGHTINGS.build(node, allowed_targets=allowed_targets, tasks=list(tasks))
    except LossConfigError as err:
        reserved = (
            f" ('{WEIGHTING_KEY}' is reserved for dynamic task weighting and cannot name a term.)"
            if str(err).startswith("Unknown weighting")
            else ""
        )
        raise LossConfigError(f"{WEIGHTING_KEY}: {err}{reserved}") from err
    return weighting
