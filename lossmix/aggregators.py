"""Gradient aggregators as modules: one per method, built from the ``aggregation:`` node.

Each is a thin module over a pure function of :mod:`lossmix.functional.aggregators`;
its state (GradVac's cosine targets, DB-MTL's gradient average, the random generators)
is in buffers or the extra state, so checkpoints carry it. They live in
:data:`~lossmix.registry.AGGREGATORS` (``lossmix list`` describes them).

============ ============================================ ================= =========
``type``     update ``d`` (rows of ``J``: task gradients)  weights sum       Gramian
============ ============================================ ================= =========
sum          ``Σ g_i`` (the plain backward)                 K                 yes
pcgrad       conflicting components projected away          ≈ K               yes
cagrad       best worst case in a ball around the mean      1 + c·…           yes
mgda         min-norm point of the convex hull              1                 yes
imtl_g       equal projections on the unit gradients        1                 yes
aligned_mtl  rows made orthogonal with equal norms          ≈ K               yes
upgrad       mean of projections on the dual cone           ≥ 1               yes
nash_mtl     Nash bargaining ``α ⊙ Gα = 1``                 any (clipped)     yes
gradvac      cosines lifted to running targets              ≈ K               yes
graddrop     one sign kept per coordinate                   —                 no
db_mtl       log-loss gradients, averaged, max-norm scaled  —                 no
============ ============================================ ================= =========

A method with a Gramian form implements :meth:`Aggregator.weights` and can run
``on: representation``; the others override :meth:`Aggregator.combine`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

import lossmix.functional as F
from lossmix.errors import LossConfigError, LossInputError, did_you_mean
from lossmix.functional.multi_objective import MAX_EXACT_TASKS
from lossmix.generators import SharedGenerator
from lossmix.registry import AGGREGATORS
from lossmix.validation import check_bool, check_float, check_int

__all__ = [
    "AGGREGATION_KEY",
    "AGGREGATORS",
    "DBMTL",
    "IMTLG",
    "MGDA",
    "Aggregator",
    "AlignedMTL",
    "CAGrad",
    "GradDrop",
    "GradVac",
    "NashMTL",
    "PCGrad",
    "Sum",
    "UPGrad",
    "build_aggregator",
]

AGGREGATION_KEY = "aggregation"
_CPU = torch.device("cpu")


class Aggregator(nn.Module, metaclass=abc.ABCMeta):
    """Base class: ``forward(jacobian, losses=None) -> update`` for a task Jacobian ``(K, D)``.

    The template checks the shapes, detaches, and calls :meth:`combine`, whose default is
    ``weights(J Jᵀ) @ J``. Subclasses implement :meth:`weights` (a Gramian form) or
    override :meth:`combine`.

    Args:
        tasks: the names of the aggregated terms, in the Jacobian's row order (at least two).
    """

    #: The method needs the task losses (DB-MTL's log-loss gradients).
    needs_losses: ClassVar[bool] = False
    #: The method's solver enumerates 2^K active sets.
    enumerates: ClassVar[bool] = False

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__()
        self.tasks = list(tasks)
        if len(self.tasks) < 2:
            raise LossConfigError(
                f"{AGGREGATION_KEY}: {self.method} balances the gradients of several tasks, but the "
                f"total has {len(self.tasks)} term(s) ({', '.join(self.tasks) or 'none'}); add a "
                "second term or remove the aggregation node."
            )
        if self.enumerates and len(self.tasks) > MAX_EXACT_TASKS:
            raise LossConfigError(
                f"{AGGREGATION_KEY}: {self.method}'s exact solver accepts at most {MAX_EXACT_TASKS} "
                f"tasks; this mix has {len(self.tasks)}. Use pcgrad, imtl_g or aligned_mtl."
            )

    @property
    def method(self) -> str:
        """The registered name (or the class name)."""
        return str(getattr(type(self), "method_name", type(self).__name__))

    @classmethod
    def has_gramian_form(cls) -> bool:
        """Whether the update is ``weights(J Jᵀ) @ J`` (so it can run ``on: representation``)."""
        return cls.weights is not Aggregator.weights

    def forward(self, jacobian: Tensor, losses: Tensor | None = None) -> Tensor:
        """The update ``(D,)`` for ``jacobian`` ``(K, D)`` (and the task ``losses`` ``(K,)``)."""
        k = len(self.tasks)
        if jacobian.dim() != 2 or jacobian.shape[0] != k:
            raise LossInputError(
                f"{AGGREGATION_KEY}: {self.method} needs a Jacobian of shape ({k}, D), one row per "
                f"task ({', '.join(self.tasks)}); got {tuple(jacobian.shape)}."
            )
        if self.needs_losses and (losses is None or losses.shape != (k,)):
            raise LossInputError(f"{AGGREGATION_KEY}: {self.method} needs the {k} task losses.")
        return self.combine(jacobian.detach(), None if losses is None else losses.detach())

    def combine(self, jacobian: Tensor, losses: Tensor | None) -> Tensor:
        """The update; by default the Gramian form ``weights(J Jᵀ) @ J``."""
        return self.weights(F.gramian(jacobian)).to(jacobian.dtype) @ jacobian

    def weights(self, gramian: Tensor) -> Tensor:
        """The task weights ``(K,)`` from the Gramian ``(K, K)`` (methods with a Gramian form)."""
        raise LossConfigError(f"{AGGREGATION_KEY}: {self.method} has no Gramian form.")


def _finite(*tensors: Tensor) -> Tensor:
    """One device flag: every value finite (state updates are kept only then, so a step the
    AMP scaler skips for overflow leaves the state as it was)."""
    return torch.stack([torch.isfinite(t).all() for t in tensors]).all()


class _Seeded(Aggregator):
    """An aggregator that draws from a :class:`~lossmix.generators.SharedGenerator`."""

    def __init__(self, tasks: Sequence[str], *, seed: int) -> None:
        super().__init__(tasks)
        self.generator = SharedGenerator(seed, owner=f"{AGGREGATION_KEY}: {self.method}")

    def get_extra_state(self) -> dict[str, Any]:
        return {"generator": self.generator.state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.load(state.get("generator", {}))


class Sum(Aggregator):
    """The plain sum ``d = Σ g_i`` (weights 1): the identity of the aggregation path."""

    method_name = "sum"

    def weights(self, gramian: Tensor) -> Tensor:
        return torch.ones_like(gramian[0])


class PCGrad(_Seeded):
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


class CAGrad(Aggregator):
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


class MGDA(Aggregator):
    """MGDA (Sener & Koltun 2018; MGDA-UB ``on: representation``): the min-norm point of the
    gradients' convex hull (:func:`lossmix.functional.mgda_weights`)."""

    method_name = "mgda"
    enumerates = True

    def weights(self, gramian: Tensor) -> Tensor:
        return F.mgda_weights(gramian)


