"""The plain PyTorch loop: LoopLogger's keys, sinks, epoch means, summary, resume; weightings
and the aggregation node in a hand-written loop."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from lossmix import LossConfigError, LossMix
from lossmix.loops import LoopLogger, bind_mix, mix_epoch_end, mix_step_end
from lossmix.utilities.distributed import collective_count
from tests.loops.three_terms import MIX, STEP_KEYS, TERMS, WEIGHT_KEYS, Tagger, rows


def train_plain(steps: int, *sinks, every: int = 2, logger: LoopLogger | None = None, seed: int = 0):
    torch.manual_seed(seed)
    model, mix = Tagger(), LossMix.from_config(MIX)
    optimizer = torch.optim.SGD([*model.parameters(), *mix.parameters()], lr=0.5)
    logger = logger or LoopLogger(*sinks, every=every)
    features, labels = rows(16)
    for step in range(steps):
        x, y = features[step % 4 * 4 :][:4], labels[step % 4 * 4 :][:4]
        result = mix(model(x), {"labels": y}, step=step)
        optimizer.zero_grad()
        result.total.backward()
        optimizer.step()
        logger.update(result, step=step, batch_size=len(x))
    return model, mix, logger


def test_plain_loop_trains_the_learned_weights_and_logs_every_term(tmp_path, capsys):
    seen: list[dict[str, float]] = []
    _, mix, logger = train_plain(6, seen.append, tmp_path / "metrics.csv", every=2)
    assert [set(s) for s in seen] == [STEP_KEYS | WEIGHT_KEYS] * 3
    # the learned log-variances moved: their gradient reached the optimizer
    assert mix.weighting is not None and mix.weighting.log_vars.abs().min() > 1e-4
    rows_ = logger.finish(mix, curves=tmp_path / "curves.png")
    out = capsys.readouterr().out
    assert "per-term summary" in out and all(t in out for t in TERMS)
    assert (tmp_path / "curves.png").stat().st_size > 0
    by_term = {r["term"]: r for r in rows_}
    assert {*TERMS, "weighting", "total"} <= set(by_term)
    assert by_term["cls"]["train"] == pytest.approx(logger.epoch_summary["train"]["train/loss/cls"][0])
    with (tmp_path / "metrics.csv").open() as handle:
        records = list(csv.DictReader(handle))
    assert len(records) == 4 and records[-1]["train/loss/cls_epoch"]  # 3 step rows, 1 epoch row
    assert float(records[0]["train/loss"]) == pytest.approx(seen[0]["train/loss"])


def test_one_read_per_interval_and_no_collective_on_one_process(monkeypatch):
    reads = []
    original = torch.Tensor.tolist

    def counting(self):
        reads.append(self.shape)
        return original(self)

    monkeypatch.setattr(torch.Tensor, "tolist", counting)
    before = collective_count()
    train_plain(8, lambda values: None, every=4)
    assert len(reads) == 2  # two logging points in 8 steps, one host read each
    assert collective_count() == before


def test_epoch_means_exclude_a_lazy_terms_skipped_steps():
    mix = LossMix.from_config(
        {
            "a": {"type": "L1Loss", "inputs": {"pred": "p", "target": "y"}},
            "b": {"type": "L1Loss", "every": 2, "inputs": {"pred": "p", "target": "y"}},
        }
    )
    logger = LoopLogger(every=100)
    for step in range(4):
        logger.update(mix({"p": torch.full((2,), float(step))}, {"y": torch.zeros(2)}, step=step), step=step)
    means = logger.end_epoch()
    assert means["train/loss/a_epoch"] == pytest.approx(1.5)
    # b ran at steps 0 and 2 (×2): (0 + 4) / 2, not (0 + 0 + 4 + 0) / 4
    assert means["train/loss/b_epoch"] == pytest.approx(2.0)


def test_resume_keeps_the_open_epochs_sums():
    _, _, whole = train_plain(6, every=100)
    _, _, first = train_plain(3, every=100)
    resumed = LoopLogger(every=100)
    resumed.load_state_dict(first.state_dict())
    # the same steps 3..5 on the same model: rebuild it from the first run's training
    torch.manual_seed(0)
    model, mix = Tagger(), LossMix.from_config(MIX)
    optimizer = torch.optim.SGD([*model.parameters(), *mix.parameters()], lr=0.5)
    features, labels = rows(16)
    for step in range(6):
        x, y = features[step % 4 * 4 :][:4], labels[step % 4 * 4 :][:4]
        result = mix(model(x), {"labels": y}, step=step)
        optimizer.zero_grad()
        result.total.backward()
        optimizer.step()
        if step >= 3:
            resumed.update(result, step=step, batch_size=len(x))
    assert resumed.end_epoch() == pytest.approx(whole.end_epoch())


class Writer:
    """A SummaryWriter's add_scalar."""

    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []

    def add_scalar(self, tag: str, value: float, global_step: int) -> None:
        self.scalars.append((tag, value, global_step))


