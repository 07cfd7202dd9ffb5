"""One counter-based random stream per random component, seeded reproducibly, in checkpoints.

Samplers and losses that draw at random (``RandomSampler``, the balanced samplers,
``MarginL2Loss``'s random negatives) hold a :class:`SeededGenerator`. Its draws are a hash
of ``(seed, draw counter, element index)`` computed with integer tensor ops on the draw's
device (Wellons's ``lowbias32`` mixer, twice): no ``torch.Generator``, so it traces under
``torch.compile(fullgraph=True)``, never syncs, and its whole state is the seed and one
counter tensor. The seed is the component's ``seed`` (or ``torch.initial_seed()`` at the
first draw, so ``torch.manual_seed`` / ``seed_everything`` reproduce runs) plus the
distributed rank, so ranks draw differently; the counter goes into the owner's
``state_dict()`` (``get_extra_state``), so a resumed run draws what the uninterrupted one
would have, draw for draw.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor

from lossmix.errors import LossConfigError
from lossmix.utilities.distributed import rank as _distributed_rank

__all__ = ["SEED_RANGE", "SeededGenerator", "check_seed", "prime_generators"]

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


_MASK = 0xFFFFFFFF


def _mul32(x: Tensor, constant: int) -> Tensor:
    """``x · constant mod 2³²`` for ``x < 2³²`` held in int64, without int64 overflow."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK


def _mix32(x: Tensor) -> Tensor:
    """Wellons's ``lowbias32``: a bijective 32-bit mixer with low bias."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _mix_int(value: int) -> int:
    """The same mixer on a Python int (for the seed's two 32-bit keys)."""
    x = value & _MASK
    for shift, constant in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        x ^= x >> shift
        x = (x * constant) & _MASK
    return x ^ (x >> 16)


class SeededGenerator:
    """A reproducibly seeded, counter-based stream of uniform draws, saved and restored.

    Args:
        owner: the component's name, for warnings.
        seed: the seed, or ``None`` for ``torch.initial_seed()`` at the first draw.

    >>> gen = SeededGenerator("demo", 0)
    >>> a = gen.rand((2,), torch.device("cpu"))
    >>> state = gen.state()
    >>> b = gen.rand((2,), torch.device("cpu"))
    >>> other = SeededGenerator("demo", 0)
    >>> other.load(state)
    >>> torch.equal(other.rand((2,), torch.device("cpu")), b), torch.equal(a, b)
    (True, False)
    """

    def __init__(self, owner: str, seed: int | None) -> None:
        self.owner = owner
        self.seed = check_seed(owner, seed)
        self._generator_seed: int | None = None
        self._keys = (0, 0)
        self._counter: Tensor | None = None

    def prime(self, device: torch.device) -> None:
        """Fix the seed (``torch.initial_seed()`` when none was given, plus the rank) and put
        the counter on ``device`` now, eagerly: what the first draw would do. Call it before
        ``torch.compile`` traces the first draw (``CompositeLoss(loss_compile=True)`` does),
        since the global seed and the rank cannot be read inside a graph."""
        self._start(device)

    def _start(self, device: torch.device) -> Tensor:
        """The counter on ``device`` (created at 0, or moved there, on first use)."""
        if self._generator_seed is None:
            base = torch.initial_seed() if self.seed is None else self.seed
            self._generator_seed = (base + _SEED_SALT + _distributed_rank()) % SEED_RANGE
        if self._keys == (0, 0):
            seed = self._generator_seed
            self._keys = (_mix_int(seed ^ 0x243F6A88), _mix_int((seed >> 32) ^ _mix_int(seed) ^ 0x85A308D3))
        if self._counter is None:
            self._counter = torch.zeros((), dtype=torch.int64, device=device)
        elif self._counter.device != device:
            self._counter = self._counter.to(device)
        return self._counter

    def rand(self, shape: torch.Size | tuple[int, ...], device: torch.device) -> Tensor:
        """Uniform draws in ``[0, 1)`` of ``shape`` on ``device`` (24-bit resolution)."""
        counter = self._start(device)
        first, second = self._keys
        base = _mix32(_mul32(counter & _MASK, 0x9E3779B9) ^ first)
        index = torch.arange(math.prod(shape), dtype=torch.int64, device=device)
        bits = _mix32(_mix32((index + base) & _MASK) ^ second)
        counter.add_(1)
        return ((bits >> 8).to(torch.float32) * 2.0**-24).reshape(shape)

    def state(self) -> dict[str, Any]:
        """The seed and the draw counter (``{}`` before the first draw)."""
        if self._counter is None:
            return {}
        return {"seed": self._generator_seed, "counter": self._counter.detach().cpu().clone()}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`; the counter moves to the device of the next draw."""
        self._keys = (0, 0)
        if not state:
            self._generator_seed, self._counter = None, None
            return
        self._generator_seed = int(state["seed"])
        if "counter" not in state:  # a torch.Generator state of lossmix before the counter stream
            warnings.warn(
                f"{self.owner}: the checkpoint holds a generator state of an older lossmix; the "
                "counter-based stream restarts from its seed, so the draws differ from the old run.",
                stacklevel=2,
            )
            self._counter = torch.zeros((), dtype=torch.int64)
            return
        self._counter = torch.as_tensor(state["counter"], dtype=torch.int64).clone()


def prime_generators(module: torch.nn.Module, device: torch.device) -> int:
    """:meth:`SeededGenerator.prime` every generator held by ``module`` or its submodules (as
    any attribute); returns how many. Idempotent: a primed or resumed stream is unchanged."""
    seen = 0
    for sub in module.modules():
        for value in vars(sub).values():
            if isinstance(value, SeededGenerator):
                value.prime(device)
                seen += 1
    return seen