class IMTLG(Aggregator):
    """IMTL-G (Liu et al. 2021): the combination with equal projections on every unit gradient
    (:func:`lossmix.functional.imtl_g_weights`)."""

    method_name = "imtl_g"

    def weights(self, gramian: Tensor) -> Tensor:
        return F.imtl_g_weights(gramian)


class AlignedMTL(Aggregator):
    """Aligned-MTL (Senushkin et al. 2023): the gradients made orthogonal with equal norms
    (:func:`lossmix.functional.aligned_mtl_weights`)."""

    method_name = "aligned_mtl"

    def weights(self, gramian: Tensor) -> Tensor:
        return F.aligned_mtl_weights(gramian)


class UPGrad(Aggregator):
    """UPGrad (Quinton & Rey 2024): the mean of the gradients projected onto their dual cone, so
    no task is hurt (:func:`lossmix.functional.upgrad_weights`)."""

    method_name = "upgrad"
    enumerates = True

    def weights(self, gramian: Tensor) -> Tensor:
        return F.upgrad_weights(gramian)


class NashMTL(Aggregator):
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


class GradDrop(_Seeded):
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


class GradVac(_Seeded):
    """GradVac (Wang et al. 2021), stateful: each pair's cosine raised to its running target
    (:func:`lossmix.functional.gradvac_weights`).

    The running cosine targets ``φ̂`` (K, K) are the buffer ``targets``; an update with a
    non-finite Gramian (an AMP overflow step) leaves them unchanged.

    Args:
        beta: EMA rate of the targets, in ``[0, 1]`` (the paper uses 0.01).
        seed: seed of the random orders (the same on every rank).
    """

    method_name = "gradvac"
    targets: Tensor

    def __init__(self, tasks: Sequence[str], *, beta: float = 0.01, seed: int = 0) -> None:
        super().__init__(tasks, seed=seed)
        self.beta = check_float(f"{AGGREGATION_KEY}: gradvac", "beta", beta, low=0.0, high=1.0)
        self.register_buffer("targets", torch.zeros(len(self.tasks), len(self.tasks)))

    def weights(self, gramian: Tensor) -> Tensor:
        targets = self.targets.to(gramian.dtype)
        weights, new = F.gradvac_weights(gramian, targets, beta=self.beta, generator=self.generator.on(_CPU))
        self.targets.copy_(torch.where(_finite(gramian), new, targets))
        return weights


