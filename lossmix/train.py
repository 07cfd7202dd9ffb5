"""The main job: ``python -m lossmix.train [hydra overrides]`` (also ``lossmix-train``).

Composes ``lossmix/conf/train.yaml`` with the command line, imports the modules listed
in ``lossmix.imports`` (user code that registers losses), checks every loss term
against its loss's signature, then builds the datamodule, the model (its ``loss``
node goes to ``configure_loss``), the callbacks, the loggers and the Trainer, and
fits. The run directory (Hydra's output dir) ends up holding:

* ``.hydra/config.yaml``: the composed config (``overrides.yaml``: the command line);
* ``csv/metrics.csv``: every logged key, per logging step and per epoch (CSVLogger);
* ``loss_curves.png``: every term's curve (train steps solid, validation epoch means
  dashed) and the effective weights, drawn by the ``LossCurves`` callback;
* ``checkpoints/``: ``last.ckpt`` and the best by ``val/loss``.

The terminal ends with a per-term summary table. Configuration errors (a misspelt
key, a wrong type, an unknown option, a bad routing) print one ``Error: ...`` line
and exit with status 1; ``HYDRA_FULL_ERROR=1`` shows the full trace instead.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.errors import CompactHydraException
from omegaconf import DictConfig

from lossmix.app import (
    AppTrust,
    app_node_bases,
    check_app_nodes,
    check_node_targets,
    check_shared_hparams,
    instantiate_children,
    instantiate_node,
    resolve_node_class,
)
from lossmix.compat import compose_like_hydra_main
from lossmix.config import (
    build_loss_mix,
    check_node_values,
    explain_override_error,
    import_modules,
    one_line_error,
    plain,
)
from lossmix.errors import LossConfigError, LossInputError
from lossmix.nodes import secrets_hidden
from lossmix.targets import trusting

if TYPE_CHECKING:
    import lightning.pytorch as pl

__all__ = ["build", "main", "preflight", "run", "summary_rows"]

_OWN_FULL_ERROR = "_LOSSMIX_SET_HYDRA_FULL_ERROR"
_USER_ERRORS = (CompactHydraException, LossConfigError, LossInputError)


# -- building and fitting ----------------------------------------------------------------------
def _log_through_hydra() -> None:
    """Lightning adds its own console handler; Hydra's already prints (and writes train.log),
    so each message would show twice."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)


