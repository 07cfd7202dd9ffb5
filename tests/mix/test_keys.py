"""A term node's rules exist once (``lossmix.mix.keys``): ``Term`` and the app's check say the
same thing, the app adding the override that fixes it."""

from __future__ import annotations

import pytest

from lossmix import LossConfigError
from lossmix.app.checks import check_loss_config
from lossmix.mix import Term

CASES = [
    (
        {"type": "L1Loss", "inputs": {"pred": "y"}, "data_info": {"pred": "y"}},
        "give inputs or data_info (MMagic's spelling of inputs), not both",
        "drop loss.t.data_info or loss.t.inputs",
    ),
    (
        {"type": "L1Loss", "reduction": "sum", "normalizer": "numel"},
        "normalizer 'numel' divides a sum, which needs reduction='mean' (got 'sum')",
        "loss.t.reduction=sum loss.t.normalizer=null",
    ),
    (
        {"type": "FocalLoss", "sampler": {"num": 64}},
        "sampler needs 'type', e.g.",
        "+sampler@loss.t.sampler=random",
    ),
]


@pytest.mark.parametrize(("node", "rule", "fix"), CASES, ids=["routing", "reduction", "sampler"])
def test_term_and_the_app_state_one_rule(node, rule, fix):
    with pytest.raises(LossConfigError) as built:
        Term.from_config("t", node)
    with pytest.raises(LossConfigError) as checked:
        check_loss_config({"t": node})
    # one schema: the Python API and the app's check give the same message, fix included
    assert rule in str(built.value) and fix in str(built.value)
    assert str(built.value) == str(checked.value)
