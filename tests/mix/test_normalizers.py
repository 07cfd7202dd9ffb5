"""Normalisers (step 4) on their own: building, each source's value, the floor, the average."""

from __future__ import annotations

import pytest
import torch

from lossmix import LossConfigError, LossInputError
from lossmix.mix import Term
from lossmix.mix.normalizers import MovingAverage, Normalizer, build_normalizer


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ("num_pos", Normalizer("num_pos")),
        ({"type": "weight_sum"}, Normalizer("weight_sum", min=1e-6)),
        ({"type": "key", "key": "num_total"}, Normalizer("num_total", min=1e-6)),
        ({"type": "batch", "sync": True, "min": 2}, Normalizer("batch", sync=True, min=2.0)),
        ({"type": "num_pos", "ema": 0.9, "init": 100}, Normalizer("num_pos", ema=0.9, init=100.0)),
        ({"type": "numel", "scope": "accumulation"}, Normalizer("numel", scope="accumulation")),
        (None, None),
    ],
)
def test_build(node, expected):
    assert build_normalizer(node, term="t") == expected


@pytest.mark.parametrize(
    ("node", "match"),
    [
        ("num_poss", r"term 't': normalizer 'num_poss' is not a built-in.*Did you mean 'num_pos'"),
        ({"type": "key"}, "needs key: <the input key"),
        ({"type": "numel", "key": "x"}, "goes with type: key"),
        ({"type": "numel", "ema": 1.0}, r"ema=1.0 is not valid"),
        ({"type": "numel", "init": 3}, "starts a moving average; add ema"),
        ({"type": "numel", "scope": "window"}, "scope='window' is not valid"),
        ({"type": "numel", "ema": 0.9, "scope": "accumulation"}, "keep one of them"),
        ({"type": "numel", "min": -1}, "min"),
        ({"typ": "numel"}, "is not valid; its keys are"),
        (3, "is not valid; give a name"),
    ],
)
def test_bad_nodes_name_the_term_and_the_fix(node, match):
    with pytest.raises(LossConfigError, match=match):
        build_normalizer(node, term="t")


def _term(normalizer, **extra):
    return Term.from_config("t", {"type": "L1Loss", "normalizer": normalizer, **extra})


@pytest.mark.parametrize(
    ("normalizer", "expected"),
    [("numel", 12.0), ("batch", 3.0), ("weight_sum", 6.0), ({"type": "key", "key": "n"}, 7.0)],
)
def test_each_source_reads_its_value(normalizer, expected):
    term = _term(normalizer, inputs={"pred": "pred", "target": "target", "weight": "w"})
    weight = torch.zeros(3, 4)
    weight[:, :2] = 1.0
    batch = {"target": torch.zeros(3, 4), "w": weight, "n": 7}
    prepared = term.prepare({"pred": torch.ones(3, 4)}, batch)
    assert float(prepared.avg_factor) == expected


def test_counts_from_class_index_targets():
    pos = Term.from_config("c", {"type": "FocalLoss", "normalizer": "num_pos"})
    sampled = Term.from_config("c", {"type": "FocalLoss", "normalizer": "num_sampled"})
    kwargs = {"pred": torch.randn(5, 2)}, {"target": torch.tensor([0, 2, 2, 1, -1])}  # 2: background
    assert float(pos.prepare(*kwargs).avg_factor) == 2.0
    assert float(sampled.prepare(*kwargs).avg_factor) == 4.0  # the ignored -1 is neither


def test_a_key_that_holds_no_count_is_refused():
    term = _term({"type": "key", "key": "n"})
    with pytest.raises(LossInputError, match="normalizer key 'n' holds a str, not a count"):
        term.prepare({"pred": torch.ones(2)}, {"target": torch.zeros(2), "n": "many"})


def test_the_floor_and_the_moving_average():
    assert float(Normalizer("num_pos").clamp(torch.tensor(0.0))) == 1.0
    ema = MovingAverage(momentum=0.5)
    assert float(ema(torch.tensor(4.0), 0)) == 4.0  # no init: the first value
    assert float(ema(torch.tensor(8.0), 1)) == 6.0
    assert float(ema(torch.tensor(0.0), 1)) == 4.0  # the same step again: the step's mean


def test_the_normaliser_owns_its_moving_average_and_reads_old_checkpoints():
    term = Term.from_config("t", {"type": "L1Loss", "normalizer": {"type": "numel", "ema": 0.5}})
    assert isinstance(term.normalizer.moving, MovingAverage)
    state = term.state_dict()
    assert "normalizer.moving.value" in state and not any("normalizer_ema" in k for k in state)
    old = {k.replace("normalizer.moving.", "normalizer_ema."): v.clone() for k, v in state.items()}
    old["normalizer_ema.value"].fill_(7.0)  # a checkpoint written before the move
    fresh = Term.from_config("t", {"type": "L1Loss", "normalizer": {"type": "numel", "ema": 0.5}})
    fresh.load_state_dict(old)
    assert float(fresh.normalizer.moving.value) == 7.0


def test_finish_floors_then_smooths_in_training_only():
    normalizer = build_normalizer({"type": "numel", "ema": 0.5, "init": 10.0, "min": 2.0}, term="t")
    assert float(normalizer.finish(torch.tensor(0.0), None)) == 2.0  # evaluation: floored only
    assert float(normalizer.finish(torch.tensor(0.0), 0)) == 6.0  # 0.5·10 + 0.5·2
