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

Each kind is one :class:`ScheduleKind` subclass that checks its own keys in its
constructor and gives the multiplier from ``__call__(t)``; :data:`SCHEDULE_KINDS`
maps the names above to the classes, and :class:`Schedule` (what
``LossWeightSchedule`` builds for each term) takes ``kind`` and ``by`` off the spec
and hands the rest to the kind's class. A new kind is one class added to that table.

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
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeGuard

import lightning.pytorch as pl

from lossmix.errors import LossConfigError, did_you_mean
from lossmix.lightning.access import loss_mix_of, loss_step_of
from lossmix.nodes import to_plain
from lossmix.validation import is_number

if TYPE_CHECKING:
    pass

__all__ = [
    "SCHEDULE_KINDS",
    "ConstantSchedule",
    "CosineSchedule",
    "LinearSchedule",
    "LossWeightSchedule",
    "OnOffSchedule",
    "PiecewiseSchedule",
    "Schedule",
    "ScheduleKind",
    "StepSchedule",
]


def _error(term: str, message: str) -> LossConfigError:
    return LossConfigError(f"schedule for term '{term}': {message}")


def _is_number(value: Any, at_least: float = 0.0) -> bool:
    """A finite real number, not a bool, that is not below ``at_least``."""
    return is_number(value) and value >= at_least


def _increasing(ts: Sequence[Any]) -> bool:
    """Strictly increasing: sorted and without repeats."""
    return list(ts) == sorted(ts) and len(set(ts)) == len(ts)


def _is_pairs(points: object) -> TypeGuard[Sequence[Sequence[Any]]]:
    """A non-empty list or tuple of ``[t, v]`` pairs."""
    return (
        isinstance(points, (list, tuple))
        and bool(points)
        and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in points)
    )


class ScheduleKind(ABC):
    """One kind of schedule: the constructor checks its keys, ``kind(t)`` is the multiplier.

    A subclass sets :attr:`name` (its ``kind:`` in a config) and :attr:`keys` (the keys
    it takes besides ``kind`` and ``by``), reads and checks them in ``__init__`` after
    ``super().__init__`` (which rejects any other key), implements ``__call__`` and is
    added to :data:`SCHEDULE_KINDS`.

    Args:
        term: the scheduled term's name; every error message names it.
        spec: the kind's keys, without ``kind`` or ``by``; a copy is kept as :attr:`spec`.
    """

    name: ClassVar[str]
    keys: ClassVar[frozenset[str]]

    def __init__(self, term: str, spec: Mapping[str, Any]) -> None:
        self.term = term
        self.spec: dict[str, Any] = dict(spec)
        unknown = sorted(set(self.spec) - self.keys)
        if unknown:
            raise self._error(
                f"{self.name} takes {', '.join(sorted(self.keys))}, "
                f"not {unknown[0]!r}.{did_you_mean(unknown[0], self.keys)}"
            )

    @abstractmethod
    def __call__(self, t: int) -> float:
        """The multiplier at step or epoch ``t``."""

    def resolve_length(self, total: int | None, by: str) -> None:
        """Take the run's length (``trainer.max_{by}s``) once it is known; most kinds ignore it."""
        return None

    def _error(self, message: str) -> LossConfigError:
        return _error(self.term, message)

    def _number(self, key: str, default: float | None = None, *, at_least: float = 0.0) -> float:
        """``spec[key]`` (or ``default``) as a float, checked to be a number ``>= at_least``."""
        value = self.spec.get(key, default)
        if value is None:
            raise self._error(f"{self.name} needs '{key}'.")
        if not _is_number(value, at_least):
            raise self._error(f"{key}={value!r} must be a number >= {at_least:g}.")
        return float(value)


class ConstantSchedule(ScheduleKind):
    """``value`` (default 1) at every ``t``.

    >>> ConstantSchedule("reg", {"value": 0.5})(7)
    0.5
    """

    name = "constant"
    keys = frozenset({"value"})

    def __init__(self, term: str, spec: Mapping[str, Any]) -> None:
        super().__init__(term, spec)
        self.value = self._number("value", 1.0)

    def __call__(self, t: int) -> float:
        return self.value


