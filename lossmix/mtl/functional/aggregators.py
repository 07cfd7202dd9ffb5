"""Gradient aggregators: a task Jacobian ``J`` (K, D), one task gradient per row, to one update (D,).

Where a method's update is a weighted combination ``d = wᵀJ`` with ``w = f(J Jᵀ)``, its
``*_weights(gramian)`` form runs on the K×K Gramian alone (what ``over: representation``
and the distributed reduction use); the Jacobian form either follows the paper's
algorithm on the vectors (IMTL-G, Aligned-MTL, DB-MTL here, PCGrad and GradVac in
:mod:`lossmix.mtl.functional.surgery`: the Gramian form is a second, independent
implementation) or is ``weights(J Jᵀ) @ J`` (MGDA, UPGrad, CAGrad, Nash-MTL, whose solvers
are in :mod:`lossmix.mtl.functional.solvers`). Nothing here branches on tensor values.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lossmix.mtl.functional.solvers import (
    cagrad_weights,
    mgda_weights,
    nash_mtl_weights,
    upgrad_weights,
)
from lossmix.mtl.functional.surgery import safe_denominator

__all__ = [
    "aligned_mtl",
    "aligned_mtl_weights",
    "cagrad",
    "db_mtl",
    "db_mtl_weights",
    "gradient_conflicts",
    "gramian",
    "imtl_g",
    "imtl_g_weights",
    "mgda",
    "nash_mtl",
    "upgrad",
]


def gramian(jacobian: Tensor) -> Tensor:
    """``J Jᵀ``: the (K, K) inner products of the task gradients.

    >>> gramian(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    tensor([[1., 1.],
            [1., 2.]])
    """
    return jacobian @ jacobian.T


def imtl_g(jacobian: Tensor) -> Tensor:
    """IMTL-G (Liu et al. 2021): the combination ``Σα_i g_i`` (``Σα = 1``) with equal projections
    on every unit gradient ``u_i``.

    With ``D_i = g_1 − g_i`` and ``U_i = u_1 − u_i`` (``i ≥ 2``):
    ``α_{2:} = g_1 Uᵀ (D Uᵀ)⁺`` and ``α_1 = 1 − Σ α_{2:}``. The paper assumes linearly
    independent gradients; there this equals :func:`imtl_g_weights`, which the aggregator
    uses because its pseudo-inverse also settles dependent or zero gradients (a zero
    gradient gets weight 0). The direction is invariant to each task's scale up to its
    sign: the normalisation ``Σα = 1`` can land on the end of the equal-projection line
    that points against every task (then ``Gα`` is negative), as in the paper.

    >>> imtl_g(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    tensor([0.6667, 0.6667])
    """
    units = jacobian / safe_denominator(jacobian.norm(dim=1, keepdim=True))
    d = jacobian[:1] - jacobian[1:]
    u = units[:1] - units[1:]
    rest = jacobian[0] @ u.T @ torch.linalg.pinv(d @ u.T)
    alpha = torch.cat([1.0 - rest.sum().reshape(1), rest])
    return alpha @ jacobian


def imtl_g_weights(gramian: Tensor) -> Tensor:
    """:func:`imtl_g` on the Gramian: equal projections ``(Gα)_i / √G_ii`` give ``α ∝ G⁺√diag G``.

    >>> imtl_g_weights(torch.tensor([[4.0, 0.0], [0.0, 1.0]]))
    tensor([0.3333, 0.6667])
    """
    g = gramian.to(torch.float64)
    v = torch.linalg.pinv(g, hermitian=True) @ torch.diagonal(g).clamp(min=0.0).sqrt()
    total = v.sum()
    ok = total.abs() > 1e-12 * v.abs().sum().clamp(min=torch.finfo(g.dtype).tiny)
    return torch.where(ok, v / torch.where(ok, total, 1.0), torch.zeros_like(v)).to(gramian.dtype)


def _rank_mask(values: Tensor, k: int, dtype: torch.dtype) -> Tensor:
    """Eigenvalues of the Gramian above numerical zero (``λ > λ_max·K·eps``)."""
    return values > values.max() * k * torch.finfo(dtype).eps


def aligned_mtl(jacobian: Tensor, *, pref: Tensor | None = None) -> Tensor:
    """Aligned-MTL (Senushkin et al. 2023): the gradients made orthogonal with equal norms.

    With ``J = UΣVᵀ`` (rank r), the aligned matrix is ``Ĵ = σ_min U Vᵀ`` (its
    condition number is 1) and ``d = Ĵᵀ w`` for the task weights ``w`` (default 1 each,
    as the authors' code).

    >>> aligned_mtl(torch.tensor([[3.0, 0.0], [0.0, 1.0]]))
    tensor([1., 1.])
    """
    k = jacobian.shape[0]
    w = jacobian.new_ones(k) if pref is None else pref.to(jacobian)
    u, s, vh = torch.linalg.svd(jacobian.to(torch.float64), full_matrices=False)
    mask = _rank_mask(s**2, k, jacobian.dtype)
    smallest = torch.where(mask, s, torch.inf).min()
    scale = torch.where(mask.any(), smallest, 0.0)
    update: Tensor = scale * (vh.T * mask) @ (u.T @ w.to(u.dtype))
    return update.to(jacobian.dtype)


def aligned_mtl_weights(gramian: Tensor, *, pref: Tensor | None = None) -> Tensor:
    """:func:`aligned_mtl` on the Gramian ``G = VΛVᵀ``: ``w' = √λ_min V Λ^{-½} Vᵀ w``.

    >>> aligned_mtl_weights(torch.tensor([[9.0, 0.0], [0.0, 1.0]]))
    tensor([0.3333, 1.0000])
    """
    k = gramian.shape[0]
    w = gramian.new_ones(k) if pref is None else pref.to(gramian)
    values, vectors = torch.linalg.eigh(gramian.to(torch.float64))
    mask = _rank_mask(values, k, gramian.dtype)
    inv_sqrt = torch.where(mask, safe_denominator(values).rsqrt(), 0.0)
    smallest = torch.where(mask, values, torch.inf).min()
    scale = torch.where(mask.any(), smallest, 0.0).clamp(min=0.0).sqrt()
    balance: Tensor = scale * (vectors * inv_sqrt) @ vectors.T
    return (balance @ w.to(balance.dtype)).to(gramian.dtype)


def db_mtl(log_jacobian: Tensor) -> Tensor:
    """DB-MTL's gradient-magnitude balancing (Lin et al. 2023): every (log-loss) gradient scaled
    to the largest norm, ``d = Σ_i (max_j ‖g_j‖ / ‖g_i‖) g_i`` (a zero gradient stays 0).

    ``log_jacobian`` holds the gradients of ``log L_i`` (DB-MTL keeps their running
    average; :class:`~lossmix.mtl.aggregators.DBMTL` does).

    >>> db_mtl(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    tensor([2., 2.])
    """
    norms = log_jacobian.norm(dim=1)
    scale = torch.where(norms > 0, norms.max() / safe_denominator(norms), 0.0)
    return scale @ log_jacobian


def db_mtl_weights(gramian: Tensor) -> Tensor:
    """:func:`db_mtl` on the Gramian: the norms are ``√G_ii``."""
    norms = torch.diagonal(gramian).clamp(min=0.0).sqrt()
    return torch.where(norms > 0, norms.max() / safe_denominator(norms), 0.0)


def mgda(jacobian: Tensor) -> Tensor:
    """MGDA: ``mgda_weights(J Jᵀ) @ J``, the min-norm point of the convex hull of the gradients.

    >>> mgda(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    tensor([0.8000, 0.4000])
    """
    return mgda_weights(gramian(jacobian)) @ jacobian


def upgrad(jacobian: Tensor, *, pref: Tensor | None = None) -> Tensor:
    """UPGrad: ``upgrad_weights(J Jᵀ) @ J``, the mean of the gradients projected on the dual cone.

    >>> upgrad(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
    tensor([0.2500, 0.7500])
    """
    return upgrad_weights(gramian(jacobian), pref=pref) @ jacobian


def cagrad(jacobian: Tensor, *, c: float, rescale: bool = False) -> Tensor:
    """CAGrad: ``cagrad_weights(J Jᵀ, c=c) @ J``.

    >>> cagrad(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), c=0.0)
    tensor([0.5000, 0.5000])
    """
    return cagrad_weights(gramian(jacobian), c=c, rescale=rescale) @ jacobian


def nash_mtl(jacobian: Tensor, *, max_norm: float = 1.0, iterations: int = 20) -> Tensor:
    """Nash-MTL: ``nash_mtl_weights(J Jᵀ) @ J``."""
    return nash_mtl_weights(gramian(jacobian), max_norm=max_norm, iterations=iterations) @ jacobian


def gradient_conflicts(gramian: Tensor) -> dict[str, Tensor]:
    """What a Gramian says about conflict, all on the device.

    Returns:
        ``cosine`` (K, K): ``G_ij / √(G_ii G_jj)``; ``magnitude`` (K, K): the
        gradient-magnitude similarity ``2‖g_i‖‖g_j‖ / (‖g_i‖² + ‖g_j‖²)`` (Yu et al.
        2020); ``condition``: ``λ_max / λ_min`` of ``G`` (``inf`` when singular);
        ``share`` (K,): each task's share of the summed gradient's squared norm,
        ``(G1)_i / 1ᵀG1`` (they add up to 1; negative: the task pulls against the sum).

    >>> stats = gradient_conflicts(torch.tensor([[1.0, -1.0], [-1.0, 4.0]]))
    >>> stats["cosine"][0, 1], stats["share"]
    (tensor(-0.5000), tensor([0., 1.]))
    """
    g = gramian.to(torch.float64)
    diag = torch.diagonal(g).clamp(min=0.0)
    norms = diag.sqrt()
    cosine = g / safe_denominator(norms[:, None] * norms[None, :])
    magnitude = 2 * norms[:, None] * norms[None, :] / safe_denominator(diag[:, None] + diag[None, :])
    values = torch.linalg.eigvalsh(g)
    condition = torch.where(values[0] > 0, values[-1] / safe_denominator(values[0]), torch.inf)
    pulls = g.sum(1)
    share = pulls / safe_denominator(pulls.sum().abs())
    out = {"cosine": cosine, "magnitude": magnitude, "condition": condition, "share": share}
    return {k: v.to(gramian.dtype) for k, v in out.items()}
