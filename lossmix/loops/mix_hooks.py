"""What a hand-written loop calls around the optimizer for a mix's ``weighting:`` and
``aggregation:`` nodes (the Lightning callback ``TaskWeightingUpdates`` does the same from
its hooks).

The backward contract, in any loop:

- no ``aggregation:`` node: ``result.total.backward()`` (or ``loss.backward()`` of any
  function of it). A ``weighting:``'s learned factors are parameters of the mix: give
  ``mix.parameters()`` to the optimizer with the model's.
- an ``aggregation:`` node: ``mix.backward(result)`` (or ``mix.backward(result, loss)``)
  instead; it runs the ordinary backward and replaces the shared parameters' gradients
  by the aggregated update. Pass ``accumulating=True`` for every micro-batch but the last
  of a gradient-accumulation window, and the AMP ``loss_scale`` when the loss is scaled.
"""

from __future__ import annotations

from torch import Tensor, nn

from lossmix.errors import LossConfigError
from lossmix.mix.loss_mix import LossMix

__all__ = ["bind_mix", "mix_epoch_end", "mix_step_end"]


def bind_mix(mix: LossMix, model: nn.Module) -> None:
    """Before training: find what the weighting and the aggregation need in ``model`` (GradNorm's
    shared layer, the aggregation's ``module``); an error now if a name is wrong."""
    if mix.weighting is not None:
        mix.weighting.bind(model)
    if mix.aggregation is not None:
        mix.aggregation.bind(model)


def mix_step_end(mix: LossMix, post_step_losses: Tensor | None = None) -> None:
    """After each optimizer step: GradNorm's renormalisation; FAMO's update from the step's task
    losses re-evaluated with the new parameters (``mix(outputs, batch).task_losses``)."""
    weighting = mix.weighting
    if weighting is None:
        return
    if weighting.needs_step_hooks:
        weighting.step_end()
    if weighting.needs_post_step_losses:
        if post_step_losses is None:
            raise LossConfigError(
                f"weighting: {type(weighting).__name__} needs the step's task losses after the optimizer "
                "step; pass mix_step_end(mix, post_step_losses=mix(model(x), batch).task_losses) "
                "computed under torch.no_grad()."
            )
        weighting.post_step(post_step_losses)


def mix_epoch_end(mix: LossMix) -> None:
    """After each training epoch's last step (DWA's loss history)."""
    if mix.weighting is not None:
        mix.weighting.epoch_end()
