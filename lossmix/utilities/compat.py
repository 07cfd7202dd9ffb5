"""Every private API of Lightning and Hydra that lossmix uses, behind one function each.

``tests/utilities/test_compat.py`` calls each of them against the installed versions, so an
upgrade that moves one fails there, loudly, instead of somewhere deep in a run.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "amp_loss_scale",
    "batches_stepped",
    "close_epoch_ended_in_checkpoint",
    "compose_like_hydra_main",
    "default_checkpoint_io",
    "edit_saved_checkpoints",
    "fast_dev_run",
    "fit_in_each_rank",
    "hide_lightning_mid_epoch_warning",
    "logging_due",
    "multirun_job_relaunch",
    "parse_hydra_argv",
    "replace_initial_hparams",
    "resumed_mid_epoch",
    "should_accumulate",
    "show_lightning_mid_epoch_warning",
    "single_interpolation",
    "single_run_overrides",
    "trainer_callbacks",
]


def trainer_callbacks(trainer: Any) -> list[Any]:
    """The trainer's callback list (set by Lightning at init; untyped on the class)."""
    callbacks: list[Any] = trainer.callbacks
    return callbacks


def default_checkpoint_io(trainer: Any) -> bool:
    """Whether the trainer was given no ``CheckpointIO`` (as a plugin or in its strategy):
    Lightning's accelerator connector keeps the one given in its private ``checkpoint_io``;
    the strategy's private ``_checkpoint_io`` is ``None`` until ``checkpoint_io`` is first
    read, which creates the default ``TorchCheckpointIO``."""
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    given = getattr(getattr(trainer, "_accelerator_connector", None), "checkpoint_io", None)
    held = getattr(trainer.strategy, "_checkpoint_io", None)
    return given is None and (held is None or type(held) is TorchCheckpointIO)


def fast_dev_run(trainer: Any) -> bool:
    """Whether the trainer runs ``fast_dev_run`` (set by Lightning at init; untyped)."""
    return bool(trainer.fast_dev_run)


def batches_stepped(trainer: Any) -> int:
    """Batches that made the optimizer step so far (counts a batch once in manual optimization,
    where ``global_step`` counts every optimizer): Lightning's private
    ``fit_loop.epoch_loop._batches_that_stepped``."""
    return int(trainer.fit_loop.epoch_loop._batches_that_stepped)


def resumed_mid_epoch(trainer: Any) -> int:
    """How many batches of the current epoch a resumed fit has already done (0: none, or the
    checkpoint closed its epoch): Lightning's fit loop ``restarted_mid_epoch`` and the epoch
    loop's ``batch_progress``, read at ``on_train_start``."""
    fit_loop = trainer.fit_loop
    progress = fit_loop.epoch_loop.batch_progress
    if not fit_loop.restarted_mid_epoch or progress.is_last_batch:
        return 0
    # a checkpoint written at a batch's end counts that batch as processed, not completed
    return int(max(progress.current.processed, progress.current.completed))


def close_epoch_ended_in_checkpoint(trainer: Any) -> bool:
    """Work around Lightning 2.6 resuming from a checkpoint written in ``on_train_epoch_end``.

    Lightning then re-enters the finished epoch and trains one extra batch in it (with a
    fresh loader iteration) before the next epoch, so every later step is one batch off the
    uninterrupted run. Called at ``on_train_start``, this marks the checkpoint's epoch as
    completed and the epoch loop as fresh, which is what the checkpoint means. Returns
    whether it applied. (Private: the loops' restart stages and progress trackers.)
    """
    fit_loop = trainer.fit_loop
    epoch_loop = fit_loop.epoch_loop
    if not (fit_loop.restarted_on_epoch_end and epoch_loop.restarted_on_last):
        return False
    fit_loop.epoch_progress.increment_completed()
    epoch_loop.batch_progress.reset_on_run()
    epoch_loop.scheduler_progress.reset_on_run()
    epoch_loop.automatic_optimization.optim_progress.reset_on_run()
    epoch_loop.val_loop.batch_progress.total.reset()
    fit_loop.reset_restart_stage()
    epoch_loop.reset_restart_stage()
    # not ``fit_loop.restarting = False``: its setter keeps max_steps runs restarting, which
    # would step the batch counter once more and skip the epoch's LR-scheduler step
    fit_loop._restarting = False
    epoch_loop.restarting = False
    return True


