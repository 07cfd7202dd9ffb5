"""torch's reduced losses below the functional's wrappers: its value and gradient, bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from lossmix.utilities import torch_kernels as K

CASES = {
    "l1": (K.l1_loss, F.l1_loss, "float", {}),
    "mse": (K.mse_loss, F.mse_loss, "float", {}),
    "smooth_l1": (lambda p, t, r: K.smooth_l1_loss(p, t, r, 0.5), F.smooth_l1_loss, "float", {"beta": 0.5}),
    "smooth_l1 beta 0": (
        lambda p, t, r: K.smooth_l1_loss(p, t, r, 0.0),
        F.smooth_l1_loss,
        "float",
        {"beta": 0.0},
    ),
    "bce": (K.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits, "binary", {}),
    "ce": (
        lambda p, t, r: K.cross_entropy(p, t, r, ignore_index=1, label_smoothing=0.1),
        F.cross_entropy,
        "index",
        {"ignore_index": 1, "label_smoothing": 0.1},
    ),
}


def _inputs(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    if kind == "float":
        return pred, torch.randn(7, 3, generator=gen, dtype=torch.float64)
    if kind == "binary":
        return pred, torch.rand(7, 3, generator=gen, dtype=torch.float64)
    return pred, torch.randint(0, 3, (7,), generator=gen)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_each_kernel_is_the_functional_bit_for_bit(name, reduction):
    ours, functional, kind, kwargs = CASES[name]
    pred, target = _inputs(kind)
    value = ours(pred, target, reduction)
    expected = functional(pred, target, reduction=reduction, **kwargs)
    assert torch.equal(value, expected)
    (grad,) = torch.autograd.grad(value.sum(), pred)
    (expected_grad,) = torch.autograd.grad(expected.sum(), pred)
    assert torch.equal(grad, expected_grad)


class Seen(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.funcs: list = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.funcs.append(func)
        return func(*args, **(kwargs or {}))


def test_a_torch_function_mode_sees_the_public_functional():
    pred, target = _inputs("float")
    with Seen() as mode:
        K.l1_loss(pred, target, "mean")
    assert mode.funcs == [F.l1_loss]  # the public functional, not torch._C._nn.l1_loss