class DBMTL(Aggregator):
    """DB-MTL (Lin et al. 2023), stateful: running log-loss gradients, each scaled to the largest norm.

    The log-loss gradients ``∇log(L_i + ε)`` are averaged as ``ĝ ← g + (β / t^σ)(ĝ − g)``
    (buffer ``average``, K×D, created at the first step), then
    :func:`lossmix.functional.db_mtl`. ``on: shared`` only (the average is over
    parameters, which a representation's gradients are not).

    Args:
        beta: averaging factor ``β`` in ``[0, 1)``.
        beta_sigma: decay exponent ``σ ≥ 0`` of ``β / t^σ``.
        eps: ``ε`` inside the log.
    """

    method_name = "db_mtl"
    needs_losses = True
    average: Tensor
    step: Tensor

    def __init__(
        self, tasks: Sequence[str], *, beta: float = 0.9, beta_sigma: float = 0.0, eps: float = 1e-8
    ) -> None:
        super().__init__(tasks)
        owner = f"{AGGREGATION_KEY}: db_mtl"
        self.beta = check_float(owner, "beta", beta, low=0.0, high=1.0, high_open=True)
        self.beta_sigma = check_float(owner, "beta_sigma", beta_sigma, low=0.0)
        self.eps = check_float(owner, "eps", eps, low=0.0, low_open=True)
        self.register_buffer("average", torch.zeros(0))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def combine(self, jacobian: Tensor, losses: Tensor | None) -> Tensor:
        assert losses is not None  # forward checks needs_losses
        logs = jacobian / (losses.to(jacobian.dtype).clamp(min=0.0) + self.eps)[:, None]
        if self.average.shape != logs.shape:
            self.average = torch.zeros_like(logs)
        step = (self.step + 1).to(logs.dtype)
        average = logs + self.beta / step**self.beta_sigma * (self.average.to(logs.dtype) - logs)
        finite = _finite(logs)
        self.average.copy_(torch.where(finite, average, self.average))
        self.step.add_(finite.long())
        return F.db_mtl(average)

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
        saved = state_dict.get(prefix + "average")
        if isinstance(saved, Tensor) and saved.shape != self.average.shape:
            self.average = torch.zeros_like(saved, device=self.average.device)
        super()._load_from_state_dict(state_dict, prefix, *args)


AGGREGATORS.require_base(Aggregator)
for _cls in (Sum, PCGrad, CAGrad, MGDA, IMTLG, AlignedMTL, UPGrad, NashMTL, GradDrop, GradVac, DBMTL):
    AGGREGATORS.register(_cls, name=_cls.method_name)


def representation_methods() -> list[str]:
    """Registered methods with a Gramian form (those ``on: representation`` accepts)."""
    return [n for n in AGGREGATORS.names() if AGGREGATORS.get(n).has_gramian_form()]


def build_aggregator(node: Any, tasks: Sequence[str], *, allowed_targets: Sequence[str] = ()) -> Aggregator:
    """Build from ``{type: upgrad, **args}`` (or an allowed ``_target_``) over ``tasks``."""
    if isinstance(node, Aggregator):
        return node
    kind = node.get("type") if isinstance(node, Mapping) else None
    if isinstance(kind, str) and "." not in kind and kind not in AGGREGATORS:
        raise LossConfigError(
            f"{AGGREGATION_KEY}: unknown type {kind!r}.{did_you_mean(kind, AGGREGATORS.names())} "
            f"Known: {', '.join(AGGREGATORS.names())} (register your own with "
            "@lossmix.AGGREGATORS.register())."
        )
    try:
        aggregator: Aggregator = AGGREGATORS.build(node, allowed_targets=allowed_targets, tasks=list(tasks))
    except LossConfigError as err:
        message = str(err)
        prefix = f"{AGGREGATION_KEY}: "
        raise LossConfigError(message if message.startswith(prefix) else prefix + message) from err
    return aggregator
