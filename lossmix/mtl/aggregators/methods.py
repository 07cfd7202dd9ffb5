"""The stateless aggregators (their random generators aside): one module per method over a pure
function of :mod:`lossmix.functional`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

import lossmix.mtl.functional as F
from lossmix.errors import LossConfigError
from lossmix.mtl.aggregators.base import (
    AGGREGATION_KEY,
    BaseAggregator,
    SeededAggregator,
    all_finite,
    preference,
)
from lossmix.mtl.functional.aggregators import SCALE_MODES
from lossmix.registry.registry import AGGREGATORS
from lossmix.utilities.checks import check_choice, check_float, check_int

__all__ = [
    "IMTLG",
    "MGDA",
    "AlignedMTL",
    "CAGrad",
    "ConFIG",
    "DualProj",
    "FairGrad",
    "GradDrop",
    "NashMTL",
    "PCGrad",
    "SDMGrad",
    "Sum",
    "UPGrad",
]

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
    gradient (:func:`lossmix.functional.cagrad_weights`; exact, ``2^K`` small solves, stays in
    its ball also at Pareto-stationary points).

    Args:
        c: ball radius factor in ``[0, 1)`` (the paper uses 0.4–0.5).
        rescale: the authors' ``rescale``: 0 (or ``false``) keeps ``d``, 1 (or ``true``)
            divides it by ``1 + c²``, 2 by ``1 + c``.
    """

    method_name = "cagrad"
    enumerates = True

    def __init__(self, tasks: Sequence[str], *, c: float = 0.4, rescale: int | bool = 0) -> None:
        super().__init__(tasks)
        owner = f"{AGGREGATION_KEY}: cagrad"
        self.c = check_float(owner, "c", c, low=0.0, high=1.0, high_open=True)
        if rescale not in (0, 1, 2):  # True and False are 1 and 0
            raise LossConfigError(f"{owner}: rescale must be 0, 1 or 2 (or true/false); got {rescale!r}.")
        self.rescale = int(rescale)

    def weights(self, gramian: Tensor) -> Tensor:
        return F.cagrad_weights(gramian, c=self.c, rescale=self.rescale)


MGDA_NORMALISATIONS: tuple[str, ...] = ("none", "l2", "loss", "loss+")


@AGGREGATORS.register(name="mgda")
class MGDA(BaseAggregator):
    """MGDA (Sener & Koltun 2018; MGDA-UB ``over: representation``): the min-norm point of the
    gradients' convex hull (:func:`lossmix.functional.mgda_weights`; exact, ``2^K`` solves).

    Args:
        normalize: Sener & Koltun's gradient normalisation before the solve, ``g_i / n_i``
            with ``n_i`` = 1 (``none``), ``‖g_i‖`` (``l2``), ``L_i`` (``loss``) or
            ``L_i‖g_i‖`` (``loss+``); the update is ``Σ w_i g_i / n_i``. The loss modes
            need the task losses, so they run ``over: shared`` only.
    """

    method_name = "mgda"
    enumerates = True

    def __init__(self, tasks: Sequence[str], *, normalize: str = "none") -> None:
        super().__init__(tasks)
        self.normalize = check_choice(f"{AGGREGATION_KEY}: mgda", "normalize", normalize, MGDA_NORMALISATIONS)
        self.needs_losses = self.normalize.startswith("loss")

    def runs_on_gramian(self) -> bool:
        return not self.needs_losses

    def _scales(self, gramian: Tensor, losses: Tensor | None) -> Tensor:
        norms = torch.diagonal(gramian).clamp(min=0.0).sqrt()
        scale = norms if self.normalize in ("l2", "loss+") else torch.ones_like(norms)
        if losses is not None:
            scale = scale * losses.to(scale.dtype)
        return torch.where(scale > 0, 1.0 / torch.where(scale > 0, scale, 1.0), 0.0)

    def weights(self, gramian: Tensor) -> Tensor:
        inv = self._scales(gramian, None)
        return F.mgda_weights(inv[:, None] * gramian * inv[None, :]) * inv

    def combine(self, jacobian: Tensor, losses: Tensor | None) -> Tensor:
        if not self.needs_losses:
            return super().combine(jacobian, losses)
        g = F.gramian(jacobian)
        inv = self._scales(g, losses)
        return F.combine(F.mgda_weights(inv[:, None] * g * inv[None, :]) * inv, jacobian)


