"""Exact small solvers behind the Gramian-weighted aggregators MGDA, SDMGrad, UPGrad, DualProj,
CAGrad, Nash-MTL and FairGrad.

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

Nash-MTL's bargaining system ``G α = 1/α`` (FairGrad's ``Gw = w^{-1/α}``) is the
stationarity condition of the strictly convex ``½wᵀGw − Σ φ(wᵢ)``; Newton steps with a
batched backtracking stay inside ``w > 0`` and converge quadratically.

Whatever the dtype of the Gramian passed in, the solve runs in float64 (float32 on MPS,
which has no float64) and the weights come back in the Gramian's dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "MAX_EXACT_TASKS",
    "cagrad_weights",
    "clip_update",
    "dualproj_weights",
    "exact_dtype",
    "fairgrad_weights",
    "mgda_weights",
    "nash_mtl_weights",
    "sdmgrad_weights",
    "upgrad_weights",
]

#: Largest task count the enumerating solvers accept (2^12 = 4096 small solves).
MAX_EXACT_TASKS = 12

_subset_cache: dict[tuple[int, str], Tensor] = {}


def exact_dtype(device: torch.device) -> torch.dtype:
    """The dtype the Gramians and solvers use: float64 (float32 on MPS, which has no float64)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _normalised(gramian: Tensor) -> Tensor:
    """``G / trace(G)`` in the solver's dtype (0 for a zero Gramian): weights are scale-free."""
    g = gramian.to(exact_dtype(gramian.device))
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


def _simplex_qp(g: Tensor, linear: Tensor) -> Tensor:
    """``argmin_{w ∈ Δ_K} ½wᵀGw + cᵀw`` by enumerating the supports (``g`` normalised)."""
    k = g.shape[0]
    support = _subsets(k, g.device)[1:]
    rhs = g.new_zeros(support.shape[0], k + 1)
    rhs[:, :k] = -linear * support.to(g.dtype)
    rhs[:, k] = 1.0
    solution, _ = torch.linalg.solve_ex(_bordered(g, support), rhs)
    w, usable = _on_simplex(solution[:, :k], support)
    return _best(w, 0.5 * _quadratic(w, g) + w @ linear, usable)


def _dual_cone(g: Tensor, lower: Tensor) -> Tensor:
    """``v^{(m)} = argmin_{v ≥ l_m} vᵀGv`` for each row ``l_m`` of ``lower`` ``(M, K)``: ``Jᵀv^{(m)}``
    is the projection of ``Jᵀl_m`` onto the dual cone ``{x : Jx ≥ 0}`` (Quinton & Rey's
    Proposition 1). Every active set is solved (``2^K`` systems per row)."""
    k, rows = g.shape[0], lower.shape[0]
    free = _subsets(k, g.device).to(g.dtype)  # (N, K): 1 = the bound is inactive
    fixed = 1.0 - free
    m = free[:, :, None] * free[:, None, :] * g + torch.diag_embed(fixed)
    # rhs[m, n]: free rows −(G u_fixed), fixed rows u (u = lower[m])
    pinned = lower[:, None, :] * fixed[None, :, :]  # (M, N, K)
    rhs = free[None] * -(pinned @ g) + pinned
    solution, _ = torch.linalg.solve_ex(m[None].expand(rows, -1, -1, -1), rhs)
    v = torch.maximum(solution, lower[:, None, :])
    return _best(v, _quadratic(v, g), torch.isfinite(v).all(-1))


