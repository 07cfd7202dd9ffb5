"""Samplers: step 1 of a term, which elements count (MMDetection's sampler arithmetic).

A sampler takes two disjoint bool masks, the positive and the negative
candidates (elements in neither are ignored), and returns the selected
subsets as a :class:`SampleResult`: a float weight mask and device-side counts.

Shapes: ``pos_mask``, ``neg_mask`` (and OHEM's ``scores``) share one shape.
``(N,)`` is one set; ``(B, ...)`` (two or more dims) is ``B`` sets, sampled
independently along the first dim, so ``num`` applies **per sample** (MMDetection
samples per image). The result's masks have the input shape; its counts are
totals over all sets.

Nothing here reads tensor data on the host: a variable number of elements is
chosen by ranking a key per element (random, or the score for OHEM) with the
ineligible ones pushed to ``-inf``, taking ``topk`` with a ``k`` fixed by the
shapes, and keeping the ranks below a device-side count.
"""

from __future__ import annotations

import abc
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lossmix.distributed import rank as _distributed_rank
from lossmix.errors import LossConfigError, LossInputError
from lossmix.registry import SAMPLERS
from lossmix.validation import check_float, check_int

__all__ = [
    "BaseSampler",
    "OHEMSampler",
    "PseudoSampler",
    "QuotaSampler",
    "RandomSampler",
    "SampleResult",
]

# Added to every generator seed so a sampler seeded like the global generator
# (seed_everything(s) and no explicit seed) does not replay its stream.
_SEED_SALT = 0x5A3D_1E55
_SEED_RANGE = 2**64


@dataclass
class SampleResult:
    """The elements a sampler selected.

    Attributes:
        weight: float mask shaped like the input masks: 1.0 where selected, else 0.0.
        pos_mask: bool, the selected positives.
        neg_mask: bool, the selected negatives.
        num_pos: 0-dim float tensor, number of selected positives over all sets (may be 0).
        num_neg: 0-dim float tensor, number of selected negatives over all sets.
    """

    weight: Tensor
    pos_mask: Tensor
    neg_mask: Tensor
    num_pos: Tensor
    num_neg: Tensor

    @property
    def num_sampled(self) -> Tensor:
        """``num_pos + num_neg``."""
        return self.num_pos + self.num_neg


def _as_sets(mask: Tensor) -> Tensor:
    """View ``(N,)`` as one set ``(1, N)`` and ``(B, ...)`` as ``(B, prod(...))``."""
    return mask.unsqueeze(0) if mask.dim() == 1 else mask.flatten(1)


def _result(pos: Tensor, neg: Tensor, shape: torch.Size) -> SampleResult:
    """Pack per-set selections ``(B, n)`` back into the input ``shape``."""
    pos, neg = pos.reshape(shape), neg.reshape(shape)
    return SampleResult(
        weight=(pos | neg).to(torch.float32),
        pos_mask=pos,
        neg_mask=neg,
        num_pos=pos.sum().to(torch.float32),
        num_neg=neg.sum().to(torch.float32),
    )


def _select_top(keys: Tensor, eligible: Tensor, count: Tensor, k: int, *, stable: bool) -> Tensor:
    """Per row, mask the ``count`` eligible elements with the largest finite ``keys``.

    ``k`` (a Python int from the shapes) bounds ``count``. Ineligible keys become
    ``-inf``, so as long as the eligible keys are finite they rank first and every
    rank below ``count <= #eligible`` is eligible. ``stable`` breaks ties by index.
    """
    keys = keys.masked_fill(~eligible, float("-inf"))
    if stable:
        order = keys.sort(dim=1, descending=True, stable=True).indices[:, :k]
    else:
        order = keys.topk(k, dim=1).indices
    chosen = torch.arange(k, device=keys.device) < count.unsqueeze(1)
    return torch.zeros_like(eligible).scatter(1, order, chosen)


