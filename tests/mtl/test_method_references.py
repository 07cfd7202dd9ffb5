"""The methods and options added for issue 25 against their papers' or reference code's formulas
on hand-made Jacobians: DualProj, ConFIG, FairGrad, SDMGrad, MoDo, MoCo, ExcessMTL, the STCH,
COSMOS and PBI scalarizers, the aggregators' options, ``module: ''`` or a list, and the dtypes
of ``over: representation`` and FAMO."""

from __future__ import annotations

import pytest
import torch

from lossmix import AGGREGATORS, WEIGHTINGS, LossConfigError, LossMix
from lossmix.mtl import functional as F
from lossmix.mtl.aggregators import MGDA, ExcessMTL, GradVac, MoCo, MoDo, NashMTL, build_aggregator
from tests.lightning_models import regression_terms

D64 = torch.float64
J = torch.tensor([[1.0, 0.0, 0.5], [-1.0, 1.0, 0.0], [0.2, 0.3, -1.0]], dtype=D64)


def reference_simplex(y: torch.Tensor) -> torch.Tensor:
    """LibMTL's loop form of the projection onto the simplex."""
    m, ordered = len(y), torch.sort(y, descending=True)[0]
    tmax, running = (y.sum() - 1.0) / m, 0.0
    for i in range(m - 1):
        running += ordered[i]
        if (running - 1) / (i + 1.0) > ordered[i + 1]:
            tmax = (running - 1) / (i + 1.0)
            break
    return torch.clamp(y - tmax, min=0.0)


def test_dualproj_projects_the_mean_onto_the_dual_cone():
    d = F.combine(F.dualproj_weights(J @ J.T), J)
    assert ((J @ d) >= -1e-12).all()
    # the projection: no other point of the cone {Jx ≥ 0} is closer to the mean (grid check)
    mean = J.mean(0)
    x = torch.randn(20000, 3, generator=torch.Generator().manual_seed(0), dtype=D64) * 2
    inside = x[((x @ J.T) >= 0).all(1)]
    assert (d - mean).norm() <= (inside - mean).norm(dim=1).min() + 1e-12
    free = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=D64)  # no conflict: the mean itself
    torch.testing.assert_close(F.combine(F.dualproj_weights(free @ free.T), free), free.mean(0))


def test_config_matches_the_authors_pseudo_inverse_form():
    units = J / J.norm(dim=1, keepdim=True)
    direction = torch.linalg.pinv(units) @ torch.ones(3, dtype=D64)
    direction = direction / direction.norm()
    expected = (J @ direction).sum() * direction
    d = F.combine(F.config_weights(J @ J.T), J)
    torch.testing.assert_close(d, expected)
    cosines = units @ d / d.norm()
    torch.testing.assert_close(cosines, cosines[:1].expand(3))  # equal angle to every task


@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0])
def test_fairgrad_solves_its_alpha_fair_system(alpha):
    g = J @ J.T
    w = F.fairgrad_weights(g, alpha=alpha)
    torch.testing.assert_close(g @ w, w ** (-1.0 / alpha))
    if alpha == 1.0:  # proportional fairness is Nash-MTL
        torch.testing.assert_close(w, F.nash_mtl_weights(g, max_norm=0.0))


def test_nash_mtl_has_the_authors_scale_and_reuses_its_weights():
    g = J @ J.T
    alpha = F.nash_mtl_weights(g, max_norm=0.0)
    assert (alpha @ g @ alpha).item() == pytest.approx(3.0)  # ‖d‖² = K before the clip
    nash = NashMTL(["a", "b", "c"], max_norm=0.0, update_weights_every=2)
    first = nash.weights(g)
    torch.testing.assert_close(nash.weights(4.0 * g), first)  # reused, not re-solved
    assert not torch.allclose(nash.weights(4.0 * g), first)  # solved again on the third call
    assert nash.get_extra_state() == {"calls": 3}