def test_sinks_summary_writer_and_step_keyword():
    writer, stepped = Writer(), []
    train_plain(4, writer, lambda values, step: stepped.append(step), every=2)
    assert {t for t, _, _ in writer.scalars} == STEP_KEYS | WEIGHT_KEYS
    assert sorted({s for _, _, s in writer.scalars}) == [1, 3] and stepped == [1, 3]


@pytest.mark.parametrize("bad", ["metrics.txt", 3])
def test_a_bad_sink_is_a_one_line_error(bad):
    with pytest.raises(LossConfigError, match="sink") as info:
        LoopLogger(bad)
    assert "\n" not in str(info.value)


def test_aggregation_node_in_a_plain_loop_replaces_the_shared_gradient():
    node = {
        "a": {"type": "MSELoss", "inputs": {"pred": "a", "target": "y"}},
        "b": {"type": "L1Loss", "inputs": {"pred": "b", "target": "y"}},
        "aggregation": {"type": "upgrad", "over": "shared", "module": "trunk"},
    }
    torch.manual_seed(0)
    model = torch.nn.ModuleDict(
        {"trunk": torch.nn.Linear(3, 4), "a": torch.nn.Linear(4, 1), "b": torch.nn.Linear(4, 1)}
    )
    mix = LossMix.from_config(node)
    bind_mix(mix, model)
    x, y = torch.randn(8, 3), torch.randn(8)

    def step(aggregated: bool):
        model.zero_grad()
        h = model["trunk"](x)
        result = mix({"a": model["a"](h)[:, 0], "b": model["b"](h)[:, 0]}, {"y": y}, step=0)
        (mix.backward(result) if aggregated else result.total.backward())
        return model["trunk"].weight.grad.clone(), model["a"].weight.grad.clone()

    plain_trunk, plain_head = step(False)
    upgrad_trunk, upgrad_head = step(True)
    assert torch.allclose(plain_head, upgrad_head)  # a head's gradient is its own
    assert not torch.allclose(plain_trunk, upgrad_trunk)  # the shared layer's is aggregated


def test_weighting_hooks_in_a_plain_loop():
    node = {**{k: v for k, v in MIX.items() if k != "weighting"}, "weighting": {"type": "dwa"}}
    mix = LossMix.from_config(node)
    model = Tagger()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    bind_mix(mix, model)
    features, labels = rows(16)
    for _ in range(3):
        for step in range(2):
            result = mix(model(features[step * 8 :][:8]), {"labels": labels[step * 8 :][:8]}, step=step)
            optimizer.zero_grad()
            result.total.backward()
            optimizer.step()
            mix_step_end(mix)
        mix_epoch_end(mix)
    factors = mix(model(features), {"labels": labels}, step=0).weights
    assert not all(math.isclose(float(factors[t]), float(MIX[t].get("loss_weight", 1.0))) for t in TERMS)
    famo = LossMix.from_config({**node, "weighting": {"type": "famo"}})
    with pytest.raises(LossConfigError, match="post_step_losses"):
        mix_step_end(famo)