class BaseSampler(nn.Module, metaclass=abc.ABCMeta):
    """Chooses which positive and negative candidates a term scores.

    Subclasses implement :meth:`sample` on per-set masks ``(B, n)``; ``forward``
    checks the inputs and reshapes. ``needs_scores`` tells the engine to pass a
    per-element loss computed without gradient (OHEM).
    """

    needs_scores: bool = False

    @property
    def sampler_name(self) -> str:
        """Name used in error messages."""
        return type(self).__name__

    def forward(self, pos_mask: Tensor, neg_mask: Tensor, scores: Tensor | None = None) -> SampleResult:
        """Select among ``pos_mask`` / ``neg_mask`` (same shape, bool; see the module docs).

        Returns:
            :class:`SampleResult` with masks of the input shape and total counts.
        """
        self.check_masks(pos_mask, neg_mask, scores)
        # An element in both masks counts as a positive (only checked on CPU).
        neg_mask = neg_mask & ~pos_mask
        sets_scores = None if scores is None else _as_sets(scores.detach())
        pos, neg = self.sample(_as_sets(pos_mask), _as_sets(neg_mask), sets_scores)
        return _result(pos, neg, pos_mask.shape)

    @abc.abstractmethod
    def sample(self, pos: Tensor, neg: Tensor, scores: Tensor | None) -> tuple[Tensor, Tensor]:
        """Selected positives and negatives, bool ``(B, n)``, from candidates ``(B, n)``."""

    def check_masks(self, pos_mask: Tensor, neg_mask: Tensor, scores: Tensor | None) -> None:
        """Static checks (dtype, shape); the overlap check reads data, so CPU only."""
        name = self.sampler_name
        for label, mask in (("pos_mask", pos_mask), ("neg_mask", neg_mask)):
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
                got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
                raise LossInputError(
                    f"{name}: {label} must be a bool tensor, got {got}; pass a comparison such as labels > 0."
                )
            if mask.dim() == 0:
                raise LossInputError(
                    f"{name}: {label} is 0-dim; give one flag per element, shape (N,) or (B, ...)."
                )
        if pos_mask.shape != neg_mask.shape:
            raise LossInputError(
                f"{name}: pos_mask of shape {tuple(pos_mask.shape)} and neg_mask of shape "
                f"{tuple(neg_mask.shape)} must have the same shape."
            )
        if self.needs_scores and scores is None:
            raise LossInputError(
                f"{name}: scores are missing; it ranks elements by a per-element loss computed "
                "without gradient: pass scores=<tensor shaped like pos_mask>."
            )
        if scores is not None and scores.shape != pos_mask.shape:
            raise LossInputError(
                f"{name}: scores of shape {tuple(scores.shape)} and pos_mask of shape "
                f"{tuple(pos_mask.shape)} must have the same shape (one score per element)."
            )
        # Data is free to read on CPU; elsewhere it would be a host sync, so skipped.
        if pos_mask.device.type == "cpu" and not torch.compiler.is_compiling():
            if not torch.equal(pos_mask & neg_mask, torch.zeros_like(pos_mask)):
                raise LossInputError(
                    f"{name}: some elements are in both pos_mask and neg_mask; each element "
                    "must be a positive, a negative or neither (ignored)."
                )


SAMPLERS.require_base(BaseSampler)


@SAMPLERS.register()
class PseudoSampler(BaseSampler):
    """Selects every positive and every negative (MMDetection's default when none is set).

    ``num_pos`` / ``num_neg`` are the mask sums.
    """

    def sample(self, pos: Tensor, neg: Tensor, scores: Tensor | None) -> tuple[Tensor, Tensor]:
        return pos, neg


