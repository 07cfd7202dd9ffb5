"""Issue 23, item 8: a call's inputs of the wrong kind are one error naming the input (and, in
a term, its key), MMDetection's positional calls work as in MMDetection."""

import numpy as np
import pytest
import torch

from lossmix import LossMix, build_loss
from lossmix.errors import LossInputError
from lossmix.losses import DiceLoss, L1Loss, MultiPosCrossEntropyLoss

BAD = {
    "list": ([0.0, 1.0], "a list"),
    "dict": ({"a": 1}, "a dict"),
    "int": (3, "an int"),
    "None": (None, "None"),
    "numpy": (np.ones(2, dtype=np.float32), "a numpy.ndarray"),
    "str": ("abc", "a str"),
    "sparse": (torch.ones(2).to_sparse(), "a sparse tensor"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_routed_input_that_is_not_a_dense_tensor_names_term_and_key(case):
    value, what = BAD[case]
    mix = LossMix.from_config({"reg": {"type": "L1Loss", "inputs": {"pred": "p", "target": "t"}}})
    with pytest.raises(LossInputError, match=f"^term 'reg': input 'pred' \\(key 'p'\\) is {what}") as err:
        mix({"p": value}, {"t": torch.ones(2)})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("arg", ["target", "weight"])
def test_a_direct_call_names_the_input(arg):
    args = {"target": torch.ones(2), "weight": None, arg: [1.0, 1.0]}
    with pytest.raises(LossInputError, match=f"^L1Loss: input '{arg}' is a list, not a dense tensor"):
        L1Loss()(torch.zeros(2), args["target"], weight=args["weight"])


def test_dice_positional_call_takes_mmdetections_order():
    pred, target = torch.rand(2, 3, 4), (torch.rand(2, 3, 4) > 0.5).float()
    weight = torch.tensor([1.0, 0.5])
    assert torch.equal(
        DiceLoss()(pred, target, weight, "sum"), DiceLoss(reduction="sum")(pred, target, weight)
    )
    assert torch.equal(
        DiceLoss()(pred, target, weight, None, 4.0), DiceLoss()(pred, target, weight, avg_factor=4.0)
    )


def test_a_reduction_in_avg_factors_place_is_named():
    with pytest.raises(LossInputError, match="avg_factor='sum'.*pass reduction_override='sum' by keyword"):
        L1Loss()(torch.zeros(2), torch.ones(2), None, "sum")


def test_multi_pos_cross_entropy_takes_an_int64_pred_as_mmdetections_test():
    costs = torch.tensor([[1, 0], [0, 1]])
    loss = build_loss({"type": "MultiPosCrossEntropyLoss"})
    assert isinstance(loss, MultiPosCrossEntropyLoss)
    assert float(loss(costs, torch.tensor([[1, 1], [0, 0]]))) == 0.0
    assert float(loss(costs, torch.Tensor([[1, 0], [0, 1]]))) == pytest.approx(0.31326, abs=1e-5)
