"""Each aggregator against its paper's definition on hand-made Jacobians (conflicting, aligned,
orthogonal, rank-deficient, one zero row), its invariances, the Gramian form against the
Jacobian form, compile-friendliness, and the bad input the ``aggregation:`` node refuses."""

from __future__ import annotations

import itertools

import pytest
import torch

from lossmix import AGGREGATORS, LossConfigError, LossMix
from lossmix.mtl import functional as F
from lossmix.mtl.aggregators import DBMTL, GradVac, PCGrad, build_aggregator
from tests.app.test_security import HOSTILE, HOSTILE_IDS, payload, refused
from tests.lightning_models import regression_terms

D64 = torch.float64
CASES = {
    "conflicting": [[1.0, 0.0, 0.5], [-1.0, 1.0, 0.0]],
    "aligned": [[1.0, 1.0, 0.0], [2.0, 2.0, 0.0]],
    "orthogonal": [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
    "rank_deficient": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 0.5, 0.0]],
    "zero_row": [[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [-0.5, 1.0, 1.0]],
}
INDEPENDENT = ["conflicting", "orthogonal"]


def jac(case: str) -> torch.Tensor:
    return torch.tensor(CASES[case], dtype=D64)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def compositions(k: int, n: int) -> torch.Tensor:
    """Every vector of ``k`` non-negative integers adding up to ``n``."""
    if k == 1:
        return torch.tensor([[n]])
    return torch.cat(
        [
            torch.cat([torch.full((len(rest), 1), i), rest], 1)
            for i in range(n + 1)
            for rest in [compositions(k - 1, n - i)]
        ]
    )


def simplex(k: int, n: int) -> torch.Tensor:
    """The points of the K-simplex whose coordinates are multiples of 1/n."""
    if k == 2:
        t = torch.linspace(0, 1, n + 1, dtype=D64)
        return torch.stack([t, 1 - t], 1)
    return compositions(k, n).to(D64) / n


# -- each method against its definition --------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_pcgrad_projects_each_conflict_away(case):
    j = jac(case)
    k = j.shape[0]
    update = F.pcgrad(j, generator=gen())
    if k == 2:  # one other task: no order to draw
        expected = torch.zeros(3, dtype=D64)
        for i, other in ((0, 1), (1, 0)):
            g, h = j[i], j[other]
            dot = g @ h
            expected += g - (dot / (h @ h) * h if dot < 0 and h @ h > 0 else 0)
        torch.testing.assert_close(update, expected)
    if case == "aligned":
        torch.testing.assert_close(update, j.sum(0))  # nothing to project


@pytest.mark.parametrize("case", list(CASES))
def test_mgda_is_the_min_norm_point_of_the_convex_hull(case):
    j = jac(case)
    w = F.mgda_weights(j @ j.T)
    assert (w >= -1e-12).all() and w.sum().item() == pytest.approx(1.0)
    norm = (w @ j).norm()
    grid = simplex(j.shape[0], 60 if j.shape[0] > 2 else 6000) @ j
    assert norm <= grid.norm(dim=1).min() + 1e-9
    if j.shape[0] == 2:  # Sener & Koltun's two-task closed form
        g1, g2 = j
        gamma = ((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2))).clamp(0, 1)
        torch.testing.assert_close(w @ j, gamma * g1 + (1 - gamma) * g2)
    if case == "zero_row":
        assert norm == pytest.approx(0.0, abs=1e-12)  # a zero gradient is Pareto-stationary


@pytest.mark.parametrize("case", list(CASES))
def test_upgrad_projects_each_gradient_onto_the_dual_cone(case):
    j = jac(case)
    g = j @ j.T
    k = j.shape[0]
    for i in range(k):  # v^(i) = argmin vᵀGv s.t. v ≥ e_i: check its KKT conditions
        v = F.upgrad_weights(g, pref=torch.eye(k, dtype=D64)[i])
        slack, grad = v - torch.eye(k, dtype=D64)[i], g @ v
        assert slack.min() >= -1e-12 and grad.min() >= -1e-12
        assert (slack * grad).abs().max() <= 1e-12
    update = F.upgrad(j)
    assert (j @ update).min() >= -1e-12  # conflicts with no task
    if case == "conflicting":
        torch.testing.assert_close(F.upgrad(j[:, :2]), torch.tensor([0.25, 0.75], dtype=D64))


