"""Routing (``inputs:``): where each loss argument of a term comes from.

A source is a key looked up in the model outputs or the batch. Nested mappings
(and sequences, by index) are reached with a dotted path (``head.cls``,
``targets.0``); the prefixes ``outputs.`` and ``batch.`` choose the side. An
unprefixed key is looked up in the outputs first, then in the batch; a key
present in both must be prefixed. Non-string values in ``inputs`` are passed as
constants (``target_is_real: true``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lossmix.errors import LossInputError

__all__ = ["describe_keys", "lookup", "own_key"]

_MISSING = object()


def _walk(container: Any, parts: list[str]) -> Any:
    node = container
    for part in parts:
        if isinstance(node, Mapping):
            node = node.get(part, _MISSING)
        elif isinstance(node, Sequence) and not isinstance(node, str) and part.lstrip("-").isdigit():
            index = int(part)
            node = node[index] if -len(node) <= index < len(node) else _MISSING
        else:
            node = getattr(node, part, _MISSING) if part and not part.startswith("_") else _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def describe_keys(container: Any) -> str:
    """The keys a user could have meant, for error messages."""
    if isinstance(container, Mapping):
        return ", ".join(map(str, container)) or "(empty)"
    if isinstance(container, Sequence) and not isinstance(container, str):
        return f"indices 0..{len(container) - 1}" if len(container) else "(empty)"
    return f"(a {type(container).__name__}, not a mapping)"


def own_key(outputs: Any, batch: Any, key: str) -> tuple[bool, Any]:
    """``(True, value)`` when ``key`` is a top-level key of exactly one of the outputs and the
    batch (how an optional loss argument is found by its own name), else ``(False, None)``."""
    in_outputs = key in outputs if type(outputs) is dict else isinstance(outputs, Mapping) and key in outputs
    in_batch = key in batch if type(batch) is dict else isinstance(batch, Mapping) and key in batch
    if in_outputs == in_batch:
        return False, None
    return True, outputs[key] if in_outputs else batch[key]


def lookup(outputs: Any, batch: Any, key: str, *, term: str, arg: str) -> Any:
    """Return the value ``key`` names, or raise :class:`LossInputError` naming term and key."""
    if type(outputs) is dict and (batch is None or type(batch) is dict) and "." not in key:
        # the common case, a plain key and plain dicts: two lookups (the rules below say the same)
        found = outputs.get(key, _MISSING)
        in_batch = _MISSING if batch is None else batch.get(key, _MISSING)
        if found is _MISSING:
            found, in_batch = in_batch, _MISSING
        if found is not _MISSING and in_batch is _MISSING:
            return found
    side, _, rest = key.partition(".")
    if side in ("outputs", "batch") and rest:
        value = _walk(outputs if side == "outputs" else batch, rest.split("."))
        where = f"the {side}"
    else:
        parts = key.split(".")
        from_outputs, from_batch = _walk(outputs, parts), _walk(batch, parts)
        if from_outputs is not _MISSING and from_batch is not _MISSING:
            raise LossInputError(
                f"term '{term}': input '{arg}' key '{key}' is in both the outputs and the batch; "
                f"write 'outputs.{key}' or 'batch.{key}'."
            )
        value = from_outputs if from_outputs is not _MISSING else from_batch
        where = "the outputs or the batch"
    if value is _MISSING:
        raise LossInputError(
            f"term '{term}': input '{arg}' wants key '{key}', which is not in {where}. "
            f"Output keys: {describe_keys(outputs)}; batch keys: {describe_keys(batch)}. "
            f"Fix the term's inputs.{arg} or what the model returns."
        )
    return value
