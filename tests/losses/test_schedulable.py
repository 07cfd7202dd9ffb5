"""Every float hyper-parameter a schedule may set is read by the loss at each call: setting
it on a built loss gives exactly what a loss rebuilt with that value gives. A loss that
derives something from an argument once, at construction, lists it in ``fixed_params``
(and a schedule naming it is refused)."""

from __future__ import annotations

import pytest
import torch

from lossmix import LossConfigError
from lossmix.schedules.paths import _float_params, _owner_of
from tests.losses.battery import make_generator
from tests.losses.test_battery import CASES


def _pairs():
    found = []
    for case in CASES:
        owner, cls = _owner_of(case.make())
        found += [pytest.param(case, name, id=f"{case.id}-{name}") for name in _float_params(owner, cls)]
    return found


def _new_value(old: float) -> float:
    return old * 0.5 + 0.25 if old != 0 else 0.25


def _rebuilt(case, name: str, value: float, monkeypatch):
    """The case's loss built with ``name=value`` (whatever the case itself passes)."""
    cls = type(case.make())
    original = cls.__init__

    def init(self, *args, **kwargs):
        kwargs[name] = value
        original(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(cls, "__init__", init)
        return case.make()


@pytest.mark.parametrize(("case", "name"), _pairs())
def test_a_scheduled_hyper_parameter_equals_a_rebuilt_loss(case, name, monkeypatch):
    value = _new_value(getattr(case.make(), name))
    try:
        rebuilt = _rebuilt(case, name, value, monkeypatch)
    except LossConfigError:
        pytest.skip(f"{name}={value} is outside its range here")
    assert getattr(rebuilt, name) == value
    scheduled = case.make()
    setattr(scheduled, name, value)
    pred, target = case.inputs(torch.float64, make_generator(0), 1.0)
    torch.manual_seed(0)
    expected = case.run(rebuilt, pred, target)
    torch.manual_seed(0)
    got = case.run(scheduled, pred, target)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12, msg=f"{case.id}: {name}")
