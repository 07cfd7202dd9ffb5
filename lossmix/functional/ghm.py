"""Gradient harmonizing mechanism (GHM-C): element weights from the gradient-norm density.

The binning is vectorised: every element's bin comes from ``bucketize``, the
bin counts from one ``scatter_add``, and the number of non-empty bins stays a
tensor, so nothing syncs with the host and the function compiles as one graph.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lossmix.errors import LossInputError

__all__ = ["asl1_loss", "ghm_density_weights", "ghm_edges", "ghmc_weights", "ghmr_weights"]


def ghm_edges(bins: int) -> Tensor:
    """MMDetection's bin edges ``i / bins``, the last one raised by 1e-6 so ``g = 1`` fits.

    >>> ghm_edges(2)
    tensor([0.0000, 0.5000, 1.0000])
    """
    edges = torch.arange(bins + 1, dtype=torch.float32) / bins
    edges[-1] += 1e-6
    return edges


def ghmc_weights(
    pred: Tensor,
    target: Tensor,
    valid: Tensor,
    *,
    bins: int = 10,
    momentum: float = 0.0,
    acc_sum: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""GHM-C element weights (Li et al., 2019), as MMDetection's ``GHMC``.

    With :math:`g = |\sigma(x) - t|` (detached) binned on edges ``i / bins``, the valid
    elements counted :math:`\mathrm{tot} = \max(\#\mathrm{valid}, 1)` and :math:`c_i` per
    bin, a valid element in a non-empty bin ``i`` gets

    .. math:: w = \frac{\mathrm{tot}}{d_i \cdot n_{\mathrm{nonempty}}}, \qquad
        d_i = \begin{cases} m\, a_i + (1 - m)\, c_i & m > 0 \\ c_i & m = 0 \end{cases}

    where ``a`` is the running ``acc_sum``; invalid elements get 0. Only
    non-empty bins update their running sum.

    Args:
        pred: logits ``(*)``.
        target: targets in ``[0, 1]``, the shape of ``pred``.
        valid: boolean mask, the shape of ``pred`` (MMDetection: ``label_weight > 0``).
        bins: number of bins.
        momentum: ``m`` in ``[0, 1)``; ``acc_sum`` is needed when it is > 0.
        acc_sum: running bin counts ``(bins,)``.

    Returns:
        ``(weights, tot, new_acc_sum)``: weights ``(*)`` (no gradient), ``tot`` a 0-dim
        tensor (the normaliser MMDetection passes as ``avg_factor``), and the updated
        running sums ``(bins,)`` (the bin counts when ``momentum == 0``).

    >>> w, tot, acc = ghmc_weights(torch.tensor([0.0, 0.0, 10.0]), torch.tensor([1.0, 1.0, 1.0]),
    ...                            torch.ones(3, dtype=torch.bool), bins=2)
    >>> w, tot
    (tensor([0.7500, 0.7500, 1.5000]), tensor(3.))
    """
    with torch.no_grad():
        g = (torch.sigmoid(pred.detach()) - target.to(pred.dtype)).abs()
        tot = valid.sum().to(g.dtype).clamp(min=1.0)
        edges = ghm_edges(bins).to(device=g.device, dtype=g.dtype)
        weights, density = ghm_density_weights(g, valid, tot, edges, momentum=momentum, acc_sum=acc_sum)
    return weights, tot, density


def ghm_density_weights(
    g: Tensor,
    valid: Tensor,
    tot: Tensor,
    edges: Tensor,
    *,
    momentum: float = 0.0,
    acc_sum: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """GHM's weights from gradient norms ``g`` binned on ``edges`` (shared by GHM-C and GHM-R).

    A valid element in a non-empty bin ``i`` gets ``tot / (d_i · n_nonempty)`` with
    ``d_i`` the bin count, or its running sum ``m a_i + (1 - m) c_i`` when ``momentum``
    ``m > 0``; others get 0. Returns ``(weights, new_running_sums)``.
    """
    bins = edges.numel() - 1
    index = (torch.bucketize(g, edges, right=True) - 1).clamp(0, bins - 1)
    index = torch.where(valid, index, bins).flatten()
    counts = g.new_zeros(bins + 1).scatter_add_(0, index, torch.ones_like(g).flatten())[:bins]
    nonempty = counts > 0
    density = counts
    if momentum > 0:
        if acc_sum is None:
            raise LossInputError("GHM: momentum > 0 needs acc_sum (running counts).")
        acc = acc_sum.to(g.dtype)
        density = torch.where(nonempty, momentum * acc + (1 - momentum) * counts, acc)
    per_bin = torch.where(nonempty, tot / torch.where(nonempty, density, 1.0), 0.0)
    per_bin = per_bin / nonempty.sum().clamp(min=1)
    per_bin = torch.cat([per_bin, per_bin.new_zeros(1)])
    return per_bin[index].view_as(g), density


def asl1_loss(pred: Tensor, target: Tensor, *, mu: float = 0.02) -> Tensor:
    r"""GHM-R's authentic smooth L1: :math:`\sqrt{d^2 + \mu^2} - \mu`, :math:`d = p - t`.

    >>> asl1_loss(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.0]), mu=0.5)
    tensor([0.0000, 0.6180])
    """
    diff = pred - target.to(pred.dtype)
    return torch.sqrt(diff * diff + mu * mu) - mu


def ghmr_weights(
    pred: Tensor,
    target: Tensor,
    valid: Tensor,
    tot: Tensor,
    *,
    mu: float = 0.02,
    bins: int = 10,
    momentum: float = 0.0,
    acc_sum: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""GHM-R element weights (Li et al., 2019), as MMDetection's ``GHMR``.

    The gradient norm of ASL1 is :math:`g = |d| / \sqrt{d^2 + \mu^2}` (detached), binned on
    edges ``i / bins`` with the last edge 1000; the weights are
    :func:`ghm_density_weights` with ``tot`` (MMDetection: ``max(Σ label_weight, 1)``).

    Returns ``(weights, new_acc_sum)``, the weights shaped like ``pred``.
    """
    with torch.no_grad():
        diff = pred.detach() - target.to(pred.dtype)
        g = (diff / torch.sqrt(mu * mu + diff * diff)).abs()
        edges = torch.arange(bins + 1, dtype=g.dtype, device=g.device) / bins
        edges[-1] = 1e3
        return ghm_density_weights(g, valid, tot.to(g.dtype), edges, momentum=momentum, acc_sum=acc_sum)
