"""The catalog: every registered loss, sampler, task weighting and gradient aggregator, with
its arguments, defaults, inputs and shapes.

One source for ``lossmix list`` (a terminal table) and the documentation's catalog page (Markdown,
generated when the site is built), so neither can drift from the registries.

>>> entry = next(e for e in catalog_entries(LOSSES) if e.name == "GIoULoss")
>>> [i.name for i in entry.inputs][:2]
['pred', 'target']
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lossmix.losses.base import CALL_KEYS
from lossmix.losses.wrappers import LossInput, loss_inputs
from lossmix.registry.registry import AGGREGATORS, LOSSES, SAMPLERS, WEIGHTINGS, EntryInfo, Registry

__all__ = ["CATALOG_SECTIONS", "CatalogEntry", "catalog_entries", "catalog_markdown", "input_names"]

#: (registry, section title, how a config uses an entry)
CATALOG_SECTIONS: tuple[tuple[Registry, str, str], ...] = (
    (LOSSES, "Losses", "a term node: `type: <name>`"),
    (SAMPLERS, "Samplers", "a term's `sampler: {type: <name>, ...}`"),
    (WEIGHTINGS, "Task weightings", "`weighting: {type: <name>, ...}` beside the terms"),
    (AGGREGATORS, "Gradient aggregators", "`aggregation: {type: <name>, ...}` beside the terms"),
)


@dataclass(frozen=True)
class CatalogEntry:
    """One registered entry as the catalog shows it."""

    info: EntryInfo
    inputs: tuple[LossInput, ...] = ()
    returns: str = ""
    doc: str = field(default="", repr=False)

    @property
    def name(self) -> str:
        """The registered name."""
        return str(self.info.name)

    def format_params(self) -> str:
        """``gamma=2.0, alpha=0.25, num=<required>`` (``no arguments`` when empty)."""
        return self.info.format_params() or "no arguments"


def input_names(inputs: Iterable[LossInput]) -> str:
    """``pred, target, ignore_index?``: a loss's own inputs (``?``: optional), without the
    template's call keys (``weight``, ``avg_factor``, ``reduction_override``)."""
    return ", ".join(i.name + ("" if i.required else "?") for i in inputs if i.name not in CALL_KEYS)


def catalog_entries(registry: Registry) -> list[CatalogEntry]:
    """Every entry of ``registry``, sorted by name; a loss with its inputs and output shape."""
    entries = []
    for info in registry.describe_all():
        obj = registry.get(info.name)
        inputs: tuple[LossInput, ...] = ()
        returns = ""
        if registry is LOSSES:
            inputs = tuple(loss_inputs(obj))
            shapes = obj.input_shapes() if hasattr(obj, "input_shapes") else {}
            returns = str(shapes.get("returns", ""))
        entries.append(
            CatalogEntry(
                info=info,
                inputs=inputs,
                returns=returns,
                doc=inspect.getdoc(obj) or "",
            )
        )
    return entries


def _cell(text: Any) -> str:
    """A Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _entry_markdown(entry: CatalogEntry, usage: str) -> list[str]:
    lines = [f"### {entry.name}", ""]
    info = entry.info
    aliases = f" · aliases: {', '.join(f'`{a}`' for a in info.aliases)}" if info.aliases else ""
    lines += [f"`{info.target}`{aliases}", "", _cell(info.summary), ""]
    lines += [f"**Arguments** (defaults): `{_cell(entry.format_params())}`", ""]
    if entry.inputs:
        lines += ["| input | required | shape, dtype, meaning |", "|---|---|---|"]
        for item in entry.inputs:
            required = "yes" if item.required else f"no (`{item.default!r}`)"
            lines.append(f"| `{item.name}` | {required} | {_cell(item.description) or '-'} |")
        lines.append("")
    if entry.returns:
        lines += [f"Returns with `reduction='none'`: {_cell(entry.returns)}", ""]
    lines += [f"Use: {usage.replace('<name>', entry.name)}.", ""]
    return lines


def catalog_markdown() -> str:
    """The catalog page's body: one section per registry, one subsection per entry."""
    lines: list[str] = []
    for registry, title, usage in CATALOG_SECTIONS:
        lines += [f"## {title} ({len(registry)})", ""]
        for entry in catalog_entries(registry):
            lines += _entry_markdown(entry, usage)
    return "\n".join(lines)
