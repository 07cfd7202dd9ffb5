"""The stateful aggregators: GradVac's running cosine targets, DB-MTL's running log-loss
gradients, MoDo's and MoCo's task weights, MoCo's tracked gradients and ExcessMTL's AdaGrad
squares are buffers, so checkpoints carry them; a step with non-finite gradients (an AMP
overflow the scaler skips) leaves them as they were."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

import lossmix.mtl.functional as F
from lossmix.errors import LossConfigError
from lossmix.mtl.aggregators.base import AGGREGATION_KEY, BaseAggregator, SeededAggregator, all_finite
from lossmix.registry.registry import AGGREGATORS
from lossmix.utilities.checks import check_choice, check_float

__all__ = ["DBMTL", "ExcessMTL", "GradVac", "MoCo", "MoDo"]

_CPU = torch.device("cpu")


GRADVAC_GROUPS: tuple[str, ...] = ("whole", "module", "parameter")


@AGGREGATORS.register(name="gradvac")
class GradVac(SeededAggregator):
    """GradVac (Wang et al. 2021), stateful: each pair's cosine raised to its running target
    (:func:`lossmix.functional.gradvac_weights`; ``K(K−1)`` pair updates).

    The running cosine targets ``φ̂`` are the buffer ``targets`` (K, K), or (groups, K, K)
    with ``group`` other than ``whole``; an update with a non-finite Gramian (an AMP
    overflow step) leaves them unchanged.

    Args:
        beta: EMA rate of the targets, in ``[0, 1]`` (the paper uses 0.01).
        seed: seed of the random orders (the same on every rank).
        group: the granularity of the cosines, as the paper's and LibMTL's ``group_type``:
            ``whole`` (one set of cosines over all shared parameters), ``module`` (one per
            module owning parameters, "all_layer") or ``parameter`` (one per parameter
            tensor, "all_matrix"). The groups need ``over: shared``.
    """

    method_name = "gradvac"
    targets: Tensor

    def __init__(
        self, tasks: Sequence[str], *, beta: float = 0.01, seed: int = 0, group: str = "whole"
    ) -> None:
        super().__init__(tasks, seed=seed)
        owner = f"{AGGREGATION_KEY}: gradvac"
        self.beta = check_float(owner, "beta", beta, low=0.0, high=1.0)
        self.group = check_choice(owner, "group", group, GRADVAC_GROUPS)
        k = len(self.tasks)
        self.register_buffer("targets", torch.zeros(k, k) if self.group == "whole" else torch.zeros(0, k, k))
        self._bounds: list[tuple[int, int]] = []

    def runs_on_gramian(self) -> bool:
        return self.group == "whole"

    def bind_layout(self, sizes: Sequence[int], groups: Sequence[int]) -> None:
        if self.group == "whole":
            return
        keys = list(range(len(sizes))) if self.group == "parameter" else list(groups)
        bounds: dict[int, tuple[int, int]] = {}
        offset = 0
        for key, size in zip(keys, sizes, strict=True):  # a module's parameters are contiguous
            start = bounds.get(key, (offset, offset))[0]
            bounds[key] = (start, offset + size)
            offset += size
        self._bounds = list(bounds.values())
        k = len(self.tasks)
        if self.targets.shape[0] != len(self._bounds):
            self.targets = torch.zeros(len(self._bounds), k, k, device=self.targets.device)

    def weights(self, gramian: Tensor) -> Tensor:
        targets = self.targets.to(gramian.dtype)
        weights, new = F.gradvac_weights(gramian, targets, beta=self.beta, generator=self.generator.on(_CPU))
        self.targets.copy_(torch.where(all_finite(gramian), new, targets))
        return weights

    def combine(self, jacobian: Tensor, losses: Tensor | None) -> Tensor:
        if self.group == "whole":
            return super().combine(jacobian, losses)
        if not self._bounds:
            raise LossConfigError(
                f"{AGGREGATION_KEY}: gradvac with group: {self.group} needs the shared parameters' "
                "layout (over: shared binds it; call mix.aggregation.bind(model))."
            )
        pieces, news = [], []
        for index, (start, end) in enumerate(self._bounds):
            targets = self.targets[index].to(jacobian.dtype)
            piece, new = F.gradvac(
                jacobian[:, start:end], targets, beta=self.beta, generator=self.generator.on(_CPU)
            )
            pieces.append(piece)
            news.append(new)
        self.targets.copy_(torch.where(all_finite(jacobian), torch.stack(news), self.targets))
        return torch.cat(pieces)

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
        saved = state_dict.get(prefix + "targets")
        if isinstance(saved, Tensor) and saved.shape != self.targets.shape:
            self.targets = torch.zeros_like(saved, device=self.targets.device)
        super()._load_from_state_dict(state_dict, prefix, *args)


@AGGREGATORS.register(name="db_mtl")
class DBMTL(BaseAggregator):
    """DB-MTL (Lin et al. 2023), stateful: running log-loss gradients, each scaled to the largest norm.

    The log-loss gradients ``∇log(L_i + ε)`` are averaged as ``ĝ ← g + (β / t^σ)(ĝ − g)``
    (buffer ``average``, K×D, created at the first step), then
    :func:`lossmix.functional.db_mtl`. ``over: shared`` only (the average is over
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
        finite = all_finite(logs)
        self.average.copy_(torch.where(finite, average, self.average))
        self.step.add_(finite.long())
        return F.db_mtl(average)

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
        saved = state_dict.get(prefix + "average")
        if isinstance(saved, Tensor) and saved.shape != self.average.shape:
            self.average = torch.zeros_like(saved, device=self.average.device)
        super()._load_from_state_dict(state_dict, prefix, *args)


@AGGREGATORS.register(name="modo")
class MoDo(BaseAggregator):
    """MoDo (Chen et al. 2023), stateful: task weights ``λ`` on the simplex moved one projected step
    per update (:func:`lossmix.functional.modo_step`; ``d = Jᵀλ``; O(K²) per step). The
    paper estimates the step from three independent batches; here from the one batch.

    Args:
        gamma: step size ``γ`` of ``λ`` (1e-3 in LibMTL).
        rho: ridge ``ρ`` (0.1 in LibMTL).
    """

    method_name = "modo"
    lambdas: Tensor

    def __init__(self, tasks: Sequence[str], *, gamma: float = 1e-3, rho: float = 0.1) -> None:
        super().__init__(tasks)
        owner = f"{AGGREGATION_KEY}: modo"
        self.gamma = check_float(owner, "gamma", gamma, low=0.0)
        self.rho = check_float(owner, "rho", rho, low=0.0)
        k = len(self.tasks)
        self.register_buffer("lambdas", torch.full((k,), 1.0 / k, dtype=torch.float64))

    def weights(self, gramian: Tensor) -> Tensor:
        lambdas = self.lambdas.to(gramian.dtype)
        new = F.modo_step(gramian, lambdas, gamma=self.gamma, rho=self.rho)
        new = torch.where(all_finite(new), new, lambdas)
        self.lambdas.copy_(new)
        return new


@AGGREGATORS.register(name="moco")
class MoCo(BaseAggregator):
    """MoCo (Fernando et al. 2023), stateful: tracked task gradients ``Y`` (a K×D buffer) and
    softmax task weights (:func:`lossmix.functional.moco_step`; O(K·D) per step, ``on:
    shared`` only). ``β_t = β/t^{σ_β}``, ``γ_t = γ/t^{σ_γ}`` (LibMTL's defaults).

    Args:
        beta, beta_sigma: tracking rate and its decay (0.5, 0.5).
        gamma, gamma_sigma: weight step and its decay (0.1, 0.5).
        rho: ridge ``ρ`` (0).
    """

    method_name = "moco"
    needs_losses = True
    tracked: Tensor
    lambdas: Tensor
    step: Tensor

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        beta: float = 0.5,
        beta_sigma: float = 0.5,
        gamma: float = 0.1,
        gamma_sigma: float = 0.5,
        rho: float = 0.0,
    ) -> None:
        super().__init__(tasks)
        owner = f"{AGGREGATION_KEY}: moco"
        self.beta = check_float(owner, "beta", beta, low=0.0, high=1.0)
        self.beta_sigma = check_float(owner, "beta_sigma", beta_sigma, low=0.0)
        self.gamma = check_float(owner, "gamma", gamma, low=0.0)
        self.gamma_sigma = check_float(owner, "gamma_sigma", gamma_sigma, low=0.0)
        self.rho = check_float(owner, "rho", rho, low=0.0)
        k = len(self.tasks)
        self.register_buffer("tracked", torch.zeros(0))
        self.register_buffer("lambdas", torch.full((k,), 1.0 / k, dtype=torch.float64))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def combine(self, jacobian: Tensor, losses: Tensor | None) -> Tensor:
        assert losses is not None  # forward checks needs_losses
        if self.tracked.shape != jacobian.shape:
            self.tracked = torch.zeros_like(jacobian)
        t = (self.step + 1).to(self.lambdas.dtype)
        update, tracked, lambdas = F.moco_step(
            jacobian,
            losses,
            self.tracked.to(jacobian.dtype),
            self.lambdas,
            beta=self.beta / t**self.beta_sigma,
            gamma=self.gamma / t**self.gamma_sigma,
            rho=self.rho,
        )
        finite = all_finite(update, lambdas)
        self.tracked.copy_(torch.where(finite, tracked, self.tracked))
        self.lambdas.copy_(torch.where(finite, lambdas, self.lambdas))
        self.step.add_(finite.long())
        return update

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
        saved = state_dict.get(prefix + "tracked")
        if isinstance(saved, Tensor) and saved.shape != self.tracked.shape:
            self.tracked = torch.zeros_like(saved, device=self.tracked.device)
        super()._load_from_state_dict(state_dict, prefix, *args)


