"""``LossCurves``: a PNG of every term's curve and of the effective weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

from lossmix.lightning.logging import TermLogger

__all__ = ["LossCurves", "plot_loss_curves"]


def _curves(history: dict[str, list[list[float]]], prefix: str) -> dict[str, list[list[float]]]:
    return {k[len(prefix):]: v for k, v in history.items()
            if k.startswith(prefix) and not k.endswith("_epoch")}


def plot_loss_curves(history: dict[str, list[list[float]]], path: str | Path,
                     stage: str = "train") -> Path | None:
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

    panels = [(kind, _curves(history, f"{stage}/{kind}/"))
              for kind in ("loss", "weight", "grad_norm")]
    panels = [(kind, curves) for kind, curves in panels if curves]
    if not panels:
        return None
    val = _curves(history, "val/loss/") if stage != "val" else {}
    fig = Figure(figsize=(8, 3.2 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)
    names = sorted({n for _, curves in panels for n in curves} | set(val))
    colours = {n: f"C{i % 10}" for i, n in enumerate(names)}
    for ax, (kind, curves) in zip(axes[:, 0], panels, strict=True):
        extra = val if kind == "loss" else {}
        for name, points in sorted(curves.items()):
            ax.plot([p[0] for p in points], [p[1] for p in points], color=colours[name],
                    label=f"{stage}/{name}")
        for name, points in sorted(extra.items()):
            ax.plot([p[0] for p in points], [p[1] for p in points], color=colours[name],
                    linestyle="--", marker="o", label=f"val/{name}")
        values = [p[1] for c in (curves, extra) for points in c.values() for p in points]
        if kind != "weight" and values and all(v > 0 for v in values):
            ax.set_yscale("log")
        ax.set_ylabel(f"{kind} (weighted)" if kind == "loss" else kind)
        ax.legend(fontsize="small", loc="best")
        ax.grid(alpha=0.3)
    axes[0, 0].set_title("lossmix: loss terms")
    axes[-1, 0].set_xlabel("step")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


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

    def __init__(self, filename: str = "loss_curves.png", every_epoch: bool = False,
                 stage: str = "train", dirpath: str | None = None) -> None:
        self.filename, self.every_epoch, self.stage = filename, every_epoch, stage
        self.dirpath = dirpath
        self.path: Path | None = None

    def _draw(self, trainer: pl.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        logger = next((c for c in trainer.callbacks if isinstance(c, TermLogger)), None)
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