def mgda_weights(gramian: Tensor) -> Tensor:
    """MGDA (Désidéri 2012; Sener & Koltun 2018): the min-norm point of the gradients' convex hull.

    .. math:: w = \\arg\\min_{w \\in \\Delta_K} w^\\top G w, \\qquad d = J^\\top w

    ``d`` is the steepest common descent direction (KKT: ``g_iᵀd ≥ ‖d‖²`` for every task,
    with equality where ``w_i > 0``); ``d = 0`` exactly when the point is
    Pareto-stationary. Exact (active-set enumeration in float64); cost ``2^K`` solves of
    size ``≤ K+1``.

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
    return _simplex_qp(g, g.new_zeros(k)).to(gramian.dtype)


def sdmgrad_weights(gramian: Tensor, *, lamda: float = 0.3) -> Tensor:
    """SDMGrad (Xiao et al. 2023): MGDA regularised towards the mean gradient ``g₀ = Jᵀb``.

    .. math:: w^* = \\arg\\min_{w \\in \\Delta_K} \\tfrac12 w^\\top G w + \\lambda\\, w^\\top G b,
       \\qquad d = \\frac{J^\\top w^* + \\lambda g_0}{1 + \\lambda}

    (``b = 1/K``). The authors' code runs 20 projected SGD steps on ``w`` over three
    independent batches; here one batch and the exact minimiser (active-set enumeration,
    ``2^K`` solves). ``λ = 0`` is MGDA; ``λ → ∞`` the mean.

    Args:
        gramian: ``(K, K)``, ``K ≤ MAX_EXACT_TASKS``.
        lamda: ``λ ≥ 0`` (0.3 in LibMTL).

    Returns:
        the weights of ``d``, ``(w* + λb)/(1 + λ)``, shape ``(K,)`` (on the simplex).

    Example:
        >>> import torch
        >>> sdmgrad_weights(torch.tensor([[1.0, 0.0], [0.0, 4.0]]), lamda=0.0)  # MGDA
        tensor([0.8000, 0.2000])
    """
    k = _check_tasks(gramian, "sdmgrad")
    g = _normalised(gramian)
    b = g.new_full((k,), 1.0 / k)
    w = _simplex_qp(g, lamda * (g @ b))
    return ((w + lamda * b) / (1.0 + lamda)).to(gramian.dtype)


def upgrad_weights(gramian: Tensor, *, pref: Tensor | None = None) -> Tensor:
    """UPGrad (Quinton & Rey 2024): each gradient projected onto the dual cone of all of them.

    The projection of ``g_i`` onto ``{x : Jx ≥ 0}`` is ``Jᵀv`` with (their Proposition 1)

    .. math:: v^{(i)} = \\arg\\min_{v \\ge p_i e_i} v^\\top G v,
       \\qquad w = \\sum_i v^{(i)}, \\qquad d = J^\\top w = \\sum_i p_i\\,\\pi_J(g_i)

    so ``d`` conflicts with no task (``Jd ≥ 0``). Exact; cost ``K·2^K`` solves.

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
    return _dual_cone(g, torch.diag(p)).sum(0).to(gramian.dtype)


def dualproj_weights(gramian: Tensor, *, pref: Tensor | None = None) -> Tensor:
    """DualProj (Quinton & Rey 2024): the weighted mean gradient projected onto the dual cone.

    .. math:: w = \\arg\\min_{v \\ge p} v^\\top G v, \\qquad d = J^\\top w = \\pi_J(J^\\top p)

    so ``Jd ≥ 0`` (no task is hurt) and ``d`` is the closest such vector to ``Jᵀp``.
    Exact; cost ``2^K`` solves.

    Args:
        gramian: ``(K, K)``, ``K ≤ MAX_EXACT_TASKS``.
        pref: ``p`` (K,), ``≥ 0``; default ``1/K`` each (the mean).

    Returns:
        ``w`` of shape ``(K,)``, ``w ≥ p``.

    Example:
        >>> import torch
        >>> dualproj_weights(torch.tensor([[1.0, -2.0], [-2.0, 9.0]]))  # the mean hurts task 0
        tensor([1.0000, 0.5000])
    """
    k = _check_tasks(gramian, "dualproj")
    g = _normalised(gramian)
    p = g.new_full((k,), 1.0 / k) if pref is None else pref.to(g)
    return _dual_cone(g, p[None])[0].to(gramian.dtype)


