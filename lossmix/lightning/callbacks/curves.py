"""``LossCurves``: a PNG of every term's curve and of the effective weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

from lossmix.lightning.logging import TermLogger

__all__ = ["LossCurves", "plot_loss_curves"]


def plot_loss_curves(history: dict[str, list[list[float]]], path: str | Path,
                     stage: str = "train") -> Path | None:
    """Draw ``{stage}/loss/*`` and ``{stage}/weight/*`` (and ``grad_norm``) step curves.

    Args:
        history: ``TermLogger.history``: key → ``[[step, value], ...]``.
        path: the PNG to write.
        stage: which stage's step values to draw.

    Returns:
        the path written, or ``None`` when there was nothing to draw.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(kind, {k[len(f"{stage}/{kind}/"):]: v for k, v in history.items()
                      if k.startswith(f"{stage}/{kind}/") and not k.endswith("_epoch")})
              for kind in ("loss", "weight", "grad_norm")]
    panels = [(kind, curves) for kind, curves in panels if curves]
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.2 * len(panels)), sharex=True,
                             squeeze=False)
    for ax, (kind, curves) in zip(axes[:, 0], panels, strict=True):
        for name, points in sorted(curves.items()):
            ax.plot([p[0] for p in points], [p[1] for p in points], label=name)
        positive = all(p[1] > 0 for points in curves.values() for p in points)
        if kind != "weight" and positive:
            ax.set_yscale("log")
        ax.set_ylabel(f"{stage}/{kind}")
        ax.legend(fontsize="small", loc="best")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
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
    """

    def __init__(self, filename: str = "loss_curves.png", every_epoch: bool = False,
                 stage: str = "train") -> None:
        self.filename, self.every_epoch, self.stage = filename, every_epoch, stage
        self.path: Path | None = None

    def _draw(self, trainer: pl.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        logger = next((c for c in trainer.callbacks if isinstance(c, TermLogger)), None)
        if logger is None:
            return
        run_dir = trainer.log_dir or trainer.default_root_dir
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
