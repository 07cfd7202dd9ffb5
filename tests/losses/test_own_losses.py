"""A user's own losses as tutorials write them (issue 23, item 6): a registered function keeps its
own argument names as inputs, a function that reduces itself refuses a reduction it cannot
apply, a plain ``nn.Module`` gets a message about what it lacks, and ``lossmix list``/``show``
print the user's real input names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lossmix import LOSSES, LossMix
from lossmix.errors import LossConfigError
from lossmix.losses import loss_inputs

OUT, BATCH = {"out": torch.randn(4, 3)}, {"y": torch.randn(4, 3)}
ROUTE = {"output": "out", "gt": "y"}


def squared_error(output, gt, scale=1.0):
    return scale * (output - gt) ** 2


def mean_squared_error(output, gt):
    return ((output - gt) ** 2).mean()


class PlainModuleLoss(nn.Module):
    def forward(self, output, target):
        return ((output - target) ** 2).mean()


@pytest.fixture
def registered():
    entries, aliases = dict(LOSSES._entries), dict(LOSSES._aliases)
    for entry in (squared_error, mean_squared_error, PlainModuleLoss):
        LOSSES.register()(entry)
    yield
    LOSSES._entries.clear()
    LOSSES._entries.update(entries)
    LOSSES._aliases.clear()
    LOSSES._aliases.update(aliases)


@pytest.mark.parametrize(("reduction", "normalizer"), [("mean", None), ("sum", None), ("mean", "batch")])
def test_a_function_keeps_its_own_input_names(registered, reduction, normalizer):
    node = {"type": "squared_error", "scale": 2.0, "reduction": reduction, "inputs": ROUTE}
    result = LossMix.from_config({"t": {**node, "normalizer": normalizer}})(OUT, BATCH)
    element = 2.0 * (OUT["out"] - BATCH["y"]) ** 2
    expected = {"mean": element.mean(), "sum": element.sum()}[reduction]
    if normalizer == "batch":
        expected = element.sum() / 4
    torch.testing.assert_close(result.total, expected)


def test_pred_and_target_are_refused_for_a_function_with_other_names(registered):
    with pytest.raises(
        LossConfigError, match="inputs has 'pred', which squared_error does not take.*output, gt"
    ):
        LossMix.from_config({"t": {"type": "squared_error", "inputs": {"pred": "out", "target": "y"}}})


@pytest.mark.parametrize(
    ("extra", "asked"),
    [
        ({"reduction": "sum"}, "reduction='sum'"),
        ({"normalizer": "batch"}, "avg_factor (a normalizer)"),
        ({"inputs": {**ROUTE, "weight": "y"}}, "an element weight"),
    ],
    ids=["sum", "normalizer", "weight"],
)
def test_a_function_that_reduces_itself_refuses_another_reduction(registered, extra, asked):
    mix = LossMix.from_config({"t": {"type": "mean_squared_error", "inputs": ROUTE, **extra}})
    with pytest.raises(LossConfigError) as err:
        mix(OUT, BATCH)
    assert f"mean_squared_error returns one value (it reduces its inputs itself), so {asked}" in str(
        err.value
    )


def test_a_function_that_reduces_itself_is_used_as_is_under_mean(registered):
    result = LossMix.from_config({"t": {"type": "mean_squared_error", "inputs": ROUTE}})(OUT, BATCH)
    torch.testing.assert_close(result.total, ((OUT["out"] - BATCH["y"]) ** 2).mean())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"normalizer": "batch"},
            "normalizer 'batch' divides by avg_factor, which PlainModuleLoss.forward does not take "
            "(its arguments: output, target)",
        ),
        ({"inputs": {"output": "out", "target": "y", "weight": "y"}}, "A plain nn.Module gets no weight"),
    ],
    ids=["normalizer", "weight"],
)
def test_a_plain_module_says_what_it_lacks(registered, extra, message):
    node = {"type": "PlainModuleLoss", "inputs": {"output": "out", "target": "y"}, **extra}
    with pytest.raises(LossConfigError, match="BaseLoss subclass") as err:
        LossMix.from_config({"t": node})
    assert message in str(err.value)


def test_torch_functions_keep_lossmix_names():
    mix = LossMix.from_config(
        {"t": {"_target_": "torch.nn.functional.l1_loss", "inputs": {"pred": "out", "target": "y"}}}
    )
    torch.testing.assert_close(mix(OUT, BATCH).total, (OUT["out"] - BATCH["y"]).abs().mean())


@pytest.mark.parametrize(
    ("name", "inputs"),
    [("squared_error", ["output", "gt"]), ("PlainModuleLoss", ["output", "target"])],
)
def test_list_and_show_print_the_users_input_names(registered, name, inputs, capsys, monkeypatch):
    from lossmix.app import cli

    assert [i.name for i in loss_inputs(LOSSES.get(name)) if i.required] == inputs
    monkeypatch.setenv("COLUMNS", "200")
    assert cli.main(["list"]) == 0
    assert f"inputs: {', '.join(inputs)}" in capsys.readouterr().out
    assert cli.main(["show", name]) == 0
    assert "inputs: {" + ", ".join(f"{i}: <key>" for i in inputs) + "}" in capsys.readouterr().out