@AGGREGATORS.register(name="excess_mtl")
class ExcessMTL(BaseAggregator):
    """ExcessMTL (He et al. 2024), stateful: task weights raised by each task's estimated excess
    risk (:func:`lossmix.functional.excess_mtl_step`; AdaGrad squares in a K×D buffer,
    O(K·D) per step, ``over: shared`` only).

    Args:
        step_size: the weights' exponentiated step ``η`` (LibMTL's ``robust_step_size``, 1e-2).
    """

    method_name = "excess_mtl"
    squares: Tensor
    initial: Tensor
    loss_weights: Tensor
    step: Tensor

    def __init__(self, tasks: Sequence[str], *, step_size: float = 1e-2) -> None:
        super().__init__(tasks)
        self.step_size = check_float(f"{AGGREGATION_KEY}: excess_mtl", "step_size", step_size, low=0.0)
        k = len(self.tasks)
        self.register_buffer("squares", torch.zeros(0))
        self.register_buffer("initial", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("loss_weights", torch.ones(k, dtype=torch.float64))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def combine(self, jacobian: Tensor, losses: Tensor | None) -> Tensor:
        if self.squares.shape != jacobian.shape:
            self.squares = torch.zeros_like(
                jacobian, dtype=torch.promote_types(jacobian.dtype, torch.float32)
            )
        update, squares, initial, weights = F.excess_mtl_step(
            jacobian,
            self.squares,
            self.initial,
            self.loss_weights,
            step_size=self.step_size,
            first=self.step == 0,
        )
        finite = all_finite(update, weights)
        self.squares.copy_(torch.where(finite, squares, self.squares))
        self.initial.copy_(torch.where(finite, initial, self.initial))
        self.loss_weights.copy_(torch.where(finite, weights, self.loss_weights))
        self.step.add_(finite.long())
        return update

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
        saved = state_dict.get(prefix + "squares")
        if isinstance(saved, Tensor) and saved.shape != self.squares.shape:
            self.squares = torch.zeros_like(saved, device=self.squares.device)
        super()._load_from_state_dict(state_dict, prefix, *args)
