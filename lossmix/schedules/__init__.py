"""Schedules of a term's weight or of any float hyper-parameter of its loss or sampler.

A schedule maps ``t`` — the optimizer steps taken (``by: step``) or the epoch index from 0
(``by: epoch``) — to a value. For a term (``reg``) the value **multiplies** its configured
weight (0 switches the term off while it is still computed, so its log keys stay); for a
hyper-parameter (``cls.gamma``, ``kd.temperature``, ``cls.sampler.pos_fraction``) it **is**
the value, set on the module before each step (the loss reads it at its next call: no
rebuild, no host sync).

=============== ==========================================================================
``constant``    ``value``
``linear``      ``initial`` at ``t ≤ begin`` to ``final`` at ``t ≥ end``, linearly
``cosine``      the same ends, along half a cosine
``sigmoid``     the same ends, along a logistic curve (``steepness``)
``exponential`` ``initial × gamma^(t − begin)``, within ``[min, max]``
``step``        ``initial × gamma^(number of milestones ≤ t)``
``piecewise``   ``points: [[t0, v0], [t1, v1], ...]``, linear between, constant outside
``onoff``       ``value`` from ``on`` (or for the ``last`` N epochs/steps) until ``off``
``cyclical``    ``initial`` → ``final`` over the first ``ratio`` of each ``period`` (or of
                ``cycles`` cycles of the run), then ``final`` (Fu et al. 2019)
``plateau``     × ``factor`` when ``monitor`` stops improving for ``patience`` epochs
=============== ==========================================================================

Each kind is one :class:`BaseScheduleKind` subclass registered with the :func:`schedule_kind`
decorator; :data:`SCHEDULE_KINDS` maps the names to the classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lossmix.errors import did_you_mean
from lossmix.schedules.kinds import (
    SCHEDULE_KINDS,
    BaseScheduleKind,
    ConstantSchedule,
    CosineSchedule,
    ExponentialSchedule,
    LinearSchedule,
    PiecewiseSchedule,
    SigmoidSchedule,
    StepSchedule,
    schedule_error,
    schedule_kind,
)
from lossmix.schedules.windows import CyclicalSchedule, OnOffSchedule, PlateauSchedule

__all__ = [
    "SCHEDULE_KINDS",
    "BaseScheduleKind",
    "ConstantSchedule",
    "CosineSchedule",
    "CyclicalSchedule",
    "ExponentialSchedule",
    "LinearSchedule",
    "OnOffSchedule",
    "PiecewiseSchedule",
    "PlateauSchedule",
    "Schedule",
    "SigmoidSchedule",
    "StepSchedule",
    "schedule_kind",
]


class Schedule:
    """One schedule: ``schedule(t) -> float``; see the module docstring for the kinds.

    Takes ``kind`` and ``by`` (``step``, the default, or ``epoch``) off ``spec`` and
    builds the kind's class (:data:`SCHEDULE_KINDS`) from the rest, kept as :attr:`spec`.
    A ``plateau`` follows its metric, epoch by epoch, whatever ``by`` says.

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
            raise schedule_error(
                term, f"unknown kind {self.kind!r}.{hint} Kinds: {', '.join(SCHEDULE_KINDS)}."
            )
        if self.by not in ("step", "epoch"):
            raise schedule_error(term, f"by={self.by!r}; use 'step' or 'epoch'.")
        self.fn: BaseScheduleKind = kind_class(term, spec)
        self.spec = self.fn.spec  # one dict: what a kind resolves is what state_dict saves

    @property
    def monitor(self) -> str | None:
        """The metric the schedule follows (``plateau``), else ``None``."""
        return self.fn.monitor

    def resolve_last(self, total: int | None) -> None:
        """Take the run's length (``last: N``, ``cycles: M``) once it is known."""
        self.fn.resolve_length(total, self.by)

    def __call__(self, t: int) -> float:
        return self.fn(t)