def test_sdmgrad_is_the_minimiser_libmtl_iterates_towards():
    lamda, g = 0.3, J @ J.T
    w, gb = torch.full((3,), 1 / 3, dtype=D64), g.mean(1)
    scale = torch.diagonal(g).sqrt().mean() ** 2
    for _ in range(3000):  # projected gradient descent on ½wᵀGw + λwᵀGb
        w = reference_simplex(w - 0.5 * (g @ w + lamda * gb) / scale)
    torch.testing.assert_close(
        F.sdmgrad_weights(g, lamda=lamda), (w + lamda / 3) / (1 + lamda), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(F.sdmgrad_weights(g, lamda=0.0), F.mgda_weights(g))


def test_modo_moves_its_weights_by_one_projected_step():
    modo = MoDo(["a", "b", "c"], gamma=0.05, rho=0.1)
    lam = torch.full((3,), 1 / 3, dtype=D64)
    for _ in range(2):
        lam = reference_simplex(lam - 0.05 * (J @ J.T @ lam + 0.1 * lam))
        torch.testing.assert_close(modo(J), lam @ J)
    torch.testing.assert_close(
        F.simplex_projection(torch.tensor([0.9, 0.4, -0.2])),
        reference_simplex(torch.tensor([0.9, 0.4, -0.2])),
    )


def test_moco_tracks_the_gradients_as_libmtl():
    moco, losses = MoCo(["a", "b", "c"]), torch.tensor([1.0, 2.0, 0.5], dtype=D64)
    y, lam = torch.zeros_like(J), torch.full((3,), 1 / 3, dtype=D64)
    for step in (1, 2):
        scaled = J / (J.norm(dim=1, keepdim=True) + 1e-8) * losses[:, None]
        y = y - 0.5 / step**0.5 * (y - scaled)
        lam = torch.softmax(lam - 0.1 / step**0.5 * (y @ y.T) @ lam, -1)
        torch.testing.assert_close(moco(J, losses), y.T @ lam)


def test_excess_mtl_raises_the_weights_by_the_excess_risk():
    excess = ExcessMTL(["a", "b", "c"], step_size=0.5)
    squares, weights, initial = torch.zeros_like(J), torch.ones(3, dtype=D64), None
    for step in range(3):
        squares = squares + J**2
        risk = (J**2 / (squares + 1e-7).sqrt()).sum(1)
        initial = risk if step == 0 else initial
        if step > 0:
            weights = weights * torch.exp(0.5 * risk / initial)
            weights = weights / weights.sum() * 3
        torch.testing.assert_close(excess(J), weights @ J)


def test_mgda_normalisations_follow_sener_and_koltun():
    losses = torch.tensor([2.0, 0.5, 1.0], dtype=D64)
    for mode, n in [("l2", J.norm(dim=1)), ("loss", losses), ("loss+", losses * J.norm(dim=1))]:
        scaled = J / n[:, None]
        expected = F.mgda_weights(scaled @ scaled.T) @ scaled
        torch.testing.assert_close(MGDA(["a", "b", "c"], normalize=mode)(J, losses), expected)


def test_aligned_mtl_scale_modes_and_cagrad_rescale():
    g = torch.diag(torch.tensor([9.0, 4.0, 1.0], dtype=D64))  # singular values 3, 2, 1
    for mode, sigma in [("min", 1.0), ("median", 2.0), ("rmse", (14 / 3) ** 0.5)]:
        w = F.aligned_mtl_weights(g, scale_mode=mode)
        torch.testing.assert_close(w, sigma / torch.tensor([3.0, 2.0, 1.0], dtype=D64))
    plain = F.cagrad_weights(J @ J.T, c=0.5)
    torch.testing.assert_close(F.cagrad_weights(J @ J.T, c=0.5, rescale=2), plain / 1.5)
    torch.testing.assert_close(F.cagrad_weights(J @ J.T, c=0.5, rescale=1), plain / 1.25)


def test_preference_vectors_reach_the_functions():
    pref = [0.7, 0.2, 0.1]
    p = torch.tensor(pref, dtype=D64)
    for name, fn in [
        ("upgrad", F.upgrad_weights),
        ("dualproj", F.dualproj_weights),
        ("config", F.config_weights),
    ]:
        torch.testing.assert_close(
            AGGREGATORS.build({"type": name, "pref": pref}, tasks=list("abc"))(J), fn(J @ J.T, pref=p) @ J
        )
    with pytest.raises(LossConfigError, match="pref needs one number per task"):
        build_aggregator({"type": "upgrad", "pref": [1.0]}, list("abc"))


def test_gradvac_groups_run_on_each_block():
    grouped = GradVac(["a", "b"], beta=0.5, group="parameter")
    grouped.bind_layout([2, 1], [0, 0])  # two parameter tensors of one module
    j = J[:2]
    whole = [
        F.gradvac(j[:, s], torch.zeros(2, 2, dtype=D64), beta=0.5)[0] for s in (slice(0, 2), slice(2, 3))
    ]
    torch.testing.assert_close(grouped(j), torch.cat(whole))
    assert grouped.targets.shape == (2, 2, 2) and not grouped.runs_on_gramian()
    with pytest.raises(LossConfigError, match="gradvac with these options does not run over: representation"):
        LossMix.from_config(
            {
                **regression_terms(2),
                "aggregation": {"type": "gradvac", "group": "module", "over": "representation", "input": "h"},
            }
        )


@pytest.mark.parametrize("module", ["", ["trunk", "a"]])
def test_all_shared_parameters_or_a_list(module):
    mix = LossMix.from_config(
        {
            "a": {"type": "MSELoss", "inputs": {"pred": "a", "target": "y"}},
            "b": {"type": "L1Loss", "inputs": {"pred": "b", "target": "y"}},
            "weighting": {"type": "uncertainty"},
            "aggregation": {"type": "mgda", "module": module},
        }
    )
    model = torch.nn.ModuleDict(
        {"trunk": torch.nn.Linear(3, 4), "a": torch.nn.Linear(4, 1), "b": torch.nn.Linear(4, 1)}
    )
    model.loss_mix = mix  # the Lightning layout: the mix's own parameters are left out
    mix.aggregation.bind(model)
    names = {id(p): n for n, p in model.named_parameters()}
    bound = [names[id(p)] for p in mix.aggregation._params]
    expected = ["trunk.weight", "trunk.bias", "a.weight", "a.bias"] + (
        ["b.weight", "b.bias"] if module == "" else []
    )
    assert bound == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_representation_mode_computes_in_the_model_s_dtype(dtype):
    mix = LossMix.from_config(
        {**regression_terms(2), "aggregation": {"type": "upgrad", "over": "representation", "input": "h"}}
    )
    h = torch.randn(4, 2, dtype=dtype, generator=torch.Generator().manual_seed(0)).requires_grad_()
    y = torch.randn(4, 2, dtype=dtype, generator=torch.Generator().manual_seed(1))
    result = mix({"pred": 3.0 * h, "h": h}, {"y": y}, step=0)
    rows = torch.stack(
        [torch.autograd.grad(t, h, retain_graph=True)[0].flatten() for t in result.terms.values()]
    ).double()
    mix.backward(result)
    expected = (F.upgrad_weights(rows @ rows.T) @ rows).view_as(h)
    assert h.grad.dtype == dtype
    torch.testing.assert_close(h.grad.double(), expected, rtol=1e-12 if dtype == D64 else 1e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_famo_learns_in_any_dtype(dtype):
    famo = WEIGHTINGS.build({"type": "famo"}, tasks=["a", "b"]).to(dtype)
    famo(torch.tensor([4.0, 1.0], dtype=D64), training=True)
    famo.post_step(torch.tensor([2.0, 0.9], dtype=torch.float32))
    assert famo.logits[0] < famo.logits[1]


@pytest.mark.parametrize(
    ("node", "formula"),
    [
        (
            {"type": "stch", "mu": 0.5, "pref": [1.0, 2.0], "ideal": [0.1, 0.2]},
            lambda L: (
                0.5
                * torch.logsumexp(
                    torch.tensor([1.0, 2.0], dtype=D64) * (L - torch.tensor([0.1, 0.2], dtype=D64)) / 0.5, 0
                )
            ),
        ),
        ({"type": "stch", "log": True}, lambda L: torch.logsumexp(torch.log(L), 0)),
        (
            {"type": "cosmos", "pref": [1.0, 3.0], "penalty": 2.0},
            lambda L: (
                torch.tensor([1.0, 3.0], dtype=D64) @ L
                - 2.0 * torch.cosine_similarity(torch.tensor([1.0, 3.0], dtype=D64), L, 0)
            ),
        ),
        ({"type": "pbi", "pref": [1.0, 2.0], "theta": 5.0}, None),
        ({"type": "geometric_mean"}, lambda L: L.prod().sqrt()),
    ],
)
def test_scalarizer_factors_are_the_formula_s_gradient(node, formula):
    losses = torch.tensor([0.8, 1.7], dtype=D64, requires_grad=True)
    if formula is None:  # PBI: d₁ + θ d₂

        def formula(L):
            unit = torch.tensor([1.0, 2.0], dtype=D64) / 5**0.5
            d1 = L @ unit
            return d1 + 5.0 * (L - d1 * unit).norm()

    factors, _ = WEIGHTINGS.build(node, tasks=["a", "b"]).double()(losses, training=True)
    torch.testing.assert_close(factors, torch.autograd.grad(formula(losses), losses)[0])


def test_a_nash_checkpoint_from_before_its_state_still_loads():
    nash = NashMTL(["a", "b"])
    state = {k: v for k, v in nash.state_dict().items() if k not in ("alpha", "_extra_state")}
    nash.load_state_dict(state)
    assert nash.calls == 0