def _task_overrides() -> list[str]:
    """The command line's overrides of this job (none outside a Hydra run)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def build(
    cfg: DictConfig, overrides: Sequence[str] | None = None
) -> tuple[pl.LightningDataModule, pl.LightningModule, pl.Trainer]:
    """Check every node of a composed config, then build the datamodule, model and trainer.

    Args:
        cfg: the composed ``train`` config.
        overrides: the command line's overrides, which alone may widen the allow-list
            (default: the running Hydra job's).

    Raises:
        LossConfigError: a term or an app node is refused or wrong, naming it.
    """
    import lightning.pytorch as pl  # here, so configuration errors exit before this import

    trust = AppTrust(cfg, _task_overrides() if overrides is None else overrides)
    if not cfg.get("loss"):
        raise LossConfigError(
            "the config has no loss terms (every loss/<term> was removed); keep or add one, e.g. "
            "loss/cls=focal, or +loss/reg@loss.box=l1."
        )
    # The grants hold while the nodes are built (the model builds its terms in __init__);
    # they are not part of the model, so a checkpoint's hyper-parameters cannot carry them.
    with secrets_hidden(cfg), trusting(trust.allowed):
        import_modules(
            cfg.lossmix.get("imports"), allowed_targets=trust.allowed, granted=trust.imports_granted
        )  # the user's @LOSSES.register() calls
        loss_node = plain(cfg.loss)
        build_loss_mix(cfg.loss, allowed_targets=trust.allowed)  # every term, before anything heavy
        check_app_nodes(cfg, trust.allowed)
        pl.seed_everything(cfg.seed, workers=True)
        bases = app_node_bases()
        for path in ("data", "model", "trainer"):
            check_node_values(path, plain(cfg[path]), resolve_node_class(cfg[path], path, trust.allowed))
        datamodule = instantiate_node(cfg.data, "data", base=bases["data"], allowed=trust.allowed)
        model = instantiate_node(
            cfg.model,
            "model",
            base=bases["model"],
            allowed=trust.allowed,
            loss=loss_node,
            _recursive_=False,
            _convert_="all",
        )
        callbacks = instantiate_children(
            cfg.get("callbacks"), "callbacks", base=bases["callbacks"], allowed=trust.allowed
        )
        loggers = instantiate_children(
            cfg.get("logger"), "logger", base=bases["logger"], allowed=trust.allowed
        )
        check_shared_hparams(datamodule, model)
        trainer = instantiate_node(
            cfg.trainer,
            "trainer",
            base=bases["trainer"],
            allowed=trust.allowed,
            callbacks=callbacks,
            logger=loggers or False,
        )
    return datamodule, model, trainer


def checkpoint_path(cfg: DictConfig) -> str | None:
    """``ckpt_path``: a checkpoint file, Lightning's ``last``/``best``, or ``None``."""
    path = cfg.get("ckpt_path")
    if path is None or path in ("last", "best"):
        return None if path is None else str(path)
    if not isinstance(path, str) or not Path(path).is_file():
        raise LossConfigError(
            f"ckpt_path={path!r} is not a checkpoint file; give the path of one, e.g. "
            "ckpt_path=outputs/<date>/<time>/checkpoints/last.ckpt (or ckpt_path=last with "
            "hydra.run.dir=<that run's directory>)."
        )
    return path


def run(cfg: DictConfig) -> float | None:
    """Check, build and fit from a composed config; return the final ``val/loss``."""
    import lightning.pytorch  # noqa: F401  (its console handler exists from here on)

    _log_through_hydra()
    ckpt_path = checkpoint_path(cfg)
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    if trainer.is_global_zero:
        report(trainer, model, Path(cfg.paths.output_dir))
    val = trainer.callback_metrics.get("val/loss")
    return None if val is None else float(val)


def preflight(argv: Sequence[str]) -> None:
    """Before Hydra runs anything: compose as it will and check what Hydra itself builds.

    Hydra instantiates ``hydra.callbacks`` before the job starts, with no lossmix check,
    so they are resolved here first (a ``hydra.experimental.callback.Callback`` subclass in
    an allowed package), and ``lossmix.allowed_targets`` must come from the command line.
    """
    composed = compose_like_hydra_main(
        argv, calling_module="lossmix.train", config_path="conf", config_name="train"
    )
    if composed is None:
        return
    cfg, overrides = composed
    trust = AppTrust(cfg, overrides)
    callbacks = cfg.hydra.get("callbacks") or {}
    with secrets_hidden(cfg):
        for name in list(callbacks):
            child = callbacks.get(name)
            if child is not None and hasattr(child, "get") and "_target_" in child:
                check_node_targets(
                    child,
                    f"hydra.callbacks.{name}",
                    base=app_node_bases()["hydra.callbacks"],
                    allowed=trust.allowed,
                )


# -- the report ---------------------------------------------------------------------------------
def _metric(metrics: Mapping[str, Any], key: str) -> float:
    value = metrics.get(key)
    return math.nan if value is None else float(value)


def summary_rows(trainer: pl.Trainer, model: Any) -> list[dict[str, Any]]:
    """Per term (and sub-term): last train epoch mean, validation value, weight, share.

    Read from ``trainer.callback_metrics`` (which rank 0 hands back under ``ddp_spawn``),
    so the table does not depend on this process having computed a step itself.
    """
    metrics = trainer.callback_metrics
    rows = []
    for group, term in model.loss_mix.all_terms():
        scope = f"/{group}" if group else ""
        total = _metric(metrics, f"train/loss{scope}_epoch")
        pattern = re.compile(
            rf"^train/loss{re.escape(scope)}/({re.escape(term.name)}"
            r"(?:\.[^/]+)?)_epoch$"
        )
        names = sorted(m.group(1) for m in map(pattern.match, metrics) if m) or [term.name]
        for name in names:
            train = _metric(metrics, f"train/loss{scope}/{name}_epoch")
            counted = term.in_total and not math.isnan(total) and total != 0
            rows.append(
                {
                    "term": f"{group}/{name}" if group else name,
                    # a scheduled or learned weight: its last logged value
                    "weight": _metric(metrics, f"train/weight{scope}/{name}")
                    if f"train/weight{scope}/{name}" in metrics
                    else float(term.weight),
                    "train": train,
                    "val": _metric(metrics, f"val/loss{scope}/{name}"),
                    "share": 100.0 * train / total if counted else math.nan,
                }
            )
    return rows


def _fmt(value: float, spec: str) -> str:
    return "-" if math.isnan(value) else format(value, spec)


def print_summary(rows: Sequence[Mapping[str, Any]], run_dir: Path) -> None:
    """The per-term table (rich) and where the run's files are."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="lossmix: per-term summary (weighted values; train = last epoch mean)")
    for column in ("term", "weight", "train", "val", "share of total"):
        table.add_column(column, justify="left" if column == "term" else "right")
    for row in rows:
        table.add_row(
            row["term"],
            _fmt(row["weight"], "g"),
            _fmt(row["train"], ".4f"),
            _fmt(row["val"], ".4f"),
            _fmt(row["share"], ".1f") + ("" if math.isnan(row["share"]) else " %"),
        )
    console = Console()
    console.print(table)
    console.print(f"Run directory: {run_dir}")


def report(trainer: pl.Trainer, model: Any, run_dir: Path) -> None:
    """Print the per-term summary (``loss_curves.png`` comes from the LossCurves callback)."""
    print_summary(summary_rows(trainer, model), run_dir)


# -- the command line ---------------------------------------------------------------------------
def _full_error_wanted() -> bool:
    """True when the user (not :func:`main`) set ``HYDRA_FULL_ERROR=1``."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1" and _OWN_FULL_ERROR not in os.environ


def _exit_with(err: BaseException) -> None:
    message = explain_override_error(err, sys.argv[1:]) or one_line_error(_user_error(err))
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(1)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        return run(cfg)
    except _USER_ERRORS as err:
        if _full_error_wanted():
            raise
        _exit_with(err)  # here, before Hydra adds its "Error executing job" line
        return None


def _user_error(err: BaseException) -> BaseException:
    """A lossmix error as is; a Hydra error that wraps one (an instantiation): the lossmix one."""
    if isinstance(err, (LossConfigError, LossInputError)):
        return err
    cause = err.__cause__
    return cause if isinstance(cause, (LossConfigError, LossInputError)) else err


def main() -> None:
    """Entry point of ``python -m lossmix.train`` and ``lossmix-train``."""
    if _full_error_wanted():
        preflight(sys.argv[1:])
        _hydra_main()
        return
    # Hydra then re-raises composition errors instead of printing them; we print one line.
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = os.environ[_OWN_FULL_ERROR] = "1"
    try:
        preflight(sys.argv[1:])
        _hydra_main()
    except _USER_ERRORS as err:
        _exit_with(err)
    finally:
        os.environ.pop(_OWN_FULL_ERROR, None)
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved


if __name__ == "__main__":
    main()
