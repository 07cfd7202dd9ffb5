"""The end of a lossmix Optuna sweep: its Pareto front, printed, drawn and written.

A trial is on the front when no other finished trial is at least as good on every objective
and better on one (Optuna's ``study.best_trials``). Written to the sweep directory:
``pareto_front.csv`` (the front's trials: number, parameters, objectives) and
``pareto_front.png`` (every finished trial on the first two objectives, the front joined).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["front_rows", "write_pareto_report"]


def front_rows(study: Any, objectives: Sequence[str]) -> list[dict[str, Any]]:
    """One row per trial of the Pareto front, best first on the first objective."""
    front = sorted(study.best_trials, key=lambda t: t.values[0])
    return [{"trial": t.number, **t.params, **dict(zip(objectives, t.values, strict=True))} for t in front]


def _plot(study: Any, objectives: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front = sorted(study.best_trials, key=lambda t: t.values[0])
    figure, axes = plt.subplots(figsize=(5.5, 4.5))
    if len(objectives) == 1:
        axes.plot([t.number for t in done], [t.values[0] for t in done], "o", color="0.6", label="trials")
        axes.plot([t.number for t in front], [t.values[0] for t in front], "o", color="C3", label="best")
        axes.set_xlabel("trial")
        axes.set_ylabel(objectives[0])
    else:
        axes.plot([t.values[0] for t in done], [t.values[1] for t in done], "o", color="0.6", label="trials")
        joined = "o-" if len(objectives) == 2 else "o"  # a front of 3+ objectives is no curve in 2-D
        axes.plot(
            [t.values[0] for t in front],
            [t.values[1] for t in front],
            joined,
            color="C3",
            label="Pareto front",
        )
        for t in front:
            axes.annotate(
                str(t.number),
                (t.values[0], t.values[1]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        axes.set_xlabel(objectives[0])
        axes.set_ylabel(objectives[1])
    axes.legend()
    shown = "" if len(objectives) <= 2 else f" (first 2 of {len(objectives)} objectives)"
    axes.set_title(f"{len(done)} finished trials, {len(front)} on the front{shown}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_pareto_report(study: Any, objectives: Sequence[str], sweep_dir: Path) -> list[dict[str, Any]]:
    """Print the front as a table and write ``pareto_front.csv`` and ``pareto_front.png``.

    Returns:
        the front's rows (:func:`front_rows`); empty when no trial finished.
    """
    from rich.console import Console
    from rich.table import Table

    rows = front_rows(study, objectives) if _finished(study) else []
    console = Console(width=max(Console().width, 120))
    if not rows:
        console.print("lossmix sweep: no trial finished, so there is no Pareto front.")
        return rows
    sweep_dir.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with (sweep_dir / "pareto_front.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    _plot(study, objectives, sweep_dir / "pareto_front.png")
    table = Table(title=f"lossmix sweep: Pareto front ({len(rows)} of {_finished(study)} finished trials)")
    for key in keys:
        table.add_column(key, justify="right", overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(k)) for k in keys))
    console.print(table)
    console.print(
        f"Pareto front: {sweep_dir / 'pareto_front.csv'}, {sweep_dir / 'pareto_front.png'}", highlight=False
    )
    return rows


def _finished(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
