"""Each term's value and gradient norm on the shared parameters, measured on a few batches.

The measurement behind ``lossmix calibrate`` (:mod:`lossmix.app.calibrate`): for every term
``i`` of the total, its raw value ``L_i`` (before its weight) and ``g_i = ‖∇_θ L_i‖`` over the
shared parameters ``θ`` (one backward per term and batch), averaged over the batches and,
under DDP, over the ranks (one collective).

**Shared parameters** are the model's trainable parameters (outside the loss mix) that the
gradient of *every* term reaches, e.g. a detector's trunk, not its heads; ``shared=MODULE``
names a submodule instead (``trunk``, ``backbone.layer4``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lossmix.errors import LossConfigError
from lossmix.utilities.distributed import all_reduce_sum
from lossmix.utilities.modules import trainable_parameters

__all__ = ["TermStatistics", "reduce_statistics", "term_statistics"]


@dataclass(frozen=True)
class TermStatistics:
    """One term's measurements, averaged over the calibration batches (and ranks).

    Attributes:
        name: the term's name (``loss.<name>``).
        weight: its weight in the config (``loss_weight``).
        loss: the mean raw value ``L_i`` (before the weight).
        grad_norm: the mean ``‖∇_θ L_i‖`` over the shared parameters ``θ``.
    """

    name: str
    weight: float
    loss: float
    grad_norm: float

    def value(self, by: str) -> float:
        """The statistic ``by`` (``grad_norm`` or ``loss``)."""
        return self.grad_norm if by == "grad_norm" else self.loss


def _term_values(result: Any, names: Sequence[str]) -> dict[str, Tensor]:
    """Each term's raw value: the sum of its log keys' raw values (a term's parts)."""
    values: dict[str, Tensor] = {}
    for key, raw in result.raw.items():
        term = result.term_of.get(key, key)
        if term in names:
            values[term] = values[term] + raw if term in values else raw
    return values


def _reached(value: Tensor, params: Sequence[nn.Parameter]) -> list[Tensor | None]:
    return list(torch.autograd.grad(value, params, retain_graph=True, allow_unused=True))


def reduce_statistics(sums: Tensor, count: int, device: torch.device | None = None) -> Tensor:
    """Means over batches and ranks: ``sums`` (any shape) summed over ranks with one
    collective (on ``device``: NCCL reduces CUDA tensors only) and divided by the total number
    of batches (``count`` on each rank, summed). Returned on the CPU."""
    packed = torch.cat([sums.double().flatten().cpu(), torch.tensor([float(count)], dtype=torch.float64)])
    total = all_reduce_sum(packed.to(device or sums.device)).cpu()
    return (total[:-1] / total[-1].clamp(min=1.0)).reshape(sums.shape)


def term_statistics(
    model: Any, batches: Iterable[Any], *, shared: str | None = None
) -> tuple[list[TermStatistics], tuple[str, ...]]:
    """Measure every term of ``model``'s total (its raw value and gradient norm on the shared
    parameters) on ``batches``, run through ``model.training_step`` without an optimizer step.

    Args:
        model: a :class:`~lossmix.CompositeLoss` module whose ``training_step`` computes its
            loss through ``compute_loss``; it keeps its mode and its gradients.
        batches: the batches (already on the model's device).
        shared: a submodule whose parameters are the shared ones; default: those that every
            term's gradient reaches.

    Returns:
        the per-term means (reduced across ranks under DDP) and the shared parameters' names.

    Raises:
        LossConfigError: the mix has groups, the step computed no loss, or no parameter is
            reached by every term.
    """
    mix = model.loss_mix
    if mix.group_names():
        raise LossConfigError(
            f"calibrate handles a mix without groups; this one has groups {mix.group_names()} "
            "(calibrate each group's terms in an app of their own)."
        )
    terms = [t for _, t in mix.all_terms() if t.in_total]
    names = [t.name for t in terms]
    in_mix = {id(p) for p in mix.parameters()}
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in in_mix]
    if shared is not None:
        chosen = {id(p) for p in trainable_parameters(model, shared, owner="calibrate", what="shared module")}
        named = [(n, p) for n, p in named if id(p) in chosen]
    params = [p for _, p in named]
    sums = torch.zeros(2, len(names), dtype=torch.float64)
    count = 0
    selected: set[int] | None = None
    for index, batch in enumerate(batches):
        with model.loss_probe() as state:
            model.training_step(batch, index)
        result, state.probe = state.probe, None
        if result is None:
            raise LossConfigError(
                f"{type(model).__name__}.training_step computed no loss through self.compute_loss(...); "
                "calibrate measures the terms that compute_loss computes."
            )
        values = _term_values(result, names)
        grads = {name: _reached(values[name], params) for name in names}
        if selected is None:
            selected = set(_shared_indices(grads, named, explicit=shared is not None))
        for column, name in enumerate(names):
            chosen_grads = [g for i, g in enumerate(grads[name]) if i in selected and g is not None]
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in chosen_grads]))
            sums[0, column] += values[name].detach().double().cpu()
            sums[1, column] += norm.detach().double().cpu()
        count += 1
    if count == 0 or selected is None:
        raise LossConfigError("calibrate got no batch; the datamodule's train_dataloader is empty.")
    means = reduce_statistics(sums, count, params[0].device if params else None).tolist()
    found = [TermStatistics(t.name, float(t.weight), means[0][i], means[1][i]) for i, t in enumerate(terms)]
    return found, tuple(named[i][0] for i in sorted(selected))


def _shared_indices(
    grads: Mapping[str, Sequence[Tensor | None]], named: Sequence[tuple[str, nn.Parameter]], *, explicit: bool
) -> list[int]:
    """The parameters every term's gradient reaches (with ``--shared``: each term must reach
    some of them)."""
    for name, found in grads.items():
        if all(g is None for g in found):
            where = "the --shared module's parameters" if explicit else "any trainable parameter"
            raise LossConfigError(
                f"term '{name}': its gradient reaches none of {where}; calibrate weighs terms by "
                "their gradients on shared parameters (name another module with --shared MODULE, "
                "or use --by loss)."
            )
    if explicit:
        return list(range(len(named)))
    every = [i for i in range(len(named)) if all(found[i] is not None for found in grads.values())]
    if not every:
        raise LossConfigError(
            "no trainable parameter is reached by every term's gradient, so the terms share none; "
            "name the module to measure on with --shared MODULE (e.g. --shared trunk)."
        )
    return every
