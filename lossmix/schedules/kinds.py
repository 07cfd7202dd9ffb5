"""Schedule kinds that are a pure function of ``t`` (a step or an epoch index).

Each kind is one :class:`BaseScheduleKind` subclass: its constructor checks its own keys, and
``kind(t)`` gives the value. Being pure functions of ``t`` (a Python int the trainer
restores), they cost no host sync and resume exactly. The kinds driven by a window of the
run or by a metric (``onoff``, ``cyclical``, ``plateau``) are in
:mod:`lossmix.schedules.windows`.
"""

from __future__ import annotations

import bisect
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeGuard, TypeVar

from lossmix.errors import LossConfigError, did_you_mean
from lossmix.registry.foreign_nodes import check_bool_keys
from lossmix.utilities.checks import is_number

__all__ = [
    "BaseScheduleKind",
    "ConstantSchedule",
    "CosineSchedule",
    "ExponentialSchedule",
    "LinearSchedule",
    "PiecewiseSchedule",
    "SigmoidSchedule",
    "StepSchedule",
    "schedule_error",
]


def schedule_error(target: str, message: str) -> LossConfigError:
    """``schedule for term 'reg': ...`` (a weight) or ``schedule for 'cls.gamma': ...``."""
    what = f"'{target}'" if "." in target else f"term '{target}'"
    return LossConfigError(f"schedule for {what}: {message}")


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


