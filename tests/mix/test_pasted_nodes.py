"""Config nodes pasted from elsewhere (issue 23, items 3 and 4): a key YAML read as a boolean
(``on:`` in the aggregation node) and MMDetection's ``train_cfg`` are refused with one line that
says what happened and what to write; the aggregation node's ``over:`` key works pasted from YAML."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from lossmix import LossMix, build_loss
from lossmix.errors import LossConfigError
from lossmix.lightning import LossSchedule
from lossmix.mtl.weighting import build_weighting

TERMS = """
a: {type: MSELoss, inputs: {pred: a, target: y}}
b: {type: L1Loss, inputs: {pred: b, target: y}}
"""
SAMPLER = {"type": "RandomSampler", "num": 256, "pos_fraction": 0.5}


def test_the_aggregation_yaml_works_pasted_into_a_file(tmp_path):
    path = tmp_path / "loss.yaml"
    path.write_text(TERMS + "aggregation:\n  type: upgrad\n  over: shared\n  module: trunk\n")
    mix = LossMix.from_config(OmegaConf.load(path))
    assert mix.aggregation is not None and mix.aggregation.over == "shared"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "aggregation:\n  type: upgrad\n  on: shared\n  module: trunk\n",
            "loss.aggregation: the key 'on' was read by YAML as the boolean True; write 'over:'",
        ),
        (
            "weighting:\n  type: uncertainty\n  yes: 1\n",
            "loss.weighting: a key was read by YAML as the boolean True (YAML 1.1 reads a bare on, yes or y",
        ),
        (
            "c: {type: L1Loss, inputs: {pred: a, target: y, off: z}}\n",
            "loss.c.inputs: a key was read by YAML as the boolean False",
        ),
    ],
    ids=["aggregation-on", "weighting-yes", "term-inputs-off"],
)
def test_a_key_yaml_read_as_a_boolean_is_named(tmp_path, text, message):
    path = tmp_path / "loss.yaml"
    path.write_text(TERMS + text)
    with pytest.raises(LossConfigError) as err:
        LossMix.from_config(OmegaConf.load(path))
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: build_weighting({"type": "uncertainty", True: 1}, ["a", "b"]), "weighting: a key was read"),
        (
            lambda: LossSchedule({"reg": {"kind": "onoff", True: 3}}),
            r"schedule for term 'reg': a key was read by YAML as the boolean True .* quote it \('on': ...\)",
        ),
        (
            lambda: LossMix.from_config(
                {
                    **OmegaConf.to_container(OmegaConf.create(TERMS)),
                    "aggregation": {"type": "upgrad", "on": "shared"},
                }
            ),
            "aggregation: the key 'on' is named 'over'",
        ),
    ],
    ids=["weighting-in-python", "schedule-onoff-on", "aggregation-on-in-python"],
)
def test_python_nodes_get_the_same_messages(build, message):
    with pytest.raises(LossConfigError, match=message):
        build()


@pytest.mark.parametrize(
    ("node", "path"),
    [
        ({"rpn": {"sampler": SAMPLER}}, "rpn.sampler"),
        ({"rpn": {"assigner": {"type": "MaxIoUAssigner"}, "sampler": SAMPLER}, "rcnn": {}}, "rpn.sampler"),
        ({"train_cfg": {"rpn": {"sampler": SAMPLER}}}, "train_cfg.rpn.sampler"),
    ],
    ids=["stage", "stages", "train_cfg"],
)
@pytest.mark.parametrize("entry", ["LossMix.from_config", "build_loss"])
def test_mmdetection_train_cfg_says_where_the_sampler_goes(node, path, entry):
    build = LossMix.from_config if entry == "LossMix.from_config" else build_loss
    with pytest.raises(LossConfigError) as err:
        build(node)
    text = str(err.value)
    assert text.startswith(f"{path}: MMDetection's train_cfg is not read by lossmix")
    assert "loss.<term>.sampler" in text and "\n" not in text


def test_a_term_with_its_own_sampler_is_not_mistaken_for_train_cfg():
    mix = LossMix.from_config(
        {"det": {"cls": {"type": "FocalLoss", "inputs": {"pred": "p", "target": "t"}, "sampler": SAMPLER}}}
    )
    assert mix.find_term("det/cls").sampler is not None
    result = mix({"p": torch.randn(8, 3)}, {"t": torch.randint(0, 4, (8,))}, group="det")
    assert torch.isfinite(result.total)
