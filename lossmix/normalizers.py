"""Named ``avg_factor`` sources (step 4's divisor), instead of ad-hoc factors in every head.

================  ==============================================================
``num_pos``       positives (the sampler's, else counted from the target)
``num_sampled``   positives + negatives chosen by the sampler (all, without one)
``weight_sum``    sum of the term's effective element weight (torch's weighted mean)
``numel``         number of elements of ``pred``
``batch``         ``pred.shape[0]``
any other name    an input key holding a count (a number or a 0-dim tensor); a name
                  close to a built-in one is taken for a typo: write
                  ``{type: key, key: <name>}`` for such a key
================  ==============================================================

Counts are clamped to at least ``min`` (1 by default, as every detector does); a
``weight_sum`` or key normaliser is clamped to ``min`` (default ``1e-6``, FCOS's
centerness floor). ``sync: true`` averages the value over distributed ranks
before clamping (anchor-free detectors' ``reduce_mean``); all synced
normalisers of a step share one collective (see :func:`all_reduce_mean`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from lossmix.distributed import all_reduce_mean
from lossmix.errors import LossConfigError, did_you_mean
from lossmix.validation import check_bool, check_float

__all__ = ["BUILTIN_NORMALIZERS", "Normalizer", "all_reduce_mean", "build_normalizer"]

BUILTIN_NORMALIZERS: tuple[str, ...] = ("num_pos", "num_sampled", "weight_sum", "numel", "batch")
_COUNTS = ("num_pos", "num_sampled", "numel", "batch")
_KEYS = ("type", "sync", "min", "key")
KEY_TYPE = "key"


@dataclass(frozen=True)
class Normalizer:
    """Where a term's ``avg_factor`` comes from, whether it is averaged over ranks, its floor."""

    source: str
    sync: bool = False
    min: float = 1.0

    @property
    def is_key(self) -> bool:
        """True when the value is read from an input key rather than computed."""
        return self.source not in BUILTIN_NORMALIZERS

    def clamp(self, value: Tensor) -> Tensor:
        """Apply the floor (no host sync)."""
        return value.clamp(min=self.min)


def _source(node: Mapping[str, Any], term: str) -> str:
    """The built-in name or input key; a name close to a built-in is a typo, not a key."""
    kind = node["type"]
    if kind == KEY_TYPE:
        key = node.get("key")
        if not isinstance(key, str) or not key:
            raise LossConfigError(
                f"term '{term}': normalizer type: key needs key: <the input key holding a count>, "
                "e.g. {type: key, key: num_total_pos}."
            )
        return key
    if "key" in node:
        raise LossConfigError(
            f"term '{term}': normalizer key: {node['key']!r} goes with type: key, not type: {kind}."
        )
    hint = did_you_mean(kind, BUILTIN_NORMALIZERS)
    if kind not in BUILTIN_NORMALIZERS and hint:
        raise LossConfigError(
            f"term '{term}': normalizer '{kind}' is not a built-in normaliser.{hint} Built-in: "
            f"{', '.join(BUILTIN_NORMALIZERS)}; for an input key of that name write "
            f"{{type: key, key: {kind}}}."
        )
    return str(kind)


def build_normalizer(node: Any, *, term: str) -> Normalizer | None:
    """Build from ``"num_pos"`` or ``{type: num_pos, sync: true, min: 1}``; ``None`` passes through.

    >>> build_normalizer({"type": "num_pos", "sync": True}, term="cls")
    Normalizer(source='num_pos', sync=True, min=1.0)
    """
    if node is None:
        return None
    if isinstance(node, str):
        node = {"type": node}
    if not isinstance(node, Mapping):
        raise LossConfigError(
            f"term '{term}': normalizer={node!r} is not valid; give a name such as 'num_pos' or "
            f"{{type: num_pos, sync: true}}. Built-in names: {', '.join(BUILTIN_NORMALIZERS)}, "
            "or an input key holding a count."
        )
    unknown = [k for k in node if k not in _KEYS]
    if unknown or "type" not in node or not isinstance(node["type"], str) or not node["type"]:
        raise LossConfigError(
            f"term '{term}': normalizer {dict(node)!r} is not valid; its keys are {list(_KEYS)} "
            f"with type one of {', '.join(BUILTIN_NORMALIZERS)}, or type: key with key: <input key>."
        )
    source = _source(node, term)
    floor = node.get("min", 1.0 if source in _COUNTS else 1e-6)
    floor = check_float(f"term '{term}': normalizer", "min", floor, low=0.0)
    sync = check_bool(f"term '{term}': normalizer", "sync", node.get("sync", False))
    return Normalizer(source=source, sync=sync, min=floor)
