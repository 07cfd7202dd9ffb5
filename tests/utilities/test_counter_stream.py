"""The counter-based random stream of samplers and random mining: uniform, deterministic per
(seed, draw, rank), resumable, traceable by ``torch.compile(fullgraph=True)``, sync-free."""

from __future__ import annotations

import math

import pytest
import torch

import lossmix.utilities.rng
from lossmix.samplers import RandomSampler
from lossmix.utilities.rng import SeededGenerator

CPU = torch.device("cpu")


def test_draws_are_uniform_and_independent():
    stream = SeededGenerator("test", 1)
    u = torch.cat([stream.rand((50_000,), CPU) for _ in range(4)]).double()
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.003 and abs(u.var().item() - 1 / 12) < 0.002
    counts = torch.histc(u, bins=32, min=0, max=1)
    expected = len(u) / 32
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 70  # 31 degrees of freedom: p ≈ 1e-4 at 70
    lag = torch.corrcoef(torch.stack([u[:-1], u[1:]]))[0, 1].item()
    assert abs(lag) < 0.01  # neighbouring elements
    first, second = stream.rand((10_000,), CPU).double(), stream.rand((10_000,), CPU).double()
    assert abs(torch.corrcoef(torch.stack([first, second]))[0, 1].item()) < 0.03  # successive draws


def test_deterministic_per_seed_draw_and_rank(monkeypatch):
    def stream(seed, rank=0, skip=0):
        monkeypatch.setattr(lossmix.utilities.rng, "_distributed_rank", lambda: rank)
        gen = SeededGenerator("test", seed)
        for _ in range(skip):
            gen.rand((8,), CPU)
        return gen.rand((8,), CPU)

    assert torch.equal(stream(3), stream(3))
    assert not torch.equal(stream(3), stream(4))
    assert not torch.equal(stream(3, rank=0), stream(3, rank=1))
    assert not torch.equal(stream(3, skip=0), stream(3, skip=1))
    assert torch.equal(stream(3, skip=2), stream(3, skip=2))


def test_the_state_is_the_seed_and_one_counter():
    gen = SeededGenerator("test", 9)
    assert gen.state() == {}
    gen.rand((4,), CPU)
    gen.rand((4,), CPU)
    state = gen.state()
    assert set(state) == {"seed", "counter"} and int(state["counter"]) == 2
    resumed = SeededGenerator("test", 9)
    resumed.load(state)
    assert torch.equal(resumed.rand((4,), CPU), gen.rand((4,), CPU))


def test_a_sampler_compiles_without_graph_breaks_and_draws_as_in_eager():
    def select(sampler, pos):
        result = sampler(pos, ~pos)
        return result.pos_mask, result.neg_mask

    pos = torch.rand(300, generator=torch.Generator().manual_seed(0)) < 0.2
    explanation = torch._dynamo.explain(select)(RandomSampler(num=64, pos_fraction=0.25, seed=1), pos)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    eager, compiled = (
        RandomSampler(num=64, pos_fraction=0.25, seed=1),
        RandomSampler(num=64, pos_fraction=0.25, seed=1),
    )
    run = torch.compile(select, fullgraph=True)
    for _ in range(3):  # the counter advances inside the compiled graph too
        expected, got = select(eager, pos), run(compiled, pos)
        assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])
    assert int(compiled.get_extra_state()["counter"]) == 3


@pytest.mark.parametrize("num, pos_fraction", [(64, 0.25), (10, 0.5), (200, 0.1)])
def test_mmdetections_quota_arithmetic_is_kept(num, pos_fraction):
    """num_pos = min(positives, int(num · pos_fraction)); num_neg = min(negatives, num − num_pos)."""
    pos = torch.zeros(500, dtype=torch.bool)
    pos[:30] = True
    result = RandomSampler(num=num, pos_fraction=pos_fraction, seed=0)(pos, ~pos)
    expected_pos = min(30, int(num * pos_fraction))
    assert int(result.num_pos) == expected_pos
    assert int(result.num_neg) == min(470, num - expected_pos)
    assert not bool((result.pos_mask & ~pos).any()) and not bool((result.neg_mask & pos).any())
    assert math.isclose(float(result.weight.sum()), expected_pos + min(470, num - expected_pos))
