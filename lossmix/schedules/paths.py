"""What a schedule may change in a :class:`~lossmix.LossMix`: a term's weight or a float
hyper-parameter of its loss or sampler.

A target is named by a dotted path: ``reg`` (the term's weight, multiplied), ``cls.gamma``
(the loss's ``gamma``), ``cls.sampler.pos_fraction`` (the sampler's), ``disc/r1`` or
``disc.r1.norm_mode`` for a term of a group. A hyper-parameter is schedulable when the
module keeps the constructor argument of that name as a float attribute and reads it at
each call; a loss that derives something from an argument once, at construction, lists it
in ``fixed_params`` (``tests/losses/test_schedulable.py`` checks every loss).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lossmix.errors import LossConfigError, did_you_mean
from lossmix.losses.wrappers import FunctionLoss, TorchLoss
from lossmix.mix.loss_mix import LossMix
from lossmix.mix.term import Term

__all__ = ["SchedulePath", "flatten_schedules", "resolve_path", "schedulable"]

_NOT_SCHEDULED = ("reduction", "loss_weight")


def flatten_schedules(schedules: Mapping[str, Any], prefix: str = "") -> dict[str, Mapping[str, Any]]:
    """``{cls: {gamma: {kind: ...}}, reg: {kind: ...}}`` → ``{"cls.gamma": ..., "reg": ...}``.

    A mapping with a ``kind`` is a schedule; any other mapping nests one more level (as the
    command line writes ``+callbacks.loss_schedule.schedules.cls.gamma={kind: linear, ...}``).
    """
    flat: dict[str, Mapping[str, Any]] = {}
    for key, value in schedules.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if not isinstance(value, Mapping):
            raise LossConfigError(
                f"schedule for '{path}': {value!r} is not a schedule; give a mapping such as "
                "{kind: linear, begin: 0, end: 100, initial: 0.0, final: 1.0}."
            )
        if "kind" in value or not value:
            flat[path] = value
        else:
            flat.update(flatten_schedules(value, path))
    return flat


def _owner_of(loss: Any) -> tuple[Any, type]:
    """Where a loss keeps its hyper-parameters, and the class whose signature names them."""
    if isinstance(loss, TorchLoss):
        return loss.loss, type(loss.loss)
    if isinstance(loss, FunctionLoss):
        return loss.kwargs, type(loss)
    return loss, type(loss)


def _float_params(owner: Any, cls: type) -> list[str]:
    """Constructor arguments kept as float attributes (or, for a function, float kwargs)."""
    fixed = set(getattr(cls, "fixed_params", ()))
    if isinstance(owner, dict):
        names = list(owner)
    else:
        try:
            names = list(inspect.signature(cls).parameters)
        except (TypeError, ValueError):
            names = []
    found = []
    for name in names:
        value = owner.get(name) if isinstance(owner, dict) else getattr(owner, name, None)
        if isinstance(value, float) and name not in fixed and name not in _NOT_SCHEDULED:
            found.append(name)
    return found


def schedulable(mix: LossMix) -> list[str]:
    """Every path a schedule may name in ``mix``: each term, then its float hyper-parameters."""
    paths: list[str] = []
    for group, term in mix.all_terms():
        name = f"{group}/{term.name}" if group else term.name
        paths.append(name)
        paths += [f"{name}.{p}" for p in _float_params(*_owner_of(term.loss))]
        if term.sampler is not None:
            paths += [f"{name}.sampler.{p}" for p in _float_params(term.sampler, type(term.sampler))]
    return paths


@dataclass
class SchedulePath:
    """One resolved path: the term, and (for a hyper-parameter) where its value lives."""

    path: str
    term: str
    param: str | None = None
    owner: Any = None
    #: ``cls.gamma``, ``cls.sampler.pos_fraction``, ``disc/r1.norm``: logged as ``{stage}/param/<it>``
    log_name: str = ""

    def current(self) -> float:
        """The hyper-parameter's value now."""
        assert self.param is not None
        value = self.owner[self.param] if isinstance(self.owner, dict) else getattr(self.owner, self.param)
        return float(value)

    def apply(self, mix: LossMix, value: float) -> None:
        """Set the weight multiplier, or the hyper-parameter (a Python float: no host sync)."""
        if not math.isfinite(value):
            raise LossConfigError(f"schedule for '{self.path}': its value became {value}; bound it (max:).")
        if self.param is None:
            mix.set_scale(self.term, value)
        elif isinstance(self.owner, dict):
            self.owner[self.param] = value
        else:
            setattr(self.owner, self.param, value)


def _term_and_rest(mix: LossMix, parts: list[str]) -> tuple[str, Term, list[str]] | None:
    head = parts[0]
    if "/" in head:  # disc/r1.gamma
        group, _, leaf = head.partition("/")
        parts = [group, leaf, *parts[1:]]
    if parts[0] in mix.groups and len(parts) > 1:
        name, rest = f"{parts[0]}/{parts[1]}", parts[2:]
    else:
        name, rest = parts[0], parts[1:]
    try:
        return name, mix.find_term(name), rest
    except LossConfigError:
        return None


def resolve_path(mix: LossMix, path: str) -> SchedulePath:
    """The target ``path`` names in ``mix``.

    Raises:
        LossConfigError: naming the path, the closest schedulable one and every one there is.
    """
    found = _term_and_rest(mix, path.split("."))
    if found is not None:
        name, term, rest = found
        if not rest:
            return SchedulePath(path, name, log_name=name)
        if rest[0] == "sampler" and len(rest) == 2 and term.sampler is not None:
            if rest[1] in _float_params(term.sampler, type(term.sampler)):
                return SchedulePath(path, name, rest[1], term.sampler, f"{name}.sampler.{rest[1]}")
        elif len(rest) == 1:
            owner, cls = _owner_of(term.loss)
            if rest[0] in _float_params(owner, cls):
                return SchedulePath(path, name, rest[0], owner, f"{name}.{rest[0]}")
    options = schedulable(mix)
    raise LossConfigError(
        f"schedule for '{path}': nothing to schedule there (a term's weight, or a float "
        f"hyper-parameter its loss or sampler reads at each call).{did_you_mean(path, options)} "
        f"Schedulable: {', '.join(options)}."
    )
