"""Exceptions users see, and the "did you mean" helper every message uses."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["LossConfigError", "LossInputError", "LossRunError", "NonFiniteLoss", "RankError", "did_you_mean"]


class LossConfigError(ValueError):
    """A loss, term or registry entry was configured wrongly (raised before training)."""


class LossInputError(ValueError):
    """The tensors given to a loss or a term do not fit (shapes, keys, value ranges)."""


class NonFiniteLoss(FloatingPointError):
    """A loss term was NaN or Inf under ``NonFiniteLossGuard(policy="raise")`` (the app's default).

    The message is one line: the step, the term(s) and the ranges of each term's inputs.
    ``step`` and ``terms`` say where it began (the loss curves mark it).
    """

    def __init__(self, message: str, *, step: int = -1, terms: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.step = step
        self.terms = terms

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with its keyword arguments (DDP spawn)
        return (_non_finite, (str(self), self.step, self.terms))


def _non_finite(message: str, step: int, terms: tuple[str, ...]) -> NonFiniteLoss:
    return NonFiniteLoss(message, step=step, terms=terms)


class RankError(RuntimeError):
    """One rank of a distributed run failed with a user's error; every process reports it.

    The message is ``rank <rank>: <the rank's one-line error>``. ``shown`` says the line is
    already on this process's terminal (printed by the failing rank), so the app exits with
    status 1 without printing it twice; ``record`` is the failing rank's record file, if any
    (see :mod:`lossmix.app.rank_errors`).
    """

    def __init__(self, rank: int, message: str, *, record: Path | None = None, shown: bool = False) -> None:
        super().__init__(f"rank {rank}: {message}")
        self.rank = rank
        self.message = message
        self.record = record
        self.shown = shown

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with its keyword arguments
        return (_rank_error, (self.rank, self.message, self.record, self.shown))


def _rank_error(rank: int, message: str, record: Path | None, shown: bool) -> RankError:
    return RankError(rank, message, record=record, shown=shown)


class LossRunError(RuntimeError):
    """A run cannot go on for a reason outside its config: a file it writes failed (disk full,
    read-only, a file-size limit) or its run directory is in use by another run."""


def did_you_mean(name: str, options: Iterable[str], *, n: int = 3) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest options, or ``""`` if none is close.

    >>> did_you_mean("gama", ["gamma", "alpha"])
    " Did you mean 'gamma'?"
    """
    matches = difflib.get_close_matches(str(name), list(options), n=n, cutoff=0.6)
    if not matches:
        lowered = {o.lower(): o for o in options}
        matches = [lowered[m] for m in difflib.get_close_matches(str(name).lower(), lowered, n=n)]
    if not matches:
        return ""
    return " Did you mean " + " or ".join(repr(m) for m in matches) + "?"
