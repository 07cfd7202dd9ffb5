"""The stateless aggregators (their random generators aside): one module per method over a pure
function of :mod:`lossmix.functional`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

import lossmix.mtl.functional as F
from lossmix.mtl.aggregators.base import AGGREGATION_KEY, BaseAggregator, SeededAggregator
from lossmix.registry.registry import AGGREGATORS
from lossmix.utilities.checks import check_bool, check_float, check_int

__all__ = ["IMTLG", "MGDA", "AlignedMTL", "CAGrad", "GradDrop", "NashMTL", "PCGrad", "Sum", "UPGrad"]

_CPU = torch.device("cpu")


@AGGREGATORS.register(name="sum")
class Sum(BaseAggregator):
    """The plain sum ``d = Σ g_i`` (weights 1): the identity of the aggregation path."""

    method_name = "sum"

    def weights(self, gramian: Tensor) -> Tensor:
        return torch.ones_like(gramian[0])


@AGGREGATORS.register(name="pcgrad")
class PCGrad(SeededAggregator):
    """PCGrad (Yu et al. 2020): each gradient's conflicting components projected away, in random
    order (:func:`lossmix.functional.pcgrad`).

    Args:
        seed: seed of the random projection orders (the same on every rank).
    """

    method_name = "pcgrad"

    def __init__(self, tasks: Sequence[str], *, seed: int = 0) -> None:
        super().__init__(tasks, seed=seed)

    def weights(self, gramian: Tensor) -> Tensor:
        return F.pcgrad_weights(gramian, generator=self.generator.on(_CPU))


@AGGREGATORS.register(name="cagrad")
class CAGrad(BaseAggregator):
    """CAGrad (Liu et al. 2021): the best worst-case task improvement within ``c·‖ḡ‖`` of the mean
    gradient (:func:`lossmix.functional.cagrad_weights`).

    Args:
        c: ball radius factor in ``[0, 1)`` (the paper uses 0.4–0.5).
        rescale: divide by ``1 + c²`` as the authors' code does.
    """

    method_name = "cagrad"
    enumerates = True

    def __init__(self, tasks: Sequence[str], *, c: float = 0.4, rescale: bool = False) -> None:
        super().__init__(tasks)
        self.c = check_float(f"{AGGREGATION_KEY}: cagrad", "c", c, low=0.0, high=1.0, high_open=True)
        self.rescale = check_bool(f"{AGGREGATION_KEY}: cagrad", "rescale", rescale)

    def weights(self, gramian: Tensor) -> Tensor:
        return F.cagrad_weights(gramian, c=self.c, rescale=self.rescale)


@AGGREGATORS.register(name="mgda")
class MGDA(BaseAggregator):
    """MGDA (Sener & Koltun 2018; MGDA-UB ``over: representation``): the min-norm point of the
    gradients' convex hull (:func:`lossmix.functional.mgda_weights`)."""

    method_name = "mgda"
    enumerates = True

    def weights(self, gramian: Tensor) -> Tensor:
        return F.mgda_weights(gramian)


@AGGREGATORS.register(name="imtl_g")
class IMTLG(BaseAggregator):
    """IMTL-G (Liu et al. 2021): the combination with equal projections on every unit gradient
    (:func:`lossmix.functional.imtl_g_weights`)."""

    method_name = "imtl_g"

    def weights(self, gramian: Tensor) -> Tensor:
        return F.imtl_g_weights(gramian)


@AGGREGATORS.register(name="aligned_mtl")
class AlignedMTL(BaseAggregator):
    """Aligned-MTL (Senushkin et al. 2023): the gradients made orthogonal with equal norms
    (:func:`lossmix.functional.aligned_mtl_weights`)."""

    method_name = "aligned_mtl"

    def weights(self, gramian: Tensor) -> Tensor:
        return F.aligned_mtl_weights(gramian)


@AGGREGATORS.register(name="upgrad")
class UPGrad(BaseAggregator):
    """UPGrad (Quinton & Rey 2024): the mean of the gradients projected onto their dual cone, so
    no task is hurt (:func:`lossmix.functional.upgrad_weights`)."""

    method_name = "upgrad"
    enumerates = True

    def weights(self, gramian: Tensor) -> Tensor:
        return F.upgrad_weights(gramian)


@AGGREGATORS.register(name="nash_mtl")
class NashMTL(BaseAggregator):
    """Nash-MTL (Navon et al. 2022): the Nash bargaining solution, invariant to each task's scale
    (:func:`lossmix.functional.nash_mtl_weights`).

    Args:
        max_norm: bound on the update's norm (``0``: none; the authors clip to 1).
        iterations: damped Newton steps of the exact solver.
    """

    method_name = "nash_mtl"

    def __init__(self, tasks: Sequence[str], *, max_norm: float = 1.0, iterations: int = 20) -> None:
        super().__init__(tasks)
        owner = f"{AGGREGATION_KEY}: nash_mtl"
        self.max_norm = check_float(owner, "max_norm", max_norm, low=0.0)
        self.iterations = check_int(owner, "iterations", iterations, min=1)

    def weights(self, gramian: Tensor) -> Tensor:
        return F.nash_mtl_weights(gramian, max_norm=self.max_norm, iterations=self.iterations)


@AGGREGATORS.register(name="graddrop")
class GradDrop(SeededAggregator):
    """GradDrop (Chen et al. 2020): per shared coordinate, only the gradients of one sign, drawn
    by sign purity (:func:`lossmix.functional.graddrop`).

    Args:
        leak: share of each gradient always kept, in ``[0, 1]``.
        seed: seed of the masks' draws (the same on every rank).
    """

    method_name = "graddrop"

    def __init__(self, tasks: Sequence[str], *, leak: float = 0.0, seed: int = 0) -> None:
        super().__init__(tasks, seed=seed)
        self.leak = check_float(f"{AGGREGATION_KEY}: graddrop", "leak", leak, low=0.0, high=1.0)

    def combine(self, jacobian: Tensor, losses: Tensor | None) -> Tensor:
        return F.graddrop(jacobian, leak=self.leak, generator=self.generator.on(jacobian.device))
