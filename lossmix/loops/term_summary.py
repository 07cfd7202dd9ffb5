"""The end-of-run per-term summary: one table, whichever loop trained the mix.

It reads the last training epoch's means (:attr:`~lossmix.loops.term_log.TermLog.epoch_summary`,
raw values included: means over the steps each term ran) and the latest logged values
(validation means, learned weights). Per group it has a total row; each term's share is
its part of the group's mean contribution per step (a lazy term counts on the steps it ran
only, as the total does), in absolute value so that shares add up to 100 % even with a
negative weight or a weighting regulariser.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lossmix.mix.loss_mix import LossMix

__all__ = ["print_summary", "term_summary"]


def _term_rows(
    mix: LossMix, summary: Mapping[str, tuple[float, float]], metrics: Mapping[str, Any]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str | None, str]] = set()
    for group, term in mix.all_terms():
        scope = f"/{group}" if group else ""
        log_name = getattr(term, "log_name", term.name)  # terms sharing a loss_name: one row
        names = sorted(
            k.split("/")[-1]
            for k in summary
            if k.startswith(f"train/loss{scope}/")
            and k.split("/")[-1].split(".")[0] == log_name
            and k.count("/") == (3 if group else 2)
        ) or [log_name]
        for name in names:
            if (group, name) in seen:
                continue
            seen.add((group, name))
            mean, count = summary.get(f"train/loss{scope}/{name}", (None, 0.0))
            weight_key = f"train/weight{scope}/{name}"
            every = f" ×{term.every}" if term.every > 1 and term.scale_by_every else ""
            weight = _metric(metrics, weight_key) if weight_key in metrics else term.weight
            rows.append(
                {
                    "group": group,
                    "term": f"{group}/{name}" if group else name,
                    "weight": f"{weight:g}{every}",
                    "raw": summary.get(f"train/raw{scope}/{name}", (None, 0.0))[0],
                    "train": mean,
                    "count": count,
                    "in_total": term.in_total,
                    "val": _metric(metrics, f"val/loss{scope}/{name}"),
                }
            )
    return rows


def _metric(metrics: Mapping[str, Any], key: str) -> float | None:
    """The metric's value (NaN when the run logged NaN), or ``None`` when it was not logged."""
    value = metrics.get(key)
    return None if value is None else float(value)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def term_summary(
    mix: LossMix, summary: Mapping[str, tuple[float, float]], metrics: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Per group: a row per term (weight, raw and weighted train means, validation, share) and
    a total row.

    Args:
        mix: the loss mix the run trained.
        summary: the last training epoch's ``{key: (mean, count)}``
            (:attr:`TermLog.epoch_summary` ``["train"]``).
        metrics: the latest logged values (``val/loss/...``, ``train/weight/...``).
    """
    rows = _term_rows(mix, summary, metrics)
    out: list[dict[str, Any]] = []
    for group in dict.fromkeys(r["group"] for r in rows):
        scope = f"/{group}" if group else ""
        own = [r for r in rows if r["group"] == group]
        if group is None and f"train/loss{scope}/weighting" in summary:
            mean, count = summary[f"train/loss{scope}/weighting"]
            own.append(
                {
                    "group": None,
                    "term": "weighting",
                    "weight": "1",
                    "raw": mean,
                    "train": mean,
                    "count": count,
                    "in_total": True,
                    "val": _metric(metrics, "val/loss/weighting"),
                }
            )
        total_mean, total_count = summary.get(f"train/loss{scope}", (None, 0.0))
        per_step = {
            id(r): abs(r["train"]) * r["count"] / total_count
            if total_count and r["in_total"] and _finite(r["train"])
            else None
            for r in own
        }
        whole = sum(v for v in per_step.values() if v is not None)
        for row in own:
            share = per_step[id(row)]
            out.append({**row, "share": 100.0 * share / whole if whole and share is not None else None})
        out.append(
            {
                "group": group,
                "term": f"{group} total" if group else "total",
                "weight": "",
                "raw": None,
                "train": total_mean,
                "count": total_count,
                "in_total": True,
                "val": _metric(metrics, f"val/loss{scope}"),
                "share": 100.0 if whole else None,
                "total": True,
            }
        )
    return out


def _fmt(value: float | None, spec: str) -> str:
    """``-`` for a value the run did not log; a logged NaN or inf as ``nan``/``inf``."""
    return "-" if value is None else format(value, spec)


def print_summary(rows: Sequence[Mapping[str, Any]], run_dir: str | Path | None = None) -> None:
    """The per-term table (rich, wrapping rather than truncating) and where the run's files are."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="lossmix: per-term summary (train = last epoch mean over the steps a term ran)")
    columns = ("term", "weight", "raw", "weighted", "val", "share of |total|")
    for column in columns:
        table.add_column(column, justify="left" if column == "term" else "right", overflow="fold")
    for row in rows:
        share = _fmt(row["share"], ".1f") + ("" if row["share"] is None else " %")
        cells = (
            row["term"],
            str(row["weight"]),
            _fmt(row["raw"], ".4f"),
            _fmt(row["train"], ".4f"),
            _fmt(row["val"], ".4f"),
            share,
        )
        table.add_row(*cells, style="bold" if row.get("total") else None, end_section=bool(row.get("total")))
    console = Console(width=max(Console().width, 100))
    console.print(table)
    if run_dir is not None:
        console.print(f"Run directory: {run_dir}")