@AGGREGATORS.register(name="sdmgrad")
class SDMGrad(BaseAggregator):
    """SDMGrad (Xiao et al. 2023): MGDA regularised towards the mean gradient
    (:func:`lossmix.functional.sdmgrad_weights`; exact on one batch, ``2^K`` solves).

    Args:
        lamda: the regularisation ``λ ≥ 0`` (0.3 in LibMTL).
    """

    method_name = "sdmgrad"
    enumerates = True

    def __init__(self, tasks: Sequence[str], *, lamda: float = 0.3) -> None:
        super().__init__(tasks)
        self.lamda = check_float(f"{AGGREGATION_KEY}: sdmgrad", "lamda", lamda, low=0.0)

    def weights(self, gramian: Tensor) -> Tensor:
        return F.sdmgrad_weights(gramian, lamda=self.lamda)


@AGGREGATORS.register(name="imtl_g")
class IMTLG(BaseAggregator):
    """IMTL-G (Liu et al. 2021): the combination with equal projections on every unit gradient
    (:func:`lossmix.functional.imtl_g_weights`; one K×K pseudo-inverse)."""

    method_name = "imtl_g"

    def weights(self, gramian: Tensor) -> Tensor:
        return F.imtl_g_weights(gramian)


class _Preferred(BaseAggregator):
    """A method with a preference vector ``pref`` over the tasks (a non-persistent buffer)."""

    pref: Tensor | None

    def __init__(self, tasks: Sequence[str], *, pref: Sequence[float] | None = None) -> None:
        super().__init__(tasks)
        self.register_buffer("pref", preference(f"{AGGREGATION_KEY}: {self.method}", pref, self.tasks), False)


@AGGREGATORS.register(name="aligned_mtl")
class AlignedMTL(_Preferred):
    """Aligned-MTL (Senushkin et al. 2023): the gradients made orthogonal with equal norms
    (:func:`lossmix.functional.aligned_mtl_weights`; one K×K eigendecomposition).

    Args:
        pref: task weights ``w`` of the aligned gradients (default 1 each).
        scale_mode: the aligned gradients' common norm: ``min`` (σ_min, the paper),
            ``median`` or ``rmse`` (the authors' other two modes).
    """

    method_name = "aligned_mtl"

    def __init__(
        self, tasks: Sequence[str], *, pref: Sequence[float] | None = None, scale_mode: str = "min"
    ) -> None:
        super().__init__(tasks, pref=pref)
        self.scale_mode = check_choice(
            f"{AGGREGATION_KEY}: aligned_mtl", "scale_mode", scale_mode, SCALE_MODES
        )

    def weights(self, gramian: Tensor) -> Tensor:
        return F.aligned_mtl_weights(gramian, pref=self.pref, scale_mode=self.scale_mode)


@AGGREGATORS.register(name="upgrad")
class UPGrad(_Preferred):
    """UPGrad (Quinton & Rey 2024): the mean of the gradients projected onto their dual cone, so
    no task is hurt (:func:`lossmix.functional.upgrad_weights`; exact, ``K·2^K`` solves).

    Args:
        pref: the projections' weights ``p`` (default ``1/K`` each).
    """

    method_name = "upgrad"
    enumerates = True

    def weights(self, gramian: Tensor) -> Tensor:
        return F.upgrad_weights(gramian, pref=self.pref)


@AGGREGATORS.register(name="dualproj")
class DualProj(_Preferred):
    """DualProj (Quinton & Rey 2024): the weighted mean gradient projected onto the dual cone
    (:func:`lossmix.functional.dualproj_weights`; exact, ``2^K`` solves).

    Args:
        pref: the mean's weights ``p`` (default ``1/K`` each).
    """

    method_name = "dualproj"
    enumerates = True

    def weights(self, gramian: Tensor) -> Tensor:
        return F.dualproj_weights(gramian, pref=self.pref)