@pytest.mark.parametrize("case", ["conflicting", "orthogonal", "aligned", "zero_row"])
@pytest.mark.parametrize("c", [0.0, 0.4, 0.8])
def test_cagrad_maximises_the_worst_improvement_in_the_ball(case, c):
    j = jac(case)
    b = torch.full((j.shape[0],), 1 / j.shape[0], dtype=D64)
    g0 = b @ j
    update = F.cagrad(j, c=c)
    radius = c * g0.norm()
    assert (update - g0).norm() <= radius + 1e-9
    # no point of the ball does better (dense directions, on its boundary and inside)
    torch.manual_seed(0)
    dirs = torch.randn(20000, 3, dtype=D64)
    dirs = dirs / dirs.norm(dim=1, keepdim=True) * torch.rand(20000, 1, dtype=D64).sqrt()
    best = ((g0 + radius * dirs) @ j.T).min(1).values.max()
    assert (j @ update).min() >= best - 1e-9
    if c == 0.0:
        torch.testing.assert_close(update, g0)
    # the dual objective at the solver's weights is the grid minimum (two tasks)
    if j.shape[0] == 2 and c > 0:
        w = simplex(2, 20000)
        g = j @ j.T
        dual = w @ (g @ b) + radius * torch.einsum("ni,ij,nj->n", w, g, w).clamp(min=0).sqrt()
        weights = F.cagrad_weights(g, c=c)
        star = (weights - b) / max((weights - b).sum().item(), 1e-300)
        value = star @ g @ b + radius * (star @ g @ star).clamp(min=0).sqrt()
        assert value <= dual.min() + 1e-6


@pytest.mark.parametrize("case", list(CASES))
def test_imtl_g_projects_equally_on_every_unit_gradient(case):
    j = jac(case)
    w = F.imtl_g_weights(j @ j.T)
    update = w @ j
    norms = j.norm(dim=1)
    live = norms > 0
    projections = (j[live] @ update) / norms[live]
    assert torch.isfinite(update).all()
    if case in INDEPENDENT or case == "zero_row":
        torch.testing.assert_close(projections, projections[:1].expand_as(projections))
        assert w.sum().item() == pytest.approx(1.0)
    if case == "zero_row":
        assert w[1] == 0.0
    if case in INDEPENDENT:
        torch.testing.assert_close(F.imtl_g(j), update)


@pytest.mark.parametrize("case", list(CASES))
def test_aligned_mtl_aligns_the_singular_values(case):
    j = jac(case)
    u, s, vh = torch.linalg.svd(j, full_matrices=False)
    rank = int((s > s.max() * 1e-10).sum())
    aligned = s[rank - 1] * u[:, :rank] @ vh[:rank]  # σ_min U Vᵀ on the rank-r part
    torch.testing.assert_close(F.aligned_mtl(j), aligned.sum(0))
    singular = torch.linalg.svdvals(aligned)[:rank]
    torch.testing.assert_close(singular, singular[:1].expand_as(singular))  # condition number 1


@pytest.mark.parametrize("case", list(CASES))
def test_nash_mtl_solves_the_bargaining_system(case):
    j = jac(case)
    g = j @ j.T
    alpha = F.nash_mtl_weights(g, max_norm=0.0)
    live = torch.diagonal(g) > 0
    assert (alpha[live] > 0).all() and (alpha[~live] == 0).all()
    if case in INDEPENDENT or case == "zero_row":
        residual = alpha * (g @ alpha) - 1.0  # on G itself, as the authors' code (not G/‖G‖_F)
        assert residual[live].abs().max() < 1e-6
    assert torch.isfinite(alpha @ j).all()
    clipped = F.nash_mtl(j, max_norm=0.1)
    assert clipped.norm() <= 0.1 + 1e-12


def test_nash_mtl_of_opposite_gradients_is_no_update():
    j = torch.tensor([[1.0, 2.0], [-1.0, -2.0]], dtype=D64)
    assert F.nash_mtl(j, max_norm=0.0).abs().max() < 1e-9


