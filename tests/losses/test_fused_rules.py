"""The fused kernels' rules: gradcheck and double backward in float64, torch.compile and
torch.func, half precision, the automatic choice (``fused=None``) and its bad options."""

from __future__ import annotations

import pytest
import torch

from lossmix import LossMix
from lossmix.errors import LossConfigError
from lossmix.functional import (
    AUTOMATIC_MIN_NUMEL,
    fused_applies,
    fused_cross_entropy,
    fused_giou_loss,
    fused_sigmoid_focal_loss,
)
from lossmix.losses import CrossEntropyLoss, FocalLoss, GIoULoss

GEN = torch.Generator().manual_seed(0)
X = torch.randn(6, 4, generator=GEN, dtype=torch.float64) * 2
LABELS = torch.tensor([0, 4, 2, 3, 4, 1])  # 4: the focal background
SOFT = torch.rand(6, 4, generator=GEN, dtype=torch.float64)
CLASS_WEIGHT = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64)
CE_LABELS = torch.tensor([0, 3, 2, -100, 1, 3])
_XY = torch.rand(6, 2, generator=GEN, dtype=torch.float64) * 10
BOXES = torch.cat([_XY, _XY + 1 + torch.rand(6, 2, generator=GEN, dtype=torch.float64) * 5], -1)
PRED_BOXES = BOXES + torch.randn(6, 4, generator=GEN, dtype=torch.float64) * 0.7

KERNELS = {
    "focal": (lambda x: fused_sigmoid_focal_loss(x, LABELS), X),
    "focal-soft-gamma1.5": (lambda x: fused_sigmoid_focal_loss(x, SOFT, gamma=1.5, alpha=None), X),
    "ce": (lambda x: fused_cross_entropy(x, CE_LABELS), X),
    "ce-weight-smoothing": (
        lambda x: fused_cross_entropy(x, CE_LABELS, class_weight=CLASS_WEIGHT, label_smoothing=0.1),
        X,
    ),
    "giou": (lambda x: fused_giou_loss(x, BOXES), PRED_BOXES),
}


@pytest.mark.parametrize("name", KERNELS)
def test_gradcheck_and_gradgradcheck_in_float64(name):
    fn, x = KERNELS[name]
    x = x.clone().requires_grad_()
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


def _losses(fused: bool | None):
    return (
        FocalLoss(fused=fused),
        CrossEntropyLoss(fused=fused, class_weight=[0.5, 1.0, 2.0, 3.0], label_smoothing=0.1),
        GIoULoss(fused=fused),
    )


def _all_three(losses, x, boxes):
    focal, ce, giou = losses
    return focal(x, LABELS) + ce(x, CE_LABELS.clamp(min=0)) + giou(boxes, BOXES.float())


def test_torch_compile_fullgraph_gives_the_plain_values_and_gradients():
    x, boxes = X.float().requires_grad_(), PRED_BOXES.float().requires_grad_()
    fused = _losses(True)
    compiled = torch.compile(lambda a, b: _all_three(fused, a, b), fullgraph=True)
    value = compiled(x, boxes)
    grads = torch.autograd.grad(value, (x, boxes))
    plain = _all_three(_losses(False), x, boxes)
    plain_grads = torch.autograd.grad(plain, (x, boxes))
    torch.testing.assert_close(value, plain, rtol=1e-6, atol=1e-6)
    for got, expected in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_torch_func_grad_and_vmap_trace_the_fused_functions():
    fused = FocalLoss(fused=True, reduction="sum")
    plain = FocalLoss(fused=False, reduction="sum")
    torch.testing.assert_close(
        torch.func.grad(lambda a: fused(a, LABELS))(X), torch.func.grad(lambda a: plain(a, LABELS))(X)
    )
    rows = torch.func.vmap(fused_sigmoid_focal_loss)(X.unsqueeze(1), LABELS.unsqueeze(1))
    torch.testing.assert_close(rows.squeeze(1), fused_sigmoid_focal_loss(X, LABELS))


