"""Issue 23, item 7: values that used to pass silently are refused or named, with the term."""

import pytest
import torch

from lossmix import LossMix
from lossmix.errors import LossConfigError, LossInputError

NAN, INF = float("nan"), float("inf")


def _mix(**extra):
    inputs = {"pred": "p", "target": "t", **extra.pop("inputs", {})}
    return LossMix.from_config({"reg": {"type": "L1Loss", "inputs": inputs, **extra}})


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [("loss_weight", 1e39, "overflows float32"), ("every", 10**12, "too large")],
)
def test_config_values_refused_at_build(key, value, match):
    with pytest.raises(LossConfigError, match=f"term 'reg': {key}=.*{match}"):
        _mix(**{key: value})


CASES = {
    "nan target": ({}, {"t": torch.tensor([1.0, NAN, 1.0])}, "input 'target' holds 1 NaN/Inf"),
    "inf weight": (
        {"inputs": {"weight": "w"}},
        {"t": torch.ones(3), "w": torch.tensor([1.0, INF, 1.0])},
        "input 'weight' holds 1 NaN/Inf",
    ),
    "negative weight": (
        {"inputs": {"weight": "w"}},
        {"t": torch.ones(3), "w": torch.tensor([1.0, -1.0, 1.0])},
        "1 negative value.*allow_negative: true",
    ),
    "zero key normaliser": (
        {"normalizer": "n"},
        {"t": torch.ones(3), "n": torch.tensor(0.0)},
        "normalizer read 0",
    ),
    "nan normaliser": ({"normalizer": "n"}, {"t": torch.ones(3), "n": NAN}, "normalizer read nan"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_values_make_the_term_nan_and_check_finite_names_the_input(case):
    extra, batch, match = CASES[case]
    result = _mix(**extra)({"p": torch.zeros(3, requires_grad=True)}, batch)
    assert not torch.isfinite(result.total)
    with pytest.raises(LossInputError, match=f"^term 'reg': the loss is .* because .*{match}"):
        result.check_finite()


@pytest.mark.parametrize(
    ("extra", "batch", "total"),
    [
        (
            {"inputs": {"weight": "w"}, "allow_negative": True},
            {"t": torch.ones(2), "w": torch.tensor([1.0, -1.0])},
            0.0,
        ),
        (
            {"normalizer": {"type": "key", "key": "n", "min": 1}},
            {"t": torch.ones(2), "n": torch.tensor(0.0)},
            2.0,
        ),
        ({"normalizer": "n"}, {"t": torch.ones(2), "n": torch.tensor(4.0)}, 0.5),
    ],
    ids=["allow_negative", "explicit floor", "positive key"],
)
def test_opted_in_values_pass(extra, batch, total):
    result = _mix(**extra)({"p": torch.zeros(2)}, batch)
    result.check_finite()
    assert float(result.total) == pytest.approx(total)
