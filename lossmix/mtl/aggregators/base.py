"""The aggregator template: ``forward(jacobian, losses=None) -> update``, with a Gramian hook."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

import lossmix.mtl.functional as F
from lossmix.errors import LossConfigError, LossInputError
from lossmix.mtl.functional.solvers import MAX_EXACT_TASKS
from lossmix.mtl.shared_generator import SharedGenerator
from lossmix.registry.registry import AGGREGATORS
from lossmix.utilities.checks import check_float

__all__ = ["AGGREGATION_KEY", "BaseAggregator", "SeededAggregator", "all_finite", "preference"]

AGGREGATION_KEY = "aggregation"


class BaseAggregator(nn.Module):
    """Base class: ``forward(jacobian, losses=None) -> update`` for a task Jacobian ``(K, D)``.

    The template checks the shapes, detaches, and calls :meth:`combine`, whose default is
    ``weights(J Jᵀ) @ J``. Subclasses implement :meth:`weights` (a Gramian form) or
    override :meth:`combine`.

    Args:
        tasks: the names of the aggregated terms, in the Jacobian's row order (at least two).

    >>> from lossmix.mtl.aggregators import MGDA
    >>> mgda = MGDA(["depth", "cls"])
    >>> jacobian = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # orthogonal task gradients
    >>> mgda(jacobian), mgda.weights(jacobian @ jacobian.T)
    (tensor([0.8000, 0.4000]), tensor([0.8000, 0.2000]))
    """

    #: The method needs the task losses (DB-MTL's log-loss gradients; MGDA's loss normalisation).
    needs_losses: bool = False
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
        """Whether the update is ``weights(J Jᵀ) @ J`` (so it can run ``over: representation``)."""
        return cls.weights is not BaseAggregator.weights

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
        """The update; by default the Gramian form ``weights(J Jᵀ) @ J``, the Gramian, the weights
        and the combination in float64 (:func:`~lossmix.mtl.functional.exact_dtype`), the
        update cast back to ``J``'s dtype."""
        exact = jacobian.to(F.exact_dtype(jacobian.device))
        return (self.weights(exact @ exact.T).to(exact.dtype) @ exact).to(jacobian.dtype)

    def runs_on_gramian(self) -> bool:
        """Whether this instance, with its options, has a Gramian form (``over: representation``);
        an option that needs the Jacobian or the losses (GradVac's groups, MGDA's loss
        normalisation) turns it off."""
        return self.has_gramian_form()

    def bind_layout(self, sizes: Sequence[int], groups: Sequence[int]) -> None:
        """Told the Jacobian's column layout in ``over: shared``: each parameter's size and the index
        of the module that owns it (GradVac's groups); the default ignores it."""

    def weights(self, gramian: Tensor) -> Tensor:
        """The task weights ``(K,)`` from the Gramian ``(K, K)`` (methods with a Gramian form)."""
        raise LossConfigError(f"{AGGREGATION_KEY}: {self.method} has no Gramian form.")


def all_finite(*tensors: Tensor) -> Tensor:
    """One device flag: every value finite (state updates are kept only then, so a step the
    AMP scaler skips for overflow leaves the state as it was)."""
    return torch.stack([torch.isfinite(t).all() for t in tensors]).all()


AGGREGATORS.require_base(BaseAggregator)


def preference(owner: str, value: Sequence[float] | None, tasks: Sequence[str]) -> Tensor | None:
    """A preference vector ``p`` (one non-negative number per task, not all 0) as a float64
    tensor, or ``None``.

    >>> preference("aggregation: upgrad", [1, 3], ["a", "b"])
    tensor([1., 3.], dtype=torch.float64)
    """
    if value is None:
        return None
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if values is None or len(values) != len(tasks):
        raise LossConfigError(f"{owner}: pref needs one number per task ({', '.join(tasks)}); got {value!r}.")
    checked = [check_float(owner, "pref", v, low=0.0) for v in values]
    if not any(checked):
        raise LossConfigError(f"{owner}: pref must have a positive entry; got {value!r}.")
    return torch.tensor(checked, dtype=torch.float64)


class SeededAggregator(BaseAggregator):
    """An aggregator that draws from a :class:`~lossmix.mtl.shared_generator.SharedGenerator`."""

    def __init__(self, tasks: Sequence[str], *, seed: int) -> None:
        super().__init__(tasks)
        self.generator = SharedGenerator(seed, owner=f"{AGGREGATION_KEY}: {self.method}")

    def get_extra_state(self) -> dict[str, Any]:
        return {"generator": self.generator.state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.load(state.get("generator", {}))
