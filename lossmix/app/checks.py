"""The Hydra front end's checks: every term node against its loss's signature, before training.

Hydra's struct mode refuses a misspelt plain override (``loss.cls.gama=1.5``), but
``+loss.cls.gama=1.5`` adds the key and a value override can change a type
(``loss.cls.gamma=abc``). :func:`check_loss_config` catches both before anything is
built, with the term, the key, the valid keys and the closest one; the rest of the
checks (inputs, normalisers, samplers' values) are :meth:`LossMix.from_config`'s.
:func:`one_line_error` turns these and Hydra's composition errors into the one line
the command line prints.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from lossmix.app.compose import compose_config
from lossmix.app.trust import AppTrust
from lossmix.errors import LossConfigError, did_you_mean
from lossmix.mix.keys import (
    SAMPLER_TARGET_KEYS,
    TERM_KEY_TYPES,
    TERM_KEYS,
    check_normalized_reduction,
    check_sampler_node,
    routing_of,
)
from lossmix.mix.loss_mix import AGGREGATION_KEY, WEIGHTING_KEY, LossMix
from lossmix.mix.normalizers import build_normalizer
from lossmix.reduction import REDUCTIONS
from lossmix.registry.allowlist import allowed_prefixes, covers
from lossmix.registry.nodes import (
    TERM_REFS,
    env_secrets,
    errors_hidden,
    is_group_node,
    is_term_node,
    loss_key_label,
    resolve_env_values,
    to_plain,
)
from lossmix.registry.registry import DEFAULT_SCOPE_KEY, LOSSES, REQUIRED, SAMPLERS, Registry

__all__ = [
    "build_loss_mix",
    "check_loss_config",
    "check_node_values",
    "expected_types",
    "explain_override_error",
    "import_modules",
    "iter_term_nodes",
    "one_line_error",
    "term_rows",
]

_HYDRA_KEYS = ("_recursive_", "_convert_")
_SIMPLE = (bool, int, float, str, type(None))


def iter_term_nodes(node: Mapping[str, Any]) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """``(path, name, node)`` of every term: ``("cls", "cls", ...)`` or ``("gen.adv", "adv", ...)``.

    ``None`` children (dropped terms), the ``weighting`` and ``aggregation`` nodes and the
    mix's ``default_scope`` are skipped, as :meth:`LossMix.from_config` does.
    """
    for name, child in node.items():
        if child is None or name in (WEIGHTING_KEY, AGGREGATION_KEY, DEFAULT_SCOPE_KEY):
            continue
        if is_group_node(child):
            for leaf, grandchild in child.items():
                if grandchild is not None:
                    yield f"{name}.{leaf}", str(leaf), grandchild
        else:
            yield str(name), str(name), child


# -- user modules ------------------------------------------------------------------------------
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", re.ASCII)


def import_modules(names: Any, *, allowed_targets: Sequence[str] = (), granted: Sequence[str] = ()) -> None:
    """Import each module of ``lossmix.imports``, so its ``@LOSSES.register()`` calls run.

    A module is imported only if it lies under an allowed package (``lossmix``, what the
    user allowed: :func:`lossmix.allow_targets`, ``LOSSMIX_ALLOWED_TARGETS``,
    ``allowed_targets``) or is named in ``granted`` (the app passes the modules given on
    the command line), never an arbitrary module a config file names.

    Args:
        names: dotted module names (a list, a ListConfig, or None for none), e.g.
            ``["my_project.losses"]``; each must be importable (installed, or on
            ``sys.path``/``PYTHONPATH``).
        allowed_targets: extra trusted prefixes.
        granted: module names the user gave explicitly.

    Raises:
        LossConfigError: a name that is not a dotted module name, a module outside the
            allowed packages, or a module whose import fails (naming it and the error).

    >>> import_modules(["lossmix.demo.custom_losses"])
    >>> import_modules(["my-losses"])
    Traceback (most recent call last):
    ...
    lossmix.errors.LossConfigError: lossmix.imports: 'my-losses' is not a dotted module name ...
    """
    names = to_plain(names) or []
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise LossConfigError(
            f"lossmix.imports must be a list of module names, e.g. lossmix.imports=[my_project.losses]; "
            f"got {names!r}."
        )
    allowed = allowed_prefixes(allowed_targets, defaults=("lossmix",))
    for name in names:
        if not isinstance(name, str) or not _MODULE_NAME.fullmatch(name):
            raise LossConfigError(
                f"lossmix.imports: {name!r} is not a dotted module name (like my_project.losses: "
                "letters, digits and underscores, parts separated by dots)."
            )
        _check_importable(name, allowed, granted)
        try:
            importlib.import_module(name)
        except Exception as err:  # the user's module: any error in it is a configuration error
            first = str(err).splitlines()[0] if str(err) else ""
            raise LossConfigError(
                f"lossmix.imports: could not import module '{name}': {type(err).__name__}: {first}"
            ) from err


def _check_importable(name: str, allowed: Sequence[str], granted: Sequence[str]) -> None:
    from lossmix.registry.allowlist import check_prefix

    try:
        check_prefix(name, source="lossmix.imports")
    except LossConfigError as err:
        raise LossConfigError(f"{err} A module of lossmix.imports must be trusted code.") from None
    if name in granted or any(covers(prefix, name) for prefix in allowed):
        return
    top = name.split(".")[0]
    raise LossConfigError(
        f"lossmix.imports: '{name}' is refused: it is outside the allowed packages "
        f"{list(allowed)}, and a config file cannot make lossmix import it. Name it on the command line "
        f"(lossmix.imports=[{name}]), allow its package there (lossmix.allowed_targets=[{top}]),"
        f" or set LOSSMIX_ALLOWED_TARGETS={top}."
    )


# -- expected types ---------------------------------------------------------------------------
def _hint_types(hint: Any) -> tuple[type, ...] | None:
    """The simple types a hint allows, plus ``object`` for anything richer; None: anything."""
    if hint is Any or hint is inspect.Parameter.empty:
        return None
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        found: list[type] = []
        for arg in typing.get_args(hint):
            sub = _hint_types(arg)
            if sub is None:
                return None
            found += sub
        return tuple(dict.fromkeys(found))
    if origin is typing.Literal:
        return tuple(dict.fromkeys(type(v) for v in typing.get_args(hint)))
    if hint is None or hint is type(None):
        return (type(None),)
    if hint in _SIMPLE:
        return (hint,)
    return (object,)


def _default_types(default: Any) -> tuple[type, ...] | None:
    if default is REQUIRED or default is None:
        return None
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, (int, float)):
        return (float,)
    if isinstance(default, str):
        return (str,)
    return (object,)


def _init_hints(obj: Any) -> dict[str, Any]:
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        return typing.get_type_hints(target)
    except Exception:  # unresolvable forward references: fall back to the defaults
        return {}


def expected_types(registry: Registry, obj: Any) -> dict[str, tuple[type, ...] | None]:
    """Argument → allowed simple types (``object``: lists/dicts too; None: anything).

    >>> from lossmix import LOSSES
    >>> expected_types(LOSSES, LOSSES.get("FocalLoss"))["gamma"]
    (<class 'float'>,)
    """
    params, _ = registry.parameters(obj)
    hints = _init_hints(obj)
    found: dict[str, tuple[type, ...] | None] = {}
    for name, default in params.items():
        found[name] = _hint_types(hints[name]) if name in hints else _default_types(default)
    if "reduction" in found and "reduction" not in hints:
        found["reduction"] = (str,)
    if "loss_weight" in found and "loss_weight" not in hints:
        found["loss_weight"] = (float,)
    return found


def check_node_values(path: str, node: Mapping[str, Any], obj: Any) -> None:
    """Check a node's simple values against the annotations of ``obj``'s constructor.

    For the app's nodes (``trainer.max_epochs=abc``): the message names the node's key, the
    value's type and what the argument takes, before the constructor fails deeper.
    """
    found, takes_any = Registry("node").parameters(obj)
    params = dict(found)
    unknown = [k for k in node if not str(k).startswith("_") and k not in params]
    if unknown and not takes_any:
        key = unknown[0]
        name = getattr(obj, "__name__", str(obj))
        raise LossConfigError(
            f"{path}: unknown key '{key}' ({path}.{key}); {name} does not take it."
            f"{did_you_mean(str(key), list(params))} Valid keys: {', '.join(params)}."
        )
    hints = _init_hints(obj)
    types_ = {
        name: _hint_types(hints[name]) if name in hints else _default_types(default)
        for name, default in params.items()
    }
    for key, allowed in types_.items():
        if key in node and allowed is not None and not _fits(node[key], allowed):
            raise LossConfigError(
                f"{path}.{key}={node[key]!r} is a {type(node[key]).__name__}, but {key} expects "
                f"{_type_names(allowed)}; e.g. {path}.{key}={_example(allowed, params.get(key))}."
            )


def _literal(value: Any) -> str:
    """``value`` as it is written on the command line (``null``, ``true``, ``2.0``)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


