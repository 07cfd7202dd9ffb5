"""The main job: ``python -m lossmix.train [hydra overrides]`` (also ``lossmix-train``).

Composes ``lossmix/conf/train.yaml`` with the command line, imports the modules listed
in ``lossmix.imports`` (user code that registers losses), checks every loss term
against its loss's signature and every app node against the ``_target_`` rule, then
builds the datamodule, the model (its ``loss`` node goes to ``configure_loss``), the
callbacks, the loggers and the Trainer, routes one batch through every term (the
pre-flight batch) and fits. The run directory (Hydra's output dir) ends up holding:

* ``.hydra/config.yaml``: the composed config (``overrides.yaml``: the command line);
* ``csv/metrics.csv``: every logged key, per logging step and per epoch (CSVLogger);
* ``loss_curves.png``: every term's curve (train steps solid, validation epoch means
  dashed) and the effective weights, drawn by the ``LossCurves`` callback;
* ``checkpoints/``: ``last.ckpt`` and the best by ``val/loss``.

The terminal ends with a per-term summary table (a sweep: a table of its jobs).
Configuration errors (a misspelt key, a wrong type, an unknown option, a bad routing)
print one ``Error: ...`` line and exit with status 1; ``HYDRA_FULL_ERROR=1`` shows the
full trace instead. The pieces are :mod:`lossmix.app.runner`'s, for your own app too.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from lossmix.app.report import summary_rows
from lossmix.app.runner import build, checkpoint_path, fit, hydra_app
from lossmix.app.runner import preflight as _preflight

__all__ = ["build", "checkpoint_path", "main", "preflight", "run", "summary_rows"]


def run(cfg: DictConfig) -> float | None:
    """Check, build and fit from a composed ``train`` config; return the final ``val/loss``."""
    return fit(cfg)


def preflight(argv: Sequence[str]) -> None:
    """Check what Hydra itself builds for ``argv``, before Hydra runs anything."""
    _preflight(argv, calling_file=None, calling_module=__name__, config_path="conf", config_name="train")


@hydra_app(config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Entry point of ``python -m lossmix.train`` and ``lossmix-train``."""
    return run(cfg)


if __name__ == "__main__":
    main()
