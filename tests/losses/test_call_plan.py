"""The template's call plan: a plain call costs what torch's functional costs, and keeps every rule."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from lossmix import LossInputError, LossMix, build_loss
from lossmix.losses.base import BaseLoss


class CountTorchCalls(TorchFunctionMode):
    """Counts the torch functions and tensor methods a call runs (what a kernel dispatch costs)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


# reads of a tensor's metadata (shape, dtype, device, numel): no kernel runs
METADATA = {"__get__", "is_floating_point", "numel", "dim", "size"}


def torch_calls(fn) -> list[str]:
    """The torch functions ``fn`` runs, metadata reads left out."""
    with CountTorchCalls() as mode:
        fn()
    return [name for name in mode.names if name not in METADATA]


NODES = {
    "L1Loss": ({"type": "L1Loss"}, "float"),
    "MSELoss": ({"type": "MSELoss"}, "float"),
    "SmoothL1Loss": ({"type": "SmoothL1Loss", "beta": 0.5}, "float"),
    "CrossEntropyLoss": ({"type": "CrossEntropyLoss"}, "index"),
    "sigmoid": ({"type": "CrossEntropyLoss", "use_sigmoid": True}, "binary"),
    "FocalLoss": ({"type": "FocalLoss"}, "index"),
}


def inputs(kind: str, rows: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(rows, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    if kind == "float":
        return pred, torch.randn(rows, 3, generator=gen, dtype=torch.float64)
    if kind == "binary":
        return pred, (torch.rand(rows, 3, generator=gen) > 0.5).double()
    return pred, torch.randint(0, 3, (rows,), generator=gen)


@pytest.mark.parametrize("name", list(NODES))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("loss_weight", [1.0, 2.5])
def test_the_planned_call_equals_the_bound_call(name, reduction, loss_weight):
    node, kind = NODES[name]
    loss = build_loss({**node, "reduction": reduction, "loss_weight": loss_weight})
    pred, target = inputs(kind)
    planned = loss(pred, target)  # positional: the call plan
    (grad,) = torch.autograd.grad(planned.sum(), pred)
    bound = loss(pred=pred, target=target)  # by name: the arguments are bound
    (grad_bound,) = torch.autograd.grad(bound.sum(), pred)
    torch.testing.assert_close(planned, bound)
    torch.testing.assert_close(grad, grad_bound)
    weight = torch.rand(pred.shape[0], dtype=torch.float64)
    avg_factor = 3.0 if reduction == "mean" else None  # 'sum' refuses it (checked elsewhere)
    torch.testing.assert_close(
        loss(pred, target, weight=weight, avg_factor=avg_factor),
        loss(pred=pred, target=target, weight=weight, avg_factor=avg_factor),
    )


@pytest.mark.parametrize(
    ("node", "functional"),
    [
        ({"type": "L1Loss"}, F.l1_loss),
        ({"type": "MSELoss"}, F.mse_loss),
        ({"type": "SmoothL1Loss"}, F.smooth_l1_loss),
    ],
)
def test_a_plain_call_runs_what_the_torch_functional_runs(node, functional):
    pred, target = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3)
    loss = build_loss(node)
    assert torch_calls(lambda: loss(pred, target)) == torch_calls(lambda: functional(pred, target))
    # step 5 with a weight other than 1 is one multiplication more, and nothing else
    scaled = build_loss({**node, "loss_weight": 2.0})
    assert (
        len(torch_calls(lambda: scaled(pred, target)))
        == len(torch_calls(lambda: functional(pred, target))) + 1
    )
    torch.testing.assert_close(scaled(pred, target), 2.0 * functional(pred, target))


def test_the_plan_follows_reduction_and_loss_weight_set_later():
    loss = build_loss({"type": "MSELoss"})
    pred, target = torch.zeros(4), torch.full((4,), 2.0)
    assert loss(pred, target).item() == 4.0
    loss.loss_weight = 3.0
    assert loss(pred, target).item() == 12.0
    loss.reduction = "sum"
    assert loss(pred, target).item() == 48.0
    loss.reduction = "median"  # no plan: the bound call names the bad value
    with pytest.raises(ValueError, match="reduction='median' is not valid"):
        loss(pred, target)


def test_a_scheduled_hyper_parameter_is_read_at_each_planned_call():
    loss = build_loss({"type": "SmoothL1Loss", "beta": 1.0})
    pred, target = torch.zeros(1), torch.full((1,), 0.5)
    before = loss(pred, target)
    loss.beta = 0.25  # what a schedule does (setattr)
    torch.testing.assert_close(before, torch.tensor(0.125))
    torch.testing.assert_close(loss(pred, target), torch.tensor(0.375))


@pytest.mark.parametrize(
    ("sigmoid", "field", "value"),
    [
        (False, "label_smoothing", 0.2),
        (False, "ignore_index", 1),
        (False, "avg_non_ignore", True),
        (False, "class_weight", torch.tensor([1.0, 2.0, 0.5])),
        (False, "use_sigmoid", True),
        (True, "label_smoothing", 0.2),
        (True, "ignore_index", 1),
        (True, "class_weight", torch.tensor([1.0, 2.0, 0.5])),
        (True, "use_sigmoid", False),
    ],
)
def test_the_cross_entropy_follows_a_setting_changed_later(sigmoid, field, value):
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(8, 3, generator=gen)
    target = torch.randint(0, 3, (8,), generator=gen)
    if sigmoid:
        target = F.one_hot(target, 3).float()
    node = {"type": "CrossEntropyLoss", "use_sigmoid": sigmoid}
    loss = build_loss(node)
    loss(pred, target)  # (a first call: whatever it caches)
    if field == "class_weight":
        loss.class_weight = value
    else:
        setattr(loss, field, value)
    fresh = build_loss(node | {field: value.tolist() if isinstance(value, torch.Tensor) else value})
    if field == "use_sigmoid":  # (the other kind wants the other targets)
        target = F.one_hot(target, 3).float() if value else target.argmax(1)
    torch.testing.assert_close(loss(pred, target), fresh(pred, target))


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "state_dict"])
def test_copies_and_checkpoints_keep_a_working_plan(how):
    loss = build_loss({"type": "CrossEntropyLoss", "loss_weight": 2.0, "class_weight": [1.0, 2.0, 3.0]})
    pred, target = inputs("index")
    if how == "deepcopy":
        other = copy.deepcopy(loss)
    elif how == "pickle":
        other = pickle.loads(pickle.dumps(loss))
    else:
        other = build_loss({"type": "CrossEntropyLoss", "loss_weight": 2.0, "class_weight": [1.0, 2.0, 3.0]})
        other.load_state_dict(loss.state_dict())
        assert not any("plan" in key for key in loss.state_dict())
    assert other._call_plan == loss._call_plan
    torch.testing.assert_close(other(pred, target), loss(pred, target))
    other.loss_weight = 1.0  # the copy's plan is its own
    torch.testing.assert_close(other(pred, target) * 2.0, loss(pred, target))


