"""One ``torch.Generator`` per random component, seeded reproducibly and kept in checkpoints.

Samplers and losses that draw at random (``RandomSampler``, the balanced samplers,
``MarginL2Loss``'s random negatives) hold a :class:`SeededGenerator`. It creates its
``torch.Generator`` on the device of the first draw, seeded with the component's
``seed`` (or ``torch.initial_seed()``, so ``torch.manual_seed`` / ``seed_everything``
reproduce runs) plus the distributed rank, so ranks draw differently; its state goes
into the owner's ``state_dict()`` (``get_extra_state``), so a resumed run draws what
the uninterrupted one would have.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from lossmix.distributed import rank as _distributed_rank
from lossmix.errors import LossConfigError

__all__ = ["SEED_RANGE", "SeededGenerator", "check_seed"]

# Added to every seed so a component seeded like the global generator (seed_everything(s)
# and no explicit seed) does not replay its stream.
_SEED_SALT = 0x5A3D_1E55
SEED_RANGE = 2**64


def check_seed(owner: str, seed: Any) -> int | None:
    """``None`` or an int in ``[0, 2**64)``, else raise :class:`LossConfigError`."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_RANGE:
        raise LossConfigError(
            f"{owner}: seed={seed!r} is not valid; give an int in [0, 2**64) or None to derive "
            "it from torch.initial_seed()."
        )
    return seed


class SeededGenerator:
    """A lazily created, reproducibly seeded generator whose state can be saved and restored.

    Args:
        owner: the component's name, for warnings.
        seed: the seed, or ``None`` for ``torch.initial_seed()`` at the first draw.

    >>> gen = SeededGenerator("demo", 0)
    >>> a = torch.rand(2, generator=gen.get(torch.device("cpu")))
    >>> state = gen.state()
    >>> b = torch.rand(2, generator=gen.get(torch.device("cpu")))
    >>> other = SeededGenerator("demo", 0)
    >>> other.load(state)
    >>> torch.equal(torch.rand(2, generator=other.get(torch.device("cpu"))), b)
    True
    """

    def __init__(self, owner: str, seed: int | None) -> None:
        self.owner = owner
        self.seed = check_seed(owner, seed)
        self._generator: torch.Generator | None = None
        self._generator_seed: int | None = None
        self._saved_state: tuple[Tensor, str] | None = None

    def get(self, device: torch.device) -> torch.Generator:
        """The generator on ``device``, created (or moved) on first use there."""
        current = self._generator
        if current is not None and current.device == device:
            return current
        if self._generator_seed is None:
            base = torch.initial_seed() if self.seed is None else self.seed
            self._generator_seed = (base + _SEED_SALT + _distributed_rank()) % SEED_RANGE
        generator = torch.Generator(device=device)
        generator.manual_seed(self._generator_seed)
        if current is not None:
            self._saved_state = (current.get_state(), current.device.type)
        if self._saved_state is not None:
            state, device_type = self._saved_state
            if device_type == device.type:
                generator.set_state(state)
            else:
                warnings.warn(
                    f"{self.owner}: the generator state comes from a {device_type} generator and "
                    f"cannot drive one on {device.type}; reseeding, so the draws differ from an "
                    "uninterrupted run on one device type.",
                    stacklevel=3,
                )
            self._saved_state = None
        self._generator = generator
        return generator

    def rand(self, shape: torch.Size | tuple[int, ...], device: torch.device) -> Tensor:
        """Uniform draws in ``[0, 1)`` of ``shape`` on ``device``."""
        return torch.rand(shape, generator=self.get(device), device=device)

    def state(self) -> dict[str, Any]:
        """The seed and generator state as plain tensors/ints (``{}`` before the first draw)."""
        if self._generator is not None:
            state, device_type = self._generator.get_state(), self._generator.device.type
        elif self._saved_state is not None:
            state, device_type = self._saved_state
        else:
            return {}
        return {"seed": self._generator_seed, "state": state, "device_type": device_type}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`; applied to the generator at the next draw."""
        self._generator = None
        if not state:
            self._generator_seed, self._saved_state = None, None
            return
        self._generator_seed = int(state["seed"])
        self._saved_state = (state["state"].clone(), str(state["device_type"]))
