"""Samplers: MMDetection's quota arithmetic, eligibility, OHEM ranking, seeding, checkpoints."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

import lossmix
import lossmix.samplers
import lossmix.utilities.rng
from lossmix.errors import LossConfigError, LossInputError
from lossmix.samplers import OHEMSampler, PseudoSampler, RandomSampler, SampleResult

QUOTA_SAMPLERS = ["RandomSampler", "OHEMSampler"]


def mmdet_counts(n_pos: int, n_neg: int, num: int, pos_fraction: float, neg_pos_ub: float) -> tuple[int, int]:
    """MMDetection's BaseSampler.sample arithmetic, in plain Python."""
    num_pos = min(n_pos, int(num * pos_fraction))
    num_expected_neg = num - num_pos
    if neg_pos_ub >= 0:
        num_expected_neg = min(num_expected_neg, int(neg_pos_ub * max(1, num_pos)))
    return num_pos, min(n_neg, num_expected_neg)


def shuffled_masks(
    n_pos: int, n_neg: int, n_ignored: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pos_mask, neg_mask) of one set, with the three kinds interleaved at random."""
    labels = torch.tensor([1] * n_pos + [0] * n_neg + [-1] * n_ignored)
    order = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed))
    labels = labels[order]
    return labels == 1, labels == 0


def build(name: str, **kwargs) -> lossmix.samplers.BaseSampler:
    return lossmix.build_sampler({"type": name, **kwargs})


def call(sampler, pos, neg, seed: int = 0) -> SampleResult:
    scores = torch.rand(pos.shape, generator=torch.Generator().manual_seed(seed))
    return sampler(pos, neg, scores if sampler.needs_scores else None)


def check_result(result: SampleResult, pos: torch.Tensor, neg: torch.Tensor) -> None:
    """Selections lie within their candidates, and weight/counts agree with them."""
    assert result.pos_mask.shape == result.neg_mask.shape == result.weight.shape == pos.shape
    assert result.pos_mask.dtype == result.neg_mask.dtype == torch.bool
    assert not (result.pos_mask & ~pos).any()
    assert not (result.neg_mask & ~neg).any()
    assert torch.equal(result.weight, (result.pos_mask | result.neg_mask).float())
    assert result.num_pos.dim() == result.num_neg.dim() == 0
    assert result.num_pos.is_floating_point()
    assert result.num_pos == result.pos_mask.sum()
    assert result.num_neg == result.neg_mask.sum()
    assert result.num_sampled == result.num_pos + result.num_neg


# (n_pos, n_neg, n_ignored, num, pos_fraction, neg_pos_ub)
ARITHMETIC = [
    pytest.param(10, 100, 5, 32, 0.25, -1, id="enough-of-both"),
    pytest.param(3, 100, 20, 32, 0.25, -1, id="few-positives-negatives-fill-up"),
    pytest.param(0, 100, 20, 32, 0.25, -1, id="zero-positives"),
    pytest.param(2, 3, 40, 32, 0.5, -1, id="fewer-elements-than-num"),
    pytest.param(10, 5, 0, 32, 0.25, -1, id="few-negatives"),
    pytest.param(10, 100, 0, 32, 0.25, 2, id="ub-caps"),
    pytest.param(10, 100, 0, 32, 0.25, 5, id="ub-loose"),
    pytest.param(0, 100, 0, 32, 0.25, 3, id="ub-zero-positives-max1"),
    pytest.param(5, 100, 0, 32, 0.25, 0, id="ub-zero-no-negatives"),
    pytest.param(5, 100, 0, 64, 0.25, 1.5, id="ub-fractional"),
    pytest.param(100, 500, 0, 400, 0.25, 0.29, id="ub-float-truncation"),
    pytest.param(40, 60, 0, 100, 0.29, -1, id="pos-fraction-truncation"),
    pytest.param(10, 100, 0, 16, 1.0, -1, id="all-positive-quota"),
    pytest.param(10, 100, 0, 16, 0.0, -1, id="no-positive-quota"),
    pytest.param(0, 0, 10, 8, 0.5, -1, id="nothing-eligible"),
]


@pytest.mark.parametrize("name", QUOTA_SAMPLERS)
@pytest.mark.parametrize(("n_pos", "n_neg", "n_ignored", "num", "pos_fraction", "ub"), ARITHMETIC)
def test_quota_arithmetic(name, n_pos, n_neg, n_ignored, num, pos_fraction, ub):
    sampler = build(name, num=num, pos_fraction=pos_fraction, neg_pos_ub=ub)
    pos, neg = shuffled_masks(n_pos, n_neg, n_ignored)
    result = call(sampler, pos, neg)
    check_result(result, pos, neg)
    expected = mmdet_counts(n_pos, n_neg, num, pos_fraction, ub)
    assert (int(result.num_pos), int(result.num_neg)) == expected


@pytest.mark.parametrize("name", QUOTA_SAMPLERS)
@pytest.mark.parametrize("shape", [(3, 50), (3, 5, 10)])
def test_per_sample_batching(name, shape):
    sampler = build(name, num=12, pos_fraction=0.5, neg_pos_ub=2)
    per_sample = [(0, 30, 20), (4, 40, 6), (20, 25, 5)]  # (pos, neg, ignored), 50 each
    masks = [shuffled_masks(*counts, seed=i) for i, counts in enumerate(per_sample)]
    pos = torch.stack([m[0] for m in masks]).reshape(shape)
    neg = torch.stack([m[1] for m in masks]).reshape(shape)
    result = call(sampler, pos, neg)
    check_result(result, pos, neg)
    totals = [0, 0]
    for i, (n_pos, n_neg, _) in enumerate(per_sample):
        expected = mmdet_counts(n_pos, n_neg, 12, 0.5, 2)
        assert (int(result.pos_mask[i].sum()), int(result.neg_mask[i].sum())) == expected
        totals = [totals[0] + expected[0], totals[1] + expected[1]]
    assert (int(result.num_pos), int(result.num_neg)) == tuple(totals)


@pytest.mark.parametrize("seed", range(5))
def test_random_never_selects_ignored(seed):
    sampler = RandomSampler(num=64, pos_fraction=0.5, seed=seed)
    pos, neg = shuffled_masks(40, 60, 900, seed=seed)
    result = sampler(pos, neg)
    check_result(result, pos, neg)
    assert (int(result.num_pos), int(result.num_neg)) == (32, 32)


@pytest.mark.parametrize("shape", [(0,), (2, 0), (0, 7)])
@pytest.mark.parametrize("name", ["RandomSampler", "OHEMSampler", "PseudoSampler"])
def test_empty_sets(name, shape):
    kwargs = {} if name == "PseudoSampler" else {"num": 8, "pos_fraction": 0.5}
    pos = torch.zeros(shape, dtype=torch.bool)
    result = call(build(name, **kwargs), pos, pos.clone())
    assert result.weight.shape == shape
    assert result.num_sampled == 0


def test_pseudo_selects_everything():
    pos, neg = shuffled_masks(7, 30, 13)
    result = PseudoSampler()(pos.reshape(5, 10), neg.reshape(5, 10))
    assert torch.equal(result.pos_mask, pos.reshape(5, 10))
    assert torch.equal(result.neg_mask, neg.reshape(5, 10))
    assert (result.num_pos.item(), result.num_neg.item()) == (7.0, 30.0)


def top_indices(scores: torch.Tensor, mask: torch.Tensor, k: int) -> set[int]:
    """Indices of the k largest scores among mask, ties to the lower index (plain Python)."""
    candidates = [(-float(scores[i]), i) for i in range(mask.numel()) if mask[i]]
    return {i for _, i in sorted(candidates)[:k]}


@pytest.mark.parametrize(
    ("n_pos", "n_neg", "num", "pos_fraction"), [(30, 70, 20, 0.25), (3, 70, 20, 0.5), (30, 10, 20, 0.25)]
)
def test_ohem_takes_the_hardest(n_pos, n_neg, num, pos_fraction):
    pos, neg = shuffled_masks(n_pos, n_neg, 25, seed=3)
    scores = torch.randn(pos.shape, generator=torch.Generator().manual_seed(4))
    result = OHEMSampler(num=num, pos_fraction=pos_fraction)(pos, neg, scores)
    n_sel_pos, n_sel_neg = mmdet_counts(n_pos, n_neg, num, pos_fraction, -1)
    assert set(torch.where(result.pos_mask)[0].tolist()) == top_indices(scores, pos, n_sel_pos)
    assert set(torch.where(result.neg_mask)[0].tolist()) == top_indices(scores, neg, n_sel_neg)


@pytest.mark.parametrize("value", [0.0, 1.0, float("-inf"), float("inf")])
def test_ohem_ties_go_to_the_lower_index(value):
    pos, neg = shuffled_masks(10, 20, 10, seed=5)
    scores = torch.full(pos.shape, value)
    result = OHEMSampler(num=8, pos_fraction=0.5)(pos, neg, scores)
    assert set(torch.where(result.pos_mask)[0].tolist()) == set(torch.where(pos)[0][:4].tolist())
    assert set(torch.where(result.neg_mask)[0].tolist()) == set(torch.where(neg)[0][:4].tolist())


def test_ohem_requires_scores():
    pos, neg = shuffled_masks(5, 5, 0)
    with pytest.raises(LossInputError, match=r"OHEMSampler.*scores"):
        OHEMSampler(num=4, pos_fraction=0.5)(pos, neg)
    assert OHEMSampler.needs_scores and not RandomSampler.needs_scores


def draws(sampler: RandomSampler, calls: int = 3) -> list[torch.Tensor]:
    pos, neg = shuffled_masks(200, 800, 0, seed=9)
    return [sampler(pos, neg).weight for _ in range(calls)]


def same_draws(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_same_seed_same_choice_different_seed_different():
    first = draws(RandomSampler(num=32, pos_fraction=0.25, seed=1))
    assert same_draws(first, draws(RandomSampler(num=32, pos_fraction=0.25, seed=1)))
    assert not same_draws(first, draws(RandomSampler(num=32, pos_fraction=0.25, seed=2)))
    assert not torch.equal(first[0], first[1])  # successive calls draw afresh


def test_seed_derived_from_torch_initial_seed():
    def derived(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return draws(RandomSampler(num=32, pos_fraction=0.25))

    assert same_draws(derived(7), derived(7))
    assert not same_draws(derived(7), derived(8))


def test_rank_offsets_the_seed(monkeypatch):
    rank0 = draws(RandomSampler(num=32, pos_fraction=0.25, seed=1))
    monkeypatch.setattr(lossmix.utilities.rng, "_distributed_rank", lambda: 1)
    assert not same_draws(rank0, draws(RandomSampler(num=32, pos_fraction=0.25, seed=1)))


def round_trip(module: nn.Module) -> dict:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("calls_before", [0, 2])
@pytest.mark.parametrize("seed", [None, 3])
def test_state_dict_resumes_the_stream(calls_before, seed):
    torch.manual_seed(11)
    running = nn.ModuleDict({"cls": RandomSampler(num=32, pos_fraction=0.25, seed=seed)})
    draws(running["cls"], calls_before)
    state = round_trip(running)
    assert "cls._extra_state" in state
    torch.manual_seed(11)
    resumed = nn.ModuleDict({"cls": RandomSampler(num=32, pos_fraction=0.25, seed=seed)})
    draws(resumed["cls"], 1)  # a used generator must be replaced, not continued
    resumed.load_state_dict(state)
    assert same_draws(draws(running["cls"], 4), draws(resumed["cls"], 4))


def test_deepcopy_continues_the_stream():
    sampler = RandomSampler(num=32, pos_fraction=0.25, seed=0)
    draws(sampler, 1)
    clone = copy.deepcopy(sampler)
    assert same_draws(draws(sampler), draws(clone))


def test_an_old_generator_state_restarts_the_stream_from_its_seed_with_a_warning():
    """Checkpoints of lossmix before the counter stream held a torch.Generator state."""
    old = {"seed": 5, "state": torch.zeros(16, dtype=torch.uint8), "device_type": "cuda"}
    sampler = RandomSampler(num=32, pos_fraction=0.25, seed=0)
    with pytest.warns(UserWarning, match="older lossmix; the counter-based stream restarts from its seed"):
        sampler.set_extra_state(old)
    fresh = RandomSampler(num=32, pos_fraction=0.25, seed=0)
    fresh.set_extra_state({"seed": 5, "counter": torch.tensor(0)})
    assert same_draws(draws(sampler, 2), draws(fresh, 2))


def _refuse(*args, **kwargs):
    raise AssertionError("host sync in a sampler")


@pytest.mark.parametrize("name", ["RandomSampler", "OHEMSampler", "PseudoSampler"])
@pytest.mark.parametrize("shape", [(120,), (3, 40), (2, 3, 20)])
def test_no_host_sync(monkeypatch, name, shape):
    kwargs = {} if name == "PseudoSampler" else {"num": 16, "pos_fraction": 0.25, "neg_pos_ub": 2}
    sampler = build(name, **kwargs)
    pos, neg = shuffled_masks(20, 70, 30)
    pos, neg = pos.reshape(shape), neg.reshape(shape)
    scores = torch.rand(shape)
    with monkeypatch.context() as patch:
        for method in ("item", "tolist", "__bool__", "nonzero", "__int__", "__float__", "numpy"):
            patch.setattr(torch.Tensor, method, _refuse)
        result = sampler(pos, neg, scores if sampler.needs_scores else None)
        _ = result.num_sampled
    check_result(result, pos, neg)


@pytest.mark.parametrize("name", ["OHEMSampler", "PseudoSampler"])
def test_compiles_fullgraph(name):
    kwargs = {} if name == "PseudoSampler" else {"num": 16, "pos_fraction": 0.25, "neg_pos_ub": 2}
    sampler = build(name, **kwargs)
    pos, neg = shuffled_masks(20, 70, 30)
    pos, neg, scores = pos.reshape(3, 40), neg.reshape(3, 40), torch.rand(3, 40)
    torch._dynamo.reset()
    compiled = torch.compile(sampler, fullgraph=True)(pos, neg, scores)
    eager = sampler(pos, neg, scores)
    for field in ("weight", "pos_mask", "neg_mask", "num_pos", "num_neg"):
        assert torch.equal(getattr(compiled, field), getattr(eager, field))


def test_random_sampler_compiles_with_graph_breaks():
    # A torch.Generator cannot be traced, so fullgraph=True is out; the draws still match.
    pos, neg = shuffled_masks(20, 70, 30)
    compiled = torch.compile(RandomSampler(num=16, pos_fraction=0.25, seed=0))
    eager = RandomSampler(num=16, pos_fraction=0.25, seed=0)
    torch._dynamo.reset()
    for _ in range(2):
        assert torch.equal(compiled(pos, neg).weight, eager(pos, neg).weight)


def test_overlap_unchecked_when_compiled_counts_as_positive():
    pos = torch.tensor([True, True, False, False])
    neg = torch.tensor([True, False, True, False])
    torch._dynamo.reset()
    result = torch.compile(PseudoSampler(), fullgraph=True)(pos, neg)
    assert torch.equal(result.pos_mask, pos)
    assert torch.equal(result.neg_mask, torch.tensor([False, False, True, False]))


def test_registered_and_built_by_name():
    for name in ("RandomSampler", "OHEMSampler", "PseudoSampler"):
        assert name in lossmix.SAMPLERS
    sampler = lossmix.build_sampler({"type": "RandomSampler", "num": 256, "pos_fraction": 0.25})
    assert isinstance(sampler, RandomSampler)
    assert (sampler.num, sampler.pos_fraction, sampler.neg_pos_ub) == (256, 0.25, -1.0)
    assert isinstance(lossmix.build_sampler({"type": "PseudoSampler"}), PseudoSampler)
    with pytest.raises(LossConfigError, match="pos_fractoin"):
        lossmix.build_sampler({"type": "RandomSampler", "num": 8, "pos_fractoin": 0.5})


@pytest.mark.parametrize("name", QUOTA_SAMPLERS)
@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("num", 0),
        ("num", 2.5),
        ("num", True),
        ("num", "256"),
        ("pos_fraction", 1.5),
        ("pos_fraction", -0.1),
        ("pos_fraction", "0.5"),
        ("pos_fraction", float("nan")),
        ("neg_pos_ub", float("nan")),
        ("neg_pos_ub", "3"),
    ],
)
def test_bad_arguments_raise(name, argument, value):
    kwargs = {"num": 8, "pos_fraction": 0.5, argument: value}
    with pytest.raises(LossConfigError, match=f"{name}: {argument}="):
        build(name, **kwargs)


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True])
def test_bad_seed_raises(seed):
    with pytest.raises(LossConfigError, match="RandomSampler: seed="):
        RandomSampler(num=8, pos_fraction=0.5, seed=seed)


@pytest.mark.parametrize("name", ["RandomSampler", "OHEMSampler", "PseudoSampler"])
def test_bad_inputs_raise(name):
    kwargs = {} if name == "PseudoSampler" else {"num": 8, "pos_fraction": 0.5}
    sampler = build(name, **kwargs)
    scores = torch.rand(3) if sampler.needs_scores else None
    with pytest.raises(LossInputError, match=r"\(3,\).*\(4,\)"):
        sampler(torch.ones(3, dtype=torch.bool), torch.zeros(4, dtype=torch.bool), scores)
    with pytest.raises(LossInputError, match="pos_mask must be a bool tensor"):
        sampler(torch.ones(3), torch.zeros(3, dtype=torch.bool), scores)
    with pytest.raises(LossInputError, match="0-dim"):
        sampler(torch.tensor(True), torch.tensor(False), scores)
    with pytest.raises(LossInputError, match="both pos_mask and neg_mask"):
        sampler(torch.ones(3, dtype=torch.bool), torch.ones(3, dtype=torch.bool), scores)


def test_scores_shape_mismatch_raises():
    pos = torch.ones(3, dtype=torch.bool)
    with pytest.raises(LossInputError, match=r"scores of shape \(5,\).*\(3,\)"):
        OHEMSampler(num=4, pos_fraction=0.5)(pos, ~pos, torch.rand(5))