def _example(allowed: tuple[type, ...], default: Any) -> str:
    if default is not REQUIRED and default is not None:
        return str(default)
    return {bool: "true", int: "1", float: "1.0", str: "name"}.get(allowed[0], "null")


def _fits(value: Any, allowed: tuple[type, ...] | None) -> bool:
    if allowed is None:
        return True
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int):
        return int in allowed or float in allowed
    if isinstance(value, (float, str)) or value is None:
        return type(value) in allowed
    return object in allowed


def _type_names(allowed: tuple[type, ...]) -> str:
    names = {
        bool: "bool (true/false)",
        int: "int",
        float: "float",
        str: "str",
        type(None): "null",
        object: "a list or mapping",
    }
    return " or ".join(names[t] for t in allowed)


# -- the checks --------------------------------------------------------------------------------
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


def _check_types(
    label: str,
    path: str,
    node: Mapping[str, Any],
    params: dict[str, Any],
    types_: dict[str, tuple[type, ...] | None],
) -> None:
    for key, allowed in types_.items():
        if key in node and allowed is not None and not _fits(node[key], allowed):
            value, default = node[key], params.get(key, REQUIRED)
            shown = _literal(default)
            example = "" if default is REQUIRED else f" (default {shown}): e.g. {path}.{key}={shown}"
            raise LossConfigError(
                f"{label}: {key}={value!r} is a {type(value).__name__}, but {key} expects "
                f"{_type_names(allowed)}{example}."
            )


