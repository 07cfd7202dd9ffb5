"""``ClassCountsFromData``: class counts from the datamodule for losses set to ``counts: datamodule``.

A loss whose class weights, margins or priors come from class counts (a class-weight
spec ``{method: ..., counts: datamodule}``, LDAM's or logit adjustment's
``class_counts: datamodule``) waits for them (``needs_class_counts``). At ``setup`` this
callback asks the datamodule for ``label_histogram()`` and gives the counts to every
waiting loss of the module's mix. The histogram is one count per class, or a mapping
from term name to counts when terms count different labels. The values derive from the
data, so they are recomputed at every ``setup`` and kept out of checkpoints.

:class:`~lossmix.CompositeLoss` installs this callback when a loss waits for counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl

from lossmix.errors import LossConfigError
from lossmix.lightning.access import find_loss_mix

__all__ = ["ClassCountsFromData", "waiting_for_counts"]


def waiting_for_counts(pl_module: Any) -> dict[str, list[Any]]:
    """Term name → the modules of that term still waiting for class counts."""
    mix = find_loss_mix(pl_module)
    if mix is None:
        return {}
    found: dict[str, list[Any]] = {}
    for _, term in mix.all_terms():
        modules = [m for m in term.modules() if getattr(m, "needs_class_counts", False)]
        if modules:
            found[term.name] = modules
    return found


class ClassCountsFromData(pl.Callback):
    """Give waiting losses the datamodule's ``label_histogram()`` at ``setup``."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        waiting = waiting_for_counts(pl_module)
        if not waiting:
            return
        names = ", ".join(f"'{name}'" for name in waiting)
        datamodule = getattr(trainer, "datamodule", None)
        histogram = getattr(datamodule, "label_histogram", None)
        if not callable(histogram):
            raise LossConfigError(
                f"term(s) {names} take class counts from the datamodule (counts: datamodule), but "
                f"{type(datamodule).__name__ if datamodule is not None else 'no datamodule'} defines no "
                "label_histogram(); add one returning a count per class, or give the counts in the config."
            )
        counts = histogram()
        for name, modules in waiting.items():
            term_counts = counts.get(name) if isinstance(counts, Mapping) else counts
            if term_counts is None:
                raise LossConfigError(
                    f"term '{name}': label_histogram() returned counts for {sorted(counts)}, not for this "
                    "term; return one list of counts for every term, or one per term name."
                )
            for module in modules:
                module.set_class_counts(term_counts)
