"""``LossWeightSchedule``: per-term weight schedules by step or by epoch.

A schedule gives a **multiplier** of the term's configured ``loss_weight``: the
effective weight is ``loss_weight × schedule(t)`` (× k for a lazy term). A
multiplier of 0 switches the term off while it is still computed, so its log keys
stay. The value is a pure function of the step or epoch (Python ints), so a step
costs no host sync, and a resumed run, whose step and epoch Lightning restores,
continues the schedule exactly. ``t`` is the number of optimizer steps taken
(``by: step``, the lazy terms' counter) or the epoch index from 0 (``by: epoch``).

Kinds (all values are multipliers ≥ 0):

============ ====================================================================
``constant`` ``value``
``linear``   ``initial`` at ``t ≤ begin`` to ``final`` at ``t ≥ end``, linearly
``cosine``   the same ends, along half a cosine
``step``     ``initial × gamma^(number of milestones ≤ t)``
``piecewise````points: [[t0, v0], [t1, v1], ...]``, linear between, constant outside
``onoff``    ``value`` from ``on`` (or for the ``last`` N epochs/steps) until ``off``
============ ====================================================================

Example (YOLOX: the L1 term only for the last 15 epochs)::

    callbacks:
      loss_weights:
        _target_: lossmix.lightning.callbacks.LossWeightSchedule
        schedules:
          l1: {kind: onoff, by: epoch, last: 15}
          reg: {kind: linear, by: step, begin: 0, end: 1000, initial: 0.0, final: 1.0}
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl

from lossmix.errors import LossConfigError, did_you_mean

__all__ = ["LossWeightSchedule", "Schedule"]

_KEYS = {
    "constant": {"value"},
    "linear": {"begin", "end", "initial", "final"},
    "cosine": {"begin", "end", "initial", "final"},
    "step": {"milestones", "gamma", "initial"},
    "piecewise": {"points"},
    "onoff": {"on", "off", "last", "value"},
}


class Schedule:
    """One term's schedule: ``schedule(t) -> float``; see the module docstring for the kinds.

    Example:
        >>> ramp = Schedule("reg", {"kind": "linear", "begin": 0, "end": 10, "final": 2.0})
        >>> ramp(0), ramp(5), ramp(20)
        (0.0, 1.0, 2.0)
    """

    def __init__(self, term: str, spec: Mapping[str, Any]) -> None:
        self.term = term
        spec = dict(spec)
        self.kind = spec.pop("kind", None)
        self.by = spec.pop("by", "step")
        if self.kind not in _KEYS:
            raise self._error(f"unknown kind {self.kind!r}.{did_you_mean(str(self.kind), _KEYS)}"
                              f" Kinds: {', '.join(_KEYS)}.")
        if self.by not in ("step", "epoch"):
            raise self._error(f"by={self.by!r}; use 'step' or 'epoch'.")
        unknown = sorted(set(spec) - _KEYS[self.kind])
        if unknown:
            raise self._error(f"{self.kind} takes {', '.join(sorted(_KEYS[self.kind]))}, "
                              f"not {unknown[0]!r}.{did_you_mean(unknown[0], _KEYS[self.kind])}")
        self.spec = spec
        self._points = self._build_points()

    def _error(self, message: str) -> LossConfigError:
        return LossConfigError(f"schedule for term '{self.term}': {message}")

    def _number(self, key: str, default: float | None = None, *, at_least: float = 0.0) -> float:
        value = self.spec.get(key, default)
        if value is None:
            raise self._error(f"{self.kind} needs '{key}'.")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < at_least:
            raise self._error(f"{key}={value!r} must be a number >= {at_least:g}.")
        return float(value)

    def _build_points(self) -> list[tuple[float, float]]:
        """Every kind but ``onoff`` as (t, multiplier) knots; ``step`` as jumps."""
        if self.kind == "constant":
            return [(0.0, self._number("value", 1.0))]
        if self.kind in ("linear", "cosine"):
            begin, end = self._number("begin", 0), self._number("end")
            if not end > begin:
                raise self._error(f"the ramp ends are out of order: begin={begin:g} must be "
                                  f"before end={end:g}.")
            return [(begin, self._number("initial", 0.0)), (end, self._number("final", 1.0))]
        if self.kind == "step":
            milestones = self.spec.get("milestones")
            if not isinstance(milestones, (list, tuple)) or not milestones:
                raise self._error("step needs milestones: [t1, t2, ...].")
            if list(milestones) != sorted(milestones) or len(set(milestones)) != len(milestones):
                raise self._error(f"milestones {list(milestones)} must increase.")
            self._number("gamma", 0.1)
            return [(float(m), 0.0) for m in milestones]
        if self.kind == "piecewise":
            points = self.spec.get("points")
            if not isinstance(points, (list, tuple)) or not points or not all(
                    isinstance(p, (list, tuple)) and len(p) == 2 for p in points):
                raise self._error("piecewise needs points: [[t0, v0], [t1, v1], ...].")
            ts = [p[0] for p in points]
            if ts != sorted(ts) or len(set(ts)) != len(ts):
                raise self._error(f"piecewise points must have increasing t; got {ts}.")
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0
                   for _, v in points):
                raise self._error(f"piecewise values must be numbers >= 0; got {list(points)}.")
            return [(float(t), float(v)) for t, v in points]
        on, off, last = self.spec.get("on"), self.spec.get("off"), self.spec.get("last")
        if (on is None) == (last is None):
            raise self._error("onoff needs exactly one of 'on' (t it turns on) or 'last' "
                              "(on for the last N epochs/steps).")
        for key in ("on", "off", "last"):
            if self.spec.get(key) is not None:
                self._number(key)
        self._number("value", 1.0)
        if on is not None and off is not None and not off > on:
            raise self._error(f"off={off} must come after on={on}.")
        return []

    def resolve_last(self, total: int | None) -> None:
        """Turn ``last: N`` into ``on: total − N`` once the run's length is known."""
        if self.kind != "onoff" or self.spec.get("last") is None:
            return
        if total is None or total < 0:
            raise self._error(f"last={self.spec['last']} needs the run's length; set "
                              f"trainer.max_{self.by}s.")
        self.spec["on"] = max(0, total - int(self.spec["last"]))

    def __call__(self, t: int) -> float:
        if self.kind == "onoff":
            on, off = self.spec.get("on"), self.spec.get("off")
            if on is None:
                raise self._error("'last' is resolved when training starts (resolve_last).")
            active = t >= on and (off is None or t < off)
            return self._number("value", 1.0) if active else 0.0
        if self.kind == "step":
            passed = bisect.bisect_right([p[0] for p in self._points], t)
            return self._number("initial", 1.0) * self._number("gamma", 0.1) ** passed
        points = self._points
        if t <= points[0][0]:
            return points[0][1]
        if t >= points[-1][0]:
            return points[-1][1]
        i = bisect.bisect_right([p[0] for p in points], t)
        (t0, v0), (t1, v1) = points[i - 1], points[i]
        fraction = (t - t0) / (t1 - t0)
        if self.kind == "cosine":
            fraction = (1.0 - math.cos(math.pi * fraction)) / 2.0
        return v0 + (v1 - v0) * fraction


