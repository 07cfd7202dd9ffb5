"""Every private API of Lightning and Hydra that lossmix uses, behind one function each.

``tests/test_compat.py`` calls each of them against the installed versions, so an
upgrade that moves one fails there, loudly, instead of somewhere deep in a run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "amp_loss_scale",
    "batches_stepped",
    "close_epoch_ended_in_checkpoint",
    "compose_like_hydra_main",
    "default_checkpoint_io",
    "fast_dev_run",
    "logging_due",
    "resumed_mid_epoch",
    "should_accumulate",
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
) -> tuple[Any, list[str]] | None:
    """The config (with its ``hydra`` node) that ``@hydra.main`` would compose for ``argv``,
    and the overrides it found there.

    Uses Hydra's own argument parser, search path and loader, so it sees what the run
    will see: ``--config-dir``, ``--config-name``, ``-m`` (sweep overrides are left to
    the sweeper, as Hydra does). ``calling_file`` or ``calling_module`` locate
    ``config_path`` as for the decorated function. Returns ``None`` for commands that
    build nothing (``--help``, ``--cfg``, ``--info``, shell completion).
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
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
        return None
    search_path = create_automatic_config_search_path(
        calling_file, calling_module, args.config_path or config_path
    )
    if args.config_dir is not None:
        search_path.prepend(
            provider="command-line",
            path=f"file://{os.path.abspath(args.config_dir)}",
            anchor=SearchPathQuery(provider="schema"),
        )
    GlobalHydra.instance().clear()
    try:
        task = calling_module.rsplit(".", 1)[-1] if calling_module else Path(calling_file or "app").stem
        hydra = Hydra.create_main_hydra2(task_name=task, config_search_path=search_path)
        name, overrides = args.config_name or config_name, list(args.overrides)
        mode = hydra.get_mode(name, overrides)
        if mode is None or (args.multirun and mode == RunMode.RUN):  # as Hydra's _run_app
            mode = RunMode.MULTIRUN if args.multirun else RunMode.RUN
            overrides.append(f"hydra.mode={mode.name}")
        cfg = hydra.compose_config(name, overrides, run_mode=mode, with_log_configuration=False)
        return cfg, list(args.overrides)
    finally:
        GlobalHydra.instance().clear()
