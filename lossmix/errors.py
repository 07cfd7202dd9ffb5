"""Exceptions users see, and the "did you mean" helper every message uses."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["LossConfigError", "LossInputError", "LossRunError", "did_you_mean"]


class LossConfigError(ValueError):
    """A loss, term or registry entry was configured wrongly (raised before training)."""


class LossInputError(ValueError):
    """The tensors given to a loss or a term do not fit (shapes, keys, value ranges)."""


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