def test_automatic_keeps_the_plain_path_inside_torch_func():
    # hessian and jacfwd need forward-mode AD, which the fused Functions do not have
    big = torch.randn(AUTOMATIC_MIN_NUMEL, 1, requires_grad=True)
    seen = []
    torch.func.grad(lambda a: (seen.append(fused_applies(None, "sigmoid_focal_loss", a)), a.sum())[1])(big)
    assert seen == [False] and fused_applies(None, "sigmoid_focal_loss", big)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_when_asked_for(dtype):
    for make, target in ((FocalLoss, LABELS), (CrossEntropyLoss, CE_LABELS.clamp(min=0))):
        x = X.to(dtype).requires_grad_()
        value = make(fused=True)(x, target)
        (grad,) = torch.autograd.grad(value, x)
        reference = X.float().requires_grad_()
        expected = make(fused=False)(reference, target)
        (expected_grad,) = torch.autograd.grad(expected, reference)
        assert value.dtype == grad.dtype == dtype
        torch.testing.assert_close(value.float(), expected, rtol=2e-2, atol=2e-3)
        torch.testing.assert_close(grad.float(), expected_grad, rtol=2e-2, atol=2e-3)


def _uses_fused(out: torch.Tensor) -> bool:
    """Whether a fused Function is in ``out``'s autograd graph."""
    todo, seen = [out.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if "Fused" in type(node).__name__:
            return True
        todo.extend(fn for fn, _ in node.next_functions)
    return False


def test_the_automatic_choice():
    big = torch.randn(AUTOMATIC_MIN_NUMEL // 4, 4, requires_grad=True)
    labels = torch.randint(0, 5, (big.size(0),))
    xy = torch.rand(big.size(0), 2) * 10
    boxes = torch.cat([xy, xy + 2], -1)
    assert _uses_fused(FocalLoss()(big, labels))  # float32 CPU with a gradient, large enough
    assert _uses_fused(GIoULoss()(boxes + big, boxes))
    assert not _uses_fused(CrossEntropyLoss()(big, labels.clamp(max=3)))  # measured no faster
    assert not _uses_fused(FocalLoss()(big[:8], labels[:8]))  # below AUTOMATIC_MIN_NUMEL
    assert not _uses_fused(FocalLoss()(big.bfloat16(), labels))  # half: only when asked for
    assert not _uses_fused(FocalLoss()(big, torch.rand(big.shape, requires_grad=True)))  # target's grad
    assert not _uses_fused(FocalLoss(fused=False)(big, labels))
    with torch.no_grad():
        assert not fused_applies(None, "sigmoid_focal_loss", big)
    assert not fused_applies(None, "sigmoid_focal_loss", big.detach())
    assert fused_applies(True, "cross_entropy", big.detach())
    assert not fused_applies(True, "giou_loss", big, boxes.requires_grad_())


@pytest.mark.parametrize(
    ("node", "needs"),
    [
        ({"type": "FocalLoss", "activated": True}, "activated=False"),
        ({"type": "FocalLoss", "use_sigmoid": False}, "use_sigmoid=True"),
        ({"type": "FocalCustomLoss", "num_classes": 3, "activated": True}, "activated=False"),
        ({"type": "CrossEntropyLoss", "use_sigmoid": True}, "use_sigmoid=False"),
        ({"type": "CrossEntropyLoss", "use_mask": True}, "use_mask=False"),
    ],
)
def test_fused_true_with_an_incompatible_option_names_the_term_and_the_key(node, needs):
    with pytest.raises(LossConfigError) as info:
        LossMix.from_config({"cls": {**node, "fused": True}})
    message = str(info.value)
    assert "term 'cls'" in message and "fused=True" in message and needs in message
    assert "fused=None or False" in message


@pytest.mark.parametrize("value", ["yes", 1, 0, 0.5, "true"])
@pytest.mark.parametrize("loss", ["FocalLoss", "CrossEntropyLoss", "GIoULoss"])
def test_a_bad_fused_value_raises(loss, value):
    with pytest.raises(LossConfigError, match=r"term 'reg' \(\w+\): fused=.* but fused expects bool"):
        LossMix.from_config({"reg": {"type": loss, "fused": value}})
