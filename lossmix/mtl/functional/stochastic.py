"""Stochastic multi-objective steps that carry state from one step to the next: MoDo's and MoCo's
task weights on the simplex, MoCo's tracked gradients, ExcessMTL's excess-risk weights.

Each is a pure function ``(state, inputs) -> (update or weights, new state)``; the modules
in :mod:`lossmix.mtl.aggregators.stateful` keep the state in buffers. No host sync, no
data-dependent Python branch.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["excess_mtl_step", "moco_step", "modo_step", "simplex_projection"]


def simplex_projection(v: Tensor) -> Tensor:
    """The Euclidean projection of ``v`` (K,) onto the simplex ``{w ≥ 0, Σw = 1}`` (sort-based).

    ``θ = (Σ_{i ≤ ρ} u_i − 1)/ρ`` over the sorted ``u`` with ``ρ`` the last index where
    ``u_ρ > θ_ρ``; ``w = max(v − θ, 0)``.

    >>> simplex_projection(torch.tensor([0.5, 0.5, 0.5]))
    tensor([0.3333, 0.3333, 0.3333])
    >>> simplex_projection(torch.tensor([2.0, 0.0]))
    tensor([1., 0.])
    """
    u = v.sort(descending=True).values
    k = torch.arange(1, v.numel() + 1, dtype=v.dtype, device=v.device)
    thresholds = (u.cumsum(0) - 1.0) / k
    count = (u > thresholds).sum().clamp(min=1)
    theta = thresholds[(count - 1).reshape(1)][0]
    return (v - theta).clamp(min=0.0)


def modo_step(gramian: Tensor, weights: Tensor, *, gamma: float, rho: float) -> Tensor:
    """MoDo (Chen et al. 2023): one projected step on the task weights.

    .. math:: \\lambda \\leftarrow \\Pi_\\Delta\\big(\\lambda - \\gamma (G\\lambda + \\rho\\lambda)\\big),
       \\qquad d = J^\\top\\lambda

    The paper (and LibMTL) take ``G = J₁J₂ᵀ`` from two independent batches and ``d`` from a
    third; with one batch ``G = JJᵀ`` (a biased estimate of the same step).

    Args:
        gramian: ``(K, K)``.
        weights: ``λ`` (K,) on the simplex.
        gamma: step size ``γ``; rho: the ridge ``ρ``.

    Returns:
        the new ``λ`` (K,).

    >>> modo_step(torch.eye(2), torch.tensor([0.5, 0.5]), gamma=0.1, rho=0.0)
    tensor([0.5000, 0.5000])
    """
    return simplex_projection(weights - gamma * (gramian @ weights + rho * weights))


def moco_step(
    jacobian: Tensor,
    losses: Tensor,
    tracked: Tensor,
    weights: Tensor,
    *,
    beta: float | Tensor,
    gamma: float | Tensor,
    rho: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """MoCo (Fernando et al. 2023), LibMTL's form: tracked gradients and softmax task weights.

    .. math:: \\tilde g_i = \\frac{g_i}{\\lVert g_i\\rVert + 10^{-8}} L_i, \\quad
       Y \\leftarrow Y - \\beta (Y - \\tilde J), \\quad
       \\lambda \\leftarrow \\mathrm{softmax}\\big(\\lambda - \\gamma (YY^\\top + \\rho I)\\lambda\\big),
       \\quad d = Y^\\top\\lambda

    (the caller decays ``β = β₀/t^{σ_β}``, ``γ = γ₀/t^{σ_γ}``).

    Args:
        jacobian: ``J`` (K, D); losses: ``L`` (K,); tracked: ``Y`` (K, D); weights: ``λ`` (K,).

    Returns:
        ``(d, Y, λ)``.
    """
    norms = jacobian.norm(dim=1, keepdim=True)
    scaled = jacobian / (norms + 1e-8) * losses.to(jacobian.dtype)[:, None]
    tracked = tracked - beta * (tracked - scaled)
    exact = tracked.to(weights.dtype)
    gramian = exact @ exact.T + rho * torch.eye(weights.numel(), dtype=weights.dtype, device=weights.device)
    weights = torch.softmax(weights - gamma * gramian @ weights, dim=0)
    return (weights @ exact).to(jacobian.dtype), tracked, weights


def excess_mtl_step(
    jacobian: Tensor, squares: Tensor, initial: Tensor, weights: Tensor, *, step_size: float, first: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """ExcessMTL (He et al. 2024): task weights raised by each task's estimated excess risk.

    With AdaGrad's accumulated squares ``H_i ← H_i + g_i²``, the excess risk of task ``i``
    is estimated as ``e_i = g_iᵀ diag(√(H_i + 10⁻⁷))⁻¹ g_i``; relative to the first step's
    ``e⁰``, ``w ← w ⊙ exp(η e/e⁰)``, renormalised to ``Σw = K`` (the first step keeps
    ``w``). ``d = Jᵀw``.

    Args:
        jacobian: ``J`` (K, D); squares: ``H`` (K, D); initial: ``e⁰`` (K,);
        weights: ``w`` (K,); step_size: ``η`` (LibMTL: 1e-2); first: whether this is the
        first step (a boolean tensor).

    Returns:
        ``(d, H, e⁰, w)``.
    """
    squares = squares + jacobian.to(squares.dtype) ** 2
    risk = (jacobian.to(squares.dtype) ** 2 / (squares + 1e-7).sqrt()).sum(1).to(weights.dtype)
    initial = torch.where(first, risk, initial)
    relative = risk / torch.where(initial > 0, initial, 1.0)
    raised = weights * torch.exp(step_size * relative)
    raised = raised * (weights.numel() / raised.sum())
    weights = torch.where(first, weights, raised)
    return weights.to(jacobian.dtype) @ jacobian, squares, initial, weights