def cagrad_weights(gramian: Tensor, *, c: float, rescale: int = 0) -> Tensor:
    """CAGrad (Liu et al. 2021): the best worst-case improvement in a ball around the mean gradient.

    With ``g₀ = Jᵀb`` (``b = 1/K``) and ``s = c‖g₀‖``, the dual of
    ``max_d min_i gᵢᵀd`` s.t. ``‖d − g₀‖ ≤ s`` is

    .. math:: w^* = \\arg\\min_{w \\in \\Delta_K} w^\\top G b + s\\sqrt{w^\\top G w},
       \\qquad d = g_0 + \\frac{s}{\\lVert J^\\top w^*\\rVert} J^\\top w^*

    solved exactly: on a support ``S`` the stationary point is ``w = p + (t/s) q`` with
    ``p, q`` from two bordered solves and ``t = ‖Jᵀw‖`` in closed form,
    ``t² = pᵀGp / (1 − qᵀGq / s²)``. Cost ``2^K`` solves (twice that at a degenerate point).

    **Degenerate points.** When ``‖Jᵀw*‖`` is at rounding level (a Pareto-stationary
    combination exists, e.g. two exactly opposite tasks), the formula divides by ~0 and its
    direction is noise. The optimum value is then 0 and every ``d`` in the ball with
    ``Jd ≥ 0`` attains it; ``d`` is the projection of ``g₀`` onto ``{Jd ≥ 0}``, pulled back
    into the ball. So ``‖d − g₀‖ ≤ s`` holds in every case (before ``rescale``).

    Args:
        gramian: ``(K, K)``, ``K ≤ MAX_EXACT_TASKS``.
        c: radius factor in ``[0, 1)`` (0: the mean gradient).
        rescale: the authors' ``rescale``: 0 keeps ``d``, 1 divides it by ``1 + c²``,
            2 by ``1 + c``.

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
    # ‖Jᵀw*‖ (trace-normalised) below √eps of the input: the ratio s/‖Jᵀw*‖ would be rounding
    degenerate = norm <= torch.finfo(gramian.dtype).eps ** 0.5
    regular = b + s / torch.where(degenerate, 1.0, norm) * best
    shift = _dual_cone(g, b[None])[0] - b
    length = _quadratic(shift, g).clamp(min=0.0).sqrt()
    inside = b + shift * torch.clamp(s / torch.where(length > 0, length, 1.0), max=1.0)
    weights = torch.where(s > 0, torch.where(degenerate, inside, regular), b)
    factor = {0: 1.0, 1: 1.0 + c**2, 2: 1.0 + c}[int(rescale)]
    return (weights / factor).to(gramian.dtype)


def _barrier_newton(g: Tensor, alive: Tensor, power: float, iterations: int) -> Tensor:
    """``argmin_{w > 0} ½wᵀGw − Σ φ(w_i)`` with ``φ'(w) = w^{-power}`` (``G`` normalised, a ridge
    added): stationary at ``Gw = w^{-power}``. Strictly convex; Newton steps kept inside
    ``w > 0`` (at most 0.99 of the way to the boundary) with a batched backtracking over 16
    step lengths, so every iteration descends and no host sync is needed."""

    def objective(w: Tensor) -> Tensor:
        barrier = torch.log(w) if power == 1.0 else w ** (1.0 - power) / (1.0 - power)
        return 0.5 * _quadratic(w, g) - barrier.sum(-1)

    w = torch.where(alive, torch.diagonal(g), 1.0).rsqrt()
    w = w * (w.numel() / _quadratic(w, g)).sqrt()
    lengths = 2.0 ** -torch.arange(16, dtype=g.dtype, device=g.device)
    for _ in range(iterations):
        gradient = g @ w - w**-power
        hessian = g + torch.diag(power * w ** (-power - 1.0))
        step = -torch.linalg.solve_ex(hessian, gradient[:, None])[0].squeeze(-1)
        boundary = torch.where(step < 0, -w / torch.where(step < 0, step, -1.0), torch.inf).min()
        longest = torch.clamp(0.99 * boundary, max=1.0)
        candidates = torch.cat([w[None], w + (longest * lengths)[:, None] * step])
        values = objective(candidates.clamp(min=torch.finfo(g.dtype).tiny))
        usable = torch.isfinite(values) & (candidates > 0).all(-1)
        w = _best(candidates[None], values[None], usable[None])[0]
    return w


def _bargaining_gramian(gramian: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(Ĝ + ridge, ‖G‖_F, alive)``: the Gramian over its Frobenius norm, in the solver's dtype;
    a task with a zero gradient is decoupled (``Ĝ_ii = 1``) and reported dead, and a ridge of
    ``10⁻¹²·diag(Ĝ)`` keeps rank-deficient Gramians bounded."""
    g = gramian.to(exact_dtype(gramian.device))
    g = 0.5 * (g + g.T)
    norm = torch.linalg.matrix_norm(g)
    g = g / torch.where(norm > 0, norm, 1.0)
    diag = torch.diagonal(g)
    # dead: a gradient norm below eps × the largest (a zero row); 1e-8 × the largest still counts
    alive = diag > torch.finfo(g.dtype).eps ** 2 * diag.max()
    return g + torch.diag(torch.where(alive, 1e-12 * diag, 1.0)), norm, alive