class LinearSchedule(ScheduleKind):
    """``initial`` (default 0) at ``t ≤ begin`` (default 0) to ``final`` (default 1) at ``t ≥ end``.

    >>> ramp = LinearSchedule("reg", {"begin": 2, "end": 6, "initial": 1.0, "final": 3.0})
    >>> ramp(0), ramp(4), ramp(9)
    (1.0, 2.0, 3.0)
    """

    name = "linear"
    keys = frozenset({"begin", "end", "initial", "final"})

    def __init__(self, term: str, spec: Mapping[str, Any]) -> None:
        super().__init__(term, spec)
        self.begin, self.end = self._number("begin", 0), self._number("end")
        if not self.end > self.begin:
            raise self._error(
                f"the ramp ends are out of order: begin={self.begin:g} must be before end={self.end:g}."
            )
        self.initial, self.final = self._number("initial", 0.0), self._number("final", 1.0)

    def _shape(self, fraction: float) -> float:
        """How far from ``initial`` to ``final`` (0 to 1) at ``fraction`` of the ramp's length."""
        return fraction

    def __call__(self, t: int) -> float:
        if t <= self.begin:
            return self.initial
        if t >= self.end:
            return self.final
        fraction = self._shape((t - self.begin) / (self.end - self.begin))
        return self.initial + (self.final - self.initial) * fraction


class CosineSchedule(LinearSchedule):
    """The ends of ``linear``, joined along half a cosine.

    >>> cosine = CosineSchedule("reg", {"end": 4})
    >>> [round(cosine(t), 3) for t in range(6)]
    [0.0, 0.146, 0.5, 0.854, 1.0, 1.0]
    """

    name = "cosine"

    def _shape(self, fraction: float) -> float:
        return (1.0 - math.cos(math.pi * fraction)) / 2.0


class StepSchedule(ScheduleKind):
    """``initial`` (default 1) × ``gamma`` (default 0.1) ^ (number of ``milestones`` ≤ t).

    >>> decay = StepSchedule("reg", {"milestones": [2, 5], "gamma": 0.5, "initial": 4.0})
    >>> decay(1), decay(2), decay(5)
    (4.0, 2.0, 1.0)
    """

    name = "step"
    keys = frozenset({"milestones", "gamma", "initial"})

    def __init__(self, term: str, spec: Mapping[str, Any]) -> None:
        super().__init__(term, spec)
        milestones = self.spec.get("milestones")
        if not isinstance(milestones, (list, tuple)) or not milestones:
            raise self._error("step needs milestones: [t1, t2, ...].")
        if not _increasing(milestones):
            raise self._error(f"milestones {list(milestones)} must increase.")
        self.gamma = self._number("gamma", 0.1)
        self.milestones = [float(m) for m in milestones]
        self.initial = self._number("initial", 1.0)

    def __call__(self, t: int) -> float:
        return self.initial * self.gamma ** bisect.bisect_right(self.milestones, t)


class PiecewiseSchedule(ScheduleKind):
    """``points: [[t0, v0], [t1, v1], ...]``, linear between, constant outside.

    >>> curve = PiecewiseSchedule("reg", {"points": [[0, 0.0], [10, 1.0], [20, 0.5]]})
    >>> curve(-1), curve(5), curve(15), curve(30)
    (0.0, 0.5, 0.75, 0.5)
    """

    name = "piecewise"
    keys = frozenset({"points"})

    def __init__(self, term: str, spec: Mapping[str, Any]) -> None:
        super().__init__(term, spec)
        points = self.spec.get("points")
        if not _is_pairs(points):
            raise self._error("piecewise needs points: [[t0, v0], [t1, v1], ...].")
        ts = [p[0] for p in points]
        if not _increasing(ts):
            raise self._error(f"piecewise points must have increasing t; got {ts}.")
        if not all(_is_number(v) for _, v in points):
            raise self._error(f"piecewise values must be numbers >= 0; got {list(points)}.")
        self.ts = [float(t) for t in ts]
        self.values = [float(v) for _, v in points]

    def __call__(self, t: int) -> float:
        ts, values = self.ts, self.values
        if t <= ts[0]:
            return values[0]
        if t >= ts[-1]:
            return values[-1]
        i = bisect.bisect_right(ts, t)
        fraction = (t - ts[i - 1]) / (ts[i] - ts[i - 1])
        return values[i - 1] + (values[i] - values[i - 1]) * fraction


