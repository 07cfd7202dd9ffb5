"""Schedule kinds tied to the run's windows or to a metric: ``onoff``, ``cyclical``, ``plateau``.

``onoff`` and ``cyclical`` are still pure functions of ``t`` once the run's length is known
(``last: N``, ``cycles: M``); ``plateau`` follows a monitored metric, like
``torch.optim.lr_scheduler.ReduceLROnPlateau``, and keeps its state in checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lossmix.schedules.kinds import BaseScheduleKind, schedule_kind

__all__ = ["CyclicalSchedule", "OnOffSchedule", "PlateauSchedule"]


@schedule_kind
class OnOffSchedule(BaseScheduleKind):
    """``value`` (default 1) from ``on`` (or for the ``last`` N epochs/steps) until ``off``, else 0.

    ``last: N`` becomes ``on: total − N`` (also written to :attr:`spec`) in
    :meth:`resolve_length`, which the schedule callback calls when training starts.

    >>> window = OnOffSchedule("reg", {"on": 1, "off": 3, "value": 2.0})
    >>> [window(t) for t in range(4)]
    [0.0, 2.0, 2.0, 0.0]
    """

    name = "onoff"
    keys = frozenset({"on", "off", "last", "value"})

    def __init__(self, term: str, spec: Mapping[str, Any]) -> None:
        super().__init__(term, spec)
        self.on, self.off, self.last = (self.spec.get(k) for k in ("on", "off", "last"))
        if (self.on is None) == (self.last is None):
            raise self._error(
                "onoff needs exactly one of 'on' (t it turns on) or 'last' (on for the last N epochs/steps)."
            )
        for key in ("on", "off", "last"):
            if self.spec.get(key) is not None:
                self._number(key)
        self.value = self._number("value", 1.0)
        if self.on is not None and self.off is not None and not self.off > self.on:
            raise self._error(f"off={self.off} must come after on={self.on}.")

    def resolve_length(self, total: int | None, by: str) -> None:
        """Turn ``last: N`` into ``on: total − N``."""
        if self.last is None:
            return
        if total is None or total < 0:
            raise self._error(f"last={self.last} needs the run's length; set trainer.max_{by}s.")
        self.on = self.spec["on"] = max(0, total - int(self.last))

    def __call__(self, t: int) -> float:
        if self.on is None:
            raise self._error("'last' is resolved when training starts (resolve_last).")
        active = t >= self.on and (self.off is None or t < self.off)
        return self.value if active else 0.0


@schedule_kind
class CyclicalSchedule(BaseScheduleKind):
    """Cyclical annealing (Fu et al. 2019, for a VAE's KL β): ``initial`` → ``final`` over the
    first ``ratio`` of each cycle, then ``final`` until the cycle ends.

    A cycle is ``period`` steps/epochs long, or the run's length over ``cycles`` (resolved
    when training starts). Within a cycle at fraction ``τ``, the value is
    ``initial + (final − initial)·shape(τ / ratio)`` for ``τ < ratio``, else ``final``;
    ``shape`` is ``linear`` (the paper's) or ``cosine``. Before ``begin`` it is ``initial``.
    Keys: ``period`` | ``cycles``, ``ratio`` (default 0.5), ``initial`` (0), ``final`` (1),
    ``shape``, ``begin`` (0).

    >>> beta = CyclicalSchedule("vae.kl", {"period": 4, "ratio": 0.5})
    >>> [beta(t) for t in range(9)]
    [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 0.0]
    """

    name = "cyclical"
    keys = frozenset({"period", "cycles", "ratio", "initial", "final", "shape", "begin"})

    def __init__(self, term: str, spec: Mapping[str, Any]) -> None:
        super().__init__(term, spec)
        if ("period" in self.spec) == ("cycles" in self.spec):
            raise self._error(
                "cyclical needs exactly one of 'period' (the length of a cycle) or 'cycles' (how "
                "many fit in the run)."
            )
        self.period: float | None = self._number("period", at_least=1) if "period" in self.spec else None
        self.cycles = self._number("cycles", at_least=1) if "cycles" in self.spec else None
        self.ratio = self._number("ratio", 0.5)
        if not 0.0 < self.ratio <= 1.0:
            raise self._error(f"ratio={self.ratio:g} must be in (0, 1]: the part of a cycle that ramps.")
        self.initial, self.final = self._number("initial", 0.0), self._number("final", 1.0)
        self.begin = self._number("begin", 0)
        self.shape = self.spec.get("shape", "linear")
        if self.shape not in ("linear", "cosine"):
            raise self._error(f"shape={self.shape!r}; use 'linear' or 'cosine'.")

    def resolve_length(self, total: int | None, by: str) -> None:
        """Turn ``cycles: M`` into ``period: (total − begin) / M``."""
        if self.cycles is None:
            return
        if total is None or total <= self.begin:
            raise self._error(f"cycles={self.cycles:g} needs the run's length; set trainer.max_{by}s.")
        self.period = self.spec["period"] = (total - self.begin) / self.cycles

    def __call__(self, t: int) -> float:
        if self.period is None:
            raise self._error("'cycles' is resolved when training starts (resolve_last).")
        if t < self.begin:
            return self.initial
        tau = math.fmod(t - self.begin, self.period) / self.period
        if tau >= self.ratio:
            return self.final
        fraction = tau / self.ratio
        if self.shape == "cosine":
            fraction = (1.0 - math.cos(math.pi * fraction)) / 2.0
        return self.initial + (self.final - self.initial) * fraction


@schedule_kind
class PlateauSchedule(BaseScheduleKind):
    """Multiply the value by ``factor`` when ``monitor`` stops improving (``ReduceLROnPlateau``).

    Starts at ``initial`` (default 1). After each new value of the monitored metric (the
    validation epoch's for a ``val/`` key, else the training epoch's): an improvement
    (``mode: min`` or ``max``, by more than ``threshold``, relative or absolute) resets the
    count of bad epochs; more than ``patience`` bad epochs multiply the value by ``factor``
    (default 0.1; above 1 it grows), bounded by ``min`` and ``max``, then wait ``cooldown``
    epochs. ``t`` is not used; the state (value, best, counters) is checkpointed.

    >>> decay = PlateauSchedule("kd.temperature", {"monitor": "val/loss", "patience": 1, "factor": 0.5})
    >>> for metric in (1.0, 0.9, 0.95, 0.97, 0.99):
    ...     decay.observe(metric)
    >>> decay(0)
    0.5
    """

    name = "plateau"
    keys = frozenset(
        {
            "monitor",
            "mode",
            "factor",
            "patience",
            "threshold",
            "threshold_mode",
            "cooldown",
            "initial",
            "min",
            "max",
        }
    )

    def __init__(self, term: str, spec: Mapping[str, Any]) -> None:
        super().__init__(term, spec)
        monitor = self.spec.get("monitor")
        if not isinstance(monitor, str) or not monitor:
            raise self._error("plateau needs monitor: <a logged metric, e.g. val/loss>.")
        self.monitor = monitor
        self.mode = self.spec.get("mode", "min")
        self.threshold_mode = self.spec.get("threshold_mode", "rel")
        for key, value, options in (
            ("mode", self.mode, ("min", "max")),
            ("threshold_mode", self.threshold_mode, ("rel", "abs")),
        ):
            if value not in options:
                raise self._error(f"{key}={value!r}; use {' or '.join(repr(o) for o in options)}.")
        self.factor = self._number("factor", 0.1)
        if self.factor == 0 or self.factor == 1:
            raise self._error(
                f"factor={self.factor:g} would never change the value; give a factor > 0, != 1."
            )
        self.patience = int(self._number("patience", 10))
        self.threshold = self._number("threshold", 1e-4)
        self.cooldown = int(self._number("cooldown", 0))
        self.min = self._number("min", 0.0)
        self.max = None if self.spec.get("max") is None else self._number("max")
        self.value = self._number("initial", 1.0)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.bad_epochs = 0
        self.cooldown_left = 0

    def _improved(self, metric: float) -> bool:
        margin = self.threshold * abs(self.best) if self.threshold_mode == "rel" else self.threshold
        if math.isinf(self.best):
            return not math.isnan(metric)
        return metric < self.best - margin if self.mode == "min" else metric > self.best + margin

    def observe(self, metric: float) -> None:
        if self._improved(metric):
            self.best, self.bad_epochs = metric, 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_epochs = 0
        if self.bad_epochs > self.patience:
            value = max(self.value * self.factor, self.min)
            self.value = value if self.max is None else min(value, self.max)
            self.cooldown_left, self.bad_epochs = self.cooldown, 0

    def __call__(self, t: int) -> float:
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "cooldown_left": self.cooldown_left,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.value = float(state["value"])
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
        self.cooldown_left = int(state["cooldown_left"])
