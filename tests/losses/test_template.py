"""The one loss template: closed forward, hooks, call convention, honest errors, declared parts."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from lossmix import LOSSES, LossConfigError, LossInputError, LossMix, Term, build_loss
from lossmix.losses import BaseLoss, CrossEntropyLoss, FunctionLoss, L1Loss, TorchLoss
from lossmix.losses.base import ElementLoss, call_parameters

EPS = torch.finfo(torch.float32).eps


@pytest.fixture
def registry_snapshot():
    entries, aliases = dict(LOSSES._entries), dict(LOSSES._aliases)
    yield
    LOSSES._entries.clear()
    LOSSES._entries.update(entries)
    LOSSES._aliases.clear()
    LOSSES._aliases.update(aliases)


def test_a_loss_cannot_rewrite_forward():
    with pytest.raises(TypeError, match="defines forward"):

        class Sneaky(BaseLoss):
            def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
                return pred - target

            def forward(self, pred: Tensor, target: Tensor) -> Tensor:  # type: ignore[override]
                return pred.sum()


class Masked(BaseLoss):
    """A loss whose kernel returns its own weights and denominator (a masked mean)."""

    def elementwise(self, pred: Tensor, target: Tensor) -> ElementLoss:
        mask = (target > 0).to(pred.dtype)
        loss = (pred - target).abs()
        return ElementLoss(loss, mask, avg_factor=mask.sum())


def test_element_loss_hooks_weight_and_default_denominator():
    pred, target = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0.0, 1.0, 0.0, 2.0])
    loss = Masked()
    expected = (1.0 + 2.0) / (2.0 + EPS)
    torch.testing.assert_close(loss(pred, target), torch.tensor(expected))
    # the caller's avg_factor wins, the caller's weight multiplies the loss's own
    torch.testing.assert_close(loss(pred, target, avg_factor=10.0), torch.tensor(3.0 / (10 + EPS)))
    weight = torch.tensor([1.0, 3.0, 1.0, 0.5])
    torch.testing.assert_close(loss(pred, target, weight), torch.tensor(4.0 / (2.0 + EPS)))
    torch.testing.assert_close(
        loss(pred, target, reduction_override="none"), torch.tensor([0.0, 1.0, 0.0, 2.0])
    )


def test_mmdetection_call_convention_positional_and_keyword():
    pred, target = torch.randn(4, 3), torch.randn(4, 3)
    weight = torch.rand(4, 3)
    loss = L1Loss()
    by_keyword = loss(pred, target, weight=weight, avg_factor=2.0)
    torch.testing.assert_close(loss(pred, target, weight, 2.0), by_keyword)
    torch.testing.assert_close(loss(pred=pred, target=target, weight=weight, avg_factor=2.0), by_keyword)
    torch.testing.assert_close(loss(pred, target, None, None, "sum"), (pred - target).abs().sum())
    with pytest.raises(LossInputError, match="'weight' is given twice"):
        loss(pred, target, weight, weight=weight)
    with pytest.raises(LossInputError, match="unexpected argument 'label'.*pred, target"):
        loss(pred, target, label=weight)
    with pytest.raises(LossInputError, match="missing input 'target'"):
        loss(pred)
    with pytest.raises(LossInputError, match="too many positional"):
        loss(pred, target, weight, 2.0, "sum", 5)


def test_inputs_come_from_the_kernel_signature():
    assert list(call_parameters(L1Loss())) == ["pred", "target", "weight", "avg_factor", "reduction_override"]
    assert "ignore_index" in call_parameters(CrossEntropyLoss())
    assert "target_is_real" in call_parameters(build_loss({"type": "GANLoss", "gan_type": "hinge"}))


# -- honest errors --------------------------------------------------------------------------------
def _oom(pred: Tensor, target: Tensor) -> Tensor:
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


class OomLoss(nn.modules.loss._Loss):
    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


class CudaFailure(nn.modules.loss._Loss):
    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


@pytest.mark.parametrize(
    "make", [lambda: FunctionLoss(_oom), lambda: TorchLoss(OomLoss)], ids=["function", "torch"]
)
def test_out_of_memory_inside_a_wrapped_loss_propagates(make):
    with pytest.raises(torch.OutOfMemoryError) as info:
        make()(torch.zeros(3), torch.zeros(3))
    assert not isinstance(info.value, LossInputError)
    mix = LossMix({"t": Term("t", make(), inputs={"pred": "x", "target": "y"})})
    with pytest.raises(torch.OutOfMemoryError):
        mix({"x": torch.zeros(3)}, {"y": torch.zeros(3)})


def test_accelerator_errors_propagate_and_shape_errors_are_explained():
    with pytest.raises(RuntimeError, match="illegal memory access") as info:
        TorchLoss(CudaFailure)(torch.zeros(3), torch.zeros(3))
    assert not isinstance(info.value, LossInputError)
    with pytest.raises(
        LossInputError,
        match=r"SmoothL1Loss: .*\(pred of shape \(6, 4\), target "
        r"of shape \(5, 4\)\)",
    ):
        TorchLoss(nn.SmoothL1Loss)(torch.zeros(6, 4), torch.zeros(5, 4))
    with pytest.raises(LossInputError, match="returned float"):
        FunctionLoss(lambda p, t: 1.5)(torch.zeros(2), torch.zeros(2))


def test_a_constructors_own_type_error_is_not_a_config_error(registry_snapshot):
    @LOSSES.register()
    class Broken(BaseLoss):
        def __init__(self, *, size: int = 3, reduction: str = "mean", loss_weight: float = 1.0) -> None:
            super().__init__(reduction=reduction, loss_weight=loss_weight)
            self.buffer = torch.zeros(size) + "text"  # a bug in the loss itself

        def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
            return pred - target

    with pytest.raises(TypeError) as info:
        build_loss({"type": "Broken"})
    assert not isinstance(info.value, LossConfigError)
    with pytest.raises(LossConfigError, match="unknown argument 'sise'.*'size'"):
        build_loss({"type": "Broken", "sise": 2})


# -- declared parts --------------------------------------------------------------------------------
def two_parts(pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    return {"abs": (pred - target).abs().mean(), "sq": (pred - target).pow(2).mean()}


class DeclaredParts(BaseLoss):
    part_names = ("abs", "sq")

    def elementwise(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        return {"abs": (pred - target).abs(), "sq": (pred - target).pow(2)}


ROUTE = {"pred": "x", "target": "y"}


@pytest.mark.parametrize("how", ["declared by the loss", "declared in the node", "learned"])
def test_a_lazy_dict_term_logs_the_same_keys_from_the_first_step(how, registry_snapshot):
    if how == "declared by the loss":
        term = Term("t", DeclaredParts(), inputs=ROUTE, every=4)
    elif how == "declared in the node":
        term = Term("t", FunctionLoss(two_parts), inputs=ROUTE, every=4, parts=["abs", "sq"])
    else:
        term = Term("t", FunctionLoss(two_parts), inputs=ROUTE, every=4)
    mix = LossMix({"t": term, "l1": Term("l1", L1Loss(), inputs=ROUTE)})
    outputs = {"x": torch.randn(5, requires_grad=True)}
    batch = {"y": torch.randn(5)}
    keys = [tuple(mix(outputs, batch, step=step).terms) for step in (1, 2, 4, 5, None)]
    assert all(k == ("t.abs", "t.sq", "l1") for k in keys), keys
    skipped = mix(outputs, batch, step=1)
    assert skipped.terms["t.abs"].item() == 0.0 and skipped.terms["t.abs"].requires_grad


def test_a_term_whose_loss_changes_its_parts_is_an_error():
    calls = {"n": 0}

    def fickle(pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        calls["n"] += 1
        diff = (pred - target).abs().mean()
        return {"a": diff} if calls["n"] == 1 else {"a": diff, "b": diff}

    mix = LossMix({"t": Term("t", FunctionLoss(fickle), inputs=ROUTE)})
    outputs, batch = {"x": torch.randn(3)}, {"y": torch.randn(3)}
    mix(outputs, batch)
    with pytest.raises(LossInputError, match="returned parts a, b, but the term logs a"):
        mix(outputs, batch)
    with pytest.raises(LossConfigError, match="parts="):
        Term("u", FunctionLoss(fickle), inputs=ROUTE, parts="ab")
