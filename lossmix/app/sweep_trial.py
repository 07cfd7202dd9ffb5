"""One trial of a lossmix Optuna sweep, seen from inside its training job.

The sweeper (:mod:`lossmix.app.optuna_sweeper`) samples a trial's weights once, in its own
process, and hands the job its trial by adding a :class:`TrialReporter` callback to the
job's overrides (the study's storage URL, its name and the trial's number). Every rank of
the job composes the same overrides, so every rank trains with the same weights; the
callback checks it (one gather) and, on rank 0 alone, writes to the study:

* ``lossmix.rank_weights``: each rank's term weights, as the job built them;
* ``lossmix.intermediate``: the pruning metric after each validation, ``{step: value}``;
* ``lossmix.pruned``: the step at which the trial was stopped, if it was;
* ``lossmix.values``: the objectives' final values, read by the sweeper when the job ends.

**Pruning** (:func:`should_prune`, the median rule, for one or several objectives alike): a
trial stops at a validation when its metric there is worse than the median of the
*finished* trials' metric at the same validation step, once ``n_startup_trials`` trials
have finished and after ``n_warmup_steps`` training steps. The decision is rank 0's,
broadcast to the other ranks, so they stop together.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from lossmix.errors import LossConfigError, LossRunError

__all__ = [
    "INTERMEDIATE",
    "PRUNED",
    "RANK_WEIGHTS",
    "VALUES",
    "TrialReporter",
    "metric_value",
    "open_storage",
    "should_prune",
]

RANK_WEIGHTS = "lossmix.rank_weights"
INTERMEDIATE = "lossmix.intermediate"
PRUNED = "lossmix.pruned"
VALUES = "lossmix.values"


def open_storage(spec: str) -> Any:
    """An Optuna storage from its URL: ``sqlite:///<file>``, any RDB URL
    (``postgresql://user@host/db``, ``mysql://...``), or ``journal:<file>`` for Optuna's
    journal storage (a file on a shared filesystem, for many processes and machines).

    Raises:
        LossConfigError: the spec is neither.
    """
    import optuna

    if spec.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(spec[len("journal:") :]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if "://" in spec:
        return optuna.storages.RDBStorage(spec)
    raise LossConfigError(
        f"hydra.sweeper.storage={spec!r} is not a storage; use sqlite:///<file>, an RDB URL "
        "(postgresql://user@host/db) or journal:<file on a shared filesystem>."
    )


def should_prune(
    value: float, finished: Sequence[Mapping[str, float]], step: int, *, direction: str, n_startup_trials: int
) -> bool:
    """The median rule: stop when ``value`` (this trial's metric at ``step``) is worse than the
    median of the finished trials' values at that step (those that have one).

    Args:
        value: this trial's metric at this validation.
        finished: each finished trial's ``{step: value}`` (JSON keys: strings).
        step: the global step of this validation.
        direction: ``minimize`` or ``maximize`` (which way is better).
        n_startup_trials: no pruning before this many finished trials have a value at ``step``.

    >>> done = [{"10": 1.0}, {"10": 2.0}, {"10": 3.0}]
    >>> should_prune(2.5, done, 10, direction="minimize", n_startup_trials=3)
    True
    >>> should_prune(1.5, done, 10, direction="minimize", n_startup_trials=3)
    False
    """
    others = [float(t[str(step)]) for t in finished if str(step) in t and math.isfinite(float(t[str(step)]))]
    if not math.isfinite(value):
        return True
    if len(others) < max(n_startup_trials, 1):
        return False
    median = statistics.median(others)
    return value > median if direction == "minimize" else value < median


def metric_value(trainer: pl.Trainer, key: str, stage: str = "val") -> float:
    """``key`` from the trainer's metrics, else from the :class:`~lossmix.lightning.TermLogger`'s
    last epoch summary (which holds the raw values, ``val/raw/<term>``, even unlogged).

    Raises:
        LossConfigError: the run has no such metric (naming those it has).
    """
    value = trainer.callback_metrics.get(key)
    if value is not None:
        return float(value)
    from lossmix.lightning import TermLogger

    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, TermLogger) and key in callback.epoch_summary.get(stage, {}):
            return float(callback.epoch_summary[stage][key][0])
    known = sorted({*trainer.callback_metrics, *_summary_keys(trainer, stage)})
    raise LossConfigError(
        f"the sweep's objective '{key}' is not a metric of this run; use one of: {', '.join(known)}."
    )


def _summary_keys(trainer: pl.Trainer, stage: str) -> list[str]:
    from lossmix.lightning import TermLogger

    return [
        k
        for c in trainer.callbacks  # type: ignore[attr-defined]
        if isinstance(c, TermLogger)
        for k in c.epoch_summary.get(stage, {})
    ]


class TrialReporter(pl.Callback):
    """Reports one trial of a lossmix Optuna sweep to its study (see the module doc).

    The sweeper adds it to every job as ``callbacks.lossmix_trial``; you do not configure it.

    Args:
        storage: the study's storage URL (:func:`open_storage`).
        study: the study's name.
        trial: the trial's number in the study.
        objectives: the metric keys whose final values are the trial's objectives.
        prune_metric: the metric the median rule watches (``None``: no pruning).
        direction: whether ``prune_metric`` is minimised or maximised.
        n_startup_trials, n_warmup_steps: see :func:`should_prune`.
    """

    def __init__(
        self,
        storage: str,
        study: str,
        trial: int,
        objectives: Sequence[str],
        prune_metric: str | None = None,
        direction: str = "minimize",
        n_startup_trials: int = 3,
        n_warmup_steps: int = 0,
    ) -> None:
        self.storage_url, self.study_name, self.number = storage, study, int(trial)
        self.objectives = [str(o) for o in objectives]
        self.prune_metric, self.direction = prune_metric, direction
        self.n_startup_trials, self.n_warmup_steps = n_startup_trials, n_warmup_steps
        self.intermediate: dict[str, float] = {}
        self.pruned_at: int | None = None
        self._handle: tuple[Any, int, int] | None = None

    def _storage(self) -> tuple[Any, int, int]:
        """The storage, the study's id and the trial's id (opened once, on rank 0)."""
        if self._handle is None:
            storage = open_storage(self.storage_url)
            study_id = storage.get_study_id_from_name(self.study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
            self._handle = (storage, study_id, trial_id)
        return self._handle

    def _set(self, key: str, value: Any) -> None:
        storage, _, trial_id = self._storage()
        storage.set_trial_user_attr(trial_id, key, value)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Every rank's term weights, gathered: they must be the trial's on every rank."""
        mix = getattr(pl_module, "loss_mix", None)
        names = [t.name for _, t in mix.all_terms()] if mix is not None else []
        mine = torch.tensor(
            [float(t.weight) for _, t in mix.all_terms()] if mix is not None else [], dtype=torch.float64
        )
        gathered = trainer.strategy.all_gather(mine.to(pl_module.device))
        rows = gathered.reshape(-1, len(names)).cpu().tolist() if names else []
        if trainer.is_global_zero:
            self._set(RANK_WEIGHTS, [dict(zip(names, row, strict=True)) for row in rows])
        if any(row != rows[0] for row in rows):
            raise LossRunError(
                f"trial {self.number}: the ranks built different term weights ({rows}); every rank "
                "must compose the trial's overrides (launch it with the sweep's launcher)."
            )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Record the pruning metric; stop every rank when the median rule says so."""
        if trainer.sanity_checking or self.prune_metric is None:
            return
        step = trainer.global_step
        decision = False
        if trainer.is_global_zero:
            value = metric_value(trainer, self.prune_metric)
            self.intermediate[str(step)] = value
            self._set(INTERMEDIATE, dict(self.intermediate))
            if step >= self.n_warmup_steps:
                decision = should_prune(
                    value,
                    self._finished(),
                    step,
                    direction=self.direction,
                    n_startup_trials=self.n_startup_trials,
                )
        if trainer.strategy.broadcast(decision, src=0):
            self.pruned_at = step
            if trainer.is_global_zero:
                self._set(PRUNED, step)
            trainer.should_stop = True

    def _finished(self) -> list[dict[str, float]]:
        from optuna.trial import TrialState

        storage, study_id, _ = self._storage()
        done = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,))
        return [t.user_attrs.get(INTERMEDIATE, {}) for t in done]

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The objectives' final values, for the sweeper to tell the study."""
        if self.pruned_at is not None or not trainer.is_global_zero:
            return
        values = {key: metric_value(trainer, key) for key in self.objectives}
        self._set(VALUES, json.loads(json.dumps(values)))