class LossWeightSchedule(pl.Callback):
    """Multiply terms' weights by schedules, by step or by epoch.

    Args:
        schedules: ``{term: {kind: ..., by: step | epoch, ...}}``; a term in a group is
            named ``group/term``.

    The multiplier is set before each training batch (and before validation, so
    ``val/loss`` uses the current weights); each scheduled term's effective weight is
    logged as ``{stage}/weight/{term}``. A schedule naming a term the model does not
    have is an error at ``setup``, listing the terms.
    """

    def __init__(self, schedules: Mapping[str, Mapping[str, Any]]) -> None:
        schedules = _plain(schedules)
        if not isinstance(schedules, Mapping) or not schedules:
            raise LossConfigError(
                "LossWeightSchedule needs schedules: {term: {kind: linear, ...}}; got "
                f"{schedules!r}."
            )
        self.schedules = {name: Schedule(name, spec) for name, spec in schedules.items()}
        self.values: dict[str, float] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(terms=sorted(self.schedules))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        mix = getattr(pl_module, "loss_mix", None)
        if mix is None:
            raise LossConfigError("LossWeightSchedule needs a CompositeLoss module with "
                                  "configure_loss() called.")
        for name, schedule in self.schedules.items():
            mix.find_term(name).log_weight = True  # raises, listing the terms, if unknown
            schedule.resolve_last(trainer.max_epochs if schedule.by == "epoch"
                                  else trainer.max_steps)
        self._apply(trainer, pl_module)

    def _apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = pl_module.loss_step() if hasattr(pl_module, "loss_step") else trainer.global_step
        for name, schedule in self.schedules.items():
            value = schedule(step if schedule.by == "step" else trainer.current_epoch)
            pl_module.loss_mix.find_term(name).scale = value
            self.values[name] = value

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             *args: Any) -> None:
        self._apply(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        # The multipliers are recomputed from the restored step and epoch; the specs and the
        # last values are kept so a resume with different schedules can be noticed.
        return {"schedules": {n: {"kind": s.kind, "by": s.by, **s.spec}
                              for n, s in self.schedules.items()},
                "values": dict(self.values)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.values = dict(state_dict.get("values", {}))


def _plain(node: Any) -> Any:
    if type(node).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(node, resolve=True)
    return node
