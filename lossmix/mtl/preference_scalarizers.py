"""Preference-based scalarizers in the ``weighting:`` family: a preference ``r`` over the tasks
turned into one scalar whose optimum is the Pareto point that ``r`` points at.

Each returns the factors ``λ_i = ∂s/∂L_i`` of its scalarization ``s(L)``, detached, so the
gradient is exactly ``∇s`` while the total's value is ``Σ λ_i L_i`` (compare runs by the
per-term values); none needs a per-task gradient, so each costs what the plain sum costs.
Exact (closed forms, no solver); computed in the losses' dtype.

======= ====================================================== =====================================
``type`` scalarization ``s(L)``                               options
======= ====================================================== =====================================
stch    ``μ log Σ exp(r_i (ℓ_i − z_i)/μ)``, ``ℓ = L`` or log L  ``mu``, ``pref``, ``ideal``, ``log``
cosmos  ``Σ r_i L_i − λ cos(r, L)``                            ``pref``, ``penalty``
pbi     ``d₁ + θ d₂`` (distance along / off the ray ``r``)      ``pref``, ``theta``, ``ideal``
======= ====================================================== =====================================
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lossmix.errors import LossConfigError
from lossmix.mtl.weighting import WEIGHTING_KEY, BaseWeighting
from lossmix.registry.registry import WEIGHTINGS
from lossmix.utilities.checks import check_bool, check_float

__all__ = ["COSMOS", "PBI", "SmoothTchebycheff"]


def _vector(owner: str, name: str, value: Sequence[float] | None, k: int, default: float) -> Tensor:
    if value is None:
        return torch.full((k,), default)
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != k:
        raise LossConfigError(f"{owner}: {name} needs one number per task ({k}); got {value!r}.")
    return torch.tensor([check_float(owner, name, v) for v in value])


class _PreferenceScalarizer(BaseWeighting):
    """A scalarizer with a preference ``r`` (buffer ``pref``, ``≥ 0``, not all 0)."""

    pref: Tensor

    def __init__(self, tasks: Sequence[str], *, pref: Sequence[float] | None, name: str) -> None:
        super().__init__(tasks)
        self.owner = f"{WEIGHTING_KEY}: {name}"
        r = _vector(self.owner, "pref", pref, len(self.tasks), 1.0)
        if (r < 0).any() or not (r > 0).any():
            raise LossConfigError(
                f"{self.owner}: pref must be non-negative with a positive entry; got {pref!r}."
            )
        self.register_buffer("pref", r)


@WEIGHTINGS.register(name="stch")
class SmoothTchebycheff(_PreferenceScalarizer):
    """STCH (Lin et al. 2024): the smooth Tchebycheff scalarization.

    .. math:: s = \\mu \\log \\sum_i \\exp\\big(r_i(\\ell_i - z_i)/\\mu\\big),
       \\qquad \\lambda_i = r_i\\,\\mathrm{softmax}_i\\big(r(\\ell - z)/\\mu\\big)\\,\\ell_i'

    with ``ℓ = L`` (``ℓ' = 1``) or, with ``log: true``, ``ℓ = log L`` (``ℓ' = 1/L``, LibMTL's
    form after its warm-up, where ``z`` plays the nadir's log). ``μ → 0`` is the
    Tchebycheff ``max_i r_i(ℓ_i − z_i)``; large ``μ`` the mean.

    Args:
        mu: smoothing ``μ > 0`` (1 in LibMTL).
        pref: ``r`` (default 1 each).
        ideal: the ideal point ``z`` (default 0).
        log: scalarize ``log L`` instead of ``L``.

    >>> stch = SmoothTchebycheff(["a", "b"], mu=1.0)
    >>> stch(torch.tensor([2.0, 0.0]), training=True)[0]  # softmax(2, 0)
    tensor([0.8808, 0.1192])
    """

    ideal: Tensor

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        mu: float = 1.0,
        pref: Sequence[float] | None = None,
        ideal: Sequence[float] | None = None,
        log: bool = False,
    ) -> None:
        super().__init__(tasks, pref=pref, name="stch")
        self.mu = check_float(self.owner, "mu", mu, low=0.0, low_open=True)
        self.log = check_bool(self.owner, "log", log)
        self.register_buffer("ideal", _vector(self.owner, "ideal", ideal, len(self.tasks), 0.0))

    def forward(self, losses: Tensor, *, training: bool) -> tuple[Tensor, Tensor | None]:
        values = losses.detach()
        positive = values.clamp(min=torch.finfo(values.dtype).tiny)
        level = torch.log(positive) if self.log else values
        r = self.pref.to(values.dtype)
        factors = r * torch.softmax(r * (level - self.ideal.to(values.dtype)) / self.mu, dim=0)
        return (factors / positive if self.log else factors), None


@WEIGHTINGS.register(name="cosmos")
class COSMOS(_PreferenceScalarizer):
    """COSMOS (Ruchte & Grabocka 2021): the linear scalarization plus a cosine pull towards ``r``.

    .. math:: s = r^\\top L - \\lambda \\cos(r, L), \\qquad
       \\lambda_i = r_i - \\lambda\\Big(\\frac{r_i}{\\lVert r\\rVert\\lVert L\\rVert}
       - \\frac{(r^\\top L) L_i}{\\lVert r\\rVert \\lVert L\\rVert^3}\\Big)

    The paper also samples ``r`` from a Dirichlet each step and feeds it to the network;
    here ``r`` is fixed (condition the model on it yourself to sample it).

    Args:
        pref: ``r`` (default 1 each).
        penalty: ``λ ≥ 0`` (the paper tunes 1–8).

    >>> cosmos = COSMOS(["a", "b"], pref=[1.0, 1.0], penalty=1.0)
    >>> cosmos(torch.tensor([1.0, 1.0]), training=True)[0]  # on the ray: the cosine is flat
    tensor([1., 1.])
    """

    def __init__(
        self, tasks: Sequence[str], *, pref: Sequence[float] | None = None, penalty: float = 1.0
    ) -> None:
        super().__init__(tasks, pref=pref, name="cosmos")
        self.penalty = check_float(self.owner, "penalty", penalty, low=0.0)

    def forward(self, losses: Tensor, *, training: bool) -> tuple[Tensor, Tensor | None]:
        values = losses.detach()
        r = self.pref.to(values.dtype)
        norm = values.norm().clamp(min=torch.finfo(values.dtype).tiny)
        cosine_grad = r / (r.norm() * norm) - (r @ values) * values / (r.norm() * norm**3)
        return r - self.penalty * cosine_grad, None


@WEIGHTINGS.register(name="pbi")
class PBI(_PreferenceScalarizer):
    """PBI (Zhang & Li 2007, MOEA/D): penalty-based boundary intersection.

    With ``r̂ = r/‖r‖`` and ``L' = L − z``: ``d₁ = L'ᵀr̂`` (progress along the ray),
    ``e = L' − d₁r̂``, ``d₂ = ‖e‖`` (distance off it), ``s = d₁ + θd₂`` and
    ``λ = r̂ + θ e/‖e‖`` (``r̂`` alone on the ray).

    Args:
        pref: ``r`` (default 1 each).
        theta: the penalty ``θ ≥ 0`` (5 in MOEA/D).
        ideal: ``z`` (default 0).

    >>> pbi = PBI(["a", "b"], theta=5.0)
    >>> pbi(torch.tensor([1.0, 1.0]), training=True)[0]  # on the ray
    tensor([0.7071, 0.7071])
    """

    ideal: Tensor

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        pref: Sequence[float] | None = None,
        theta: float = 5.0,
        ideal: Sequence[float] | None = None,
    ) -> None:
        super().__init__(tasks, pref=pref, name="pbi")
        self.theta = check_float(self.owner, "theta", theta, low=0.0)
        self.register_buffer("ideal", _vector(self.owner, "ideal", ideal, len(self.tasks), 0.0))

    def forward(self, losses: Tensor, *, training: bool) -> tuple[Tensor, Tensor | None]:
        shifted = losses.detach() - self.ideal.to(losses.dtype)
        r = self.pref.to(losses.dtype)
        unit = r / r.norm()
        off = shifted - (shifted @ unit) * unit
        distance = off.norm()
        # on the ray (up to rounding) d₂ has no direction: its subgradient 0
        off_ray = distance > 8 * torch.finfo(losses.dtype).eps * shifted.norm()
        away = torch.where(off_ray, off / torch.where(off_ray, distance, 1.0), 0.0)
        return unit + self.theta * away, None