def _check_term(
    path: str, name: str, node: Any, allowed_targets: tuple[str, ...], default_scope: str | None = None
) -> None:
    label = f"term '{name}'"
    if not is_term_node(node):
        raise LossConfigError(
            f"{label} (loss.{path}): needs 'type' (a registered loss, e.g. type: FocalLoss) or "
            f"'_target_' (a dotted path); got {node!r}."
        )
    scope = node.get(DEFAULT_SCOPE_KEY, default_scope)
    if scope is not None:
        LOSSES.check_scope(scope, owner=f"{label} (loss.{path}.{DEFAULT_SCOPE_KEY})")
    routing_of(name, node.get("inputs"), node.get("data_info"), path=path)
    obj, loss_name = _resolve(LOSSES, node, label, allowed_targets, scope)
    label = f"term '{name}' ({loss_name})"
    params, var_kw = LOSSES.parameters(obj)
    term_keys = tuple(k for k in TERM_KEYS if k != "schedule")
    _check_keys(label, f"loss.{path}", node, params, (*term_keys, "loss_weight"), var_kw)
    defaults = {**params, "every": 1, "scale_by_every": True, "in_total": True}
    _check_types(label, f"loss.{path}", node, defaults, {**expected_types(LOSSES, obj), **TERM_KEY_TYPES})
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
        _check_types(s_label, s_path, sampler, s_params, expected_types(SAMPLERS, s_obj))


def check_loss_config(node: Any, *, allowed_targets: tuple[str, ...] | list[str] = ()) -> None:
    """Check every term node's keys and simple value types against its loss (and sampler).

    Raises:
        LossConfigError: naming the term, the key, what is valid and the closest match.

    >>> check_loss_config({"cls": {"type": "FocalLoss", "gama": 1.5}})
    Traceback (most recent call last):
    ...
    lossmix.errors.LossConfigError: term 'cls' (FocalLoss): unknown key 'gama' ... 'gamma'? ...
    """
    secrets = env_secrets(node)
    with errors_hidden(secrets):
        node = to_plain(node)
        # a stored node (a checkpoint's hyper-parameters) keeps ${oc.env:NAME}: read it now
        node, read = resolve_env_values(node, label=functools.partial(loss_key_label, node))
    with errors_hidden({**read, **secrets}):
        if not isinstance(node, Mapping) or not node:
            raise LossConfigError(
                f"the loss config must map term names to term nodes, e.g. loss/cls=focal; got {node!r}."
            )
        scope = node.get(DEFAULT_SCOPE_KEY)
        if scope is not None:
            LOSSES.check_scope(scope, owner=f"loss.{DEFAULT_SCOPE_KEY}")
        for path, name, child in iter_term_nodes(node):
            _check_term(path, name, child, tuple(allowed_targets), scope)


def build_loss_mix(node: Any, *, allowed_targets: tuple[str, ...] | list[str] = ()) -> LossMix:
    """:func:`check_loss_config`, then :meth:`LossMix.from_config`."""
    check_loss_config(node, allowed_targets=allowed_targets)
    return LossMix.from_config(node, allowed_targets=allowed_targets)