@pytest.mark.parametrize(
    ("pred", "target", "message"),
    [
        (torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 2), "pred is a int64 tensor"),
        (torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.bool), "target is a bool tensor"),
        (torch.zeros(3, 2), torch.zeros(3, 2, device="meta"), "on different devices"),
    ],
)
def test_the_planned_call_keeps_the_input_errors(pred, target, message):
    with pytest.raises(LossInputError, match=message):
        build_loss({"type": "L1Loss"})(pred, target)


@pytest.mark.parametrize("name", ["L1Loss", "MSELoss", "SmoothL1Loss", "sigmoid"])
def test_an_empty_planned_call_is_a_connected_zero(name):
    node, kind = NODES[name]
    pred, target = inputs(kind, rows=0)
    value = build_loss(node)(pred, target)
    assert value.item() == 0.0 and value.grad_fn is not None
    value.backward()
    assert pred.grad is not None and pred.grad.shape == pred.shape


def test_nan_at_a_masked_element_cannot_leak_through_the_planned_call():
    pred = torch.tensor([1.0, float("nan")], requires_grad=True)
    value = build_loss({"type": "MSELoss"})(pred, torch.zeros(2), weight=torch.tensor([1.0, 0.0]))
    assert value.item() == 0.5  # the value: a kernel's own NaN gradient is the kernel's to avoid


def test_the_mmdetection_positional_call_still_binds():
    loss = build_loss({"type": "L1Loss"})
    pred, target, weight = torch.randn(4, 2), torch.randn(4, 2), torch.rand(4, 2)
    torch.testing.assert_close(
        loss(pred, target, weight, 2.0),
        loss(pred, target, weight=weight, avg_factor=2.0),
    )
    torch.testing.assert_close(
        loss(pred, target, weight, None, "sum"), (weight * (pred - target).abs()).sum()
    )
    with pytest.raises(LossInputError, match="'weight' is given twice"):
        loss(pred, target, weight, weight=weight)


