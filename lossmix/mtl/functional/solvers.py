"""Exact small solvers behind the Gramian-weighted aggregators MGDA, UPGrad, CAGrad and Nash-MTL.

Each takes the task Gramian ``G = J Jᵀ`` (K×K, rows of ``J`` are task gradients) and
returns the task weights ``w`` (K,); the update is ``wᵀJ``. Everything runs on ``G``'s
device in float64 with a fixed sequence of tensor operations: no host sync, no
data-dependent Python branch, no solver dependency.

The three quadratic or conic programs over the simplex or a box (MGDA, UPGrad, CAGrad)
are solved **exactly by enumerating active sets**: for every subset ``S`` of tasks the
KKT system restricted to ``S`` is one small linear solve (all 2^K of them batched),
each candidate is made feasible, and the candidate with the lowest objective wins. The
optimum is among the candidates: at an extreme point of the optimal set the restricted
KKT matrix is nonsingular, so its solve returns that point. The cost is ``2^K`` (UPGrad:
``K·2^K``) solves of size ``≤ K+1``; :data:`MAX_EXACT_TASKS` bounds ``K``.

Nash-MTL's bargaining system ``G α = 1/α`` is the stationarity condition of the
self-concordant ``½αᵀGα − Σ log αᵢ``; damped Newton (step ``Δ/(1+λ)``, ``λ`` the
Newton decrement) stays inside ``α > 0`` and converges quadratically.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "MAX_EXACT_TASKS",
    "cagrad_weights",
    "mgda_weights",
    "nash_mtl_weights",
    "upgrad_weights",
]

#: Largest task count the enumerating solvers accept (2^12 = 4096 small solves).
MAX_EXACT_TASKS = 12

_subset_cache: dict[tuple[int, str], Tensor] = {}


def _solver_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _normalised(gramian: Tensor) -> Tensor:
    """``G / trace(G)`` in the solver's dtype (0 for a zero Gramian): weights are scale-free."""
    g = gramian.to(_solver_dtype(gramian.device))
    g = 0.5 * (g + g.T)
    trace = torch.diagonal(g).sum()
    return torch.where(trace > 0, g / torch.where(trace > 0, trace, 1.0), torch.zeros_like(g))


def _subsets(k: int, device: torch.device) -> Tensor:
    """Every subset of ``range(k)`` as a boolean mask, the empty set first: ``(2^k, k)``."""
    key = (k, str(device))
    if key not in _subset_cache:
        codes = torch.arange(2**k, device=device)
        bits = torch.arange(k, device=device)
        _subset_cache[key] = (codes[:, None] >> bits[None, :]) & 1 == 1
    return _subset_cache[key]


def _check_tasks(gramian: Tensor, name: str) -> int:
    if gramian.dim() != 2 or gramian.shape[0] != gramian.shape[1]:
        raise ValueError(f"{name}: the Gramian must be square (K, K); got shape {tuple(gramian.shape)}.")
    k = int(gramian.shape[0])
    if k > MAX_EXACT_TASKS:
        raise ValueError(
            f"{name}: the exact solver enumerates 2^K active sets and accepts at most "
            f"{MAX_EXACT_TASKS} tasks; got K={k}."
        )
    return k


def _bordered(g: Tensor, support: Tensor) -> Tensor:
    """KKT matrices ``[[G_SS, 1_S], [1_Sᵀ, 0]]`` of min over ``{w ≥ 0, Σw = 1, w_i = 0 off S}``,
    padded with identity rows off ``S``: ``(N, K+1, K+1)``."""
    n, k = support.shape
    s = support.to(g.dtype)
    m = g.new_zeros(n, k + 1, k + 1)
    m[:, :k, :k] = s[:, :, None] * s[:, None, :] * g + torch.diag_embed(1.0 - s)
    m[:, :k, k] = s
    m[:, k, :k] = s
    return m


def _on_simplex(w: Tensor, support: Tensor) -> tuple[Tensor, Tensor]:
    """Candidates clipped to ``w ≥ 0`` on their support and renormalised; and which are usable."""
    w = torch.where(support, w.clamp(min=0.0), torch.zeros_like(w))
    total = w.sum(-1, keepdim=True)
    usable = (total.squeeze(-1) > 0.5) & torch.isfinite(w).all(-1)
    return w / torch.where(total > 0, total, 1.0), usable


def _best(candidates: Tensor, objective: Tensor, usable: Tensor) -> Tensor:
    """The usable candidate (rows along ``dim=-2``) with the lowest objective."""
    objective = torch.where(usable & torch.isfinite(objective), objective, torch.inf)
    index = objective.argmin(-1)
    return torch.take_along_dim(candidates, index[..., None, None], dim=-2).squeeze(-2)


def _quadratic(w: Tensor, g: Tensor) -> Tensor:
    return torch.einsum("...i,ij,...j->...", w, g, w)