class BaseScheduleKind(ABC):
    """One kind of schedule: the constructor checks its keys, ``kind(t)`` is the value.

    A subclass sets :attr:`name` (its ``kind:`` in a config) and :attr:`keys` (the keys
    it takes besides ``kind`` and ``by``), reads and checks them in ``__init__`` after
    ``super().__init__`` (which rejects any other key), implements ``__call__`` and is
    added to :data:`lossmix.schedules.SCHEDULE_KINDS`. A kind with state beyond ``t``
    (``plateau``) also implements :meth:`observe`, :meth:`state_dict` and
    :meth:`load_state_dict`.

    Args:
        term: what is scheduled (``reg``, ``cls.gamma``); every error message names it.
        spec: the kind's keys, without ``kind`` or ``by``; a copy is kept as :attr:`spec`.
    """

    name: ClassVar[str]
    keys: ClassVar[frozenset[str]]
    #: the metric key a kind reads (``plateau``); ``None``: a pure function of ``t``
    monitor: str | None = None

    def __init__(self, term: str, spec: Mapping[str, Any]) -> None:
        self.term = term
        self.spec: dict[str, Any] = dict(spec)
        # onoff's bare on: from a YAML file arrives as True
        check_bool_keys(self.spec, str(schedule_error(term, "")).rstrip(": "))
        unknown = sorted(set(self.spec) - self.keys)
        if unknown:
            raise self._error(
                f"{self.name} takes {', '.join(sorted(self.keys))}, "
                f"not {unknown[0]!r}.{did_you_mean(unknown[0], self.keys)}"
            )

    @abstractmethod
    def __call__(self, t: int) -> float:
        """The value at step or epoch ``t``."""

    def resolve_length(self, total: int | None, by: str) -> None:
        """Take the run's length (``trainer.max_{by}s``) once it is known; most kinds ignore it."""
        return None

    def observe(self, metric: float) -> None:
        """A new value of :attr:`monitor` (only kinds with a monitor use it)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps beyond ``t`` (nothing for a pure function of ``t``)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        return None

    def _error(self, message: str) -> LossConfigError:
        return schedule_error(self.term, message)

    def _number(self, key: str, default: float | None = None, *, at_least: float = 0.0) -> float:
        """``spec[key]`` (or ``default``) as a float, checked to be a number ``>= at_least``."""
        value = self.spec.get(key, default)
        if value is None:
            raise self._error(f"{self.name} needs '{key}'.")
        if not _is_number(value, at_least):
            raise self._error(f"{key}={value!r} must be a number >= {at_least:g}.")
        return float(value)


_K = TypeVar("_K", bound="BaseScheduleKind")

#: ``kind:`` name → the class that builds it, filled by :func:`schedule_kind`
SCHEDULE_KINDS: dict[str, type[BaseScheduleKind]] = {}


def schedule_kind(cls: type[_K]) -> type[_K]:
    """Register a :class:`BaseScheduleKind` under its ``name`` (a class decorator, as
    ``@LOSSES.register()`` is for losses).

    Raises:
        LossConfigError: another kind has that name.
    """
    if cls.name in SCHEDULE_KINDS and SCHEDULE_KINDS[cls.name] is not cls:
        raise LossConfigError(
            f"schedule kind '{cls.name}' is taken by {SCHEDULE_KINDS[cls.name].__name__}; give "
            f"{cls.__name__} another name."
        )
    SCHEDULE_KINDS[cls.name] = cls
    return cls


@schedule_kind
class ConstantSchedule(BaseScheduleKind):
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


@schedule_kind
class LinearSchedule(BaseScheduleKind):
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


@schedule_kind
class CosineSchedule(LinearSchedule):
    """The ends of ``linear``, joined along half a cosine.

    >>> cosine = CosineSchedule("reg", {"end": 4})
    >>> [round(cosine(t), 3) for t in range(6)]
    [0.0, 0.146, 0.5, 0.854, 1.0, 1.0]
    """

    name = "cosine"

    def _shape(self, fraction: float) -> float:
        return (1.0 - math.cos(math.pi * fraction)) / 2.0


@schedule_kind
class SigmoidSchedule(LinearSchedule):
    """The ends of ``linear``, joined along a logistic curve of ``steepness`` (default 10).

    ``s(f) = 1 / (1 + exp(−steepness·(f − ½)))`` over the ramp's fraction ``f``, rescaled so
    the ramp starts at ``initial`` and ends at ``final`` exactly (the sigmoid loss scaling
    of matsciml; a soft switch-on of a term).

    >>> soft = SigmoidSchedule("reg", {"end": 10})
    >>> soft(0), round(soft(5), 6), soft(10)
    (0.0, 0.5, 1.0)
    """

    name = "sigmoid"
    keys = frozenset({"begin", "end", "initial", "final", "steepness"})

    def __init__(self, term: str, spec: Mapping[str, Any]) -> None:
        super().__init__(term, spec)
        self.steepness = self._number("steepness", 10.0)
        if self.steepness == 0:
            raise self._error("steepness=0 is a straight line; use kind: linear.")

    def _shape(self, fraction: float) -> float:
        def logistic(f: float) -> float:
            return 1.0 / (1.0 + math.exp(-self.steepness * (f - 0.5)))

        low, high = logistic(0.0), logistic(1.0)
        return (logistic(fraction) - low) / (high - low)


@schedule_kind
class ExponentialSchedule(BaseScheduleKind):
    """``initial × gamma^(t − begin)`` from ``begin`` (default 0), kept within ``[min, max]``.

    ``gamma < 1`` decays (``ExponentialLR``), ``gamma > 1`` grows; ``min`` (default 0) and
    ``max`` (default none) bound it.

    >>> decay = ExponentialSchedule("kd.temperature", {"initial": 4.0, "gamma": 0.5, "min": 1.5})
    >>> [decay(t) for t in range(4)]
    [4.0, 2.0, 1.5, 1.5]
    """

    name = "exponential"
    keys = frozenset({"initial", "gamma", "begin", "min", "max"})

    def __init__(self, term: str, spec: Mapping[str, Any]) -> None:
        super().__init__(term, spec)
        self.initial = self._number("initial", 1.0)
        self.gamma = self._number("gamma")
        self.begin = self._number("begin", 0)
        self.min = self._number("min", 0.0)
        self.max = None if self.spec.get("max") is None else self._number("max")
        if self.max is not None and self.max < self.min:
            raise self._error(f"max={self.max:g} must not be below min={self.min:g}.")

    def __call__(self, t: int) -> float:
        exponent = max(t - self.begin, 0.0)
        try:
            value: float = self.initial * math.pow(self.gamma, exponent)
        except OverflowError:
            value = math.inf
        value = max(value, self.min)
        return value if self.max is None else min(value, self.max)


@schedule_kind
class StepSchedule(BaseScheduleKind):
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


@schedule_kind
class PiecewiseSchedule(BaseScheduleKind):
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