def test_a_loss_mix_term_takes_the_plan(monkeypatch):
    """The engine calls a lossmix loss with its inputs positionally, so no term binds by name."""

    def refuse(*args, **kwargs):
        raise AssertionError("the term bound its arguments by name")

    mix = LossMix.from_config(
        {
            "reg": {"type": "SmoothL1Loss", "loss_weight": 2.0, "inputs": {"target": "y", "pred": "p"}},
            "cls": {"type": "CrossEntropyLoss", "inputs": {"pred": "logits", "target": "labels"}},
        }
    )
    outputs = {"p": torch.randn(5, 4, requires_grad=True), "logits": torch.randn(5, 3)}
    batch = {"y": torch.randn(5, 4), "labels": torch.randint(0, 3, (5,))}
    monkeypatch.setattr(BaseLoss, "_forward_bound", refuse)
    total = mix(outputs, batch).total
    expected = 2.0 * F.smooth_l1_loss(outputs["p"], batch["y"]) + F.cross_entropy(
        outputs["logits"], batch["labels"]
    )
    torch.testing.assert_close(total, expected)


# -- the cross-entropies' reduced way: torch's kernel, MMDetection's rules -----------------------
CE_CASES = {
    "ignored rows": ({"type": "CrossEntropyLoss"}, torch.tensor([0, -100, 2, 1, -100, 2])),
    "own ignore_index": ({"type": "CrossEntropyLoss", "ignore_index": 1}, torch.tensor([0, 1, 2, 1, 0, 2])),
    "smoothing": ({"type": "CrossEntropyLoss", "label_smoothing": 0.2}, torch.tensor([0, -100, 2, 1, 0, 2])),
    "per pixel": ({"type": "CrossEntropyLoss"}, torch.tensor([[0, 1], [2, -100], [1, 1]])),
    # no ignored label: torch's one-kernel mean on the CPU
    "every row valid": ({"type": "CrossEntropyLoss"}, torch.tensor([0, 1, 2, 1, 0, 2])),
    "valid, smoothing": (
        {"type": "CrossEntropyLoss", "label_smoothing": 0.2},
        torch.tensor([0, 1, 2, 1, 0, 2]),
    ),
    "valid, per pixel": ({"type": "CrossEntropyLoss"}, torch.tensor([[0, 1], [2, 0], [1, 1]])),
    "ignore 255 absent": (
        {"type": "CrossEntropyLoss", "ignore_index": 255},
        torch.tensor([0, 1, 2, 1, 0, 2]),
    ),
}


@pytest.mark.parametrize("case", list(CE_CASES))
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_the_reduced_cross_entropy_counts_every_row_as_mmdetection(case, reduction):
    node, target = CE_CASES[case]
    shape = (3, 3, 2) if target.dim() == 2 else (6, 3)
    pred = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    loss = build_loss({**node, "reduction": reduction, "loss_weight": 2.0})
    planned = loss(pred, target)
    (grad,) = torch.autograd.grad(planned, pred)
    rows = F.cross_entropy(
        pred,
        target,
        ignore_index=node.get("ignore_index", -100),
        reduction="none",
        label_smoothing=node.get("label_smoothing", 0.0),
    )
    expected = 2.0 * (rows.sum() if reduction == "sum" else rows.sum() / target.numel())
    torch.testing.assert_close(planned, expected)  # MMDetection's mean: ignored rows count
    torch.testing.assert_close(grad, torch.autograd.grad(expected, pred)[0])
    assert "cross_entropy" in torch_calls(lambda: loss(pred, target))


CE_CALLS = {  # node, labels, the torch calls of the first and of the second call
    "valid, mean": ({}, [0, 2, 1, 1], ["cross_entropy"], ["cross_entropy"]),
    "valid, sum": ({"reduction": "sum"}, [0, 2, 1, 1], ["cross_entropy"], ["cross_entropy"]),
    # an ignored label: torch's mean refuses it, then torch's sum / every row, from then on
    "ignored": ({}, [0, -100, 1, 1], ["cross_entropy", "cross_entropy", "div"], ["cross_entropy", "div"]),
    # an ignore index that is a class: torch's mean would count its rows as that class
    "ignore a class": ({"ignore_index": 1}, [0, 2, 1, 1], ["cross_entropy", "div"], ["cross_entropy", "div"]),
}


