"""Run a Hydra app with lossmix's front end: checks first, one-line errors, outputs, resume.

``lossmix.train`` is built from these two pieces, and so can your own app:

* :func:`fit` checks every term and node of a composed config (before anything heavy is
  built), builds what you did not pass (the datamodule, the model, the callbacks, the
  loggers, the trainer, whose checkpoints :class:`~lossmix.lightning.SafeCheckpointIO`
  writes atomically and reads checked), adds the run outputs that are missing (a CSV
  logger, the ``loss_curves.png`` callback, a ``last.ckpt`` checkpoint), locks the run
  directory, trains (resuming from ``ckpt_path``) and prints the per-term summary; a
  failed write of any run file is one line;
* :func:`hydra_app` is ``@hydra.main`` with lossmix's command line around it: Hydra's own
  nodes checked before Hydra builds them, and every configuration error — a misspelt key,
  a wrong type, an unknown option, a bad input key at the pre-flight batch — one
  ``Error: ...`` line with exit status 1 (``HYDRA_FULL_ERROR=1`` shows the trace). Under
  DDP, a user's error on one rank is the line every process reports (``Error: rank 1: ...``),
  not the other ranks' communication errors (see :mod:`lossmix.app.rank_errors`).

Your app::

    import lossmix
    from lossmix.app.runner import fit, hydra_app

    lossmix.allow_targets("my_project")   # your own code may be named by _target_

    @hydra_app(config_path="conf", config_name="config")
    def main(cfg):
        return fit(cfg)

    if __name__ == "__main__":
        main()
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs (types-PyYAML is no dependency)
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lossmix.app.checks import (
    check_loss_config,
    check_node_values,
    explain_override_error,
    import_modules,
    one_line_error,
)
from lossmix.app.hydra_nodes import (
    COMMAND_LINE_ENV,
    check_env_set,
    check_hydra_node,
    check_overrides_record,
    check_search_path,
    command_line_overrides,
    record_command_line,
)
from lossmix.app.key_overrides import needs_added_keys, with_added_keys
from lossmix.app.nodes import (
    AppTrust,
    app_node_bases,
    check_app_nodes,
    check_app_values,
    check_shared_hparams,
    instantiate_children,
    instantiate_node,
    resolve_node_class,
)
from lossmix.app.rank_errors import RecordRankErrors, mark_shown, rank_failure
from lossmix.app.report import print_summary, summary_rows
from lossmix.app.runlock import RunLock, launching_process
from lossmix.errors import LossConfigError, LossInputError, LossRunError, NonFiniteLoss, RankError
from lossmix.registry.allowlist import trusting
from lossmix.registry.foreign_nodes import MMDET_TRAIN_CFG, train_cfg_hint
from lossmix.registry.nodes import (
    env_paths,
    env_secrets,
    redacting,
    register_resolvers,
    replace_at,
    secrets_hidden,
    to_plain,
)
from lossmix.utilities.checkpoint import bare_state_dict, state_dict_mismatch
from lossmix.utilities.compat import (
    compose_like_hydra_main,
    default_checkpoint_io,
    edit_saved_checkpoints,
    fit_in_each_rank,
    multirun_job_relaunch,
    parse_hydra_argv,
    replace_initial_hparams,
    single_run_overrides,
)
from lossmix.utilities.files import ONLY_WRITES_ERRNOS, write_failure

if TYPE_CHECKING:
    import lightning.pytorch as pl

__all__ = ["build", "checkpoint_path", "fit", "hydra_app", "preflight", "run_dir"]

_OWN_FULL_ERROR = "_LOSSMIX_SET_HYDRA_FULL_ERROR"
# a config's own mistakes (an interpolation to a missing key included): one line, no trace
# and a run that cannot go on (a write failed, the run directory is in use)
USER_ERRORS = (
    CompactHydraException,
    yaml.YAMLError,  # a config file that is not valid YAML (a duplicate key)
    OmegaConfBaseException,
    LossConfigError,
    LossInputError,
    LossRunError,
    NonFiniteLoss,  # the default guard's one line: the term, the step, its inputs' ranges
    RankError,
)
_OWN_ERRORS = (LossConfigError, LossInputError, LossRunError)
_HYDRA_ELSEWHERE = "set hydra.run.dir=<another directory>"
# what a rank of a distributed run records (the others report it): a user's error, one line
_RANK_ERRORS = (
    CompactHydraException,
    OmegaConfBaseException,
    LossConfigError,
    LossInputError,
    LossRunError,
    NonFiniteLoss,
)
_R = TypeVar("_R")
register_resolvers()  # before Hydra resolves the run directory


def run_dir(cfg: DictConfig) -> Path:
    """Where the run's files go: Hydra's output directory, else ``paths.output_dir``, else here."""
    from hydra.core.hydra_config import HydraConfig

    paths = cfg.get("paths")
    if paths is not None and paths.get("output_dir") is not None:
        return Path(str(paths.output_dir))
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def _check_loss_node(cfg: DictConfig) -> None:
    # +train_cfg={rpn: {sampler: ...}} pasted from MMDetection would be silently unused
    hint = train_cfg_hint(MMDET_TRAIN_CFG, to_plain(cfg.get(MMDET_TRAIN_CFG)), by_name=False)
    if hint is not None:
        raise LossConfigError(hint)
    if not cfg.get("loss"):
        raise LossConfigError(
            "the config has no loss terms (every loss/<term> was removed); keep or add one, e.g. "
            "loss/cls=focal, or +loss/reg@loss.box=l1."
        )


def _model_kwargs(cfg: DictConfig, cls: Any) -> dict[str, Any]:
    """The term mapping goes to a model whose constructor takes ``loss`` (and does not get it
    from its own node)."""
    takes_loss = "loss" in inspect.signature(cls).parameters
    return {"loss": to_plain(cfg.loss)} if takes_loss and "loss" not in cfg.model else {}


def build(
    cfg: DictConfig,
    overrides: Sequence[str] | None = None,
    *,
    model: pl.LightningModule | None = None,
    datamodule: pl.LightningDataModule | None = None,
) -> tuple[pl.LightningDataModule | None, pl.LightningModule, pl.Trainer]:
    """Check every node of a composed config, then build what was not given.

    Args:
        cfg: the composed config: ``loss``, and ``model``/``data`` unless passed here;
            ``trainer``, ``callbacks``, ``logger``, ``lossmix``, ``seed`` are optional.
        overrides: the command line's overrides, which alone may widen the allow-list
            (default: the running Hydra job's).
        model, datamodule: already built ones (the config's nodes are then not used).

    A hyper-parameter of the model or datamodule built here that the config read from the
    environment is stored as its interpolation (``hparams.yaml``, every checkpoint's
    ``hyper_parameters``) while the module itself keeps the value; loading the checkpoint reads
    the variable again when the terms are built.

    Raises:
        LossConfigError: a term or an app node is refused or wrong, naming it.
    """
    import lightning.pytorch as pl  # here, so configuration errors exit before this import

    if overrides is None:  # the real command line's, never the composed hydra.overrides
        overrides = command_line_overrides()
        _check_job_env(overrides)
    trust = AppTrust(cfg, overrides)
    _check_loss_node(cfg)
    bases = app_node_bases()
    lossmix_node = cfg.get("lossmix") or {}
    preflight_on = lossmix_node.get("preflight")
    if preflight_on is not None and not isinstance(preflight_on, bool):
        raise LossConfigError(
            f"lossmix.preflight={preflight_on!r} is not valid; use true (route one batch "
            "through every term before training) or false."
        )
    allow_nonfinite = lossmix_node.get("allow_nonfinite_checkpoint", False)
    if not isinstance(allow_nonfinite, bool):
        raise LossConfigError(
            f"lossmix.allow_nonfinite_checkpoint={allow_nonfinite!r} is not valid; use false (refuse a "
            "checkpoint whose weights hold NaN or inf) or true (load it anyway)."
        )
    compile_on = lossmix_node.get("compile")
    from lossmix.lightning.callbacks.compiled import check_compile_option  # with Lightning's import

    check_compile_option(to_plain(compile_on) if compile_on is not None else None, "lossmix.compile")
    # The grants hold while the nodes are built (the model builds its terms in __init__);
    # they are not part of the model, so a checkpoint's hyper-parameters cannot carry them.
    with secrets_hidden(cfg), trusting(trust.allowed):
        import_modules(
            lossmix_node.get("imports"), allowed_targets=trust.allowed, granted=trust.imports_granted
        )  # the user's @LOSSES.register() calls
        # every term node against its loss's signature, building nothing: the model builds
        # the mix once (a frozen VGG or face network is not built twice)
        check_loss_config(cfg.loss, allowed_targets=trust.allowed)
        check_app_nodes(cfg, trust.allowed)
        check_app_values(cfg)
        needed = [p for p, given in (("data", datamodule), ("model", model)) if given is None]
        for path in [*needed, "trainer"]:
            if cfg.get(path) is None:
                if path == "trainer":
                    continue
                raise LossConfigError(
                    f"the config has no '{path}' node; add one with a _target_, "
                    f"or pass {path if path == 'model' else 'datamodule'}= to fit()."
                )
            check_node_values(path, to_plain(cfg[path]), resolve_node_class(cfg[path], path, trust.allowed))
        if cfg.get("seed") is not None:
            pl.seed_everything(cfg.seed, workers=True)
        # what each module built here was given, config path -> hyper-parameter path
        given: list[tuple[Any, str, dict[tuple[Any, ...], tuple[Any, ...]]]] = []
        if datamodule is None:
            datamodule = instantiate_node(cfg.data, "data", base=bases["data"], allowed=trust.allowed)
            given.append((datamodule, pl.LightningDataModule.CHECKPOINT_HYPER_PARAMS_KEY, {("data",): ()}))
        if model is None:
            cls = resolve_node_class(cfg.model, "model", trust.allowed)
            loss_kwargs = _model_kwargs(cfg, cls)
            model = instantiate_node(
                cfg.model,
                "model",
                base=bases["model"],
                allowed=trust.allowed,
                _recursive_=False,
                _convert_="all",
                **loss_kwargs,
            )
            roots: dict[tuple[Any, ...], tuple[Any, ...]] = {("model",): ()}
            if loss_kwargs:
                roots[("loss",)] = ("loss",)
            given.append((model, pl.LightningModule.CHECKPOINT_HYPER_PARAMS_KEY, roots))
        if preflight_on is not None:
            model.loss_preflight = preflight_on
        if compile_on is not None:
            model.loss_compile = to_plain(compile_on)
        callbacks = instantiate_children(
            cfg.get("callbacks"), "callbacks", base=bases["callbacks"], allowed=trust.allowed
        )
        loggers = instantiate_children(
            cfg.get("logger"), "logger", base=bases["logger"], allowed=trust.allowed
        )
        check_shared_hparams(datamodule, model)
        out = run_dir(cfg)
        callbacks, loggers = _with_outputs(callbacks, loggers, out, model)
        trainer_node = cfg.get("trainer")
        callbacks, terminal = _with_terminal_callbacks(callbacks, trainer_node)
        trainer = (
            instantiate_node(
                trainer_node,
                "trainer",
                base=bases["trainer"],
                allowed=trust.allowed,
                callbacks=callbacks,
                logger=loggers,
                **terminal,
            )
            if trainer_node is not None
            else pl.Trainer(callbacks=callbacks, logger=loggers, **terminal)
        )
        _keep_interpolations(cfg, trainer, given)
    _install_checkpoint_io(trainer, run_dir(cfg), allow_nonfinite=allow_nonfinite)
    return datamodule, model, trainer


def _check_job_env(overrides: Sequence[str]) -> None:
    """Inside a Hydra job: the config's ``hydra.job.env_set`` is already in force, so a
    protected variable it set (``LOSSMIX_*``, ``TORCH_*``, ...) stops the job before it is read."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        check_env_set(getattr(HydraConfig.get().job, "env_set", None), overrides)


class _StoredInterpolations:
    """A checkpoint edit: ``{checkpoint key: {hyper-parameter path: (value, interpolation)}}``
    puts each interpolation back in place of its value (a class, so the trainer pickles)."""

    def __init__(self, edits: dict[str, dict[tuple[Any, ...], tuple[Any, Any]]]) -> None:
        self.edits = edits

    def __call__(self, checkpoint: dict[str, Any]) -> None:
        for key, replacements in self.edits.items():
            if key in checkpoint:
                checkpoint[key] = replace_at(checkpoint[key], replacements)


def _hparams_replacements(
    cfg: DictConfig, env: dict[tuple[Any, ...], str], roots: dict[tuple[Any, ...], tuple[Any, ...]]
) -> dict[tuple[Any, ...], tuple[Any, Any]]:
    """``{hyper-parameter path: (resolved value, interpolation)}`` for a module whose
    constructor got the config's nodes at ``roots`` (config path -> hyper-parameter path)."""
    from omegaconf import OmegaConf

    found: dict[tuple[Any, ...], tuple[Any, Any]] = {}
    for path, interpolation in env.items():
        for root, into in roots.items():
            rest = path[len(root) :]
            if path[: len(root)] != root or not rest or str(rest[0]).startswith("_"):
                continue  # another node's, or Hydra's own keys (_target_, ...): not an argument
            try:
                value = OmegaConf.select(cfg, ".".join(map(str, path)), throw_on_missing=False)
            except Exception:  # unresolvable: the build has failed already
                continue
            found[(*into, *rest)] = (value, interpolation)
    return found


def _keep_interpolations(
    cfg: DictConfig, trainer: Any, given: list[tuple[Any, str, dict[tuple[Any, ...], tuple[Any, ...]]]]
) -> None:
    """Store every hyper-parameter the config read from the environment as its interpolation.

    The modules keep the values (``hparams``: what they read while training); what leaves
    the run does not: ``hparams_initial`` (what loggers write, ``hparams.yaml``) and every
    checkpoint's ``hyper_parameters`` / ``datamodule_hyper_parameters`` hold
    ``${oc.env:NAME}`` at the path where the config had it. Matched by path (and the value
    there), never by value alone. ``load_from_checkpoint`` reads the variable again when the
    terms are built (:func:`lossmix.registry.nodes.resolve_env_values`).
    """
    env = env_paths(cfg)
    if not env:
        return
    edits: dict[str, dict[tuple[Any, ...], tuple[Any, Any]]] = {}
    for module, key, roots in given:
        replacements = _hparams_replacements(cfg, env, roots)
        if replacements:
            replace_initial_hparams(module, functools.partial(replace_at, replacements=replacements))
            edits[key] = replacements
    if edits:
        edit_saved_checkpoints(trainer, _StoredInterpolations(edits))


def _elsewhere(out: Path) -> str:
    """How a run is written to another directory: Hydra's key where ``out`` is the Hydra job's
    own directory, else ``paths.output_dir`` (set by hand, or a run composed in-process after
    a Hydra job of the same process left its config behind)."""
    from hydra.core.hydra_config import HydraConfig

    in_job = False
    if HydraConfig.initialized():
        # None where the config came from Hydra's compose API (no job, no output directory)
        hydra_node = cast(DictConfig, HydraConfig.get())  # typed as the dataclass, a DictConfig
        job_dir = OmegaConf.select(hydra_node, "runtime.output_dir", default=None)
        in_job = job_dir is not None and os.path.realpath(job_dir) == os.path.realpath(out)
    key = "hydra.run.dir" if in_job else "paths.output_dir"
    return f"set {key}=<another directory>"


def _install_checkpoint_io(trainer: pl.Trainer, out: Path, *, allow_nonfinite: bool) -> None:
    """Lightning's default checkpoint I/O replaced by :class:`SafeCheckpointIO` (atomic writes,
    checked ``weights_only`` reads); a plugin the trainer node names itself is kept."""
    from lossmix.lightning.checkpoint_io import SafeCheckpointIO

    if default_checkpoint_io(trainer):
        trainer.strategy.checkpoint_io = SafeCheckpointIO(
            allow_nonfinite=allow_nonfinite,
            allow_hint="lossmix.allow_nonfinite_checkpoint=true",
            elsewhere=_elsewhere(out),
        )


def _with_outputs(
    callbacks: list[Any], loggers: list[Any], out: Path, model: Any
) -> tuple[list[Any], list[Any]]:
    """The outputs a run always has: a CSV of every logged key, the curves, a last checkpoint;
    and the non-finite guard (policy raise), so a NaN term stops the run with one line."""
    from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from lossmix.lightning.access import find_loss_mix
    from lossmix.lightning.callbacks import LossCurves, NonFiniteLossGuard

    if find_loss_mix(model) is not None and not any(isinstance(c, NonFiniteLossGuard) for c in callbacks):
        callbacks = [*callbacks, NonFiniteLossGuard("raise")]
    if not loggers:
        loggers = [CSVLogger(save_dir=str(out), name="csv", version="")]
    if not any(isinstance(c, LossCurves) for c in callbacks):
        callbacks = [*callbacks, LossCurves(dirpath=str(out))]
    if not any(isinstance(c, Checkpoint) for c in callbacks):
        callbacks = [
            *callbacks,
            ModelCheckpoint(dirpath=str(out / "checkpoints"), save_last=True, save_top_k=0),
        ]
    return callbacks, loggers


def _with_terminal_callbacks(callbacks: list[Any], trainer_node: Any) -> tuple[list[Any], dict[str, Any]]:
    """Lightning's default rich bar and model summary, as lossmix's: the bar without
    ``Epoch 0/-2`` under ``max_epochs: -1``, the summary after the pre-flight check (so its
    error is printed alone); unless the config chose its own or none."""
    from lightning.pytorch.callbacks import ModelSummary, ProgressBar

    from lossmix.lightning.callbacks.terminal import EpochProgressBar, late_model_summary

    def enabled(key: str) -> bool:
        return (trainer_node.get(key, True) if trainer_node is not None else True) is not False

    if enabled("enable_progress_bar") and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks = [*callbacks, EpochProgressBar()]
    if enabled("enable_model_summary") and not any(isinstance(c, ModelSummary) for c in callbacks):
        # Lightning's own summary off (it would say it found ours), ours in its place
        return [*callbacks, late_model_summary()], {"enable_model_summary": False}
    return callbacks, {}


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


def _log_through_hydra() -> None:
    """Lightning adds its own console handler; Hydra's already prints (and writes the job's
    log), so each message would show twice."""
    if not logging.getLogger().handlers:  # Hydra's logging is off: keep Lightning's
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)


def fit(
    cfg: DictConfig,
    *,
    model: pl.LightningModule | None = None,
    datamodule: pl.LightningDataModule | None = None,
    overrides: Sequence[str] | None = None,
) -> float | None:
    """Check, build (what was not given) and fit from a composed config; print the summary.

    A value the config reads from the environment (``${oc.env:TOKEN}``) is never shown: every
    error of the run (its cause and context too), warning and log line shows the
    interpolation (:func:`lossmix.registry.nodes.redacting`), and the built modules' stored
    hyper-parameters hold it (see :func:`build`).

    The run directory is locked for the whole run (:class:`~lossmix.app.runlock.RunLock`), so a
    second run into it is refused; ``ckpt_path`` is loaded with ``weights_only=True`` and
    checked before a step is trained (:class:`~lossmix.lightning.SafeCheckpointIO`, which
    also writes the checkpoints atomically); a failed write of any of the run's files stops
    the run with one line.

    Returns:
        the final ``val/loss``, or ``None`` without validation (Hydra's sweepers read it).

    Raises:
        RankError: in a distributed run, one rank failed with a user's error (a bad label
            on that rank, say); every process raises it, naming that rank and its message.
        LossConfigError: a node, a term or the checkpoint to resume from is refused.
        LossRunError: a write failed (no space, read-only, a file-size limit), or the run
            directory is in use by another run.
    """
    import lightning.pytorch  # noqa: F401  (its console handler exists from here on)

    _log_through_hydra()
    ckpt_path = checkpoint_path(cfg)
    out = run_dir(cfg)
    # every error, warning and log line of the run shows ${oc.env:NAME}, never its value
    with redacting(env_secrets(cfg)), _write_failures_reported(out), _run_lock(out):
        datamodule, model, trainer = build(cfg, overrides, model=model, datamodule=datamodule)
        try:
            # weights_only passed explicitly: no environment variable turns it off; in a sweep's
            # job, ddp's extra ranks run this job (its sampled values), not the sweep again
            with multirun_job_relaunch():
                _fit_reporting_ranks(
                    trainer, out, model=model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True
                )
        except (RuntimeError, KeyError) as err:
            refused = _refused_checkpoint(err, trainer, ckpt_path, type(model).__name__)
            if refused is None:
                raise
            raise refused from err
        if trainer.is_global_zero:
            print_summary(summary_rows(trainer, model), out)
    val = trainer.callback_metrics.get("val/loss")
    return None if val is None else float(val)


def _describe(err: BaseException) -> str:
    """The one line the app prints for a user's error (module level: ranks pickle it)."""
    return one_line_error(_user_error(err))


def _fit_reporting_ranks(trainer: pl.Trainer, out: Path, **fit_args: Any) -> None:
    """``trainer.fit``; in a distributed run, an error of one rank reported by every process.

    The rank that fails with a user's error records its line in ``out`` (see
    :mod:`lossmix.app.rank_errors`) and raises :class:`RankError` (``rank <r>: <message>``);
    a process that then fails for want of that rank (a collective's communication error,
    ``ddp_spawn``'s wrapped child error) raises the recorded one instead. One process: as is.
    """
    if trainer.world_size == 1:
        trainer.fit(**fit_args)
        return
    started = time.time()
    fit_in_each_rank(
        trainer,
        lambda fit: RecordRankErrors(
            fit, functools.partial(getattr, trainer, "global_rank"), str(out), _RANK_ERRORS, _describe
        ),
    )
    try:
        trainer.fit(**fit_args)
    except BaseException as err:
        reported = rank_failure(
            err,
            rank=trainer.global_rank,
            directory=out,
            since=started,
            kinds=_RANK_ERRORS,
            describe=_describe,
        )
        if reported is None:
            raise
        raise reported from err


def _refused_checkpoint(
    err: BaseException, trainer: pl.Trainer, ckpt_path: str | None, model: str
) -> LossConfigError | None:
    """A resume Lightning could not restore, as one line: a checkpoint of another model (the
    state_dict does not fit), or a bare state_dict (Lightning's ``KeyError``)."""
    if ckpt_path is None:
        return None
    loaded = str(trainer.ckpt_path or ckpt_path)
    if isinstance(err, RuntimeError):
        return state_dict_mismatch(err, loaded, model)
    from lossmix.lightning.checkpoint_io import SafeCheckpointIO

    io = trainer.strategy.checkpoint_io
    if isinstance(io, SafeCheckpointIO) and io.bare_loaded is not None:
        return bare_state_dict(io.bare_loaded)
    return None


def _run_lock(out: Path) -> contextlib.AbstractContextManager[object]:
    """The run directory's lock, taken by the launching process only (other DDP ranks run the
    same code into the same directory)."""
    if not launching_process():
        return contextlib.nullcontext()
    return RunLock(out, fix=f"{_elsewhere(out)} for this run")


def _own_error(err: BaseException) -> BaseException | None:
    """A lossmix error that ``err`` replaced while Lightning shut down (a logger's last write
    failing on the same full disk), so the first cause is the one reported."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, _OWN_ERRORS):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def as_write_failure(
    err: OSError, out: Path | None, elsewhere: str, *, writing: bool = True
) -> BaseException | None:
    """``err`` as the one-line error a user sees: the lossmix error it interrupted, or a failed
    write of a run file (the CSV, the curves, Hydra's files); ``None`` for anything else.
    ``writing=False``: the failed call may have been a read (said as "could not access")
    unless its cause only comes from writing (no space, read-only, a file-size limit)."""
    own = _own_error(err)
    if own is not None:
        return own
    verb = "write" if writing or err.errno in ONLY_WRITES_ERRNOS else "access"
    if err.filename is None and out is not None:
        return write_failure(
            err, what="a file in the run directory", path=out, elsewhere=elsewhere, verb=verb
        )
    return write_failure(err, what="", elsewhere=elsewhere, verb=verb)


@contextlib.contextmanager
def _write_failures_reported(out: Path) -> Iterator[None]:
    """A failed write of the run's files (the CSV logger, the curves, the lock) as one line."""
    try:
        yield
    except OSError as err:
        failure = as_write_failure(err, out, _elsewhere(out), writing=False)
        if failure is None:
            raise
        raise failure from err


def preflight(
    argv: Sequence[str],
    *,
    calling_file: str | None,
    calling_module: str | None,
    config_path: str | None,
    config_name: str | None,
) -> None:
    """Before Hydra runs anything: compose as it will and check what Hydra itself builds.

    Hydra instantiates ``hydra.callbacks`` (and under ``-m`` its launcher and sweeper) before
    the job starts, configures logging from the config, imports the primary config's search
    path and sets ``hydra.job.env_set``, all with no lossmix check: each is checked here
    first, on its resolved value (:mod:`lossmix.app.hydra_nodes`), and
    ``lossmix.allowed_targets`` must come from the command line.
    """

    composed = compose_like_hydra_main(
        argv,
        calling_file=calling_file,
        calling_module=calling_module,
        config_path=config_path,
        config_name=config_name,
        check_search_path=_search_path_checked,
    )
    if composed is None:
        return
    cfg, overrides = composed
    trust = AppTrust(cfg, overrides)
    parsed = OverridesParser.create().parse_overrides(overrides)
    with secrets_hidden(cfg):
        records = cfg.hydra.get("overrides") or {}
        check_overrides_record(records.get("task"), sum(not o.is_hydra_override() for o in parsed), "task")
        check_hydra_node(cfg, overrides, trust.allowed)


def _user_error(err: BaseException) -> BaseException:
    """A lossmix error as is; a Hydra error that wraps one (an instantiation): the lossmix one."""
    if isinstance(err, _OWN_ERRORS):
        return err
    cause = err.__cause__
    return cause if isinstance(cause, _OWN_ERRORS) else err


def _search_path_checked(entries: Any, user_dirs: list[str], from_command_line: bool) -> None:
    check_search_path(entries, user_dirs=user_dirs, from_command_line=from_command_line)


def _compose_job(argv: Sequence[str], where: dict[str, Any]) -> Any:
    """The job's config for ``argv`` (``--cfg job`` composes it too), or ``None`` (``--help``);
    the primary config's search path checked before Hydra imports what it names."""
    composed = compose_like_hydra_main(
        argv, **where, compose_for_cfg=True, check_search_path=_search_path_checked
    )
    return None if composed is None else composed[0]


def _added_keys(argv: list[str], where: dict[str, Any]) -> list[str]:
    """``argv`` with ``loss.<term>.<key>=v`` written ``++...`` where the node lacks a key its loss
    takes (:mod:`lossmix.app.key_overrides`); composes once, only for such an override."""
    if not needs_added_keys(argv):
        return argv
    return with_added_keys(argv, lambda args: _compose_job(args, where))


def _exit_with(err: BaseException, where: dict[str, Any]) -> None:
    def compose(argv: Sequence[str]) -> Any:
        composed = _compose_job(argv, where)
        if composed is None:  # --help: Hydra's own message stands
            raise RuntimeError("nothing composed")
        return composed

    if isinstance(err, RankError):  # one rank's error, printed once per terminal
        if not err.shown:
            print(f"Error: {err}", file=sys.stderr, flush=True)
            if err.record is not None:
                mark_shown(err.record)
        sys.exit(1)
    explained = explain_override_error(err, sys.argv[1:], compose)
    print(f"Error: {explained or one_line_error(_user_error(err))}", file=sys.stderr)
    sys.exit(1)


def _record(argv: Sequence[str]) -> None:
    """The real command line's overrides, for this job and those a launcher starts elsewhere."""
    parsed = parse_hydra_argv(argv)
    record_command_line([] if parsed is None else parsed.overrides)


def _explicit_run_dir(argv: Sequence[str]) -> Path | None:
    """The existing directory a single run was sent to by a plain ``hydra.run.dir=<path>``
    (no interpolation), or ``None``."""
    overrides = single_run_overrides(argv)  # a sweep locks each job's directory in fit
    if overrides is None:
        return None
    found = None
    for arg in overrides:
        key, sep, value = arg.lstrip("+").partition("=")
        if sep and key == "hydra.run.dir":
            found = value
    if not found or "${" in found:
        return None
    if len(found) > 1 and found[0] == found[-1] and found[0] in "'\"":
        found = found[1:-1]
    path = Path(found).absolute()
    return path if path.is_dir() else None


def _early_lock(argv: Sequence[str]) -> contextlib.AbstractContextManager[object]:
    """The run directory's lock from before Hydra writes into it, where the command line
    names an existing one (``fit`` takes it again, nested, and takes it in every other case)."""
    path = _explicit_run_dir(argv)
    if path is None or not launching_process():
        return contextlib.nullcontext()
    return RunLock(path, fix=f"{_HYDRA_ELSEWHERE} for this run")


def _full_error_wanted() -> bool:
    """True when the user (not :func:`hydra_app`) set ``HYDRA_FULL_ERROR=1``."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1" and _OWN_FULL_ERROR not in os.environ


_HELP_FLAGS = {"--help", "-h"}


def _help_sees_searchpath(argv: list[str], where: dict[str, Any]) -> list[str]:
    """``argv`` for ``--help`` with the one directory the primary config's ``hydra.searchpath``
    adds (lossmix's groups, ``pkg://lossmix.conf``) given as ``--config-dir``, so Hydra's
    "Configuration groups" lists them too (it reads groups from the search path it starts with,
    not the one the config extends). Unchanged when the command line names a config directory,
    the config adds none or several, or it does not compose (Hydra then says why)."""
    if "--config-dir" in argv or "-cd" in argv or any(a.startswith("--config-dir=") for a in argv):
        return argv
    try:
        composed = compose_like_hydra_main([a for a in argv if a not in _HELP_FLAGS], **where)
    except Exception:  # the help is still printed, with the app's own groups
        return argv
    entries = [] if composed is None else list(composed[0].hydra.get("searchpath") or [])
    dirs = [d for d in map(_search_dir, entries) if d is not None]
    return [*argv, "--config-dir", dirs[0]] if len(dirs) == 1 else argv


def _search_dir(entry: Any) -> str | None:
    """A search path entry's directory: ``file://DIR``, or ``pkg://lossmix.conf`` (lossmix's own
    configs; another package is not imported to find it)."""
    text = str(entry)
    if text.startswith("file://"):
        return text[len("file://") :]
    if text.rstrip("/") == "pkg://lossmix.conf":
        import lossmix.conf

        return str(Path(lossmix.conf.__file__).parent)
    return None


def hydra_app(
    config_path: str | None = None, config_name: str | None = None, *, version_base: str = "1.3"
) -> Callable[[Callable[[DictConfig], _R]], Callable[[], None]]:
    """``@hydra.main`` with lossmix's command line: checks before Hydra builds anything, and
    configuration errors as one ``Error: ...`` line with exit status 1.

    Args:
        config_path: the config directory, relative to the decorated function's file (or
            module), as for ``@hydra.main``.
        config_name: the primary config's name.
        version_base: Hydra's version base.
    """
    import hydra

    def decorate(task: Callable[[DictConfig], _R]) -> Callable[[], None]:
        module = task.__module__
        calling_module = module if module not in (None, "__main__") else None
        calling_file = None if calling_module else inspect.getfile(task)
        where: dict[str, Any] = {
            "calling_file": calling_file,
            "calling_module": calling_module,
            "config_path": config_path,
            "config_name": config_name,
        }

        @functools.wraps(task)  # Hydra finds the config path from the wrapped function
        def job(cfg: DictConfig) -> _R | None:
            try:
                return task(cfg)
            except USER_ERRORS as err:
                if _full_error_wanted():
                    raise
                _exit_with(err, where)  # before Hydra adds its "Error executing job"
                return None
            except OSError as err:  # a write (or read) of your own task's
                failure = (
                    None
                    if _full_error_wanted()
                    else as_write_failure(err, None, _HYDRA_ELSEWHERE, writing=False)
                )
                if failure is None:
                    raise
                _exit_with(failure, where)
                return None

        hydra_job = hydra.main(version_base=version_base, config_path=config_path, config_name=config_name)(
            job
        )

        def main() -> None:
            given = sys.argv[1:]
            argv = given
            if _HELP_FLAGS & set(argv):  # Hydra lists only the groups of the app's own directory
                argv = _help_sees_searchpath(argv, where)
            argv = _added_keys(argv, where)
            sys.argv[1:] = argv  # Hydra reads sys.argv
            try:
                run(argv)
            finally:
                sys.argv[1:] = given

        def run(argv: list[str]) -> None:
            if _full_error_wanted():
                saved = os.environ.get(COMMAND_LINE_ENV)
                try:
                    _record(argv)
                    preflight(argv, **where)
                    hydra_job()
                finally:
                    if saved is None:
                        os.environ.pop(COMMAND_LINE_ENV, None)
                    else:
                        os.environ[COMMAND_LINE_ENV] = saved
                return
            # Hydra then re-raises composition errors instead of printing them; we print one line.
            kept = {k: os.environ.get(k) for k in ("HYDRA_FULL_ERROR", _OWN_FULL_ERROR, COMMAND_LINE_ENV)}
            os.environ["HYDRA_FULL_ERROR"] = os.environ[_OWN_FULL_ERROR] = "1"
            composed = False
            try:
                _record(argv)
                preflight(argv, **where)
                composed = True
                with _early_lock(argv):  # before Hydra writes .hydra/ into a directory in use
                    hydra_job()
            except USER_ERRORS as err:
                _exit_with(err, where)
            except OSError as err:  # Hydra's own writes: the run directory, .hydra/, the job's log
                failure = as_write_failure(err, None, _HYDRA_ELSEWHERE, writing=composed)
                if failure is None:
                    raise
                _exit_with(failure, where)
            finally:
                for key, value in kept.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value

        main.__doc__ = task.__doc__
        return main

    return decorate
