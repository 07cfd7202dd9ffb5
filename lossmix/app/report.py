"""What a run tells at its end: the per-term summary, and a sweep's comparison table.

The summary reads the :class:`~lossmix.lightning.TermLogger`'s last training epoch (means
over the steps each term ran, raw values included) and the validation metrics, so it holds
the same numbers as ``csv/metrics.csv``. Per group it has a total row; each term's share is
its part of the group's mean contribution per step (a lazy term counts on the steps it ran
only, as the total does), in absolute value so that shares add up to 100 % even with a
negative weight or a weighting regulariser.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["SweepReport", "print_summary", "summary_rows", "sweep_rows", "write_sweep_report"]


def _term_rows(
    model: Any, summary: Mapping[str, tuple[float, float]], metrics: Mapping[str, Any]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str | None, str]] = set()
    for group, term in model.loss_mix.all_terms():
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


def summary_rows(trainer: Any, model: Any) -> list[dict[str, Any]]:
    """Per group: a row per term (weight, raw and weighted train means, validation, share) and
    a total row; from the last training epoch's :attr:`TermLogger.epoch_summary`."""
    from lossmix.lightning import TermLogger
    from lossmix.lightning.term_logger import summary_from_metrics

    logger = next((c for c in getattr(trainer, "callbacks", []) if isinstance(c, TermLogger)), None)
    summary = logger.epoch_summary.get("train", {}) if logger is not None else {}
    metrics = trainer.callback_metrics
    # a spawned run (strategy=ddp_spawn) trained in other processes: their summary came back
    # in callback_metrics
    summary = summary or summary_from_metrics(metrics, "train")
    rows = _term_rows(model, summary, metrics)
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


def print_summary(rows: Sequence[Mapping[str, Any]], run_dir: Path) -> None:
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
    console.print(f"Run directory: {run_dir}")


def sweep_rows(sweep_dir: Path) -> list[dict[str, str]]:
    """One row per job of a sweep directory: the overrides that tell it from the other jobs,
    all of its overrides, and its final per-term values.

    Read from each job's ``.hydra/overrides.yaml`` and ``csv/metrics.csv``, so it works
    whatever launcher ran the jobs (in this process, joblib, SLURM).
    """
    from omegaconf import OmegaConf

    jobs = sorted(
        (p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()), key=lambda p: (len(p.name), p.name)
    )
    overrides: list[list[str]] = []
    for job in jobs:
        listed = OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "overrides.yaml")) or []
        assert isinstance(listed, list)
        overrides.append([str(o) for o in listed])
    common = set.intersection(*(set(o) for o in overrides)) if len(overrides) > 1 else set()
    rows = []
    for job, own in zip(jobs, overrides, strict=True):
        row = {
            "job": job.name,
            "overrides": " ".join(o for o in own if o not in common),
            "all_overrides": " ".join(own),
        }
        metrics = job / "csv" / "metrics.csv"
        if metrics.is_file():
            row.update(_final_values(metrics))
        rows.append(row)
    return rows


def _final_values(path: Path) -> dict[str, str]:
    """The last non-empty value of each epoch-level loss column (train epoch means, val)."""
    with path.open() as handle:
        records = list(csv.DictReader(handle))
    final: dict[str, str] = {}
    for record in records:
        for key, value in record.items():
            if (
                value
                and key.startswith(("train/loss", "val/loss"))
                and (key.endswith("_epoch") or key.startswith("val/"))
            ):
                final[key] = value
    return final


def write_sweep_report(sweep_dir: Path, rows: Iterable[Mapping[str, str]] | None = None) -> Path:
    """Print the sweep's comparison table and write it as ``sweep_report.csv``."""
    from rich.console import Console
    from rich.table import Table

    rows = list(rows if rows is not None else sweep_rows(sweep_dir))
    fixed = ("job", "overrides", "all_overrides")
    keys = ["job", "overrides", *sorted({k for r in rows for k in r} - set(fixed)), "all_overrides"]
    path = sweep_dir / "sweep_report.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    table = Table(title=f"lossmix: sweep of {len(rows)} jobs (final epoch values)")
    shown = keys[:-1]  # every job's full command line is in the CSV
    for key in shown:
        table.add_column(key.removesuffix("_epoch"), overflow="fold")
    for row in rows:
        table.add_row(*(_short(row.get(k, "")) for k in shown))
    console = Console(width=max(Console().width, 120))
    console.print(table)
    if rows:
        common = [
            o for o in rows[0].get("all_overrides", "").split() if o not in rows[0]["overrides"].split()
        ]
        if common:
            console.print(f"Every job also had: {' '.join(common)}", markup=False, highlight=False)
    print(f"Sweep report: {path}")
    return path


def _short(value: str) -> str:
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value


def _hydra_callback_base() -> type:
    from hydra.experimental.callback import Callback

    return Callback


class SweepReport(_hydra_callback_base()):  # type: ignore[misc]  # Hydra's Callback, untyped
    """A Hydra callback: at the end of a multirun, the table of every job's overrides and
    final per-term values, in the terminal and as ``<sweep dir>/sweep_report.csv``."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if sweep_dir.is_dir() and any(p.is_dir() for p in sweep_dir.iterdir()):
            write_sweep_report(sweep_dir)