def fit_in_each_rank(trainer: Any, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Make the trainer's next ``fit`` run ``wrap(fit_of_this_rank)`` in every rank process.

    Lightning's launcher runs the trainer's private ``_fit_impl`` in each rank (in this
    process under ``ddp``, in each spawned process under ``ddp_spawn``, where the trainer and
    so this wrapper are pickled); no public hook sees an exception there, since under
    ``ddp_spawn`` ``on_exception`` runs in the main process only. ``wrap`` must return a
    picklable callable. Calling this again replaces the earlier wrapper (no nesting).
    """
    trainer._fit_impl = wrap(functools.partial(type(trainer)._fit_impl, trainer))


@contextlib.contextmanager
def multirun_job_relaunch() -> Any:
    """Inside the block, Lightning's ``ddp`` launcher starts the other ranks of *this* job.

    Lightning re-runs ``sys.argv`` for each extra rank, with ``hydra.run.dir=<hydra.run.dir>``
    (``_hydra_subprocess_cmd``). In a job of a Hydra multirun that command line is the whole
    sweep (``-m`` and its sweeps), so each rank would run a sweep of its own and sample its
    own parameters. Here, in a multirun job, the command line is the job's own overrides
    (``hydra.overrides.task``: the sampled values included) and ``hydra.run.dir`` is the
    job's output directory: every rank composes the job's config, in the job's directory.
    Outside a multirun job it changes nothing.
    """
    import sys

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import read_write

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        yield
        return
    hydra: Any = HydraConfig.get()  # a DictConfig at run time
    saved_argv, saved_dir = sys.argv, hydra.run.dir
    sys.argv = [sys.argv[0], *hydra.overrides.task]
    with read_write(hydra):
        hydra.run.dir = hydra.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = saved_argv
        with read_write(hydra):
            hydra.run.dir = saved_dir


#: The start of Lightning's warning on a mid-epoch resume of a loader it cannot restore
#: (``training_epoch_loop.py``, emitted as the resumed epoch starts).
LIGHTNING_MID_EPOCH_WARNING = "You're resuming from a checkpoint that ended before the epoch ended"


def hide_lightning_mid_epoch_warning() -> Any:
    """Ignore Lightning's mid-epoch resume warning until :func:`show_lightning_mid_epoch_warning`
    is given what this returns: the filter added, or ``None`` when the same filter was there
    already (someone else's, left alone)."""
    before = list(warnings.filters)
    warnings.filterwarnings("ignore", message=re.escape(LIGHTNING_MID_EPOCH_WARNING))
    added = warnings.filters[0]
    return None if added in before else added


def show_lightning_mid_epoch_warning(hidden: Any) -> None:
    """Remove the filter :func:`hide_lightning_mid_epoch_warning` added (if still there)."""
    if hidden is None:
        return
    filters: list[Any] = warnings.filters  # type: ignore[assignment]  # a list at run time
    with contextlib.suppress(ValueError):
        filters.remove(hidden)
        # let cached "already warned" decisions be made again (what warnings' own functions do)
        mutated = getattr(warnings, "_filters_mutated", None)
        if callable(mutated):
            mutated()


def logging_due(trainer: Any) -> bool:
    """Whether this batch is a logging point (``log_every_n_steps``): Lightning's private
    ``trainer._logger_connector.should_update_logs``."""
    return bool(trainer._logger_connector.should_update_logs)


def should_accumulate(trainer: Any) -> bool:
    """Whether this batch's gradients are accumulated without an optimizer step after it:
    Lightning's private ``fit_loop._should_accumulate()`` (``accumulate_grad_batches``, the
    epoch's last batch)."""
    return bool(trainer.fit_loop._should_accumulate())


def amp_loss_scale(trainer: Any) -> Any:
    """The loss scale inside the loss Lightning backpropagates under ``precision="16-mixed"``, as a
    device tensor (the scaler's private ``_scale``; ``get_scale()`` would sync the host), or
    ``1.0`` without a scaler (32-bit, bf16)."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    scale = getattr(scaler, "_scale", None) if scaler is not None and scaler.is_enabled() else None
    return 1.0 if scale is None else scale


def single_interpolation(text: str) -> bool:
    """Whether OmegaConf resolves ``text`` to whatever one interpolation returns (a node, a
    number) rather than to a string (text around it, several interpolations): its grammar's
    parse tree (OmegaConf's private grammar modules)."""
    from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser
    from omegaconf.grammar_parser import parse

    try:
        body = parse(text).getChild(0)
    except Exception:  # not valid interpolation grammar: OmegaConf keeps it as a string
        return False
    return body.getChildCount() == 1 and isinstance(
        body.getChild(0), OmegaConfGrammarParser.InterpolationContext
    )


def parse_hydra_argv(argv: Sequence[str]) -> Any:
    """Hydra's own command-line parser on ``argv`` (its namespace), or ``None`` when ``argv``
    is not a Hydra command line (nothing is printed)."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    try:
        args, unknown = parser.parse_known_args(list(argv))
    except SystemExit:
        return None
    return None if unknown else args


def primary_search_path(hydra: Any, config_name: str | None) -> Any:
    """The ``hydra.searchpath`` of the primary config, read as Hydra reads it before composing
    (Hydra's private config loader and repository; the primary file alone is loaded)."""
    from omegaconf import OmegaConf

    if config_name is None:
        return None
    loaded = hydra.config_loader.repository.load_config(config_name)
    if loaded is None or not OmegaConf.is_dict(loaded.config):
        return None
    return OmegaConf.select(loaded.config, "hydra.searchpath")


def replace_initial_hparams(module: Any, edit: Callable[[Any], Any]) -> None:
    """Replace what ``module.hparams_initial`` gives (what a logger writes: ``hparams.yaml``)
    with ``edit`` of it, leaving ``module.hparams`` (what the module reads) as it is:
    Lightning's private ``_hparams_initial``, set by ``save_hyperparameters`` (absent: nothing
    was saved, nothing to replace)."""
    initial = getattr(module, "_hparams_initial", None)
    if initial is not None:
        module._hparams_initial = edit(initial)


class _EditedDump:
    """Lightning's checkpoint dump, then ``edit`` on the dict (a class, not a closure, so a
    trainer sent to spawned processes still pickles)."""

    def __init__(self, connector: Any, edit: Callable[[dict[str, Any]], None]) -> None:
        self.connector, self.edit = connector, edit

    def __call__(self, weights_only: bool | None = None) -> dict[str, Any]:
        checkpoint: dict[str, Any] = type(self.connector).dump_checkpoint(self.connector, weights_only)
        self.edit(checkpoint)
        return checkpoint


def edit_saved_checkpoints(trainer: Any, edit: Callable[[dict[str, Any]], None]) -> None:
    """Run ``edit`` on every checkpoint dict ``trainer`` saves, after every hook, before it is
    written (weights-only checkpoints too, which skip the callbacks' ``on_save_checkpoint``):
    wraps Lightning's private ``trainer._checkpoint_connector.dump_checkpoint``, which
    ``trainer.save_checkpoint`` calls for every strategy."""
    connector = trainer._checkpoint_connector
    connector.dump_checkpoint = _EditedDump(connector, edit)


def single_run_overrides(argv: Sequence[str]) -> list[str] | None:
    """The overrides of a command line that runs one job (not ``-m``, ``--cfg``, ``--help``,
    ``--info``, shell completion), parsed by Hydra's own (private) parser; else ``None``."""
    from hydra._internal.utils import get_args_parser

    try:
        args = get_args_parser().parse_args(list(argv))
    except SystemExit:  # Hydra reports a bad command line itself
        return None
    if args.multirun or args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
        return None
    return list(args.overrides)


def compose_like_hydra_main(
    argv: Sequence[str],
    *,
    calling_module: str | None,
    config_path: str | None,
    config_name: str | None,
    calling_file: str | None = None,
    check_search_path: Callable[[Any, list[str], bool], None] | None = None,
    compose_for_cfg: bool = False,
) -> tuple[Any, list[str]] | None:
    """The config (with its ``hydra`` node) that ``@hydra.main`` would compose for ``argv``,
    and the overrides it found there.

    Uses Hydra's own argument parser, search path and loader, so it sees what the run
    will see: ``--config-dir``, ``--config-name``, ``-m`` (sweep overrides are left to
    the sweeper, as Hydra does). ``calling_file`` or ``calling_module`` locate
    ``config_path`` as for the decorated function. ``check_search_path(entries, user_dirs,
    from_command_line)`` sees the primary config's ``hydra.searchpath`` before Hydra imports
    anything it names, for every command (``--cfg`` and ``--help`` compose too). Returns
    ``None`` for commands that build nothing (``--help``, ``--cfg``, ``--info``, shell
    completion); with ``compose_for_cfg``, ``--cfg`` and ``--info`` compose the job's config
    (what they print).
    """
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path, get_args_parser
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    args = get_args_parser().parse_args(list(argv))
    modes = [args.run, args.multirun, args.cfg, args.info, args.shell_completion]
    if sum(bool(m) for m in modes) > 1:  # Hydra raises a bare ValueError with a traceback
        from lossmix.errors import LossConfigError

        raise LossConfigError(
            "only one of --run, --multirun (-m), --cfg, --info and --shell-completion can be "
            "given; to see a sweep's launcher config, drop -m and the sweep's lists: "
            "--cfg hydra prints the hydra node."
        )
    search_path = create_automatic_config_search_path(
        calling_file, calling_module, args.config_path or config_path
    )
    if args.config_dir is not None:
        search_path.prepend(
            provider="command-line",
            path=f"file://{os.path.abspath(args.config_dir)}",
            anchor=SearchPathQuery(provider="schema"),
        )
    user_dirs = [
        e.path[len("file://") :]
        for e in search_path.get_path()
        if e.provider in ("main", "command-line") and e.path is not None and e.path.startswith("file://")
    ]
    GlobalHydra.instance().clear()
    try:
        task = calling_module.rsplit(".", 1)[-1] if calling_module else Path(calling_file or "app").stem
        hydra = Hydra.create_main_hydra2(task_name=task, config_search_path=search_path)
        name, overrides = args.config_name or config_name, list(args.overrides)
        if check_search_path is not None:
            given = any(o.lstrip("+~").startswith("hydra.searchpath") for o in overrides)
            entries = None if given else primary_search_path(hydra, name)
            check_search_path(entries, user_dirs, given)
        shows = (args.cfg or args.info) and not compose_for_cfg
        if args.help or args.hydra_help or shows or args.shell_completion:
            return None
        mode = hydra.get_mode(name, overrides)
        if mode is None or (args.multirun and mode == RunMode.RUN):  # as Hydra's _run_app
            mode = RunMode.MULTIRUN if args.multirun else RunMode.RUN
            overrides.append(f"hydra.mode={mode.name}")
        cfg = hydra.compose_config(name, overrides, run_mode=mode, with_log_configuration=False)
        return cfg, list(args.overrides)
    finally:
        GlobalHydra.instance().clear()
