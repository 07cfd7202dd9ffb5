"""An optional loss argument that the routing leaves out (issue 23, item 5): taken by its own name
when the outputs or the batch has that key, and said once; ``weight`` is only said;
``inputs.<argument>: null`` leaves it out without a word."""

from __future__ import annotations

import warnings

import pytest
import torch

from lossmix import LossMix

IMAGE = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
MASK = (torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.5).float()


def tv(inputs):
    return LossMix.from_config({"tv": {"type": "MaskedTVLoss", "inputs": inputs}})


@pytest.mark.parametrize("side", ["batch", "outputs"])
def test_a_mask_in_the_batch_is_routed_by_its_name_and_said_once(side):
    outputs, batch = (
        ({"fake": IMAGE}, {"mask": MASK}) if side == "batch" else ({"fake": IMAGE, "mask": MASK}, {})
    )
    explicit = tv({"pred": "fake", "mask": "mask"})(outputs, batch).total
    mix = tv({"pred": "fake"})
    with pytest.warns(UserWarning, match="routes 'mask' .* write inputs.mask: mask to say so"):
        first = mix(outputs, batch).total
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = mix(outputs, batch).total
    torch.testing.assert_close(first, explicit)
    torch.testing.assert_close(second, explicit)
    assert not torch.allclose(
        first, tv({"pred": "fake", "mask": None})({"fake": IMAGE}, {"mask": MASK}).total
    )


def test_null_leaves_the_argument_out_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        masked_out = tv({"pred": "fake", "mask": None})({"fake": IMAGE}, {"mask": MASK}).total
    torch.testing.assert_close(masked_out, tv({"pred": "fake"})({"fake": IMAGE}, {}).total)


def test_a_weight_in_the_batch_is_said_not_applied():
    pred, target = torch.randn(6), torch.randn(6)
    mix = LossMix.from_config({"l1": {"type": "L1Loss", "inputs": {"pred": "p", "target": "t"}}})
    with pytest.warns(UserWarning, match="has a key 'weight', which the term does not route"):
        total = mix({"p": pred}, {"t": target, "weight": torch.zeros(6)}).total
    torch.testing.assert_close(total, (pred - target).abs().mean())
