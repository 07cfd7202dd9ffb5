"""MMDetection's sampler quotas, and the random and OHEM samplers built on them."""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import Tensor

from lossmix.errors import LossInputError
from lossmix.registry.registry import SAMPLERS
from lossmix.samplers.base import BaseSampler, check_no_gt_proposals, select_top
from lossmix.utilities.checks import check_float, check_int
from lossmix.utilities.rng import SeededGenerator

__all__ = ["OHEMSampler", "QuotaSampler", "RandomSampler"]


def float64_on(device: torch.device) -> torch.dtype:
    """float64 reproduces Python's ``int(float * int)``; MPS has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


class QuotaSampler(BaseSampler):
    """MMDetection's ``BaseSampler`` arithmetic, per set; subclasses choose the elements.

    Per set with ``P`` positive and ``Q`` negative candidates:

    - ``num_expected_pos = int(num * pos_fraction)``;
      ``num_pos = min(P, num_expected_pos)``;
    - ``num_expected_neg = num - num_pos``, capped at
      ``int(neg_pos_ub * max(1, num_pos))`` when ``neg_pos_ub >= 0``;
      ``num_neg = min(Q, num_expected_neg)``.

    A side with no more candidates than expected is kept whole; otherwise
    :meth:`select_pos` / :meth:`select_neg` take ``num_*`` of them, by default the
    candidates with the largest :meth:`ranking_keys`.

    ``add_gt_as_proposals`` is accepted so MMDetection's sampler configs build as
    they are; only ``False`` is valid (lossmix samples among the elements it is
    given; ground-truth proposals come from the model's assigner).
    """

    stable_ties: bool = False

    def __init__(
        self, *, num: int, pos_fraction: float, neg_pos_ub: float = -1, add_gt_as_proposals: bool = False
    ) -> None:
        super().__init__()
        name = self.sampler_name
        self.num = check_int(name, "num", num, min=1)  # elements sampled per set, e.g. 256
        self.pos_fraction = check_float(name, "pos_fraction", pos_fraction, low=0.0, high=1.0)
        # the most negatives per positive; -1 (any negative number) for no cap
        self.neg_pos_ub = check_float(name, "neg_pos_ub", neg_pos_ub)
        self.add_gt_as_proposals = check_no_gt_proposals(name, add_gt_as_proposals)
        self.num_expected_pos = int(num * pos_fraction)

    @abc.abstractmethod
    def ranking_keys(self, pos: Tensor, scores: Tensor | None) -> Tensor:
        """Finite float keys ``(B, n)``; larger is taken first."""

    def quotas(self, pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
        """``(num_pos, num_neg)`` per set, device tensors ``(B,)``."""
        num_pos = pos.sum(1).clamp(max=self.num_expected_pos)
        expected_neg = self.num - num_pos
        if self.neg_pos_ub >= 0:
            bound = (num_pos.clamp(min=1).to(float64_on(pos.device)) * self.neg_pos_ub).floor().long()
            expected_neg = torch.minimum(expected_neg, bound)
        return num_pos, torch.minimum(neg.sum(1), expected_neg)

    def sample(self, pos: Tensor, neg: Tensor, scores: Tensor | None, **routed: Tensor) -> tuple[Tensor, ...]:
        num_pos, num_neg = self.quotas(pos, neg)
        # One set of keys serves both sides: the masks are disjoint, so the choices are independent.
        keys = self.ranking_keys(pos, scores)
        return (
            self.select_pos(pos, num_pos, keys, routed),
            self.select_neg(neg, num_neg, keys, routed),
        )

    def select_pos(self, pos: Tensor, count: Tensor, keys: Tensor, routed: dict[str, Tensor]) -> Tensor:
        """``count`` of the positive candidates ``pos`` (per set), by default the top ``keys``."""
        return select_top(keys, pos, count, min(self.num_expected_pos, pos.shape[1]), stable=self.stable_ties)

    def select_neg(self, neg: Tensor, count: Tensor, keys: Tensor, routed: dict[str, Tensor]) -> Tensor:
        """``count`` of the negative candidates ``neg`` (per set), by default the top ``keys``."""
        return select_top(keys, neg, count, min(self.num, neg.shape[1]), stable=self.stable_ties)

    def extra_repr(self) -> str:
        return f"num={self.num}, pos_fraction={self.pos_fraction}, neg_pos_ub={self.neg_pos_ub}"


@SAMPLERS.register()
class RandomSampler(QuotaSampler):
    """Uniformly random positives and negatives with MMDetection's quotas.

    See :class:`QuotaSampler` for the arithmetic (``num`` is per set). The
    candidates are the masks' elements (``add_gt_as_proposals`` must be False).

    Randomness comes from the sampler's own counter-based stream
    (:class:`~lossmix.utilities.rng.SeededGenerator`): a hash of the seed (``seed``, or if
    ``None`` ``torch.initial_seed()``, so ``torch.manual_seed`` / ``seed_everything``
    reproduce runs, plus the distributed rank, so ranks draw differently), a draw counter
    and the element's index, computed on the masks' device. It traces under
    ``torch.compile(fullgraph=True)`` and never syncs; its counter is part of
    ``state_dict()`` (``get_extra_state``), so a resumed run draws what the uninterrupted
    one would have.

    Args:
        num: elements sampled per set, ``int >= 1``.
        pos_fraction: target share of positives, in ``[0, 1]``.
        neg_pos_ub: at most ``neg_pos_ub`` negatives per positive; ``< 0`` for no cap.
        add_gt_as_proposals: must be False (MMDetection's argument; see :class:`QuotaSampler`).
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
        self,
        *,
        num: int,
        pos_fraction: float,
        neg_pos_ub: float = -1,
        add_gt_as_proposals: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            num=num, pos_fraction=pos_fraction, neg_pos_ub=neg_pos_ub, add_gt_as_proposals=add_gt_as_proposals
        )
        self.random = SeededGenerator(self.sampler_name, seed)
        self.seed = self.random.seed

    def ranking_keys(self, pos: Tensor, scores: Tensor | None) -> Tensor:
        return self.random.rand(pos.shape, pos.device)

    def get_extra_state(self) -> dict[str, Any]:
        """The generator's seed and state as plain tensors/ints (``{}`` before first use)."""
        return self.random.state()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_extra_state`; applied to the generator at the next call."""
        self.random.load(state)

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
        add_gt_as_proposals: must be False (MMDetection's argument; see :class:`QuotaSampler`).
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
