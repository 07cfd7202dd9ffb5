"""Every registered loss describes its call inputs (``lossmix show NAME``), and no declared
``shapes`` key names an input the loss does not take."""

from __future__ import annotations

import inspect
from typing import ClassVar

import pytest
from torch import Tensor

import lossmix  # noqa: F401  (fills the registry)
from lossmix.losses import BaseLoss, loss_inputs
from lossmix.losses.base import shapes_from_docstring
from lossmix.registry.registry import LOSSES

NAMES = sorted(LOSSES.names())


def unknown_keys(cls: type[BaseLoss]) -> list[str]:
    """The keys of ``cls.shapes`` that are neither a call input nor ``returns``."""
    return sorted(set(cls.shapes) - set(cls.input_parameters()) - {"returns"})


@pytest.mark.parametrize("name", NAMES)
def test_every_input_is_described(name):
    missing = [i.name for i in loss_inputs(LOSSES.get(name)) if i.description.startswith("not declared")]
    assert not missing, f"{name}: no shape declared for {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_declared_shapes_name_call_inputs(name):
    entry = LOSSES.get(name)
    if not (inspect.isclass(entry) and issubclass(entry, BaseLoss)):
        pytest.skip("not a lossmix loss class")
    unknown = unknown_keys(entry)
    assert not unknown, (
        f"{name}: shapes keys {unknown} are not call inputs ({list(entry.input_parameters())})"
    )


def test_a_misspelt_shapes_key_is_caught():
    class Typo(BaseLoss):
        shapes: ClassVar[dict[str, str]] = {"pred": "(N,) float", "targte": "(N,) float", "returns": "(N,)"}

        def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
            return pred - target

    assert unknown_keys(Typo) == ["targte"]


def test_shapes_from_docstring():
    doc = "A loss.\n\nShapes: ``pred``, ``target``: ``(N, C)`` logits; returns ``(N,)``.\n"
    assert shapes_from_docstring(doc) == {
        "pred": "(N, C) logits",
        "target": "(N, C) logits",
        "returns": "(N,)",
    }


def test_shapes_from_docstring_without_shapes():
    assert shapes_from_docstring("A loss without a shapes sentence.") == {}
