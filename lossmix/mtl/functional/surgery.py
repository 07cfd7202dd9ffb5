"""Gradient surgery: PCGrad, GradVac and GradDrop edit the task gradients one pair or one
coordinate at a time.

PCGrad and GradVac change each gradient ``g_i`` by multiples of the others, so their
update is ``wᵀJ`` and a second, Gramian form (``*_weights``) computes ``w`` from ``J Jᵀ``
alone; GradDrop works coordinate by coordinate and needs ``J`` itself. Random orders are
drawn on the host from ``generator`` (a CPU ``torch.Generator``), so they cost no device
sync and two ranks seeded alike agree; the comparisons are ``torch.where``, never a Python
branch on a tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["graddrop", "gradvac", "gradvac_weights", "pcgrad", "pcgrad_weights"]


def safe_denominator(value: Tensor) -> Tensor:
    """``value`` where positive, 1 elsewhere (the numerator is 0 there)."""
    return torch.where(value > 0, value, torch.ones_like(value))


def _others(k: int, i: int, generator: torch.Generator | None) -> list[int]:
    """The tasks other than ``i`` in a random order drawn on the host."""
    order = torch.randperm(k - 1, generator=generator).tolist()
    return [j if j < i else j + 1 for j in order]


def pcgrad(jacobian: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """PCGrad (Yu et al. 2020): project away each conflicting component, in random order.

    For each task ``i``, ``g_i^PC ← g_i``; for ``j ≠ i`` in random order, if
    ``g_i^PC·g_j < 0`` then ``g_i^PC ← g_i^PC − (g_i^PC·g_j / ‖g_j‖²) g_j``;
    ``d = Σ_i g_i^PC``.

    Args:
        jacobian: ``(K, D)``.
        generator: CPU generator for the orders (``None``: torch's global one).

    Returns:
        ``d`` of shape ``(D,)``.

    >>> pcgrad(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
    tensor([0.5000, 1.5000])
    """
    k = jacobian.shape[0]
    sq = (jacobian * jacobian).sum(1)
    update = torch.zeros_like(jacobian[0])
    for i in range(k):
        g = jacobian[i]
        for j in _others(k, i, generator):
            dot = g @ jacobian[j]
            g = g - torch.where(dot < 0, dot / safe_denominator(sq[j]), 0.0) * jacobian[j]
        update = update + g
    return update


def pcgrad_weights(gramian: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """:func:`pcgrad` on the Gramian: ``g_i^PC = Σ_k C_ik g_k``, so ``g_i^PC·g_j = (C_i G)_j``.

    >>> pcgrad_weights(torch.tensor([[1.0, -1.0], [-1.0, 2.0]]))
    tensor([2.0000, 1.5000])
    """
    k = gramian.shape[0]
    diag = torch.diagonal(gramian)
    weights = torch.zeros_like(diag)
    eye = torch.eye(k, dtype=gramian.dtype, device=gramian.device)
    for i in range(k):
        coefficients = eye[i]
        for j in _others(k, i, generator):
            dot = coefficients @ gramian[:, j]
            coefficients = coefficients - torch.where(dot < 0, dot / safe_denominator(diag[j]), 0.0) * eye[j]
        weights = weights + coefficients
    return weights


def graddrop(
    jacobian: Tensor, *, leak: float | Tensor = 0.0, generator: torch.Generator | None = None
) -> Tensor:
    """GradDrop (Chen et al. 2020): keep each coordinate's gradients of one sign, drawn by purity.

    ``P = ½(1 + Σ_i g_i / Σ_i |g_i|)`` per coordinate, ``U ~ U(0, 1)``,
    ``M_i = 1[P > U]·1[g_i > 0] + 1[P < U]·1[g_i < 0]``, and
    ``d = Σ_i (ℓ_i + (1 − ℓ_i) M_i) g_i`` with leak ``ℓ``. A coordinate where every
    gradient is 0 stays 0.

    Args:
        jacobian: ``(K, D)``.
        leak: ``ℓ`` in ``[0, 1]``, a number or one per task (1: the plain sum).
        generator: a generator on ``jacobian``'s device for ``U``.

    >>> graddrop(torch.tensor([[1.0, 2.0], [3.0, -2.0]]), generator=torch.Generator().manual_seed(0))
    tensor([ 4., -2.])
    """
    total = jacobian.sum(0)
    mass = jacobian.abs().sum(0)
    purity = 0.5 * (1.0 + total / safe_denominator(mass))
    draw = torch.rand(purity.shape, generator=generator, device=jacobian.device, dtype=jacobian.dtype)
    keep = ((purity > draw) & (jacobian > 0)) | ((purity < draw) & (jacobian < 0))
    leak_t = torch.as_tensor(leak, dtype=jacobian.dtype, device=jacobian.device).reshape(-1, 1)
    return ((leak_t + (1.0 - leak_t) * keep.to(jacobian.dtype)) * jacobian).sum(0)


def _vaccine(norm_i: Tensor, norm_j: Tensor, phi: Tensor, target: Tensor) -> Tensor:
    """GradVac's coefficient on ``g_j`` lifting ``cos(g_i, g_j)`` from ``phi`` to ``target``."""
    room_phi = (1.0 - phi**2).clamp(min=0.0).sqrt()
    room_target = (1.0 - target**2).clamp(min=0.0).sqrt()
    return norm_i * (target * room_phi - phi * room_target) / safe_denominator(norm_j * room_target)


def gradvac(
    jacobian: Tensor, targets: Tensor, *, beta: float = 0.01, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """GradVac (Wang et al. 2021): raise each pair's cosine to its running target ``φ̂_ij``.

    For ``i`` and ``j ≠ i`` in random order: ``φ = cos(g_i^PC, g_j)``; if ``φ < φ̂_ij``,
    ``g_i^PC += ‖g_i^PC‖(φ̂√(1−φ²) − φ√(1−φ̂²)) / (‖g_j‖√(1−φ̂²)) · g_j``; then
    ``φ̂_ij ← (1−β)φ̂_ij + βφ``. ``d = Σ_i g_i^PC``.

    Args:
        jacobian: ``(K, D)``.
        targets: ``φ̂`` of shape ``(K, K)`` (zeros at the start).
        beta: EMA rate ``β`` in ``[0, 1]``.
        generator: CPU generator for the orders.

    Returns:
        ``(d, φ̂ updated)``.
    """
    k = jacobian.shape[0]
    norms = jacobian.norm(dim=1)
    update = torch.zeros_like(jacobian[0])
    new = targets.clone()
    for i in range(k):
        g = jacobian[i]
        for j in _others(k, i, generator):
            norm_i = g.norm()
            phi = (g @ jacobian[j]) / safe_denominator(norm_i * norms[j])
            coefficient = _vaccine(norm_i, norms[j], phi, targets[i, j])
            g = g + torch.where(phi < targets[i, j], coefficient, 0.0) * jacobian[j]
            new[i, j] = (1.0 - beta) * targets[i, j] + beta * phi
        update = update + g
    return update, new


def gradvac_weights(
    gramian: Tensor, targets: Tensor, *, beta: float = 0.01, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """:func:`gradvac` on the Gramian: ``‖g_i^PC‖² = C_i G C_iᵀ``, ``g_i^PC·g_j = (C_i G)_j``."""
    k = gramian.shape[0]
    norms = torch.diagonal(gramian).clamp(min=0.0).sqrt()
    eye = torch.eye(k, dtype=gramian.dtype, device=gramian.device)
    weights = torch.zeros_like(norms)
    new = targets.clone()
    for i in range(k):
        coefficients = eye[i]
        for j in _others(k, i, generator):
            dots = coefficients @ gramian
            norm_i = (dots @ coefficients).clamp(min=0.0).sqrt()
            phi = dots[j] / safe_denominator(norm_i * norms[j])
            coefficient = _vaccine(norm_i, norms[j], phi, targets[i, j])
            coefficients = coefficients + torch.where(phi < targets[i, j], coefficient, 0.0) * eye[j]
            new[i, j] = (1.0 - beta) * targets[i, j] + beta * phi
        weights = weights + coefficients
    return weights, new