@AGGREGATORS.register(name="config")
class ConFIG(_Preferred):
    """ConFIG (Liu et al. 2024): the direction with equal cosine to every gradient, as long as the
    sum of their projections (:func:`lossmix.functional.config_weights`; one K×K
    pseudo-inverse).

    Args:
        pref: the target cosines' weights (default 1 each).
    """

    method_name = "config"

    def weights(self, gramian: Tensor) -> Tensor:
        return F.config_weights(gramian, pref=self.pref)


@AGGREGATORS.register(name="nash_mtl")
class NashMTL(BaseAggregator):
    """Nash-MTL (Navon et al. 2022): the Nash bargaining solution ``α ⊙ Gα = 1``, invariant to each
    task's scale (:func:`lossmix.functional.nash_mtl_weights`; ``iterations`` K×K solves).

    ``‖Jᵀα‖ = √K`` before the clip, as in the authors' code.

    Args:
        max_norm: bound on the update's norm (``0``: none; the authors clip to 1).
        iterations: Newton steps of the solver.
        update_weights_every: solve every this many steps and reuse ``α`` in between (the
            authors' option; the step counter and ``α`` are checkpointed).
    """

    method_name = "nash_mtl"
    alpha: Tensor

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        max_norm: float = 1.0,
        iterations: int = 20,
        update_weights_every: int = 1,
    ) -> None:
        super().__init__(tasks)
        owner = f"{AGGREGATION_KEY}: nash_mtl"
        self.max_norm = check_float(owner, "max_norm", max_norm, low=0.0)
        self.iterations = check_int(owner, "iterations", iterations, min=1)
        self.update_weights_every = check_int(owner, "update_weights_every", update_weights_every, min=1)
        self.register_buffer("alpha", torch.ones(len(self.tasks), dtype=torch.float64))
        self.calls = 0  # a host counter: choosing whether to solve reads no device value

    def weights(self, gramian: Tensor) -> Tensor:
        if self.calls % self.update_weights_every == 0:
            alpha = F.nash_mtl_weights(gramian, max_norm=0.0, iterations=self.iterations)
            self.alpha.copy_(torch.where(all_finite(alpha), alpha, self.alpha.to(alpha.dtype)))
        self.calls += 1
        return F.clip_update(self.alpha.to(gramian.dtype, copy=True), gramian, self.max_norm)

    def get_extra_state(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.calls = int(state.get("calls", 0))

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
        if prefix + "alpha" not in state_dict:  # a checkpoint from before update_weights_every
            state_dict = {**state_dict, prefix + "alpha": self.alpha, prefix + "_extra_state": {"calls": 0}}
        super()._load_from_state_dict(state_dict, prefix, *args)


@AGGREGATORS.register(name="fairgrad")
class FairGrad(BaseAggregator):
    """FairGrad (Ban & Ji 2024): α-fair task utilities, ``Gw = w^{-1/α}``
    (:func:`lossmix.functional.fairgrad_weights`; ``iterations`` K×K solves). ``alpha: 1`` is
    Nash-MTL without its clip.

    Args:
        alpha: fairness ``α > 0`` (1 in LibMTL; larger: closer to max-min fairness).
        iterations: Newton steps of the solver.
        max_norm: bound on the update's norm (``0``: none, as the authors).
    """

    method_name = "fairgrad"

    def __init__(
        self, tasks: Sequence[str], *, alpha: float = 1.0, iterations: int = 20, max_norm: float = 0.0
    ) -> None:
        super().__init__(tasks)
        owner = f"{AGGREGATION_KEY}: fairgrad"
        self.alpha = check_float(owner, "alpha", alpha, low=0.0, low_open=True)
        self.iterations = check_int(owner, "iterations", iterations, min=1)
        self.max_norm = check_float(owner, "max_norm", max_norm, low=0.0)

    def weights(self, gramian: Tensor) -> Tensor:
        return F.fairgrad_weights(
            gramian, alpha=self.alpha, iterations=self.iterations, max_norm=self.max_norm
        )


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