class QuotaSampler(BaseSampler):
    """MMDetection's ``BaseSampler`` arithmetic, per set; subclasses choose the ranking keys.

    Per set with ``P`` positive and ``Q`` negative candidates:

    - ``num_expected_pos = int(num * pos_fraction)``;
      ``num_pos = min(P, num_expected_pos)``;
    - ``num_expected_neg = num - num_pos``, capped at
      ``int(neg_pos_ub * max(1, num_pos))`` when ``neg_pos_ub >= 0``;
      ``num_neg = min(Q, num_expected_neg)``.

    A side with no more candidates than expected is kept whole; otherwise the
    ``num_*`` candidates with the largest keys are taken.
    """

    stable_ties: bool = False

    def __init__(self, *, num: int, pos_fraction: float, neg_pos_ub: float = -1) -> None:
        super().__init__()
        name = self.sampler_name
        self.num = check_int(name, "num", num, min=1)  # elements sampled per set, e.g. 256
        self.pos_fraction = check_float(name, "pos_fraction", pos_fraction, low=0.0, high=1.0)
        # the most negatives per positive; -1 (any negative number) for no cap
        self.neg_pos_ub = check_float(name, "neg_pos_ub", neg_pos_ub)
        self.num_expected_pos = int(num * pos_fraction)

    @abc.abstractmethod
    def ranking_keys(self, pos: Tensor, scores: Tensor | None) -> Tensor:
        """Finite float keys ``(B, n)``; larger is taken first."""

    def sample(self, pos: Tensor, neg: Tensor, scores: Tensor | None) -> tuple[Tensor, Tensor]:
        num_pos = pos.sum(1).clamp(max=self.num_expected_pos)
        expected_neg = self.num - num_pos
        if self.neg_pos_ub >= 0:
            # float64 reproduces Python's int(float * int); MPS has no float64.
            dtype = torch.float32 if pos.device.type == "mps" else torch.float64
            bound = (num_pos.clamp(min=1).to(dtype) * self.neg_pos_ub).floor().long()
            expected_neg = torch.minimum(expected_neg, bound)
        num_neg = torch.minimum(neg.sum(1), expected_neg)
        keys = self.ranking_keys(pos, scores)
        n = pos.shape[1]
        pos_k, neg_k = min(self.num_expected_pos, n), min(self.num, n)
        return (
            _select_top(keys, pos, num_pos, pos_k, stable=self.stable_ties),
            _select_top(keys, neg, num_neg, neg_k, stable=self.stable_ties),
        )

    def extra_repr(self) -> str:
        return f"num={self.num}, pos_fraction={self.pos_fraction}, neg_pos_ub={self.neg_pos_ub}"


