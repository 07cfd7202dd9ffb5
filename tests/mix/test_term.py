"""``Term`` on its own: building from a node, step 5's weight, routing defaults, phase one."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import nn

from lossmix import LossConfigError, LossInputError
from lossmix.losses import BaseLoss
from lossmix.mix import Term
from lossmix.registry.allowlist import trusting


class RecordedLoss(BaseLoss):
    """Records the ``loss_weight`` it was built with (a test double)."""

    built_with: ClassVar[list[float]] = []

    def __init__(self, *, reduction: str = "mean", loss_weight: float = 0.5) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        type(self).built_with.append(loss_weight)

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred - target).abs()


@pytest.mark.parametrize(("node", "weight"), [({}, 0.5), ({"loss_weight": 2.0}, 2.0)])
def test_the_loss_weight_is_read_at_build_time_and_the_loss_built_at_one(node, weight):
    RecordedLoss.built_with.clear()
    with trusting(["tests.mix"]):
        term = Term.from_config("t", {"_target_": f"{__name__}.RecordedLoss", **node})
    assert term.weight == weight  # the node's, else the loss's own default
    assert RecordedLoss.built_with == [1.0]  # built once, with its own weight at 1
    assert term.loss.loss_weight == 1.0


def test_a_loss_that_owns_its_weight_keeps_it_unless_its_side_is_the_generators():
    gen = Term.from_config("adv", {"type": "GANLoss", "gan_type": "vanilla", "loss_weight": 3.0})
    assert gen.weight == 3.0 and gen.loss.loss_weight == 1.0  # raw unweighted, as every term
    routed = {"pred": "d", "target_is_real": True, "is_disc": "side"}
    term = Term.from_config(
        "adv", {"type": "GANLoss", "gan_type": "vanilla", "loss_weight": 3.0, "inputs": routed}
    )
    assert term.weight == 1.0 and term.loss.loss_weight == 3.0
    shift = Term.from_config("shift", {"type": "DiscShiftLoss"})
    assert shift.weight == 0.1 and shift.loss.loss_weight == 1.0  # MMagic's default, on the term


@pytest.mark.parametrize(
    ("every", "scale_by_every", "scale", "step", "expected"),
    [
        (1, True, 1.0, 0, 2.0),
        (4, True, 1.0, 8, 8.0),  # a lazy term on the steps it runs: × every
        (4, False, 1.0, 8, 2.0),
        (4, True, 0.5, 8, 4.0),  # a schedule's multiplier
        (4, True, 1.0, None, 2.0),  # outside training: no lazy factor
    ],
)
def test_weight_at_is_step_five(every, scale_by_every, scale, step, expected):
    term = Term("t", nn.L1Loss(), weight=2.0, every=every, scale_by_every=scale_by_every)
    term.scale = scale
    assert term.weight_at(step) == expected


def test_inputs_default_to_the_required_arguments_by_name():
    term = Term.from_config("t", {"type": "L1Loss"})
    assert term.inputs == {"pred": "pred", "target": "target"}
    with pytest.raises(LossConfigError, match=r"term 't': inputs has 'prd'.*Did you mean 'pred'"):
        Term.from_config("t", {"type": "L1Loss", "inputs": {"prd": "y", "target": "t"}})
    with pytest.raises(LossConfigError, match=r"does not say where 'target' comes from"):
        Term.from_config("t", {"type": "L1Loss", "inputs": {"pred": "y"}})


def test_phase_one_routes_samples_and_reads_the_normaliser():
    term = Term.from_config(
        "cls",
        {"type": "FocalLoss", "inputs": {"pred": "logits", "target": "labels"}, "normalizer": "num_pos"},
    )
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 3, 3, 2, 3])  # 3: background
    prepared = term.prepare({"logits": logits}, {"labels": labels})
    assert prepared.kwargs["pred"] is logits and prepared.kwargs["target"] is labels
    assert float(prepared.avg_factor) == 3.0  # three positives
    parts = term.evaluate(prepared, prepared.avg_factor)
    assert set(parts) == {""} and parts[""].dim() == 0


def test_a_missing_key_names_the_term_and_the_input():
    term = Term.from_config("reg", {"type": "L1Loss", "inputs": {"pred": "boxes", "target": "gt"}})
    with pytest.raises(LossInputError, match=r"term 'reg': input 'target' wants key 'gt'"):
        term.prepare({"boxes": torch.zeros(2)}, {})


def test_a_lazy_steps_zero_is_connected_to_the_inputs():
    term = Term.from_config("t", {"type": "L1Loss", "every": 2})
    pred = torch.randn(3, requires_grad=True)
    zero = term.connected_zero({"pred": pred}, {"target": torch.zeros(3)})[""]
    assert float(zero) == 0.0 and zero.requires_grad
    zero.backward()
    assert pred.grad is not None and float(pred.grad.abs().sum()) == 0.0


def test_a_tasks_contributions_are_found_under_its_loss_name():
    """Grouping by task goes by the term each log key belongs to, not by the key's text."""
    from lossmix import LossMix

    mix = LossMix.from_config(
        {
            "rec": {"type": "L1Loss", "loss_name": "loss_l1"},
            "aux": {"type": "MSELoss", "in_total": False},
        }
    )
    result = mix({"pred": torch.ones(2)}, {"target": torch.zeros(2)})
    assert result.term_of == {"loss_l1": "rec", "aux": "aux"}
    assert result.task_keys(["rec", "aux"]) == {"rec": ["loss_l1"], "aux": ["aux"]}
    tasks = mix.task_terms(result)
    assert list(tasks) == ["rec"] and tasks["rec"][0] is result.terms["loss_l1"]
