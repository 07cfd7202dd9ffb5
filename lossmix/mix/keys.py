"""A term node's schema: its term-level keys, their types, and the rules between them.

One module owns them; :meth:`lossmix.mix.Term.from_config` (and ``Term`` itself) and the
app's check before composition (:func:`lossmix.app.checks.check_loss_config`) both call these
rules, so a rule and its message exist once. A rule takes the config ``path`` of the term
(``cls``, ``gen.adv``) when it knows it, and then names the override that fixes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lossmix.errors import LossConfigError
from lossmix.registry.nodes import is_term_node

__all__ = [
    "SAMPLER_TARGET_KEYS",
    "TERM_KEYS",
    "TERM_KEY_TYPES",
    "check_normalized_reduction",
    "check_sampler_node",
    "routing_of",
]

#: the keys taken off a term node before the loss is built (``loss_weight`` too, step 5)
TERM_KEYS: tuple[str, ...] = (
    "inputs",
    "data_info",
    "loss_name",
    "default_scope",
    "sampler",
    "normalizer",
    "every",
    "scale_by_every",
    "in_total",
    "parts",
    "allow_negative",
    "schedule",
)
#: the simple types of the term-level keys a config may give
TERM_KEY_TYPES: dict[str, tuple[type, ...]] = {
    "loss_weight": (float,),
    "every": (int,),
    "scale_by_every": (bool,),
    "in_total": (bool,),
    "allow_negative": (bool,),
    "loss_name": (str,),
    "default_scope": (str, type(None)),
}
#: keys of a term's ``sampler`` node that tell how class-index targets give positives
SAMPLER_TARGET_KEYS: tuple[str, ...] = ("background", "ignore_index")


def routing_of(name: str, inputs: Any, data_info: Any, *, path: str | None = None) -> Any:
    """The term's routing: ``inputs``, or ``data_info`` (MMagic's spelling of it), not both.

    >>> routing_of("rec", None, {"pred": "fake"})
    {'pred': 'fake'}
    """
    if inputs is not None and data_info is not None:
        fix = f": drop loss.{path}.data_info or loss.{path}.inputs" if path else ""
        raise LossConfigError(
            f"term '{name}': give inputs or data_info (MMagic's spelling of inputs), not both{fix}."
        )
    return inputs if inputs is not None else data_info


def check_normalized_reduction(label: str, source: Any, reduction: Any, *, path: str | None = None) -> None:
    """A normaliser divides a sum, so the term's loss must reduce by ``mean``."""
    if source is None or reduction == "mean":
        return
    fix = (
        f"for a plain {reduction}, drop the normalizer too: loss.{path}.reduction={reduction} "
        f"loss.{path}.normalizer=null"
        if path
        else "drop the normalizer or the reduction"
    )
    raise LossConfigError(
        f"{label}: normalizer '{source}' divides a sum, which needs reduction='mean' (got "
        f"{reduction!r}); {fix}."
    )


def check_sampler_node(label: str, sampler: Any, *, path: str | None = None) -> dict[str, Any]:
    """A term's ``sampler`` node names what to build (``type`` or ``_target_``)."""
    if not is_term_node(sampler):
        example = (
            f"+sampler@loss.{path}.sampler=random"
            if path
            else "{type: RandomSampler, num: 256, pos_fraction: 0.25}"
        )
        shown = dict(sampler) if isinstance(sampler, Mapping) else sampler
        raise LossConfigError(f"{label}: sampler needs 'type', e.g. {example}; got {shown!r}.")
    return dict(sampler)
