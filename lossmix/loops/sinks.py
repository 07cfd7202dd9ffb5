"""Where a :class:`~lossmix.loops.LoopLogger` sends the values it read: any loop's own logger.

A sink is one of:

- a callable taking a ``{key: float}`` dict, and ``step=`` when its signature has it:
  ``fabric.log_dict``, ``wandb.log``, ``accelerator.log``, ``print``;
- an object with ``add_scalar(tag, value, global_step)``: a TensorBoard ``SummaryWriter``;
- a path (``str`` or :class:`~pathlib.Path`) ending in ``.csv``: a :class:`CsvSink`.
"""

from __future__ import annotations

import csv
import inspect
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lossmix.errors import LossConfigError

__all__ = ["CsvSink", "Sink", "as_sink"]

Sink = Callable[[Mapping[str, float], int], None]
"""``sink(values, step)``: what :func:`as_sink` makes of each accepted kind."""


class CsvSink:
    """A CSV file of ``step`` and one column per key, Lightning's ``metrics.csv`` layout.

    A row is appended per call; when a call brings a key the file has no column for, the
    file is rewritten with the wider header (the earlier rows keep empty cells there).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.columns: list[str] = ["step"]
        self.rows: list[dict[str, Any]] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("step\n")

    def __call__(self, values: Mapping[str, float], step: int) -> None:
        row = {"step": step, **{k: _cell(v) for k, v in values.items()}}
        self.rows.append(row)
        added = [k for k in values if k not in self.columns]
        if added:
            self.columns += added
            with self.path.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.columns)
                writer.writeheader()
                writer.writerows(self.rows)
            return
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.columns).writerow(row)


def _cell(value: float) -> float | str:
    return "" if math.isnan(value) else value


def as_sink(target: Any) -> Sink:
    """``target`` as a :data:`Sink` (see the module's list); a clear error for anything else."""
    if isinstance(target, (str, Path)):
        if not str(target).endswith(".csv"):
            raise LossConfigError(
                f"LoopLogger: sink '{target}' is a path that does not end in .csv; give a .csv "
                "file, a callable such as fabric.log_dict, or a SummaryWriter."
            )
        return CsvSink(target)
    add_scalar = getattr(target, "add_scalar", None)
    if callable(add_scalar):

        def scalars(values: Mapping[str, float], step: int) -> None:
            for key, value in values.items():
                add_scalar(key, value, global_step=step)

        return scalars
    if callable(target):
        if _takes_step(target):
            return lambda values, step: target(dict(values), step=step)
        return lambda values, step: target(dict(values))
    raise LossConfigError(
        f"LoopLogger: a sink must be a callable taking a dict (fabric.log_dict, wandb.log), an "
        f"object with add_scalar (a SummaryWriter) or a .csv path; got {type(target).__name__}."
    )


def _takes_step(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature (print): no step
        return False
    return any(p.name == "step" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
