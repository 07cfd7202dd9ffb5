"""lossmix's Optuna sweeper under the package name Hydra requires of a plugin (``hydra_plugins``).
Hydra imports every ``hydra_plugins`` module of the environment when any Hydra app starts,
so this one imports Hydra alone; lossmix and Optuna are imported when a sweep is set up. The
implementation: :class:`lossmix.app.optuna_sweeper.OptunaSweeper`.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper


class LossmixOptunaSweeper(Sweeper):
    """``hydra/sweeper=lossmix_optuna``: see :mod:`lossmix.app.optuna_sweeper`."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.sweeper: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        from lossmix.app.optuna_sweeper import OptunaSweeper

        self.sweeper = OptunaSweeper(**self.options)
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweeper.sweep(arguments)