@SAMPLERS.register()
class RandomSampler(QuotaSampler):
    """Uniformly random positives and negatives with MMDetection's quotas.

    See :class:`QuotaSampler` for the arithmetic (``num`` is per set). There are
    no gt-as-proposals: the candidates are the masks' elements.

    Randomness comes from the sampler's own ``torch.Generator``, created on the
    masks' device at the first call and seeded with ``seed`` (or, if ``None``,
    ``torch.initial_seed()``, so ``torch.manual_seed`` / ``seed_everything``
    reproduce runs) plus the distributed rank, so ranks draw differently. Its
    state is part of ``state_dict()`` (``get_extra_state``), so a resumed run
    draws what the uninterrupted one would have.

    Under ``torch.compile(fullgraph=True)`` the draw from a ``torch.Generator``
    is unsupported (dynamo cannot trace a generator argument): compile without
    ``fullgraph`` or keep this sampler outside the compiled region.

    Args:
        num: elements sampled per set, ``int >= 1``.
        pos_fraction: target share of positives, in ``[0, 1]``.
        neg_pos_ub: at most ``neg_pos_ub`` negatives per positive; ``< 0`` for no cap.
        seed: generator seed, ``0 <= seed < 2**64``; ``None`` derives it from torch's.

    Example:
        >>> import torch
        >>> sampler = RandomSampler(num=4, pos_fraction=0.5, seed=0)
        >>> pos = torch.tensor([True, True, True, False, False, False, False, False])
        >>> result = sampler(pos, ~pos)
        >>> result.num_pos, result.num_neg
        (tensor(2.), tensor(2.))
        >>> bool((result.pos_mask & ~pos).any()), result.weight.sum()
        (False, tensor(4.))
    """

    def __init__(
        self, *, num: int, pos_fraction: float, neg_pos_ub: float = -1, seed: int | None = None
    ) -> None:
        super().__init__(num=num, pos_fraction=pos_fraction, neg_pos_ub=neg_pos_ub)
        if seed is not None and (check_int(self.sampler_name, "seed", seed, min=0) >= _SEED_RANGE):
            raise LossConfigError(
                f"{self.sampler_name}: seed={seed!r} is not valid; give an int in [0, 2**64) or "
                "None to derive it from torch.initial_seed()."
            )
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._generator_seed: int | None = None
        self._saved_state: tuple[Tensor, str] | None = None

    def ranking_keys(self, pos: Tensor, scores: Tensor | None) -> Tensor:
        # One draw serves both sides: the masks are disjoint, so the choices are independent.
        return torch.rand(pos.shape, generator=self.generator(pos.device), device=pos.device)

    def generator(self, device: torch.device) -> torch.Generator:
        """The sampler's generator on ``device``, created (or moved) on first use there."""
        current = self._generator
        if current is not None and current.device == device:
            return current
        if self._generator_seed is None:
            base = torch.initial_seed() if self.seed is None else self.seed
            self._generator_seed = (base + _SEED_SALT + _distributed_rank()) % _SEED_RANGE
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
                    f"{self.sampler_name}: the generator state comes from a {device_type} "
                    f"generator and cannot drive one on {device.type}; reseeding, so the "
                    "draws differ from an uninterrupted run on one device type.",
                    stacklevel=2,
                )
            self._saved_state = None
        self._generator = generator
        return generator

    def get_extra_state(self) -> dict[str, Any]:
        """The generator's seed and state as plain tensors/ints (``{}`` before first use)."""
        if self._generator is not None:
            state, device_type = self._generator.get_state(), self._generator.device.type
        elif self._saved_state is not None:
            state, device_type = self._saved_state
        else:
            return {}
        return {"seed": self._generator_seed, "state": state, "device_type": device_type}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_extra_state`; applied to the generator at the next call."""
        self._generator = None
        if not state:
            self._generator_seed, self._saved_state = None, None
            return
        self._generator_seed = int(state["seed"])
        self._saved_state = (state["state"].clone(), str(state["device_type"]))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, seed={self.seed}"


@SAMPLERS.register()
class OHEMSampler(QuotaSampler):
    """Online hard example mining: the hardest (largest ``scores``) of each side.

    Same quotas as :class:`RandomSampler` (see :class:`QuotaSampler`), but both
    positives and negatives are mined by ``scores``, a per-element loss the engine
    computes without gradient (MMDetection's ``OHEMSampler``). Ties go to the
    lower index; NaN scores rank hardest (as in ``torch.topk``), so they stay visible.

    Args:
        num: elements sampled per set, ``int >= 1``.
        pos_fraction: target share of positives, in ``[0, 1]``.
        neg_pos_ub: at most ``neg_pos_ub`` negatives per positive; ``< 0`` for no cap.
    """

    needs_scores = True
    stable_ties = True

    def ranking_keys(self, pos: Tensor, scores: Tensor | None) -> Tensor:
        if scores is None:  # forward refuses this already; kept for direct calls
            raise LossInputError(f"{self.sampler_name}: scores are missing.")
        if not scores.is_floating_point():
            scores = scores.float()
        top = torch.finfo(scores.dtype).max
        # Finite keys keep every eligible element ahead of the -inf ineligible ones.
        return torch.nan_to_num(scores, nan=top, posinf=top, neginf=-top)
