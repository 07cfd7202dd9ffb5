"""The curves PNG every loop writes: each term's step curve, the validation means, the weights.

Drawn from a :attr:`~lossmix.loops.term_log.TermLog.history` (key → ``[[step, value], ...]``,
the values the logger already read: no extra host sync), by the Lightning
:class:`~lossmix.lightning.LossCurves` callback and by :meth:`lossmix.loops.LoopLogger.finish`.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossmix.utilities.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_loss_curves"]


_Curves = dict[str, list[list[float]]]
"""Term name → ``[[step, value], ...]``."""

_PANEL_KINDS = ("loss", "weight", "grad_norm")


def _curves(history: _Curves, prefix: str) -> _Curves:
    return {
        k[len(prefix) :]: v for k, v in history.items() if k.startswith(prefix) and not k.endswith("_epoch")
    }


def _group_of(name: str) -> str | None:
    """``disc/r1`` → ``disc``; a flat term → ``None``."""
    return name.split("/", 1)[0] if "/" in name else None


def _panels(history: _Curves, stage: str) -> list[tuple[str, str | None, _Curves]]:
    """``(kind, group, curves)``: one panel per kind (loss, weight, grad_norm) and group.

    A group's own total (``train/loss/disc``) is drawn in its group's panel as ``total``.
    """
    groups = {_group_of(k[len(f"{stage}/loss/") :]) for k in history if k.startswith(f"{stage}/loss/")}
    groups |= {
        n
        for n in (k[len(f"{stage}/loss/") :] for k in history if k.startswith(f"{stage}/loss/"))
        if "/" not in n and any(k.startswith(f"{stage}/loss/{n}/") for k in history)
    }
    panels: list[tuple[str, str | None, _Curves]] = []
    for kind in _PANEL_KINDS:
        curves = _curves(history, f"{stage}/{kind}/")
        for group in sorted(g for g in groups | {_group_of(n) for n in curves} if g is not None):
            own = {
                ("total" if n == group else n.split("/", 1)[1]): v
                for n, v in curves.items()
                if n == group or _group_of(n) == group
            }
            if own:
                panels.append((kind, group, own))
        flat = {n: v for n, v in curves.items() if _group_of(n) is None and n not in groups}
        if flat:
            panels.append((kind, None, flat))
    return panels


_PALETTE = [
    f"tab:{c}" for c in ("blue", "orange", "green", "red", "purple", "brown", "pink", "gray", "olive", "cyan")
]


def _colours(names: set[str]) -> dict[str, str]:
    """One colour per term name, from a hash of the name, so a term keeps its colour across
    runs and panels whatever other terms there are (a clash takes the next free colour)."""
    colours: dict[str, str] = {}
    for name in sorted(names, key=lambda n: (zlib.crc32(n.encode()), n)):
        start = zlib.crc32(name.encode()) % len(_PALETTE)
        taken = set(colours.values())
        free = [c for c in _PALETTE[start:] + _PALETTE[:start] if c not in taken]
        colours[name] = free[0] if free else _PALETTE[start]
    return colours


def _log_scale(kind: str, *groups: _Curves) -> bool:
    """A log y-axis for a loss or grad_norm panel whose term values are all > 0 (a weighting's
    regulariser, which may be negative, does not decide it)."""
    values = [
        p[1] for curves in groups for name, points in curves.items() if name != "weighting" for p in points
    ]
    return kind != "weight" and bool(values) and all(v > 0 for v in values)


def _plot(ax: Axes, points: list[list[float]], colour: str, label: str, **style: Any) -> None:
    ax.plot([p[0] for p in points], [p[1] for p in points], color=colour, label=label, **style)


def _draw_panel(
    ax: Axes,
    kind: str,
    group: str | None,
    curves: _Curves,
    val: _Curves,
    colours: dict[str, str],
    stage: str,
) -> None:
    """One panel: ``stage``'s curves, solid, and ``val``'s epoch means, dashed with markers;
    the legend beside the axes, never over the curves."""
    prefix = f"{group}/" if group else ""
    for name, points in sorted(curves.items()):
        _plot(ax, points, colours[prefix + name], f"{stage}/{prefix}{name}")
    for name, points in sorted(val.items()):
        _plot(ax, points, colours[prefix + name], f"val/{prefix}{name}", linestyle="--", marker="o")
    if _log_scale(kind, curves, val):
        ax.set_yscale("log")
    label = f"{kind} (weighted)" if kind == "loss" else kind
    ax.set_ylabel(f"{group}: {label}" if group else label)
    if curves or val:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(alpha=0.3)


def _first_non_finite(history: _Curves, stage: str) -> int | None:
    """The first step at which any of ``stage``'s logged values is NaN or inf."""
    steps = [
        int(p[0])
        for k, points in history.items()
        if k.startswith(f"{stage}/") and not k.endswith("_epoch")
        for p in points
        if not math.isfinite(p[1])
    ]
    return min(steps) if steps else None