def mgda_weights(gramian: Tensor) -> Tensor:
    """MGDA (Désidéri 2012; Sener & Koltun 2018): the min-norm point of the gradients' convex hull.

    .. math:: w = \\arg\\min_{w \\in \\Delta_K} w^\\top G w, \\qquad d = J^\\top w

    ``d`` is the steepest common descent direction; ``d = 0`` exactly when the point
    is Pareto-stationary (some convex combination of the gradients vanishes).

    Args:
        gramian: ``G = J Jᵀ`` of shape ``(K, K)``, ``K ≤ MAX_EXACT_TASKS``.

    Returns:
        ``w`` of shape ``(K,)``, ``w ≥ 0``, ``Σw = 1``, in ``gramian``'s dtype.

    Example:
        >>> import torch
        >>> mgda_weights(torch.tensor([[1.0, 0.0], [0.0, 4.0]]))  # orthogonal, norms 1 and 2
        tensor([0.8000, 0.2000])
    """
    k = _check_tasks(gramian, "mgda")
    g = _normalised(gramian)
    support = _subsets(k, g.device)[1:]
    rhs = g.new_zeros(support.shape[0], k + 1)
    rhs[:, k] = 1.0
    solution, _ = torch.linalg.solve_ex(_bordered(g, support), rhs)
    w, usable = _on_simplex(solution[:, :k], support)
    return _best(w, _quadratic(w, g), usable).to(gramian.dtype)


def upgrad_weights(gramian: Tensor, *, pref: Tensor | None = None) -> Tensor:
    """UPGrad (Quinton & Rey 2024): each gradient projected onto the dual cone of all of them.

    The projection of ``g_i`` onto ``{x : Jx ≥ 0}`` is ``Jᵀv`` with (their Proposition 1)

    .. math:: v^{(i)} = \\arg\\min_{v \\ge p_i e_i} v^\\top G v,
       \\qquad w = \\sum_i v^{(i)}, \\qquad d = J^\\top w = \\sum_i p_i\\,\\pi_J(g_i)

    so ``d`` conflicts with no task (``Jd ≥ 0``).

    Args:
        gramian: ``(K, K)``, ``K ≤ MAX_EXACT_TASKS``.
        pref: preference ``p`` (K,), default ``1/K`` each (the mean of the projections).

    Returns:
        ``w`` of shape ``(K,)``.

    Example:
        >>> import torch
        >>> upgrad_weights(torch.tensor([[1.0, -1.0], [-1.0, 2.0]]))  # conflicting
        tensor([1.0000, 0.7500])
    """
    k = _check_tasks(gramian, "upgrad")
    g = _normalised(gramian)
    p = g.new_full((k,), 1.0 / k) if pref is None else pref.to(g)
    lower = torch.diag(p)  # row i: the bound p_i e_i of projection i
    free = _subsets(k, g.device).to(g.dtype)  # (N, K): 1 = the bound is inactive
    fixed = 1.0 - free
    m = free[:, :, None] * free[:, None, :] * g + torch.diag_embed(fixed)
    # rhs[i, n]: free rows −(G u_fixed), fixed rows u (u = lower[i])
    pinned = lower[:, None, :] * fixed[None, :, :]  # (K, N, K)
    rhs = free[None] * -(pinned @ g) + pinned
    solution, _ = torch.linalg.solve_ex(m[None].expand(k, -1, -1, -1), rhs)
    v = torch.maximum(solution, lower[:, None, :])
    usable = torch.isfinite(v).all(-1)
    return _best(v, _quadratic(v, g), usable).sum(0).to(gramian.dtype)


