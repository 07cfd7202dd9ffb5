"""What a run tells at its end: the per-term summary, and a sweep's comparison table.

The summary (:func:`lossmix.loops.term_summary.term_summary`, the same table every loop
prints) reads the :class:`~lossmix.lightning.TermLogger`'s last training epoch and the
validation metrics, so it holds the same numbers as ``csv/metrics.csv``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lossmix.loops.term_summary import print_summary, term_summary

__all__ = ["SweepReport", "print_summary", "summary_rows", "sweep_rows", "write_sweep_report"]


def summary_rows(trainer: Any, model: Any) -> list[dict[str, Any]]:
    """:func:`~lossmix.loops.term_summary.term_summary` of a Lightning run: the trainer's
    :class:`~lossmix.lightning.TermLogger` epoch means and ``callback_metrics``."""
    from lossmix.lightning import TermLogger
    from lossmix.lightning.term_logger import summary_from_metrics

    logger = next((c for c in getattr(trainer, "callbacks", []) if isinstance(c, TermLogger)), None)
    summary = logger.epoch_summary.get("train", {}) if logger is not None else {}
    # a spawned run (strategy=ddp_spawn) trained in other processes: their summary came back
    # in callback_metrics
    summary = summary or summary_from_metrics(trainer.callback_metrics, "train")
    return term_summary(model.loss_mix, summary, trainer.callback_metrics)


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
