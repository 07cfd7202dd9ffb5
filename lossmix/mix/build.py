"""Building a :class:`~lossmix.mix.loss_mix.LossMix`: its terms from a config node, and the checks of
its weighting and aggregation against the terms (kept apart from the engine's step)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lossmix.errors import LossConfigError
from lossmix.mix.term import Term
from lossmix.mtl.aggregation import AGGREGATION_KEY, GradientAggregation
from lossmix.mtl.weighting import WEIGHTING_KEY, BaseWeighting, build_weighting
from lossmix.registry.foreign_nodes import check_bool_keys, train_cfg_hint
from lossmix.registry.nodes import is_group_node, is_term_node
from lossmix.registry.registry import DEFAULT_SCOPE_KEY, LOSSES

__all__ = ["build_parts", "check_aggregation", "check_shared_log_names", "check_weighting", "window_scoped"]


def build_parts(
    node: Any, allowed_targets: tuple[str, ...]
) -> tuple[dict[str, Term | dict[str, Term]], BaseWeighting | None, GradientAggregation | None]:
    """The terms (and groups), weighting and aggregation a plain loss node describes."""
    if not isinstance(node, Mapping):
        raise LossConfigError(
            f"LossMix.from_config needs a mapping of term names to term nodes; got {node!r}."
        )
    check_bool_keys(node, "loss")
    for name, child in node.items():
        hint = train_cfg_hint(name, child)
        if hint is not None:
            raise LossConfigError(hint)
    node = dict(node)
    weighting_node = node.pop(WEIGHTING_KEY, None)
    scope = node.pop(DEFAULT_SCOPE_KEY, None)
    if scope is not None:
        LOSSES.check_scope(scope, owner=f"the mix's {DEFAULT_SCOPE_KEY}")
    aggregation_node = node.pop(AGGREGATION_KEY, None)
    built = {
        name: _build_child(name, child, allowed_targets, scope)
        for name, child in node.items()
        if child is not None
    }  # None: a removed term
    groups = [n for n, t in built.items() if not isinstance(t, Term)]
    tasks = [n for n, t in built.items() if isinstance(t, Term) and t.in_total]
    weighting: BaseWeighting | None = None
    aggregation: GradientAggregation | None = None
    for key, what, value in (
        (WEIGHTING_KEY, "dynamic task weighting", weighting_node),
        (AGGREGATION_KEY, "gradient aggregation", aggregation_node),
    ):
        if value is not None and groups:
            raise LossConfigError(
                f"{key}: {what} needs a flat mix of terms; this one has groups {', '.join(groups)}."
            )
    if weighting_node is not None:
        weighting = build_weighting(weighting_node, tasks, allowed_targets=allowed_targets)
    if aggregation_node is not None:
        aggregation = GradientAggregation.from_config(
            aggregation_node, tasks, allowed_targets=allowed_targets
        )
    return built, weighting, aggregation


def _build_child(
    name: str, child: Any, allowed: tuple[str, ...], scope: str | None
) -> Term | dict[str, Term]:
    """A term from a term node, or a group's terms from a group node."""
    if is_term_node(child):
        return Term.from_config(name, child, allowed_targets=allowed, default_scope=scope)
    if is_group_node(child):
        return {
            n: Term.from_config(n, c, allowed_targets=allowed, default_scope=scope, path=f"{name}.{n}")
            for n, c in child.items()
            if c is not None
        }
    raise LossConfigError(
        f"term '{name}': a term node needs 'type' (e.g. type: FocalLoss) or "
        f"'_target_', and a group's children must all be term nodes; got {child!r}."
    )


def _flat(owner: str, what: str, groups: Sequence[str]) -> None:
    if groups:
        raise LossConfigError(
            f"{owner}: {what} needs a flat mix of terms; this one has groups {', '.join(groups)}."
        )


def check_weighting(weighting: BaseWeighting | None, terms: Sequence[Term], groups: Sequence[str]) -> None:
    """A weighting's tasks are terms of a flat mix, added to the total, each with its own log key."""
    if weighting is None:
        return
    _flat(WEIGHTING_KEY, "dynamic task weighting", groups)
    logs = [t.log_name for t in terms]
    shared = [t.name for t in terms if logs.count(t.log_name) > 1]
    if shared:
        raise LossConfigError(
            f"{WEIGHTING_KEY}: term '{shared[0]}' shares its loss_name with another term; dynamic "
            "task weighting weighs terms one by one, so give each its own loss_name."
        )
    flat = {t.name: t for t in terms}
    wrong = [n for n in weighting.tasks if n not in flat or not flat[n].in_total]
    if wrong:
        raise LossConfigError(
            f"{WEIGHTING_KEY}: tasks must be terms added to the total; "
            f"{wrong[0]!r} is not one (terms: {', '.join(flat)})."
        )


def check_aggregation(
    aggregation: GradientAggregation | None, terms: Sequence[Term], groups: Sequence[str]
) -> None:
    """An aggregation's tasks are exactly the terms added to the total, none window-scoped."""
    if aggregation is None:
        return
    _flat(AGGREGATION_KEY, "gradient aggregation", groups)
    total = [t.name for t in terms if t.in_total]
    if sorted(aggregation.tasks) != sorted(total):
        raise LossConfigError(
            f"{AGGREGATION_KEY}: the tasks must be the terms added to the total "
            f"({', '.join(total)}); got {', '.join(aggregation.tasks)}."
        )
    scoped = [t.name for t in terms if window_scoped(t)]
    if scoped:
        raise LossConfigError(
            f"term '{scoped[0]}': normalizer scope 'accumulation' divides the whole window's "
            f"summed gradient, which {AGGREGATION_KEY} replaces per micro-batch; use the "
            "step's own normaliser (drop 'scope: accumulation') or drop the aggregation node."
        )


def check_shared_log_names(terms: list[Term]) -> None:
    """Terms sharing a log key (``loss_name``) must agree on being in the total."""
    first: dict[str, Term] = {}
    for term in terms:
        other = first.setdefault(term.log_name, term)
        if other.in_total != term.in_total:
            raise LossConfigError(
                f"terms '{other.name}' and '{term.name}' share loss_name '{term.log_name}', so they are "
                "logged as one value, but only one is in the total; give them the same in_total or "
                "different loss_names."
            )


def window_scoped(term: Term) -> bool:
    """The term's normaliser is the gradient-accumulation window's (``scope: accumulation``)."""
    return term.normalizer is not None and term.normalizer.scope == "accumulation"
