"""``LossCurves``: a PNG of every term's curve and of the effective weights."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

from lossmix.lightning.logging import TermLogger

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["LossCurves", "plot_loss_curves"]


_Curves = dict[str, list[list[float]]]
"""Term name → ``[[step, value], ...]``."""

_PANEL_KINDS = ("loss", "weight", "grad_norm")


def _curves(history: _Curves, prefix: str) -> _Curves:
    return {
        k[len(prefix) :]: v for k, v in history.items() if k.startswith(prefix) and not k.endswith("_epoch")
    }


def _panels(history: _Curves, stage: str) -> list[tuple[str, _Curves]]:
    """``(kind, curves)`` for each of loss, weight and grad_norm that ``stage`` logged."""
    panels = [(kind, _curves(history, f"{stage}/{kind}/")) for kind in _PANEL_KINDS]
    return [(kind, curves) for kind, curves in panels if curves]


def _colours(panels: list[tuple[str, _Curves]], val: _Curves) -> dict[str, str]:
    """One colour per term, the same in every panel and for its validation curve."""
    names = sorted({n for _, curves in panels for n in curves} | set(val))
    return {n: f"C{i % 10}" for i, n in enumerate(names)}


def _log_scale(kind: str, *groups: _Curves) -> bool:
    """A log y-axis for a loss or grad_norm panel whose values are all > 0."""
    values = [p[1] for curves in groups for points in curves.values() for p in points]
    return kind != "weight" and bool(values) and all(v > 0 for v in values)


def _plot(ax: Axes, points: list[list[float]], colour: str, label: str, **style: Any) -> None:
    ax.plot([p[0] for p in points], [p[1] for p in points], color=colour, label=label, **style)


def _draw_panel(
    ax: Axes, kind: str, curves: _Curves, val: _Curves, colours: dict[str, str], stage: str
) -> None:
    """One panel: ``stage``'s curves, solid, and ``val``'s epoch means, dashed with markers."""
    for name, points in sorted(curves.items()):
        _plot(ax, points, colours[name], f"{stage}/{name}")
    for name, points in sorted(val.items()):
        _plot(ax, points, colours[name], f"val/{name}", linestyle="--", marker="o")
    if _log_scale(kind, curves, val):
        ax.set_yscale("log")
    ax.set_ylabel(f"{kind} (weighted)" if kind == "loss" else kind)
    ax.legend(fontsize="small", loc="best")
    ax.grid(alpha=0.3)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def plot_loss_curves(
    history: dict[str, list[list[float]]], path: str | Path, stage: str = "train"
) -> Path | None:
    """Draw ``{stage}/loss/*``, ``{stage}/weight/*`` and ``{stage}/grad_norm/*`` step curves.

    The loss panel also shows the validation epoch means (``val/loss/*``, dashed,
    with markers, in the colour of the same term) at the step they were logged.

    Args:
        history: ``TermLogger.history``: key → ``[[step, value], ...]``.
        path: the PNG to write.
        stage: which stage's step values to draw.

    Returns:
        the path written, or ``None`` when there was nothing to draw.
    """
    from matplotlib.figure import Figure

    panels = _panels(history, stage)
    if not panels:
        return None
    val = _curves(history, "val/loss/") if stage != "val" else {}
    fig = Figure(figsize=(8, 3.2 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)
    colours = _colours(panels, val)
    for ax, (kind, curves) in zip(axes[:, 0], panels, strict=True):
        _draw_panel(ax, kind, curves, val if kind == "loss" else {}, colours, stage)
    axes[0, 0].set_title("lossmix: loss terms")
    axes[-1, 0].set_xlabel("step")
    return _save(fig, path)


class LossCurves(pl.Callback):
    """At the end of fit (and, with ``every_epoch=True``, each epoch) write ``filename``.

    The curves are the values :class:`~lossmix.lightning.TermLogger` already read
    at its logging points (no extra syncs), so their resolution is
    ``Trainer(log_every_n_steps=...)``. The file goes to ``trainer.log_dir`` (else
    ``default_root_dir``), on rank 0 only; its path is printed and kept in
    :attr:`path`.

    Args:
        filename: the PNG's name in the run directory.
        every_epoch: also redraw at each training epoch end.
        stage: which stage's step values to draw.
        dirpath: where to write instead of the run directory (the training app passes
            its Hydra output directory).
    """

    def __init__(
        self,
        filename: str = "loss_curves.png",
        every_epoch: bool = False,
        stage: str = "train",
        dirpath: str | None = None,
    ) -> None:
        self.filename, self.every_epoch, self.stage = filename, every_epoch, stage
        self.dirpath = dirpath
        self.path: Path | None = None

    def _draw(self, trainer: pl.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        callbacks: list[pl.Callback] = getattr(trainer, "callbacks", [])
        logger = next((c for c in callbacks if isinstance(c, TermLogger)), None)
        if logger is None:
            return
        run_dir = self.dirpath or trainer.log_dir or trainer.default_root_dir
        written = plot_loss_curves(logger.history, Path(run_dir) / self.filename, self.stage)
        if written is not None:
            self.path = written
            rank_zero_info(f"LossCurves: wrote {written}")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_epoch:
            self._draw(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._draw(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None}
