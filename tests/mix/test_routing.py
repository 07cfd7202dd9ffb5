"""Routing (``inputs:``) on its own: sides, dotted paths, sequences, constants, errors."""

from __future__ import annotations

import pytest
import torch

from lossmix import LossInputError
from lossmix.mix.routing import describe_keys, lookup


def test_unprefixed_keys_are_looked_up_in_the_outputs_then_the_batch():
    outputs, batch = {"logits": 1}, {"labels": 2}
    assert lookup(outputs, batch, "logits", term="t", arg="pred") == 1
    assert lookup(outputs, batch, "labels", term="t", arg="target") == 2


def test_prefixes_choose_the_side_and_ambiguity_must_be_resolved():
    outputs, batch = {"x": "out"}, {"x": "in"}
    assert lookup(outputs, batch, "outputs.x", term="t", arg="pred") == "out"
    assert lookup(outputs, batch, "batch.x", term="t", arg="pred") == "in"
    with pytest.raises(LossInputError, match=r"key 'x' is in both .* write 'outputs.x' or 'batch.x'"):
        lookup(outputs, batch, "x", term="t", arg="pred")


@pytest.mark.parametrize(
    ("key", "expected"),
    [("head.cls", 5), ("targets.0", "a"), ("targets.-1", "b"), ("obj.dtype", torch.float32)],
)
def test_dotted_paths_reach_nested_mappings_sequences_and_attributes(key, expected):
    outputs = {"head": {"cls": 5}, "targets": ["a", "b"], "obj": torch.zeros(1)}
    assert lookup(outputs, {}, key, term="t", arg="pred") == expected


@pytest.mark.parametrize("key", ["head.box", "targets.2", "obj._private", "nothing"])
def test_a_missing_key_names_the_term_the_input_and_the_keys_there(key):
    outputs = {"head": {"cls": 5}, "targets": ["a", "b"], "obj": torch.zeros(1)}
    with pytest.raises(LossInputError) as info:
        lookup(outputs, {"labels": 1}, key, term="reg", arg="target")
    message = str(info.value)
    assert f"term 'reg': input 'target' wants key '{key}'" in message
    assert "Output keys: head, targets, obj; batch keys: labels" in message


def test_describe_keys():
    assert describe_keys({}) == "(empty)"
    assert describe_keys([1, 2]) == "indices 0..1"
    assert describe_keys(3) == "(a int, not a mapping)"
