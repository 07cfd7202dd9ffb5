"""Issue 23, item 9: numbers that must equal the seed systems' (MMagic's PSNRLoss, float64 runs)."""

import pytest
import torch
import torch.nn.functional as TF

from lossmix import build_loss
from lossmix.errors import LossConfigError
from lossmix.losses import GeneratorPathRegularizer
from tests.losses.test_path_regularizer import TinyStyleGenerator

F64 = torch.float64


def test_mmagic_psnr_ignores_to_y_as_mmagic_does():
    pred, target = torch.rand(2, 3, 5, 5), torch.rand(2, 3, 5, 5)
    all_channels = 10 * torch.log10(((pred - target) ** 2).mean((1, 2, 3)) + 1e-8).mean()
    with pytest.warns(UserWarning, match="toY=True is ignored, as in MMagic"):
        loss = build_loss({"type": "mmagic.PSNRLoss", "toY": True})
    torch.testing.assert_close(loss(pred, target), all_channels)
    luma = build_loss({"type": "mmagic.PSNRLoss", "luma": True})(pred, target)
    assert not torch.allclose(luma, all_channels)


def test_lossmix_psnr_refuses_to_y_and_names_luma():
    with pytest.raises(LossConfigError, match="toY=True is MMagic's argument.*luma: true.*mmagic.PSNRLoss"):
        build_loss({"type": "PSNRLoss", "toY": True})


@pytest.mark.parametrize("node", [{"type": "CrossEntropyLoss"}, {"type": "FocalLoss", "use_sigmoid": False}])
def test_class_weight_follows_the_modules_dtype_exactly(node):
    values = [0.1, 0.3, 0.7]
    key = "class_weight" if node["type"] == "CrossEntropyLoss" else "alpha"
    loss = build_loss({**node, key: values})
    name = "class_weight" if key == "class_weight" else "class_alpha"
    assert getattr(loss, name).dtype == torch.float32
    loss = loss.double()
    assert getattr(loss, name).tolist() == values  # not float32's 0.10000000149...
    if key == "class_weight":
        pred, target = torch.randn(6, 3, dtype=F64), torch.tensor([0, 1, 2, 0, 1, 2])
        expected = TF.cross_entropy(pred, target, weight=torch.tensor(values, dtype=F64), reduction="sum") / 6
        assert torch.equal(loss(pred, target), expected)


def test_path_regularizer_running_mean_follows_a_float64_generator():
    gen = TinyStyleGenerator().double()
    loss = GeneratorPathRegularizer(decay=0.5)
    torch.manual_seed(0)
    loss(gen, 4)
    assert loss.mean_path_length.dtype == F64
