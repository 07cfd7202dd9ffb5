"""``lossmix.app.runner.build``: every node checked first, the loss mix built once (by the model)."""

from __future__ import annotations

import pytest

from lossmix import LossConfigError, LossMix
from lossmix.app.runner import build
from tests.app.test_train import TINY, compose_train


def test_the_mix_is_built_once_by_the_model(tmp_path, monkeypatch):
    built: list[LossMix] = []
    original = LossMix.from_config.__func__  # type: ignore[attr-defined]

    def counting(cls, node, **kwargs):
        mix = original(cls, node, **kwargs)
        built.append(mix)
        return mix

    monkeypatch.setattr(LossMix, "from_config", classmethod(counting))
    _, model, _ = build(compose_train(tmp_path, *TINY, "experiment=inpainting", "trainer.max_steps=1"))
    assert len(built) == 1 and model.loss_mix is built[0]  # the VGG of the perceptual term: once


def test_a_term_error_that_only_building_finds_is_still_one_line(tmp_path):
    cfg = compose_train(tmp_path, *TINY, "+loss.reg.inputs.prd=boxes")
    with pytest.raises(Exception) as info:
        build(cfg)
    cause = info.value if isinstance(info.value, LossConfigError) else info.value.__cause__
    assert isinstance(cause, LossConfigError)
    assert "term 'reg': inputs has 'prd'" in str(cause) and "\n" not in str(cause)
