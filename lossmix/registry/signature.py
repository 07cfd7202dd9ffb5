"""What a constructor's arguments accept, read from its signature: the one place the
simple types of a node's values are worked out and checked.

Used for a term's loss and sampler (:func:`lossmix.mix.keys.check_term_node`) and for the
app's other nodes (``trainer.max_epochs=abc``): the message names the key, the value's type
and what the argument takes, before the constructor fails deeper.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Mapping
from typing import Any

from lossmix.errors import LossConfigError, did_you_mean
from lossmix.registry.registry import REQUIRED, Registry

__all__ = ["check_node_values", "check_value_types", "expected_types", "fits", "literal", "type_names"]

_SIMPLE = (bool, int, float, str, type(None))


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
        if key in node and allowed is not None and not fits(node[key], allowed):
            raise LossConfigError(
                f"{path}.{key}={node[key]!r} is a {type(node[key]).__name__}, but {key} expects "
                f"{type_names(allowed)}; e.g. {path}.{key}={_example(allowed, params.get(key))}."
            )


def literal(value: Any) -> str:
    """``value`` as it is written on the command line (``null``, ``true``, ``2.0``)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


def _example(allowed: tuple[type, ...], default: Any) -> str:
    if default is not REQUIRED and default is not None:
        return str(default)
    return {bool: "true", int: "1", float: "1.0", str: "name"}.get(allowed[0], "null")


def fits(value: Any, allowed: tuple[type, ...] | None) -> bool:
    if allowed is None:
        return True
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int):
        return int in allowed or float in allowed
    if isinstance(value, (float, str)) or value is None:
        return type(value) in allowed
    return object in allowed


def type_names(allowed: tuple[type, ...]) -> str:
    names = {
        bool: "bool (true/false)",
        int: "int",
        float: "float",
        str: "str",
        type(None): "null",
        object: "a list or mapping",
    }
    return " or ".join(names[t] for t in allowed)


def check_value_types(
    label: str,
    path: str,
    node: Mapping[str, Any],
    params: dict[str, Any],
    types_: dict[str, tuple[type, ...] | None],
) -> None:
    """Each simple value of ``node`` fits its argument's types, or a message naming the fix."""
    for key, allowed in types_.items():
        if key in node and allowed is not None and not fits(node[key], allowed):
            value, default = node[key], params.get(key, REQUIRED)
            shown = literal(default)
            example = "" if default is REQUIRED else f" (default {shown}): e.g. {path}.{key}={shown}"
            raise LossConfigError(
                f"{label}: {key}={value!r} is a {type(value).__name__}, but {key} expects "
                f"{type_names(allowed)}{example}."
            )
