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
    exact_dtype,
    mgda_weights,
    nash_mtl_weights,
    upgrad_weights,
)
from lossmix.mtl.functional.surgery import safe_denominator

__all__ = [
    "aligned_mtl",
    "aligned_mtl_weights",
    "cagrad",
    "combine",
    "config_weights",
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
    """``J Jᵀ``: the (K, K) inner products of the task gradients, in float64 whatever ``J``'s dtype.

    A float32 (let alone bf16) Gramian of nearly dependent gradients can come out indefinite,
    which the solvers would read as a Pareto-stationary point; K×K is tiny, so it is
    accumulated in :func:`exact_dtype`.

    >>> gramian(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    tensor([[1., 1.],
            [1., 2.]], dtype=torch.float64)
    """
    exact = jacobian.to(exact_dtype(jacobian.device))
    return exact @ exact.T


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

    Solved on the cosine matrix ``C = N⁻¹GN⁻¹`` (``N = diag ‖g_i‖``): ``α ∝ N⁻¹C⁺1``, the
    same where ``G`` is invertible and well conditioned whatever the tasks' scales (a
    gradient 10⁸× smaller than another is no rank deficiency); a zero gradient gets 0.

    >>> imtl_g_weights(torch.tensor([[4.0, 0.0], [0.0, 1.0]]))
    tensor([0.3333, 0.6667])
    """
    g = gramian.to(exact_dtype(gramian.device))
    norms = torch.diagonal(g).clamp(min=0.0).sqrt()
    alive = norms > 0
    inv = torch.where(alive, 1.0 / torch.where(alive, norms, 1.0), 0.0)
    cosines = inv[:, None] * g * inv[None, :]
    v = inv * (torch.linalg.pinv(cosines, hermitian=True) @ alive.to(g.dtype))
    total = v.sum()
    ok = total.abs() > 1e-12 * v.abs().sum().clamp(min=torch.finfo(g.dtype).tiny)
    return torch.where(ok, v / torch.where(ok, total, 1.0), torch.zeros_like(v)).to(gramian.dtype)


def _rank_mask(values: Tensor, k: int, dtype: torch.dtype) -> Tensor:
    """Eigenvalues of the Gramian above numerical zero (``λ > λ_max·K·eps``)."""
    return values > values.max() * k * torch.finfo(dtype).eps


SCALE_MODES: tuple[str, ...] = ("min", "median", "rmse")


def _aligned_scale(values: Tensor, mask: Tensor, scale_mode: str) -> Tensor:
    """The common singular value of the aligned gradients from the Gramian's eigenvalues ``λ``
    (those in ``mask``): ``√λ_min``, ``√median λ`` (the lower middle one) or ``√mean λ``."""
    if scale_mode not in SCALE_MODES:
        raise ValueError(
            f"aligned_mtl: scale_mode must be one of {', '.join(SCALE_MODES)}; got {scale_mode!r}."
        )
    rank = mask.sum()
    if scale_mode == "min":
        chosen = torch.where(mask, values, torch.inf).min()
    elif scale_mode == "median":
        ordered = torch.where(mask, values, torch.inf).sort().values
        chosen = ordered[((rank - 1).clamp(min=0) // 2).reshape(1)][0]
    else:
        chosen = torch.where(mask, values, 0.0).sum() / rank.clamp(min=1)
    return torch.where(rank > 0, chosen, 0.0).clamp(min=0.0).sqrt()


def aligned_mtl(jacobian: Tensor, *, pref: Tensor | None = None, scale_mode: str = "min") -> Tensor:
    """Aligned-MTL (Senushkin et al. 2023): the gradients made orthogonal with equal norms.

    With ``J = UΣVᵀ`` (rank r), the aligned matrix is ``Ĵ = σ U Vᵀ`` (its condition
    number is 1) and ``d = Ĵᵀ w`` for the task weights ``w`` (default 1 each, as the
    authors' code). ``σ`` is ``σ_min`` (``scale_mode="min"``), the median singular value
    (``"median"``) or ``√mean σ²`` (``"rmse"``), the authors' three modes.

    >>> aligned_mtl(torch.tensor([[3.0, 0.0], [0.0, 1.0]]))
    tensor([1., 1.])
    """
    k = jacobian.shape[0]
    w = jacobian.new_ones(k) if pref is None else pref.to(jacobian)
    u, s, vh = torch.linalg.svd(jacobian.to(exact_dtype(jacobian.device)), full_matrices=False)
    mask = _rank_mask(s**2, k, jacobian.dtype)
    scale = _aligned_scale(s**2, mask, scale_mode)
    update: Tensor = scale * (vh.T * mask) @ (u.T @ w.to(u.dtype))
    return update.to(jacobian.dtype)


def aligned_mtl_weights(gramian: Tensor, *, pref: Tensor | None = None, scale_mode: str = "min") -> Tensor:
    """:func:`aligned_mtl` on the Gramian ``G = VΛVᵀ``: ``w' = σ V Λ^{-½} Vᵀ w``.

    The eigenvalues below ``λ_max·K·eps`` (of the Gramian's dtype) count as zero, as in the
    authors' code, so duplicate, opposite or zero gradients give a finite update.

    >>> aligned_mtl_weights(torch.tensor([[9.0, 0.0], [0.0, 1.0]]))
    tensor([0.3333, 1.0000])
    """
    k = gramian.shape[0]
    w = gramian.new_ones(k) if pref is None else pref.to(gramian)
    values, vectors = torch.linalg.eigh(gramian.to(exact_dtype(gramian.device)))
    mask = _rank_mask(values, k, gramian.dtype)
    inv_sqrt = torch.where(mask, safe_denominator(values).rsqrt(), 0.0)
    scale = _aligned_scale(values, mask, scale_mode)
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
    return combine(mgda_weights(gramian(jacobian)), jacobian)


def upgrad(jacobian: Tensor, *, pref: Tensor | None = None) -> Tensor:
    """UPGrad: ``upgrad_weights(J Jᵀ) @ J``, the mean of the gradients projected on the dual cone.

    >>> upgrad(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
    tensor([0.2500, 0.7500])
    """
    return combine(upgrad_weights(gramian(jacobian), pref=pref), jacobian)


def cagrad(jacobian: Tensor, *, c: float, rescale: int = 0) -> Tensor:
    """CAGrad: ``cagrad_weights(J Jᵀ, c=c) @ J``.

    >>> cagrad(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), c=0.0)
    tensor([0.5000, 0.5000])
    """
    return combine(cagrad_weights(gramian(jacobian), c=c, rescale=rescale), jacobian)


def nash_mtl(jacobian: Tensor, *, max_norm: float = 1.0, iterations: int = 20) -> Tensor:
    """Nash-MTL: ``nash_mtl_weights(J Jᵀ) @ J``."""
    return combine(nash_mtl_weights(gramian(jacobian), max_norm=max_norm, iterations=iterations), jacobian)


def combine(weights: Tensor, jacobian: Tensor) -> Tensor:
    """``wᵀJ`` accumulated in :func:`exact_dtype`, returned in ``J``'s dtype (so a huge weight on
    nearly cancelling rows loses nothing to low-precision rounding).

    >>> combine(torch.tensor([0.5, 0.5], dtype=torch.float64), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    tensor([0.5000, 0.5000])
    """
    exact = exact_dtype(jacobian.device)
    return (weights.to(exact) @ jacobian.to(exact)).to(jacobian.dtype)


def config_weights(gramian: Tensor, *, pref: Tensor | None = None) -> Tensor:
    """ConFIG (Liu et al. 2024): the direction with equal cosine to every gradient, scaled to the
    sum of the gradients' projections on it.

    With unit rows ``U = N⁻¹J`` (``N = diag ‖g_i‖``), the direction is
    ``U⁺p = Jᵀv``, ``v = N⁻¹(N⁻¹GN⁻¹)⁺p`` (so ``u_iᵀd`` is the same for every task when
    the rows are independent), and ``d = (Σ_i g_iᵀd̂) d̂`` with ``d̂ = Jᵀv/‖Jᵀv‖``:

    .. math:: w = \\frac{\\mathbf 1^\\top G v}{v^\\top G v}\\, v

    (the authors' defaults: equal weights ``p = 1``, projection length). Exact
    (pseudo-inverse in float64); a zero gradient gets weight 0; cost one K×K pseudo-inverse.

    Args:
        gramian: ``(K, K)``.
        pref: ``p`` (K,), default ones.

    Returns:
        ``w`` of shape ``(K,)``.

    >>> config_weights(torch.tensor([[4.0, 0.0], [0.0, 1.0]]))  # d̂ = (1, 1)/√2, length 3/√2
    tensor([0.7500, 1.5000])
    """
    g = gramian.to(exact_dtype(gramian.device))
    k = g.shape[0]
    p = g.new_ones(k) if pref is None else pref.to(g)
    norms = torch.diagonal(g).clamp(min=0.0).sqrt()
    inv = torch.where(norms > norms.max() * torch.finfo(g.dtype).eps, 1.0 / safe_denominator(norms), 0.0)
    cosines = inv[:, None] * g * inv[None, :]
    v = inv * (torch.linalg.pinv(cosines, hermitian=True) @ p)
    length = _quadratic_form(v, g)
    projections = g.sum(0) @ v
    w = v * projections / safe_denominator(length)
    return torch.where(length > 0, w, torch.zeros_like(w)).to(gramian.dtype)


def _quadratic_form(w: Tensor, g: Tensor) -> Tensor:
    return (w @ g @ w).clamp(min=0.0)


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
    g = gramian.to(exact_dtype(gramian.device))
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
