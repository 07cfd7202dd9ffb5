"""Each aggregator's defining constraint on adversarial Jacobians (opposite, duplicate, zero,
rank-deficient, badly scaled, near-Pareto-stationary and tiny rows; K = 2, 5, 8) in float32 and
float64: CAGrad stays in its ball, UPGrad and DualProj hurt no task (``Jd ≥ 0``), MGDA meets its
KKT conditions, IMTL-G projects equally, Nash-MTL and FairGrad solve their systems, and every
registered method gives a finite update of the Jacobian's dtype."""

from __future__ import annotations

import pytest
import torch

from lossmix import AGGREGATORS
from lossmix.mtl import functional as F

D = 6
KS = (2, 5, 8)
KINDS = ("opposite", "duplicate", "zero", "rank_deficient", "badly_scaled", "near_stationary", "tiny")
DTYPES = (torch.float32, torch.float64)


def adversarial(kind: str, k: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 17 * k)
    j = torch.randn(k, D, generator=gen, dtype=torch.float64)
    if kind == "opposite":
        j[1] = -j[0]
    elif kind == "duplicate":
        j[1] = j[0]
    elif kind == "zero":
        j[0] = 0.0
    elif kind == "rank_deficient":
        j = torch.randn(k, 2, generator=gen, dtype=torch.float64) @ torch.randn(
            2, D, generator=gen, dtype=torch.float64
        )
    elif kind == "badly_scaled":
        j = j * torch.logspace(-4, 4, k, dtype=torch.float64)[:, None]
    elif kind == "near_stationary":  # a convex combination vanishes up to 1e-6
        w = torch.rand(k, generator=gen, dtype=torch.float64) + 0.1
        j[-1] = -(w[:-1] @ j[:-1]) / w[-1] + 1e-6 * torch.randn(D, generator=gen, dtype=torch.float64)
    elif kind == "tiny":
        j = j * 1e-20  # squares underflow float32
    return j.to(dtype)


def cases(kind: str, dtype: torch.dtype):
    for k in KS:
        yield k, adversarial(kind, k, dtype)


def tolerance(dtype: torch.dtype) -> float:
    return 1e-4 if dtype == torch.float32 else 1e-9


grid = pytest.mark.parametrize(("kind", "dtype"), [(k, d) for k in KINDS for d in DTYPES])


@grid
def test_cagrad_stays_in_its_ball_and_improves_on_the_mean(kind, dtype, c=0.9):
    for k, j in cases(kind, dtype):
        d = F.cagrad(j, c=c).double()
        j64 = j.double()
        g0 = j64.mean(0)
        radius = c * g0.norm()
        slack = tolerance(dtype) * (g0.norm() + d.norm())
        assert (d - g0).norm() <= radius + slack, (k, (d - g0).norm() / radius)
        # the optimum is at least as good as the ball's centre for the worst task
        worst, worst_mean = (j64 @ d).min(), (j64 @ g0).min()
        assert worst >= worst_mean - slack * j64.norm(dim=1).max(), k


def test_cagrad_with_an_exactly_opposite_pair_in_float64_is_optimal_in_the_ball():
    torch.manual_seed(0)
    for seed in range(4):  # seed 2 is degenerate: a Pareto-stationary combination is optimal
        j = adversarial("opposite", 5, torch.float64, seed=seed)
        d, g0 = F.cagrad(j, c=0.5), j.mean(0)
        assert (d - g0).norm() <= 0.5 * g0.norm() * (1 + 1e-9)
        # weak duality: min_i g_iᵀd ≤ wᵀJg₀ + s‖Jᵀw‖ for every w in the simplex, = at the optimum
        w = torch.distributions.Dirichlet(torch.full((5,), 0.3, dtype=torch.float64)).sample((20000,))
        w = torch.cat([w, torch.eye(5, dtype=torch.float64), torch.tensor([[0.5, 0.5, 0, 0, 0]]).double()])
        dual = (w @ j @ g0 + 0.5 * g0.norm() * (w @ j).norm(dim=1)).min()
        assert (j @ d).min() >= dual - 1e-9, seed


def test_cagrad_on_a_slightly_indefinite_float32_gramian_stays_bounded():
    j = adversarial("near_stationary", 5, torch.float64, seed=1)
    g = (j @ j.T).float()  # a float32 Gramian, as a caller might pass one
    g = g - 1e-6 * torch.eye(5) * torch.diagonal(g).max()  # pushed just indefinite
    w = F.cagrad_weights(g, c=0.4).double()
    d, g0 = w @ j, j.mean(0)
    assert w.abs().max() < 1e3
    assert (d - g0).norm() <= 0.4 * g0.norm() * 1.01