def clip_update(weights: Tensor, gramian: Tensor, max_norm: float) -> Tensor:
    """``w`` scaled down so ``‖Jᵀw‖ ≤ max_norm`` (``0``: unchanged), as ``clip_grad_norm_`` on ``d``."""
    if max_norm <= 0:
        return weights
    g = gramian.to(weights.dtype)
    length = _quadratic(weights, g).clamp(min=0.0).sqrt()
    return weights * torch.clamp(max_norm / torch.where(length > 0, length, 1.0), max=1.0)


def nash_mtl_weights(gramian: Tensor, *, max_norm: float = 1.0, iterations: int = 20) -> Tensor:
    """Nash-MTL (Navon et al. 2022): the Nash bargaining solution ``α ⊙ (Gα) = 1``, ``α > 0``.

    As the authors' code: the solver runs on ``Ĝ = G/‖G‖_F`` and the factor is put back
    (their constraint is ``α_i·‖G‖_F·(Ĝα)_i ≥ 1``), so ``α`` solves the system on ``G``
    itself and ``‖Jᵀα‖² = αᵀGα = K`` before clipping. ``α̂`` minimises the strictly
    convex ``½α̂ᵀĜα̂ − Σ log α̂ᵢ`` (damped Newton); ``α = α̂/√‖G‖_F``. Each task's
    directional derivative ``gᵢᵀd`` is ``1/αᵢ``, so the solution is invariant to rescaling
    a task (``α → α/cᵢ`` for ``gᵢ → cᵢgᵢ``). A task with a zero gradient gets ``α = 0``.
    With ``max_norm > 0`` the update ``d = Jᵀα`` is scaled down to ``‖d‖ ≤ max_norm`` (the
    authors clip the shared gradient to 1). Cost: ``iterations`` K×K solves; exact to
    the solver's tolerance (quadratic convergence).

    Args:
        gramian: ``(K, K)``.
        max_norm: bound on ``‖Jᵀα‖`` (``0``: none).
        iterations: Newton steps.

    Returns:
        ``α`` of shape ``(K,)``.

    Example:
        >>> import torch
        >>> g = torch.diag(torch.tensor([1.0, 4.0]))  # orthogonal, norms 1 and 2: α_i = 1/‖g_i‖
        >>> nash_mtl_weights(g, max_norm=0.0)
        tensor([1.0000, 0.5000])
    """
    return fairgrad_weights(gramian, alpha=1.0, iterations=iterations, max_norm=max_norm)


def fairgrad_weights(
    gramian: Tensor, *, alpha: float = 1.0, iterations: int = 20, max_norm: float = 0.0
) -> Tensor:
    """FairGrad (Ban & Ji 2024): α-fair utilities, ``Gw = w^{-1/α}``, ``w > 0``; ``d = Jᵀw``.

    Task ``i``'s utility is ``gᵢᵀd``; maximising ``Σ (gᵢᵀd)^{1−α}/(1−α)`` gives
    ``(Gw)_i = w_i^{-1/α}`` (the authors solve it with ``least_squares``; here the
    stationarity of the strictly convex ``½wᵀGw − Σ φ(w_i)``, ``φ' = w^{-1/α}``, by Newton
    with backtracking). ``α = 1`` is Nash-MTL (proportional fairness), ``α → ∞`` max-min
    fairness. Solved on ``Ĝ = G/‖G‖_F`` and scaled back by ``‖G‖_F^{-α/(1+α)}``.
    Cost: ``iterations`` K×K solves. A zero-gradient task gets ``w = 0``.

    Args:
        gramian: ``(K, K)``.
        alpha: fairness ``α > 0``.
        iterations: Newton steps.
        max_norm: bound on ``‖Jᵀw‖`` (``0``: none, as the authors).

    Returns:
        ``w`` of shape ``(K,)``.

    Example:
        >>> import torch
        >>> fairgrad_weights(torch.diag(torch.tensor([1.0, 4.0])), alpha=2.0)  # w_i = G_ii^{-α/(1+α)}
        tensor([1.0000, 0.3969])
    """
    g, norm, alive = _bargaining_gramian(gramian)
    w = _barrier_newton(g, alive, 1.0 / alpha, iterations)
    w = torch.where(alive, w, torch.zeros_like(w))
    w = w * torch.where(norm > 0, norm, 1.0) ** (-alpha / (1.0 + alpha))
    return clip_update(w, gramian, max_norm).to(gramian.dtype)
