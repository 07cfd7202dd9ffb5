"""A random generator every rank seeds alike, with its state in the module's checkpoint.

Methods that draw at random to decide an update (PCGrad's and GradVac's orders,
GradDrop's masks, RLW's weights) must draw the same numbers on every rank, or the
ranks' parameters drift apart. :class:`SharedGenerator` is seeded from a fixed ``seed``
(never from the rank or the process's own seed) and created on first use on the device
that needs it; ``state()`` and ``load()`` give its state as plain tensors for a module's
``get_extra_state``/``set_extra_state``, so a resumed run draws what the uninterrupted one
would have.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from lossmix.utilities.checks import check_int

__all__ = ["SharedGenerator"]

_SEED_RANGE = 2**63


class SharedGenerator:
    """A lazily created ``torch.Generator`` seeded with ``seed`` on every rank.

    Args:
        seed: the seed, an int in ``[0, 2**63)``.
        owner: who draws, for messages.

    >>> gen = SharedGenerator(3, owner="pcgrad")
    >>> first = torch.randperm(4, generator=gen.on(torch.device("cpu")))
    >>> again = SharedGenerator(3, owner="pcgrad")
    >>> again.load(gen.state()); bool((torch.randperm(4, generator=gen.on(torch.device("cpu")))
    ...     == torch.randperm(4, generator=again.on(torch.device("cpu")))).all())
    True
    """

    def __init__(self, seed: int, *, owner: str) -> None:
        self.seed = check_int(owner, "seed", seed, min=0)
        if self.seed >= _SEED_RANGE:
            raise ValueError(f"{owner}: seed={seed!r} must be below 2**63.")
        self.owner = owner
        self._generator: torch.Generator | None = None
        self._pending: tuple[Tensor, str] | None = None

    def on(self, device: torch.device) -> torch.Generator:
        """The generator on ``device`` (created, or restored from a loaded state, on first use)."""
        current = self._generator
        if current is not None and current.device.type == device.type:
            return current
        generator = torch.Generator(device=device)
        generator.manual_seed(self.seed)
        if current is not None:
            self._pending = (current.get_state(), current.device.type)
        if self._pending is not None:
            state, kind = self._pending
            if kind == device.type:
                generator.set_state(state)
            else:
                warnings.warn(
                    f"{self.owner}: the saved generator state is for {kind}, not {device.type}; "
                    "reseeding, so the draws differ from an uninterrupted run.",
                    stacklevel=2,
                )
            self._pending = None
        self._generator = generator
        return generator

    def state(self) -> dict[str, Any]:
        """``{seed, state, device_type}`` (``{}`` before the first draw)."""
        if self._generator is not None:
            return {
                "seed": self.seed,
                "state": self._generator.get_state(),
                "device_type": self._generator.device.type,
            }
        if self._pending is not None:
            return {"seed": self.seed, "state": self._pending[0], "device_type": self._pending[1]}
        return {}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`; it applies at the next :meth:`on`."""
        self._generator = None
        self._pending = None
        if state:
            self.seed = int(state["seed"])
            self._pending = (state["state"].clone(), str(state["device_type"]))
