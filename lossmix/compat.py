"""Every private API of Lightning and Hydra that lossmix uses, behind one function each.

``tests/test_compat.py`` calls each of them against the installed versions, so an
upgrade that moves one fails there, loudly, instead of somewhere deep in a run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

__all__ = [
    "amp_loss_scale",
    "batches_stepped",
    "compose_like_hydra_main",
    "fast_dev_run",
    "logging_due",
    "should_accumulate",
    "trainer_callbacks",
]


def trainer_callbacks(trainer: Any) -> list[Any]:
    """The trainer's callback list (set by Lightning at init; untyped on the class)."""
    callbacks: list[Any] = trainer.callbacks
    return callbacks


def fast_dev_run(trainer: Any) -> bool:
    """Whether the trainer runs ``fast_dev_run`` (set by Lightning at init; untyped)."""
    return bool(trainer.fast_dev_run)


def batches_stepped(trainer: Any) -> int:
    """Batches that made the optimizer step so far (counts a batch once in manual optimization,
    where ``global_step`` counts every optimizer): Lightning's private
    ``fit_loop.epoch_loop._batches_that_stepped``."""
    return int(trainer.fit_loop.epoch_loop._batches_that_stepped)


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


def compose_like_hydra_main(
    argv: Sequence[str], *, calling_module: str, config_path: str, config_name: str
) -> tuple[Any, list[str]] | None:
    """The config (with its ``hydra`` node) that ``@hydra.main`` would compose for ``argv``,
    and the overrides it found there.

    Uses Hydra's own argument parser, search path and loader, so it sees what the run
    will see: ``--config-dir``, ``--config-name``, ``-m`` (sweep overrides are left to
    the sweeper, as Hydra does). Returns ``None`` for commands that build nothing
    (``--help``, ``--cfg``, ``--info``, shell completion).
    """
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path, get_args_parser
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    args = get_args_parser().parse_args(list(argv))
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
        return None
    search_path = create_automatic_config_search_path(None, calling_module, args.config_path or config_path)
    if args.config_dir is not None:
        search_path.prepend(
            provider="command-line",
            path=f"file://{os.path.abspath(args.config_dir)}",
            anchor=SearchPathQuery(provider="schema"),
        )
    GlobalHydra.instance().clear()
    try:
        hydra = Hydra.create_main_hydra2(
            task_name=calling_module.rsplit(".", 1)[-1], config_search_path=search_path
        )
        name, overrides = args.config_name or config_name, list(args.overrides)
        mode = hydra.get_mode(name, overrides)
        if mode is None or (args.multirun and mode == RunMode.RUN):  # as Hydra's _run_app
            mode = RunMode.MULTIRUN if args.multirun else RunMode.RUN
            overrides.append(f"hydra.mode={mode.name}")
        cfg = hydra.compose_config(name, overrides, run_mode=mode, with_log_configuration=False)
        return cfg, list(args.overrides)
    finally:
        GlobalHydra.instance().clear()
