"""``LossSchedule``: schedules of terms' weights and of their losses' hyper-parameters.

Each entry names a target (see :mod:`lossmix.schedules.paths`) and a schedule (see
:mod:`lossmix.schedules` for the kinds)::

    callbacks:
      loss_schedule:
        _target_: lossmix.lightning.callbacks.LossSchedule
        schedules:
          l1: {kind: onoff, by: epoch, last: 15}             # YOLOX: L1 only at the end
          cls:
            gamma: {kind: linear, by: epoch, end: 10, initial: 0.0, final: 2.0}
          kd.temperature: {kind: exponential, initial: 4.0, gamma: 0.999, min: 1.0}
          vae.kl: {kind: cyclical, cycles: 4, ratio: 0.5}    # cyclical KL annealing
          reg: {kind: plateau, monitor: val/loss, patience: 2, factor: 0.5}

A term's schedule multiplies its configured weight; a hyper-parameter's sets it. Values
are computed on the host from the step or epoch (the trainer restores both on resume) or,
for ``plateau``, from the monitored metric once per epoch (its state is checkpointed), and
set before each training batch and before validation. Scheduled weights are logged as
``{stage}/weight/{term}``, scheduled hyper-parameters as ``train/param/{term}.{name}``.
A checkpoint of lossmix 0.1 that keyed this state by the callback's first name,
``LossWeightSchedule``, resumes into it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch

from lossmix.errors import LossConfigError
from lossmix.lightning.access import loss_mix_of, loss_step_of, term_logger_of
from lossmix.registry.nodes import to_plain
from lossmix.schedules import SCHEDULE_KINDS, BaseScheduleKind, Schedule
from lossmix.schedules.paths import SchedulePath, flatten_schedules, resolve_path

__all__ = ["SCHEDULE_KINDS", "BaseScheduleKind", "LossSchedule", "Schedule"]


class LossSchedule(pl.Callback):
    """Schedule terms' weights and their losses' or samplers' float hyper-parameters.

    Args:
        schedules: ``{target: {kind: ..., by: step | epoch, ...}}``, nested or dotted:
            ``{cls: {gamma: {...}}}`` equals ``{"cls.gamma": {...}}``. A target is a term
            (``reg``, ``disc/r1``: its weight is multiplied), a loss's hyper-parameter
            (``cls.gamma``) or a sampler's (``cls.sampler.pos_fraction``). Empty: nothing
            is scheduled (the app keeps this callback in its defaults for the command line).

    A target the model does not have, or that is not a float its module reads at each
    call, is an error at ``setup`` listing every schedulable target.
    """

    def __init__(self, schedules: Mapping[str, Any] | None = None) -> None:
        schedules = to_plain(schedules) if schedules is not None else {}
        if not isinstance(schedules, Mapping):
            raise LossConfigError(
                f"{type(self).__name__} needs schedules: {{term: {{kind: linear, ...}}}} or "
                f"{{term: {{param: {{kind: ...}}}}}}; got {schedules!r}."
            )
        self.schedules = {path: Schedule(path, spec) for path, spec in flatten_schedules(schedules).items()}
        self.values: dict[str, float] = {}
        self.targets: dict[str, SchedulePath] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(terms=sorted(self.schedules))

    @property
    def _legacy_state_key(self) -> Any:
        # checkpoints of lossmix 0.1 keyed a weight schedule's state by its first class
        # name, LossWeightSchedule (Lightning looks this key up when state_key is absent)
        return "LossWeightSchedule" + self.state_key.removeprefix(type(self).__qualname__)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self.schedules:
            return
        mix = loss_mix_of(pl_module, needed_by=type(self).__name__)
        for path, schedule in self.schedules.items():
            target = self.targets[path] = resolve_path(mix, path)
            if target.param is None:
                mix.track_weight(target.term)
            schedule.resolve_last(trainer.max_epochs if schedule.by == "epoch" else trainer.max_steps)
        self._apply(trainer, pl_module)

    def _apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.targets:
            return
        step = loss_step_of(trainer, pl_module)
        mix = loss_mix_of(pl_module, needed_by=type(self).__name__)
        for path, schedule in self.schedules.items():
            value = schedule(step if schedule.by == "step" else trainer.current_epoch)
            self.targets[path].apply(mix, value)
            self.values[path] = value

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._apply(trainer, pl_module)
        params = [(t.log_name, self.values[p]) for p, t in self.targets.items() if t.param is not None]
        logger = term_logger_of(pl_module) if params else None
        if logger is not None:
            values = torch.tensor([v for _, v in params], dtype=torch.float32, device=pl_module.device)
            logger.record_values("train", "param", [name for name, _ in params], values)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply(trainer, pl_module)

    # -- plateau: a monitored metric, once per epoch -------------------------------------------
    def _plateaus(self, validation: bool) -> list[tuple[str, Schedule, str]]:
        return [
            (path, s, s.monitor)
            for path, s in self.schedules.items()
            if s.monitor is not None and s.monitor.startswith("val/") == validation
        ]

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A training metric is followed through the term logger's epoch means, the moment
        # they are computed (before any checkpoint of the epoch is written).
        logger = term_logger_of(pl_module) if self._plateaus(validation=False) else None
        if logger is not None:
            logger.on_epoch_summary(self._train_epoch)

    def _train_epoch(self, stage: str, summary: Mapping[str, tuple[float, float]]) -> None:
        if stage != "train":
            return
        for path, schedule, monitor in self._plateaus(validation=False):
            key = monitor.removesuffix("_epoch")
            if key not in summary:
                raise LossConfigError(
                    f"schedule for '{path}': plateau monitors '{monitor}', which is not one of "
                    f"lossmix's training means ({', '.join(f'{k}_epoch' for k in sorted(summary))}); "
                    "a metric of your own must be a validation one (val/...)."
                )
            schedule.fn.observe(summary[key][0])

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for path, schedule, monitor in self._plateaus(validation=True):
            metric = trainer.callback_metrics.get(monitor)
            if metric is None:
                known = ", ".join(sorted(trainer.callback_metrics)) or "none yet"
                raise LossConfigError(
                    f"schedule for '{path}': plateau monitors '{monitor}', which is not logged. "
                    f"Logged metrics: {known}."
                )
            schedule.fn.observe(float(metric))  # one read per epoch, as ReduceLROnPlateau's

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # Pure kinds are recomputed from the restored step and epoch; the specs and the last
        # values are kept so a resume with different schedules can be noticed, and a
        # plateau's state so it continues where it was.
        return {
            "schedules": {n: {"kind": s.kind, "by": s.by, **s.spec} for n, s in self.schedules.items()},
            "values": dict(self.values),
            "states": {n: s.fn.state_dict() for n, s in self.schedules.items() if s.fn.state_dict()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.values = dict(state_dict.get("values", {}))
        for path, state in state_dict.get("states", {}).items():
            if path in self.schedules:
                self.schedules[path].fn.load_state_dict(state)