def _mark_non_finite(ax: Axes, step: int) -> None:
    ax.axvline(step, color="red", linestyle=":", linewidth=1.5, label=f"non-finite from step {step}")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _save(fig: Figure, path: str | Path) -> Path:
    """Write the PNG whole or not at all (a full disk keeps the previous one); a failed write
    raises its ``OSError`` with ``path`` as its file name, so the message can name it."""
    path = Path(path)
    image_format = path.suffix[1:] or "png"
    try:
        return atomic_write(path, lambda handle: fig.savefig(handle, format=image_format, dpi=100))
    except OSError as err:
        if err.filename is not None:
            raise
        raise OSError(err.errno, err.strerror, str(path)) from err


def plot_loss_curves(
    history: dict[str, list[list[float]]],
    path: str | Path,
    stage: str = "train",
    non_finite_from: int | None = None,
) -> Path | None:
    """Draw ``{stage}/loss/*``, ``{stage}/weight/*`` and ``{stage}/grad_norm/*`` step curves.

    The loss panel also shows the validation epoch means (``val/loss/*``, dashed,
    with markers, in the colour of the same term) at the step they were logged. Where a
    value went NaN or inf (the first logged one, or ``non_finite_from`` if earlier), every
    panel has a red dotted line, "non-finite from step N".

    Args:
        history: ``TermLogger.history``: key → ``[[step, value], ...]``.
        path: the PNG to write.
        stage: which stage's step values to draw.
        non_finite_from: the step a guard stopped at (it may not have been logged).

    Returns:
        the path written, or ``None`` when there was nothing to draw.
    """
    from matplotlib.figure import Figure

    panels = _panels(history, stage)
    logged = _first_non_finite(history, stage)
    marks = [s for s in (logged, non_finite_from) if s is not None]
    mark = min(marks) if marks else None
    if not panels:
        if mark is None:
            return None
        panels = [("loss", None, {})]  # stopped before any value was logged: the mark alone
    val = _curves(history, "val/loss/") if stage != "val" else {}
    fig = Figure(figsize=(10, 3.0 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)
    names = {(f"{g}/" if g else "") + n for _, g, curves in panels for n in curves} | set(val)
    colours = _colours(names)
    for ax, (kind, group, curves) in zip(axes[:, 0], panels, strict=True):
        own_val = {}
        if kind == "loss":
            own_val = {
                ("total" if n == group else n.split("/", 1)[1] if group else n): v
                for n, v in val.items()
                if (group is None and _group_of(n) is None) or n == group or _group_of(n) == group
            }
        _draw_panel(ax, kind, group, curves, own_val, colours, stage)
        if mark is not None:
            _mark_non_finite(ax, mark)
    axes[0, 0].set_title("lossmix: loss terms")
    axes[-1, 0].set_xlabel("step")
    return _save(fig, path)