def test_graddrop_keeps_one_sign_per_coordinate():
    j = torch.tensor([[1.0, 2.0, -1.0, 0.0], [3.0, -2.0, -4.0, 0.0]], dtype=D64)
    draw = torch.rand(4, generator=gen(7), dtype=D64)
    purity = 0.5 * (1 + j.sum(0) / j.abs().sum(0).clamp(min=1e-300))
    keep = ((purity > draw) & (j > 0)) | ((purity < draw) & (j < 0))
    expected = (keep * j).sum(0)
    torch.testing.assert_close(F.graddrop(j, generator=gen(7)), expected)
    assert F.graddrop(j, generator=gen(7))[0] == 4.0  # all positive: kept
    assert F.graddrop(j, generator=gen(7))[3] == 0.0  # all zero: stays zero
    torch.testing.assert_close(F.graddrop(j, leak=1.0, generator=gen(7)), j.sum(0))


def test_gradvac_with_zero_targets_is_pcgrad_and_its_targets_follow_the_ema():
    j = jac("conflicting")
    cos = (j[0] @ j[1]) / (j[0].norm() * j[1].norm())
    update, targets = F.gradvac(j, torch.zeros(2, 2, dtype=D64), beta=0.25, generator=gen())
    torch.testing.assert_close(update, F.pcgrad(j))  # lifting a negative cosine to 0 = projecting
    torch.testing.assert_close(targets, torch.tensor([[0.0, 0.25], [0.25, 0.0]], dtype=D64) * cos)
    # a pair already above its target is left alone
    high = torch.full((2, 2), -0.99, dtype=D64)
    update, _ = F.gradvac(j, high, beta=0.25, generator=gen())
    torch.testing.assert_close(update, j.sum(0))


def test_db_mtl_balances_log_loss_gradients_to_the_largest_norm():
    j = jac("orthogonal")
    losses = torch.tensor([4.0, 0.5], dtype=D64)
    module = DBMTL(["a", "b"], beta=0.5)
    update = module(j, losses)
    average = 0.5 * (j / losses[:, None])  # first step: ĝ = g + β(0 − g)
    scale = average.norm(dim=1).max() / average.norm(dim=1)
    torch.testing.assert_close(update, scale @ average)
    torch.testing.assert_close(module.average, average.to(module.average.dtype))
    assert int(module.step) == 1


# -- invariances ---------------------------------------------------------------------------------
DETERMINISTIC = {
    "mgda": F.mgda,
    "upgrad": F.upgrad,
    "cagrad": lambda j: F.cagrad(j, c=0.5),
    "imtl_g": lambda j: F.imtl_g_weights(j @ j.T) @ j,  # the aggregator's form (any rank)
    "aligned_mtl": F.aligned_mtl,
    "nash_mtl": lambda j: F.nash_mtl(j, max_norm=0.0),
    "db_mtl": F.db_mtl,
    "graddrop": lambda j: F.graddrop(j, generator=gen(3)),
}


