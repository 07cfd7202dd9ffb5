"""``AccumulationScope``: gradient accumulation with the big batch's normaliser.

With ``Trainer(accumulate_grad_batches=N)`` Lightning backpropagates each micro-batch's
loss divided by N. A term normalised per micro-batch (``num_pos``, ``weight_sum``...) then
gives ``(1/N)·Σ_i ∇S_i / c_i``, while one step on the N micro-batches together gives
``∇(Σ_i S_i) / Σ_i c_i``: micro-batches with few positives weigh as much as crowded ones
(transformers #34191, Lightning #20350). ``normalizer: {..., scope: accumulation}`` makes
the update the big batch's:

* each micro-batch still logs its own values (divided by its own count), and
* its backward runs on ``N·Σ weight·S_i`` (the sums, which Lightning divides by N), its
  counts are summed over the window, and before the optimizer step (after AMP's unscale,
  before clipping) every gradient is divided by the window's count (averaged over ranks
  under DDP, where gradients are averaged too; then clamped by ``min``).

**Exact** when every term of the total (``in_total``) has a normaliser with ``scope:
accumulation`` that counts the same thing — the same source, floor and inputs it counts
(the same ``target`` for ``num_pos``, ``weight`` for ``weight_sum``, key for a key
normaliser; a term with a sampler counts its own draw, so it cannot share): one divisor
for all gradients. The update then equals the concatenated batch's, to rounding, a partial
last window included. It costs nothing: no
extra pass, no extra memory, one collective per optimizer step under DDP. Not exact, and
refused at setup naming the terms: terms with different normalisers or unscoped terms in
the same total (each would need its own gradient buffer), dynamic task weighting (its
weights are per micro-batch), manual optimization (lossmix does not own the backward).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from lossmix.errors import LossConfigError
from lossmix.lightning.access import find_loss_mix, last_result_of
from lossmix.mix.loss_mix import LossMix
from lossmix.mix.term import Term
from lossmix.reduction import EPS32
from lossmix.utilities.distributed import all_reduce_mean, world_size

__all__ = ["AccumulationScope", "window_scoped_terms"]


def _counted(term: Term) -> tuple[Any, ...]:
    """What a term's normaliser counts: terms with equal tuples have equal counts."""
    normalizer = term.normalizer
    assert normalizer is not None
    counted = {
        "num_pos": "target",
        "num_sampled": "target",
        "weight_sum": "weight",
        "numel": "pred",
        "batch": "pred",
    }
    routed = term.inputs.get(counted.get(normalizer.source, ""))
    own = id(term) if term.sampler is not None else None  # a sampler's draw is its own
    return (normalizer.source, normalizer.min, routed, term.background, own)


def window_scoped_terms(mix: LossMix) -> list[str]:
    """The terms whose normaliser has ``scope: accumulation``."""
    return [
        term.name
        for _, term in mix.all_terms()
        if term.normalizer is not None and term.normalizer.scope == "accumulation"
    ]


class AccumulationScope(pl.Callback):
    """Divides the accumulated gradients by the window's summed normaliser (see the module).

    Installed by :class:`~lossmix.CompositeLoss` when a term's normaliser has ``scope:
    accumulation``; checks at ``setup`` that the update can be exact.
    """

    def __init__(self) -> None:
        self.window: Tensor | None = None
        self.floor = 1.0
        self.synced = False
        self.source = ""
        self.term = ""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        mix = find_loss_mix(pl_module)
        if mix is None or not window_scoped_terms(mix):
            return
        scoped = window_scoped_terms(mix)
        where = f"scope: accumulation (terms {', '.join(scoped)})"
        if not pl_module.automatic_optimization:
            raise LossConfigError(
                f"{where} needs automatic optimization; lossmix does not own a manual backward."
            )
        if mix.weighting is not None:
            raise LossConfigError(
                f"{where} cannot be exact with dynamic task weighting (its weights change per "
                "micro-batch); drop one of them."
            )
        in_total = [(g, t) for g, t in mix.all_terms() if t.in_total]
        counted = {_counted(t) for _, t in in_total if t.normalizer is not None}
        unscoped = [
            f"{g}/{t.name}" if g else t.name
            for g, t in in_total
            if t.normalizer is None or t.normalizer.scope != "accumulation"
        ]
        if unscoped or len(counted) != 1 or len(mix.groups) > 0:
            listed = ", ".join(
                f"{t.name} ({'no normaliser' if t.normalizer is None else t.normalizer.source}"
                f"{'' if t.normalizer is None else ', scope: ' + t.normalizer.scope})"
                for _, t in in_total
            )
            raise LossConfigError(
                f"{where} is exact only when every term of the total divides by one count (the "
                f"same normaliser, counting the same input, no sampler of its own) with scope: "
                f"accumulation; here: {listed}. Give them one such normaliser, take a term out of "
                "the total (in_total: false), or drop scope: accumulation."
            )
        first = in_total[0][1]
        assert first.normalizer is not None
        self.source, self.floor, self.term = first.normalizer.source, first.normalizer.min, first.name
        self.synced = first.normalizer.sync

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        # each micro-batch's count, before its backward (the last one's optimizer step comes
        # before its on_train_batch_end)
        result = last_result_of(pl_module)
        if not self.source or result is None:
            return
        count = result.stats.get(f"{self.term}.count")  # every term of the total counts the same
        if count is not None:
            count = count.detach().float()
            self.window = count if self.window is None else self.window + count

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        if not self.source or self.window is None:
            return
        window = self.window if self.synced or world_size() == 1 else all_reduce_mean([self.window])[0]
        divisor = window.clamp(min=self.floor) + EPS32
        with torch.no_grad():
            for parameter in pl_module.parameters():
                if parameter.grad is not None:
                    parameter.grad.div_(divisor.to(parameter.grad.dtype))
        self.window = None