def cagrad_weights(gramian: Tensor, *, c: float, rescale: bool = False) -> Tensor:
    """CAGrad (Liu et al. 2021): the best worst-case improvement in a ball around the mean gradient.

    With ``g₀ = Jᵀb`` (``b = 1/K``) and ``s = c‖g₀‖``, the dual of
    ``max_d min_i gᵢᵀd`` s.t. ``‖d − g₀‖ ≤ s`` is

    .. math:: w^* = \\arg\\min_{w \\in \\Delta_K} w^\\top G b + s\\sqrt{w^\\top G w},
       \\qquad d = g_0 + \\frac{s}{\\lVert J^\\top w^*\\rVert} J^\\top w^*

    solved exactly: on a support ``S`` the stationary point is ``w = p + (t/s) q`` with
    ``p, q`` from two bordered solves and ``t = ‖Jᵀw‖`` in closed form,
    ``t² = pᵀGp / (1 − qᵀGq / s²)``.

    Args:
        gramian: ``(K, K)``, ``K ≤ MAX_EXACT_TASKS``.
        c: radius factor in ``[0, 1)`` (0: the mean gradient).
        rescale: divide the update by ``1 + c²`` (the authors' code, ``rescale=1``).

    Returns:
        the weights of ``d``: ``b + (s/‖Jᵀw*‖) w*``, shape ``(K,)``.

    Example:
        >>> import torch
        >>> cagrad_weights(torch.eye(2), c=0.0)
        tensor([0.5000, 0.5000])
    """
    k = _check_tasks(gramian, "cagrad")
    g = _normalised(gramian)
    b = g.new_full((k,), 1.0 / k)
    a = g @ b
    s = c * _quadratic(b, g).clamp(min=0.0).sqrt()
    s_safe = torch.where(s > 0, s, 1.0)
    support = _subsets(k, g.device)[1:]
    n = support.shape[0]
    rhs = g.new_zeros(n, k + 1, 2)
    rhs[:, k, 0] = 1.0
    rhs[:, :k, 1] = -a * support.to(g.dtype)
    solution, _ = torch.linalg.solve_ex(_bordered(g, support), rhs)
    p, q = solution[:, :k, 0] * support, solution[:, :k, 1] * support
    pgp = (-solution[:, k, 0]).clamp(min=0.0)
    room = 1.0 - _quadratic(q, g) / s_safe**2
    t = (pgp / torch.where(room > 0, room, 1.0)).sqrt()
    w, usable = _on_simplex(p + (t / s_safe)[:, None] * q, support)
    objective = w @ a + s * _quadratic(w, g).clamp(min=0.0).sqrt()
    best = _best(w, objective, usable & (room > 0))
    norm = _quadratic(best, g).clamp(min=0.0).sqrt()
    weights = torch.where(s > 0, b + s / (norm + 1e-12) * best, b)
    if rescale:
        weights = weights / (1.0 + c**2)
    return weights.to(gramian.dtype)


def nash_mtl_weights(gramian: Tensor, *, max_norm: float = 1.0, iterations: int = 20) -> Tensor:
    """Nash-MTL (Navon et al. 2022): the Nash bargaining solution ``α ⊙ (Ĝα) = 1``, ``α > 0``.

    ``Ĝ = G / ‖G‖_F`` as in the authors' code; ``α`` minimises the strictly convex
    ``½αᵀĜα − Σ log αᵢ`` (damped Newton from ``α₀ ∝ diag(Ĝ)^{-½}``), so each task's
    directional derivative ``gᵢᵀd`` is ``1/αᵢ``. The solution is invariant to rescaling
    a task (``α → α/cᵢ`` for ``gᵢ → cᵢgᵢ``). A task with a zero gradient gets ``α = 0``;
    a ridge of ``10⁻⁹·diag(Ĝ)`` keeps rank-deficient Gramians bounded. With
    ``max_norm > 0`` the update ``d = Jᵀα`` is scaled down to ``‖d‖ ≤ max_norm`` (the
    authors clip the shared gradient to 1).

    Args:
        gramian: ``(K, K)``.
        max_norm: bound on ``‖Jᵀα‖`` (``0``: none).
        iterations: damped Newton steps.

    Returns:
        ``α`` of shape ``(K,)``.

    Example:
        >>> import torch
        >>> g = torch.diag(torch.tensor([1.0, 4.0]))  # orthogonal, norms 1 and 2: α_i ∝ 1/‖g_i‖
        >>> nash_mtl_weights(g, max_norm=0.0) / 17**0.25  # ‖G‖_F = √17
        tensor([1.0000, 0.5000])
    """
    g = gramian.to(_solver_dtype(gramian.device))
    g = 0.5 * (g + g.T)
    norm = torch.linalg.matrix_norm(g)
    g = g / torch.where(norm > 0, norm, 1.0)
    diag = torch.diagonal(g)
    alive = diag > torch.finfo(g.dtype).eps * diag.max()
    # a dead (zero-gradient) task is decoupled (row 0): give it G_ii = 1, then α_i = 0 below
    ridge = torch.where(alive, 1e-9 * diag, 1.0)
    g = g + torch.diag(ridge)
    alpha = torch.where(alive, diag, 1.0).rsqrt()
    alpha = alpha * (alpha.numel() / _quadratic(alpha, g)).sqrt()
    for _ in range(iterations):
        residual = g @ alpha - 1.0 / alpha
        hessian = g + torch.diag(alpha**-2)
        step = -torch.linalg.solve_ex(hessian, residual[:, None])[0].squeeze(-1)
        decrement = (step @ hessian @ step).clamp(min=0.0).sqrt()
        alpha = alpha + step / (1.0 + decrement)
    alpha = torch.where(alive, alpha, torch.zeros_like(alpha))
    if max_norm > 0:
        length = _quadratic(alpha, gramian.to(alpha.dtype)).clamp(min=0.0).sqrt()
        alpha = alpha * torch.clamp(max_norm / torch.where(length > 0, length, 1.0), max=1.0)
    return alpha.to(gramian.dtype)