@pytest.mark.parametrize("name", list(DETERMINISTIC))
@pytest.mark.parametrize("case", ["conflicting", "zero_row", "rank_deficient"])
def test_task_order_does_not_matter(name, case):
    j = jac(case)
    fn = DETERMINISTIC[name]
    for perm in itertools.permutations(range(j.shape[0])):
        torch.testing.assert_close(fn(j[list(perm)]), fn(j), atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize(
    "random_order",
    [F.pcgrad, lambda j, generator: F.gradvac(j, torch.zeros(2, 2, dtype=D64), generator=generator)[0]],
)
def test_two_tasks_need_no_random_order(random_order):
    j = jac("conflicting")
    torch.testing.assert_close(random_order(j.flip(0), generator=gen(1)), random_order(j, generator=gen(2)))


@pytest.mark.parametrize("name", list(DETERMINISTIC))
def test_a_global_scale_scales_the_update(name):
    j = jac("conflicting")
    fn = DETERMINISTIC[name]
    # Nash-MTL's α ⊙ Gα = 1 gives ‖d‖ = √K whatever the scale, as in the authors' code
    expected = fn(j) if name == "nash_mtl" else 7.5 * fn(j)
    torch.testing.assert_close(fn(7.5 * j), expected)


def test_scale_invariant_methods_ignore_each_task_s_scale():
    j = torch.randn(3, 5, generator=gen(4), dtype=D64)
    scaled = torch.tensor([[0.01], [3.0], [40.0]], dtype=D64) * j

    def direction(v):
        return v / v.norm()

    torch.testing.assert_close(
        direction(F.nash_mtl(scaled, max_norm=0.0)), direction(F.nash_mtl(j, max_norm=0.0))
    )
    # IMTL-G's direction up to its sign: Σα = 1 can pick either end of the equal-projection line
    sign = torch.sign(F.imtl_g(scaled) @ F.imtl_g(j))
    torch.testing.assert_close(sign * direction(F.imtl_g(scaled)), direction(F.imtl_g(j)))
    losses = torch.tensor([1.0, 2.0, 0.5], dtype=D64)
    factors = torch.tensor([0.01, 3.0, 40.0], dtype=D64)
    plain, rescaled = DBMTL(["a", "b", "c"]), DBMTL(["a", "b", "c"])  # a task scaled with its loss
    torch.testing.assert_close(rescaled(scaled, factors * losses), plain(j, losses))


# -- Gramian form = Jacobian form -------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_the_gramian_form_equals_the_jacobian_form(seed, k):
    j = torch.randn(k, 7, generator=gen(seed), dtype=D64)
    g = j @ j.T
    torch.testing.assert_close(F.pcgrad_weights(g, generator=gen(9)) @ j, F.pcgrad(j, generator=gen(9)))
    targets = torch.rand(k, k, generator=gen(seed), dtype=D64) - 0.5
    w, t1 = F.gradvac_weights(g, targets, beta=0.3, generator=gen(9))
    d, t2 = F.gradvac(j, targets, beta=0.3, generator=gen(9))
    torch.testing.assert_close(w @ j, d)
    torch.testing.assert_close(t1, t2)
    torch.testing.assert_close(F.imtl_g_weights(g) @ j, F.imtl_g(j))
    torch.testing.assert_close(F.aligned_mtl_weights(g) @ j, F.aligned_mtl(j))
    torch.testing.assert_close(F.db_mtl_weights(g) @ j, F.db_mtl(j))


@pytest.mark.parametrize("case", ["aligned", "rank_deficient", "zero_row"])
def test_the_gramian_form_equals_the_jacobian_form_on_degenerate_cases(case):
    j = jac(case)
    g = j @ j.T
    torch.testing.assert_close(F.pcgrad_weights(g, generator=gen(2)) @ j, F.pcgrad(j, generator=gen(2)))
    torch.testing.assert_close(F.aligned_mtl_weights(g) @ j, F.aligned_mtl(j))
    torch.testing.assert_close(F.db_mtl_weights(g) @ j, F.db_mtl(j))


@pytest.mark.parametrize(
    "fn",
    [
        F.mgda_weights,
        F.upgrad_weights,
        lambda g: F.cagrad_weights(g, c=0.4),
        F.nash_mtl_weights,
        F.imtl_g_weights,
        F.aligned_mtl_weights,
        F.db_mtl_weights,
    ],
)
def test_gramian_weights_compile_without_graph_breaks(fn):
    g = jac("rank_deficient") @ jac("rank_deficient").T
    compiled = torch.compile(fn, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(g.float()), fn(g.float()))


@pytest.mark.parametrize("name", AGGREGATORS.names())
def test_every_registered_aggregator_gives_a_finite_update_on_every_case(name):
    for case, rows in CASES.items():
        tasks = [f"t{i}" for i in range(len(rows))]
        aggregator = AGGREGATORS.get(name)(tasks)
        j = torch.tensor(rows)
        update = aggregator(j, torch.ones(len(rows)))
        assert update.shape == (3,) and torch.isfinite(update).all(), case
        if aggregator.has_gramian_form():
            torch.testing.assert_close(aggregator.weights(j @ j.T).shape, torch.Size([len(rows)]))


def test_non_finite_gradients_stay_non_finite_and_leave_the_state_alone():
    j = torch.tensor([[float("inf"), 1.0], [1.0, 2.0]])
    vac, db = GradVac(["a", "b"]), DBMTL(["a", "b"])
    db(torch.ones(2, 2), torch.ones(2))
    before = db.average.clone()
    assert not torch.isfinite(vac(j)).all() and not torch.isfinite(db(j, torch.ones(2))).all()
    assert vac.targets.abs().sum() == 0 and torch.equal(db.average, before) and int(db.step) == 1


def test_stateful_aggregators_round_trip_their_state():
    j = torch.randn(2, 6, generator=gen(5))
    vac, db, pc = GradVac(["a", "b"], beta=0.5), DBMTL(["a", "b"]), PCGrad(["a", "b"])
    vac(j), db(j, torch.ones(2)), pc(j)
    for module, fresh in (
        (vac, GradVac(["a", "b"], beta=0.5)),
        (db, DBMTL(["a", "b"])),
        (pc, PCGrad(["a", "b"])),
    ):
        fresh.load_state_dict(module.state_dict())
        torch.testing.assert_close(fresh(j, torch.ones(2)), module(j, torch.ones(2)))


# -- bad input ----------------------------------------------------------------------------------------
def two_terms(aggregation):
    return {**regression_terms(2), "aggregation": aggregation}


@pytest.mark.parametrize(
    "node, match",
    [
        (
            {"type": "cagrad", "c": 1.0, "module": "net"},
            r"cagrad: c=1\.0 is not valid; c must be a number in \[0, 1\)",
        ),
        ({"type": "cagrad", "c": -0.1, "module": "net"}, r"c must be a number in \[0, 1\)"),
        ({"type": "upgard", "module": "net"}, "aggregation: Unknown aggregator 'upgard'.*'upgrad'"),
        (
            {"type": "graddrop", "over": "representation", "input": "h"},
            "graddrop does not run over: representation.*mgda",
        ),
        (
            {"type": "db_mtl", "over": "representation", "input": "h"},
            "db_mtl does not run over: representation.*upgrad",
        ),
        ({"type": "mgda", "over": "shared"}, "over: shared needs 'module'"),
        ({"type": "mgda", "over": "representation"}, "over: representation needs 'input'"),
        ({"type": "mgda", "over": "encoder", "module": "net"}, "over='encoder' is not valid"),
        ({"type": "mgda", "module": "net", "tasks": ["t0"]}, "'tasks' is not a key"),
        ({"type": "pcgrad", "module": "net", "alpha": 1}, "pcgrad: unknown argument 'alpha'"),
        ({"module": "net"}, "expected e.g. {type: upgrad"),
    ],
)
def test_bad_aggregation_nodes(node, match):
    with pytest.raises(LossConfigError, match=match):
        LossMix.from_config(two_terms(node))


def test_fewer_than_two_tasks_is_refused():
    with pytest.raises(LossConfigError, match="balances the gradients of several tasks.*1 term"):
        LossMix.from_config({**regression_terms(1), "aggregation": {"type": "upgrad", "module": "net"}})


def test_an_aggregation_needs_a_flat_mix():
    with pytest.raises(LossConfigError, match="aggregation: gradient aggregation needs a flat mix.*groups g"):
        LossMix.from_config({"g": regression_terms(2), "aggregation": {"type": "mgda", "module": "net"}})


def test_a_term_named_aggregation_is_refused():
    from lossmix import Term
    from lossmix.losses import L1Loss

    with pytest.raises(LossConfigError, match="'aggregation' is reserved for gradient aggregation"):
        LossMix({"aggregation": Term("aggregation", L1Loss()), "b": Term("b", L1Loss())})


def test_aggregator_targets_must_be_aggregators():
    with pytest.raises(LossConfigError, match="subclass of lossmix.mtl.aggregators.base.BaseAggregator"):
        build_aggregator({"_target_": "lossmix.losses.L1Loss"}, ["a", "b"])


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "marker"
    yield path
    assert not path.exists(), "a hostile payload ran"


@pytest.mark.parametrize(("target", "kwargs"), HOSTILE, ids=HOSTILE_IDS)
def test_hostile_aggregator_targets_are_refused(target, kwargs, marker):
    for node in (
        {"_target_": target, "module": "net", **payload(kwargs, marker)},
        {"type": target, "module": "net", **payload(kwargs, marker)},
    ):
        assert refused(LossMix.from_config, two_terms(node)).startswith("aggregation:")


def test_an_ambiguous_representation_key_says_how_to_choose():
    from lossmix import LossInputError

    mix = LossMix.from_config(two_terms({"type": "mgda", "over": "representation", "input": "h"}))
    h = torch.randn(4, 2, requires_grad=True)
    with pytest.raises(LossInputError, match="input 'h' is in both.*'outputs.h' or 'batch.h'"):
        mix({"pred": h * 2, "h": h}, {"h": h, "y": torch.zeros(4, 2)}, step=0)