class OnOffSchedule(ScheduleKind):
    """``value`` (default 1) from ``on`` (or for the ``last`` N epochs/steps) until ``off``, else 0.

    ``last: N`` becomes ``on: total − N`` (also written to :attr:`spec`) in
    :meth:`resolve_length`, which ``LossWeightSchedule`` calls when training starts.

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


SCHEDULE_KINDS: dict[str, type[ScheduleKind]] = {
    kind.name: kind
    for kind in (
        ConstantSchedule,
        LinearSchedule,
        CosineSchedule,
        StepSchedule,
        PiecewiseSchedule,
        OnOffSchedule,
    )
}
"""``kind:`` name → the class that builds it; a new kind is a class added here."""


class Schedule:
    """One term's schedule: ``schedule(t) -> float``; see the module docstring for the kinds.

    Takes ``kind`` and ``by`` (``step``, the default, or ``epoch``) off ``spec`` and
    builds the kind's class (:data:`SCHEDULE_KINDS`) from the rest, kept as :attr:`spec`.

    Example:
        >>> ramp = Schedule("reg", {"kind": "linear", "begin": 0, "end": 10, "final": 2.0})
        >>> ramp(0), ramp(5), ramp(20)
        (0.0, 1.0, 2.0)
    """

    def __init__(self, term: str, spec: Mapping[str, Any]) -> None:
        self.term = term
        spec = dict(spec)
        self.kind: str = spec.pop("kind", None)
        self.by: str = spec.pop("by", "step")
        kind_class = SCHEDULE_KINDS.get(self.kind)
        if kind_class is None:
            hint = did_you_mean(str(self.kind), SCHEDULE_KINDS)
            raise _error(term, f"unknown kind {self.kind!r}.{hint} Kinds: {', '.join(SCHEDULE_KINDS)}.")
        if self.by not in ("step", "epoch"):
            raise _error(term, f"by={self.by!r}; use 'step' or 'epoch'.")
        self.fn: ScheduleKind = kind_class(term, spec)
        self.spec = self.fn.spec  # one dict: what onoff resolves is what state_dict saves

    def resolve_last(self, total: int | None) -> None:
        """Turn ``last: N`` into ``on: total − N`` once the run's length is known."""
        self.fn.resolve_length(total, self.by)

    def __call__(self, t: int) -> float:
        return self.fn(t)


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
        schedules = to_plain(schedules)
        if not isinstance(schedules, Mapping) or not schedules:
            raise LossConfigError(
                f"LossWeightSchedule needs schedules: {{term: {{kind: linear, ...}}}}; got {schedules!r}."
            )
        self.schedules = {name: Schedule(name, spec) for name, spec in schedules.items()}
        self.values: dict[str, float] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(terms=sorted(self.schedules))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        mix = loss_mix_of(pl_module, needed_by="LossWeightSchedule")
        for name, schedule in self.schedules.items():
            mix.track_weight(name)  # raises, listing the terms, if unknown
            schedule.resolve_last(trainer.max_epochs if schedule.by == "epoch" else trainer.max_steps)
        self._apply(trainer, pl_module)

    def _apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = loss_step_of(trainer, pl_module)
        mix = loss_mix_of(pl_module, needed_by="LossWeightSchedule")
        for name, schedule in self.schedules.items():
            value = schedule(step if schedule.by == "step" else trainer.current_epoch)
            mix.set_scale(name, value)
            self.values[name] = value

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._apply(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        # The multipliers are recomputed from the restored step and epoch; the specs and the
        # last values are kept so a resume with different schedules can be noticed.
        return {
            "schedules": {n: {"kind": s.kind, "by": s.by, **s.spec} for n, s in self.schedules.items()},
            "values": dict(self.values),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.values = dict(state_dict.get("values", {}))