@grid
@pytest.mark.parametrize("method", ["upgrad", "dualproj"])
def test_dual_cone_methods_hurt_no_task(kind, dtype, method):
    fn = F.upgrad_weights if method == "upgrad" else F.dualproj_weights
    for k, j in cases(kind, dtype):
        w = fn(F.gramian(j))
        d, j64 = F.combine(w, j).double(), j.double()
        # where the dual cone is {0} (rows spanning their plane positively) d is rounding
        # noise: the slack is relative to the scale of Σ|w_j|‖g_j‖
        slack = tolerance(dtype) * j64.norm(dim=1) * w.abs().sum() * j64.norm(dim=1).max()
        assert ((j64 @ d) >= -slack).all(), (k, j64 @ d)


@grid
def test_mgda_meets_its_kkt_conditions(kind, dtype):
    for k, j in cases(kind, dtype):
        w = F.mgda_weights(F.gramian(j)).double()
        assert (w >= 0).all() and abs(w.sum().item() - 1) < 1e-9
        j64 = j.double()
        d = w @ j64
        scale = j64.norm(dim=1).max() ** 2
        assert ((j64 @ d) >= d @ d - 1e-7 * scale).all(), k  # g_iᵀd ≥ ‖d‖² for every task
        support = w > 1e-6
        assert ((j64 @ d)[support] - d @ d).abs().max() <= 1e-6 * scale, k  # = ‖d‖² on the support


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["badly_scaled", "tiny", "random"])
def test_full_rank_systems_are_solved(kind, dtype):
    for k, j in cases(kind, dtype):
        if k > D:  # K > D rows are dependent: the systems have no exact solution
            continue
        g = F.gramian(j)
        norms = torch.diagonal(g).sqrt()
        projections = (g @ F.imtl_g_weights(g)) / norms  # IMTL-G: equal projections on u_i
        torch.testing.assert_close(projections, projections[:1].expand_as(projections), rtol=1e-6, atol=0.0)
        alpha = F.nash_mtl_weights(g, max_norm=0.0)  # α ⊙ Gα = 1
        torch.testing.assert_close(alpha * (g @ alpha), torch.ones_like(alpha), rtol=1e-6, atol=1e-6)
        w = F.fairgrad_weights(g, alpha=2.0)  # Gw = w^{-1/2}
        # Gramians with a condition number up to 1e16 here: the solve is good to ~1e-5
        torch.testing.assert_close(g @ w, w**-0.5, rtol=1e-4, atol=0.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["opposite", "near_stationary", "zero", "tiny"])
def test_every_method_is_finite_in_the_jacobian_s_dtype(kind, dtype):
    j = adversarial(kind, 5, dtype)
    tasks = [f"t{i}" for i in range(5)]
    losses = torch.rand(5, generator=torch.Generator().manual_seed(0), dtype=dtype) + 0.1
    for name in AGGREGATORS.names():
        update = AGGREGATORS.get(name)(tasks)(j, losses)
        assert update.dtype == dtype and torch.isfinite(update).all(), name
        # no method blows a near-stationary or opposite input up beyond the gradients' scale
        if name not in ("nash_mtl", "fairgrad", "moco"):  # scale-free (‖d‖ = √K) or loss-scaled
            assert update.double().norm() <= 5e3 * j.double().norm(dim=1).max(), name


def one_step(name: str, on: str, dtype: torch.dtype) -> torch.Tensor:
    from lossmix import LossMix

    where = {"module": "trunk"} if on == "shared" else {"over": "representation", "input": "h"}
    mix = LossMix.from_config(
        {
            "a": {"type": "MSELoss", "inputs": {"pred": "a", "target": "y"}},
            "b": {"type": "L1Loss", "inputs": {"pred": "b", "target": "y"}},
            "c": {"type": "SmoothL1Loss", "inputs": {"pred": "c", "target": "y"}},
            "aggregation": {"type": name, **where},
        }
    )
    torch.manual_seed(0)
    model = torch.nn.ModuleDict(
        {
            k: torch.nn.Linear(3 if k == "trunk" else 4, 4 if k == "trunk" else 1)
            for k in ("trunk", "a", "b", "c")
        }
    ).to(dtype)
    mix.aggregation.bind(model)
    h = model["trunk"](torch.randn(8, 3, dtype=dtype))
    outputs = {k: model[k](h)[:, 0] for k in "abc"}
    result = mix({**outputs, "h": h}, {"y": torch.zeros(8, dtype=dtype)}, step=0)
    mix.backward(result)
    return model["trunk"].weight.grad


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_every_method_steps_in_every_dtype_and_mode(dtype):
    for name in AGGREGATORS.names():
        modes = ["shared"] + (
            ["representation"] if AGGREGATORS.get(name)(["a", "b"]).runs_on_gramian() else []
        )
        for on in modes:
            grad = one_step(name, on, dtype)
            assert grad.dtype == dtype and torch.isfinite(grad).all(), (name, on)