@pytest.mark.parametrize("case", list(CE_CALLS))
def test_the_reduced_cross_entropy_takes_torchs_mean_when_no_label_is_ignored(case):
    node, labels, first, second = CE_CALLS[case]
    pred, target = torch.randn(4, 3, requires_grad=True), torch.tensor(labels)
    loss = build_loss({"type": "CrossEntropyLoss", **node})
    assert torch_calls(lambda: loss(pred, target)) == first
    assert torch_calls(lambda: loss(pred, target)) == second
    ignore = node.get("ignore_index", -100)
    rows = F.cross_entropy(pred, target, ignore_index=ignore, reduction="none")
    expected = rows.sum() if node.get("reduction") == "sum" else rows.sum() / len(labels)
    torch.testing.assert_close(loss(pred, target), expected)


@pytest.mark.parametrize("ignored", [None, -100.0, float("nan")])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_the_reduced_sigmoid_cross_entropy_reduces_in_the_kernel_without_an_ignored_element(
    ignored, reduction
):
    pred = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    target = (torch.rand(5, 3) > 0.5).double()
    if ignored is not None:
        target[1, 2] = ignored  # a negative label, or a NaN one: selected away
    loss = build_loss({"type": "CrossEntropyLoss", "use_sigmoid": True, "reduction": reduction})
    calls = torch_calls(lambda: loss(pred, target))
    valid = target >= 0
    safe = torch.where(valid, target, 0.0)  # what an ignored element's label is set to
    kept = torch.where(valid, F.binary_cross_entropy_with_logits(pred, safe, reduction="none"), 0.0)
    expected = kept.sum() if reduction == "sum" else kept.mean()
    value = loss(pred, target)
    torch.testing.assert_close(value, expected)
    (grad,) = torch.autograd.grad(value, pred)
    torch.testing.assert_close(grad, torch.autograd.grad(expected, pred)[0])
    assert torch.isfinite(grad).all()  # a NaN label at an ignored element: a zero gradient there
    assert ("where" in calls) is (ignored is not None), calls  # one kernel call when none is ignored


def test_the_reduced_cross_entropy_names_an_index_out_of_range():
    with pytest.raises(LossInputError, match="class index|out of range|3"):
        build_loss({"type": "CrossEntropyLoss"})(torch.randn(2, 3), torch.tensor([0, 3]))


def test_the_reduced_sigmoid_cross_entropy_keeps_nan_at_ignored_elements_out():
    pred = torch.tensor([[0.5, float("nan")], [-1.0, 2.0]], requires_grad=True)
    target = torch.tensor([[1.0, -100.0], [0.0, 1.0]])
    loss = build_loss({"type": "CrossEntropyLoss", "use_sigmoid": True})
    value = loss(pred, target)
    kept = F.binary_cross_entropy_with_logits(pred[target >= 0], target[target >= 0], reduction="sum")
    torch.testing.assert_close(value, kept / 4)  # every element counts in the mean
    value.backward()  # the other elements' gradients stay finite (the NaN one is the kernel's)
    assert torch.isfinite(pred.grad[target >= 0]).all()


@pytest.mark.parametrize("sigmoid", [False, True])
def test_the_reduced_cross_entropies_map_over_a_batch_of_problems(sigmoid):
    # torch.func.vmap over the targets: no host read of a batched mask, the same values
    pred = torch.randn(3, 5, 4)
    if sigmoid:
        target = (torch.rand(3, 5, 4) > 0.5).float()
        target[1, 0, 0] = -100.0
    else:
        target = torch.randint(0, 4, (3, 5))
        target[2, 1] = -100
    loss = build_loss({"type": "CrossEntropyLoss", "use_sigmoid": sigmoid})
    mapped = torch.func.vmap(loss)(pred, target)
    torch.testing.assert_close(mapped, torch.stack([loss(p, t) for p, t in zip(pred, target, strict=True)]))


@pytest.mark.parametrize("label", [-100.0, float("nan")])
def test_an_ignored_sigmoid_label_gives_a_zero_gradient_the_element_wise_way_too(label):
    pred = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    target = (torch.rand(4, 3) > 0.5).double()
    target[2, 1] = label
    loss = build_loss({"type": "CrossEntropyLoss", "use_sigmoid": True})
    value = loss(
        pred, target, weight=torch.ones(4, 3, dtype=torch.float64)
    )  # element weights: no reduced way
    (grad,) = torch.autograd.grad(value, pred)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    assert grad[2, 1] == 0
    torch.testing.assert_close(value, loss(pred, target))  # the reduced way agrees