def term_rows(node: Any) -> list[dict[str, str]]:
    """One row per term for tables: term, loss, weight, inputs, sampler, normalizer, every."""
    rows = []
    node = to_plain(node)
    for path, _, child in iter_term_nodes(node):
        sampler = child.get("sampler")
        normalizer = child.get("normalizer")
        if isinstance(sampler, Mapping):
            sampler = ", ".join(f"{k}={v}" for k, v in sampler.items() if v is not None)
        if isinstance(normalizer, Mapping):
            normalizer = ", ".join(f"{k}={v}" for k, v in normalizer.items())
        inputs = child.get("inputs") or child.get("data_info") or {}
        rows.append(
            {
                "term": path,
                "loss": _loss_label(child, node.get(DEFAULT_SCOPE_KEY)),
                "weight": str(child.get("loss_weight", "default")),
                "inputs": ", ".join(f"{k}←{v}" for k, v in inputs.items()),
                "sampler": str(sampler or "-"),
                "normalizer": str(normalizer or "-"),
                "every": str(child.get("every", 1)),
                "in_total": "yes" if child.get("in_total", True) else "no",
            }
        )
    return rows


def _loss_label(child: Mapping[str, Any], mix_scope: Any) -> str:
    """The term's ``type`` as it resolves (``mmagic.L1Loss`` under a default scope), or its target."""
    ref = child.get("type")
    if not isinstance(ref, str):
        return str(child.get("_target_"))
    try:
        return LOSSES.canonical_name(ref, default_scope=child.get(DEFAULT_SCOPE_KEY, mix_scope))
    except LossConfigError:
        return ref


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def explain_override_error(
    err: BaseException,
    overrides: Sequence[str],
    compose: Callable[[Sequence[str]], Any] | None = None,
) -> str | None:
    """For Hydra's "Could not override 'loss.<term>.<key>'", lossmix's own message.

    Composes the config again without that override (with ``compose``: lossmix's training
    config by default, a user's app passes its own) and checks the term with the key
    added, which names the term, the valid keys and the closest one.
    """
    found = re.match(r"Could not override '(loss\.[^']+)'", str(err))
    if not found:
        return None
    key = found.group(1)
    rest = [o for o in overrides if _override_key(o) != key]
    try:
        cfg = (compose or compose_config)(rest)
        trust = AppTrust(cfg, [o for o in rest if not o.startswith("-")])
        lossmix_node = cfg.get("lossmix") or {}
        import_modules(
            lossmix_node.get("imports"), allowed_targets=trust.allowed, granted=trust.imports_granted
        )
        loss = to_plain(cfg.loss)
        parent = loss
        for depth, part in enumerate(key.split(".")[1:-1], start=2):
            parent = parent[part]
            if parent is None:
                return _null_parent_hint(".".join(key.split(".")[:depth]), key)
        parent[key.rsplit(".", 1)[1]] = None
        check_loss_config(loss, allowed_targets=trust.allowed)
    except LossConfigError as explained:
        return str(explained)
    except Exception:  # the original message is still right; only the hint is lost
        return None
    return None


def _null_parent_hint(parent: str, key: str) -> str:
    if parent.endswith(".sampler"):
        return (
            f"{parent} is null, so {key} cannot be set; add a sampler first: "
            f"+sampler@{parent}=random (or ohem, pseudo), then {key}=<value>."
        )
    return f"{parent} is null, so {key} cannot be set; give {parent} a value first."


# -- one-line errors -----------------------------------------------------------------------------
_MISSING = re.compile(
    r"Could not find '([^']+)'.*?Available options in '([^']+)':\s*(.*?)"
    r"(?:Config search path:|$)",
    re.S,
)


#: the pip package behind each of Hydra's launcher plugins the configs name
_PLUGINS = {
    "hydra/launcher/submitit": "hydra-submitit-launcher",
    "hydra/launcher/joblib": "hydra-joblib-launcher",
}


def one_line_error(err: BaseException) -> str:
    """A user-facing error on one line: Hydra's multi-line texts folded, causes appended."""
    text = str(err)
    missing = _MISSING.search(text)
    if missing:
        wanted, group, options = missing.groups()
        listed = ", ".join(options.split())
        plugin = next((p for k, p in _PLUGINS.items() if wanted.startswith(k)), None)
        hint = f" Install the launcher plugin: pip install {plugin}." if plugin else ""
        return f"Could not find '{wanted}'. Available options in '{group}': {listed}.{hint}"
    text = text.split("Config search path:")[0]
    cause = err.__cause__
    if cause is not None and type(cause).__module__.startswith("omegaconf"):
        text += f" ({str(cause).splitlines()[0]})"
    return " ".join(text.split())
