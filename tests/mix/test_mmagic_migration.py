"""Issue 23, item 10: MMagic configs pasted into lossmix get the lossmix spelling with the numbers."""

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

from lossmix import LossMix, build_loss
from lossmix.app.checks import explain_override_error
from lossmix.errors import LossConfigError

R1 = {"type": "R1GradientPenalty", "inputs": {"discriminator": "d", "real_data": "r"}}


@pytest.mark.parametrize(
    ("extra", "fix"),
    [
        ({"r1_loss_weight": 80, "r1_interval": 16}, "loss.disc.r1.loss_weight=5 loss.disc.r1.every=16"),
        ({"r1_loss_weight": 80, "every": 16}, "loss.disc.r1.loss_weight=5 loss.disc.r1.every=16"),
        ({"g_reg_weight": 8, "g_reg_interval": 4}, "loss.disc.r1.loss_weight=2 loss.disc.r1.every=4"),
        ({"r1_loss_weight": 80}, "loss_weight=<r1_loss_weight / r1_interval>"),
        ({"r1_interval": 16}, "r1_interval is MMagic's lazy interval; write loss.disc.r1.every=16"),
    ],
)
def test_mmagic_lazy_weights_say_to_divide_by_the_interval(extra, fix):
    with pytest.raises(LossConfigError, match="every: k multiplies|every: k runs") as err:
        LossMix.from_config({"disc": {"r1": {**R1, **extra}}})
    assert fix in str(err.value) and "Did you mean" not in str(err.value)


def test_gan_loss_raw_is_unweighted_as_every_terms():
    mix = LossMix.from_config(
        {
            "adv": {
                "type": "GANLoss",
                "gan_type": "vanilla",
                "loss_weight": 3.0,
                "inputs": {"pred": "d", "target_is_real": True},
            },
            "rec": {"type": "L1Loss", "loss_weight": 3.0, "inputs": {"pred": "d", "target": "t"}},
        }
    )
    result = mix({"d": torch.tensor([0.3, -0.2])}, {"t": torch.zeros(2)})
    for key in ("adv", "rec"):
        assert result.weights[key] == 3.0
        torch.testing.assert_close(result.terms[key], 3.0 * result.raw[key])


@pytest.mark.parametrize(("key", "what"), [("data_info", "MMagic's spelling of inputs"), ("loss_name", "")])
def test_build_loss_names_a_term_key(key, what):
    with pytest.raises(LossConfigError, match=f"'{key}' is a term key.*LossMix.from_config") as err:
        build_loss({"type": "L1Loss", key: {"pred": "x"} if key == "data_info" else "loss_l1"})
    assert what in str(err.value)


def test_quoted_integer_keys_are_rewritten_for_hydra():
    override = "+loss.percep.layer_weights={'2': 0.1, \"9\": 1.0}"
    with pytest.raises(OverrideParseException) as err:
        OverridesParser.create().parse_overrides([override])
    message = explain_override_error(err.value, [override])
    assert message is not None and "write +loss.percep.layer_weights={2: 0.1, 9: 1.0}" in message
    parsed = OverridesParser.create().parse_overrides(["+loss.percep.layer_weights={2: 0.1, 9: 1.0}"])
    assert parsed[0].value() == {2: 0.1, 9: 1.0}
