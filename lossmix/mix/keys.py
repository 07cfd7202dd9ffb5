"""A term node's schema: its term-level keys, their types, and the rules between them.

One module owns them; :meth:`lossmix.mix.Term.from_config` (and ``Term`` itself) and the
app's check before composition (:func:`lossmix.app.checks.check_loss_config`) both call these
rules, so a rule and its message exist once. A rule takes the config ``path`` of the term
(``cls``, ``gen.adv``) when it knows it, and then names the override that fixes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lossmix.errors import LossConfigError, did_you_mean
from lossmix.mix.normalizers import build_normalizer
from lossmix.reduction import REDUCTIONS
from lossmix.registry.foreign_nodes import check_bool_keys
from lossmix.registry.nodes import TERM_REFS, is_group_node, is_term_node
from lossmix.registry.registry import DEFAULT_SCOPE_KEY, LOSSES, SAMPLERS, Registry, declare_term_keys
from lossmix.registry.signature import check_value_types, expected_types

__all__ = [
    "SAMPLER_TARGET_KEYS",
    "TERM_KEYS",
    "TERM_KEY_TYPES",
    "check_normalized_reduction",
    "check_sampler_node",
    "check_term_node",
    "loss_node_takes_key",
    "node_takes_key",
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
declare_term_keys(TERM_KEYS)
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
_HYDRA_KEYS = ("_recursive_", "_convert_")
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


def _resolve(
    registry: Registry,
    node: Mapping[str, Any],
    label: str,
    allowed_targets: tuple[str, ...],
    default_scope: str | None = None,
) -> tuple[Any, str]:
    ref = node.get("type", node.get("_target_"))
    try:
        obj, name = registry.resolve(
            ref, extra_allowed=allowed_targets, by_name="type" in node, default_scope=default_scope
        )
    except LossConfigError as err:
        raise LossConfigError(f"{label}: {err}") from err
    scoped = registry.split_scoped(name)
    return obj, name if scoped is not None else name.rsplit(".", 1)[-1]


def _check_keys(
    label: str,
    path: str,
    node: Mapping[str, Any],
    valid: dict[str, Any],
    extra: tuple[str, ...],
    var_kw: bool,
    *,
    extra_name: str = "term keys",
) -> None:
    extra = tuple(k for k in extra if k not in valid)
    for key in node:
        if key in valid or key in extra or key in TERM_REFS or key in _HYDRA_KEYS or var_kw:
            continue
        own = ", ".join(valid) or "(none)"
        also = f"; {extra_name}: {', '.join(extra)}" if extra else ""
        raise LossConfigError(
            f"{label}: unknown key '{key}' ({path}.{key}).{did_you_mean(key, [*valid, *extra])} "
            f"Valid keys: {own}{also}."
        )


#: MMagic StyleGAN2's lazy-regulariser weights → the interval keys that go with them
_MMAGIC_LAZY = {"r1_loss_weight": ("r1_interval", "d_reg_interval"), "g_reg_weight": ("g_reg_interval",)}


def check_mmagic_lazy_keys(label: str, path: str, node: Mapping[str, Any]) -> None:
    """MMagic's ``r1_loss_weight``/``g_reg_weight`` (and their intervals) in a term node: the
    lossmix spelling, with the numbers. MMagic's weight already holds the × interval
    (``r1_loss_weight = 10/2 × 16 = 80``) while ``every: k`` multiplies ``loss_weight`` by k
    itself (``scale_by_every: true``), so ``loss_weight`` is the MMagic weight / interval.

    >>> check_mmagic_lazy_keys("term 'r1'", "r1", {"r1_loss_weight": 80, "r1_interval": 16})
    Traceback (most recent call last):
    ...
    lossmix.errors.LossConfigError: term 'r1': r1_loss_weight is MMagic's weight x r1_interval; write ...
    """
    for weight_key, interval_keys in _MMAGIC_LAZY.items():
        interval_key = next((k for k in interval_keys if k in node), interval_keys[0])
        if weight_key not in node and interval_key not in node:
            continue
        weight, interval = node.get(weight_key), node.get(interval_key, node.get("every"))
        if weight_key not in node:
            every = interval if isinstance(interval, int) else f"<{interval_key}>"
            raise LossConfigError(
                f"{label}: {interval_key} is MMagic's lazy interval; write loss.{path}.every={every} and "
                f"loss.{path}.loss_weight=<MMagic's {weight_key} / {interval_key}> (every: k multiplies "
                f"loss_weight by k itself), and drop {interval_key}."
            )
        numbers = isinstance(weight, (int, float)) and isinstance(interval, int) and interval > 0
        if numbers:
            quotient = weight / interval
            shown = int(quotient) if float(quotient).is_integer() else quotient
            fix = f"loss.{path}.loss_weight={shown} loss.{path}.every={interval}"
        else:
            fix = (
                f"loss.{path}.loss_weight=<{weight_key} / {interval_key}> loss.{path}.every=<{interval_key}>"
            )
        raise LossConfigError(
            f"{label}: {weight_key} is MMagic's weight x {interval_key}; write {fix} (every: k runs the "
            f"term every k-th step and multiplies loss_weight by k itself, scale_by_every: true), and "
            f"drop {weight_key}" + (f" and {interval_key}." if interval_key in node else ".")
        )


def check_term_node(
    path: str,
    name: str,
    node: Any,
    *,
    allowed_targets: Sequence[str] = (),
    default_scope: str | None = None,
) -> None:
    """The whole schema of one term node, checked without building anything.

    Its term-level keys and their types (:data:`TERM_KEY_TYPES`), the routing, the loss's
    and sampler's own keys and simple value types (read from their constructors), the
    reduction, the normaliser's name and the rules between them. ``path`` is the term's
    place in the loss config (``cls``, ``gen.adv``); every message names the override that
    fixes it.

    >>> check_term_node("cls", "cls", {"type": "FocalLoss", "gama": 1.5})
    Traceback (most recent call last):
    ...
    lossmix.errors.LossConfigError: term 'cls' (FocalLoss): unknown key 'gama' ... 'gamma'? ...
    """
    allowed_targets = tuple(allowed_targets)
    label = f"term '{name}'"
    check_bool_keys(node, f"loss.{path}")
    if not is_term_node(node):
        raise LossConfigError(
            f"{label} (loss.{path}): needs 'type' (a registered loss, e.g. type: FocalLoss) or "
            f"'_target_' (a dotted path); got {node!r}."
        )
    if node.get("schedule") is not None:
        raise LossConfigError(
            f"{label} (loss.{path}.schedule): a schedule is set by the LossSchedule callback "
            f"(callbacks.loss_schedule.schedules.{path}), not in the term node."
        )
    scope = node.get(DEFAULT_SCOPE_KEY, default_scope)
    if scope is not None:
        LOSSES.check_scope(scope, owner=f"{label} (loss.{path}.{DEFAULT_SCOPE_KEY})")
    routing_of(name, node.get("inputs"), node.get("data_info"), path=path)
    obj, loss_name = _resolve(LOSSES, node, label, allowed_targets, scope)
    label = f"term '{name}' ({loss_name})"
    params, var_kw = LOSSES.parameters(obj)
    term_keys = tuple(k for k in TERM_KEYS if k != "schedule")
    if not var_kw:
        check_mmagic_lazy_keys(label, path, {k: v for k, v in node.items() if k not in params})
    _check_keys(label, f"loss.{path}", node, params, (*term_keys, "loss_weight"), var_kw)
    defaults = {**params, "every": 1, "scale_by_every": True, "in_total": True}
    check_value_types(
        label, f"loss.{path}", node, defaults, {**expected_types(LOSSES, obj), **TERM_KEY_TYPES}
    )
    reduction, normalizer = node.get("reduction", "mean"), node.get("normalizer")
    if "reduction" in params and reduction not in REDUCTIONS:
        raise LossConfigError(
            f"{label}: reduction={reduction!r} is not valid; use one of {list(REDUCTIONS)}."
            f"{did_you_mean(str(reduction), REDUCTIONS)} e.g. loss.{path}.reduction=mean."
        )
    build_normalizer(normalizer, term=name)  # a misspelt name is refused here, before training
    source = normalizer.get("type") if isinstance(normalizer, Mapping) else normalizer
    check_normalized_reduction(label, source, reduction, path=path)
    sampler = node.get("sampler")
    if isinstance(sampler, Mapping):
        sampler = check_sampler_node(label, sampler, path=path)
        s_obj, s_name = _resolve(SAMPLERS, sampler, f"{label} sampler", allowed_targets)
        s_label, s_path = f"{label} sampler ({s_name})", f"loss.{path}.sampler"
        s_params, s_var_kw = SAMPLERS.parameters(s_obj)
        _check_keys(s_label, s_path, sampler, s_params, SAMPLER_TARGET_KEYS, s_var_kw, extra_name="also")
        check_value_types(s_label, s_path, sampler, s_params, expected_types(SAMPLERS, s_obj))


def node_takes_key(
    node: Any,
    key: str,
    *,
    sampler: bool = False,
    allowed_targets: Sequence[str] = (),
    default_scope: str | None = None,
) -> bool:
    """Whether a term node (``sampler=True``: a term's sampler node) may set ``key``, a name
    its loss (sampler) or the term schema spells out: a ``**kwargs`` catch-all does not count.

    What the app asks before it adds a key a compact node leaves out
    (``loss.reg.loss_weight=0.5`` becomes ``++loss.reg.loss_weight=0.5``).

    >>> node_takes_key({"type": "L1Loss"}, "loss_weight"), node_takes_key({"type": "L1Loss"}, "gama")
    (True, False)
    >>> node_takes_key({"type": "RandomSampler", "num": 64}, "add_gt_as_proposals", sampler=True)
    True
    """
    if not is_term_node(node):
        return False
    registry = SAMPLERS if sampler else LOSSES
    scope = None if sampler else node.get(DEFAULT_SCOPE_KEY, default_scope)
    try:
        obj, _ = _resolve(registry, node, "", tuple(allowed_targets), scope)
    except LossConfigError:
        return False
    params, _ = registry.parameters(obj)
    own = SAMPLER_TARGET_KEYS if sampler else (*TERM_KEYS, "loss_weight")
    return key in params or key in own


def loss_node_takes_key(
    loss: Mapping[str, Any], path: Sequence[str], *, allowed_targets: Sequence[str] = ()
) -> bool:
    """Whether ``loss.<path>`` is a key its term node lacks and its loss (or sampler) takes.

    ``path`` is the key's path under ``loss``: ``["reg", "loss_weight"]``, ``["gen", "adv",
    "loss_weight"]`` (a group's term), ``["cls", "sampler", "add_gt_as_proposals"]``.

    >>> loss_node_takes_key({"reg": {"_target_": "torch.nn.HuberLoss"}}, ["reg", "delta"])
    True
    >>> loss_node_takes_key({"reg": {"_target_": "torch.nn.HuberLoss"}}, ["reg", "delt"])
    False
    """
    scope = loss.get(DEFAULT_SCOPE_KEY)
    head, rest = path[0], list(path[1:])
    term: Any = loss.get(head)
    if is_group_node(term) and rest:
        term, rest = term.get(rest[0]), rest[1:]
    if not is_term_node(term) or not rest:
        return False
    if len(rest) == 1:
        key = rest[0]
        return key not in term and node_takes_key(
            term, key, allowed_targets=allowed_targets, default_scope=scope
        )
    if len(rest) == 2 and rest[0] == "sampler":
        sampler: Any = term.get("sampler")
        key = rest[1]
        return (
            is_term_node(sampler)
            and key not in sampler
            and node_takes_key(sampler, key, sampler=True, allowed_targets=allowed_targets)
        )
    return False
