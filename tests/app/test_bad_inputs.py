"""The bad inputs a user hit, kept so none can come back: each is one lossmix error naming the
term (or node), the key and the fix, from Python and from the app; none a traceback, a
silent NaN, or a message without its term."""

from __future__ import annotations

import math
import re
import sys

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

import lossmix.train as train
from lossmix import LossConfigError, LossInputError, LossMix, build_loss
from lossmix.lightning import LossSchedule, NonFiniteLossGuard
from lossmix.losses import FunctionLoss
from tests.lightning_models import Regressor, loader, trainer

ROUTE = {"pred": "x", "target": "y"}


def one_line(err: BaseException) -> str:
    message = str(err)
    assert "\n" not in message, message
    return message


# -- from Python --------------------------------------------------------------------------------
CALLS = {
    "integer logits, cross-entropy": (
        lambda: build_loss({"type": "CrossEntropyLoss"})(
            torch.ones(4, 3, dtype=torch.long), torch.zeros(4, dtype=torch.long)
        ),
        LossInputError,
        "CrossEntropyLoss: pred is a int64 tensor .* floating point .*pred.float",
    ),
    "bool target, cross-entropy": (
        lambda: build_loss({"type": "CrossEntropyLoss"})(torch.randn(4, 3), torch.zeros(4, dtype=torch.bool)),
        LossInputError,
        r"CrossEntropyLoss: target is a bool tensor .*target.long\(\)",
    ),
    "bool target, L1": (
        lambda: build_loss({"type": "L1Loss"})(torch.randn(4), torch.zeros(4, dtype=torch.bool)),
        LossInputError,
        r"L1Loss: target is a bool tensor .*target.float\(\)",
    ),
    "pred and target on different devices": (
        lambda: build_loss({"type": "L1Loss"})(torch.randn(4), torch.randn(4, device="meta")),
        LossInputError,
        "L1Loss: the inputs are on different devices .*pred on cpu, target on meta",
    ),
    "a custom function returning a float": (
        lambda: FunctionLoss(lambda p, t: 0.5)(torch.randn(4), torch.randn(4)),
        LossInputError,
        "returned float 0.5, not a tensor",
    ),
    "loss_weight nan": (
        lambda: LossMix.from_config({"reg": {"type": "L1Loss", "loss_weight": math.nan}}),
        LossConfigError,
        "term 'reg': loss_weight=nan is not valid; .*finite",
    ),
    "loss_weight inf": (
        lambda: LossMix.from_config({"reg": {"type": "L1Loss", "loss_weight": math.inf}}),
        LossConfigError,
        "term 'reg': loss_weight=inf is not valid",
    ),
    "a negative weight without opting in": (
        lambda: LossMix.from_config({"reg": {"type": "L1Loss", "loss_weight": -2.0}}),
        LossConfigError,
        "term 'reg': loss_weight=-2.0 is negative.*allow_negative: true",
    ),
    "in_total as a string": (
        lambda: LossMix.from_config({"reg": {"type": "L1Loss", "in_total": "no"}}),
        LossConfigError,
        r"term 'reg' \(L1Loss\): in_total='no' is a str, but in_total expects bool.*loss.reg.in_total=true",
    ),
    "a schedule value nan": (
        lambda: LossSchedule({"reg": {"kind": "constant", "value": math.nan}}),
        LossConfigError,
        "schedule for term 'reg': value=nan",
    ),
    "a misspelt normaliser": (
        lambda: LossMix.from_config({"reg": {"type": "L1Loss", "normalizer": "num_poss"}}),
        LossConfigError,
        "term 'reg': normalizer 'num_poss' is not a built-in .*'num_pos'",
    ),
    "weighting with a misspelt argument": (
        lambda: LossMix.from_config(
            {
                "a": {"type": "L1Loss"},
                "b": {"type": "MSELoss"},
                "weighting": {"type": "uncertainty", "innit": 0.1},
            }
        ),
        LossConfigError,
        "weighting: uncertainty: unknown argument 'innit'. Did you mean 'init'",
    ),
    "DWA with a string temperature": (
        lambda: LossMix.from_config(
            {
                "a": {"type": "L1Loss"},
                "b": {"type": "MSELoss"},
                "weighting": {"type": "dwa", "temperature": "2"},
            }
        ),
        LossConfigError,
        "weighting: dwa: temperature='2' is not valid",
    ),
    "sampler num=0": (
        lambda: LossMix.from_config(
            {
                "cls": {
                    "type": "FocalLoss",
                    "sampler": {"type": "RandomSampler", "num": 0, "pos_fraction": 0.5},
                }
            }
        ),
        LossConfigError,
        "term 'cls': sampler: RandomSampler: num=0 is not valid",
    ),
    "sampler pos_fraction=1.5": (
        lambda: LossMix.from_config(
            {
                "cls": {
                    "type": "FocalLoss",
                    "sampler": {"type": "RandomSampler", "num": 8, "pos_fraction": 1.5},
                }
            }
        ),
        LossConfigError,
        r"term 'cls': sampler: .*pos_fraction=1.5 .*\[0, 1\]",
    ),
    "focal alpha=2.0": (
        lambda: LossMix.from_config({"cls": {"type": "FocalLoss", "alpha": 2.0}}),
        LossConfigError,
        "term 'cls': FocalLoss: alpha=2.0 is not valid",
    ),
    "focal gamma=-1": (
        lambda: LossMix.from_config({"cls": {"type": "FocalLoss", "gamma": -1}}),
        LossConfigError,
        "term 'cls': FocalLoss: gamma=-1 is not valid",
    ),
}


@pytest.mark.parametrize("case", sorted(CALLS))
def test_python_api(case):
    call, error, match = CALLS[case]
    with pytest.raises(error, match=match) as info:
        call()
    one_line(info.value)


def test_a_box_shape_error_names_its_term():
    mix = LossMix.from_config({"box": {"type": "GIoULoss", "inputs": ROUTE}})
    with pytest.raises(LossInputError, match=r"term 'box': GIoULoss: pred of shape \(3, 4\)"):
        mix({"x": torch.rand(3, 4)}, {"y": torch.rand(3, 5)})


def test_an_empty_batch_gives_zeros_not_nan():
    mix = LossMix.from_config(
        {
            "cls": {"type": "CrossEntropyLoss", "inputs": ROUTE},
            "sig": {"type": "CrossEntropyLoss", "use_sigmoid": True, "inputs": ROUTE},
        }
    )
    pred = torch.zeros(0, 3, requires_grad=True)
    result = mix({"x": pred}, {"y": torch.zeros(0, dtype=torch.long)})
    assert result.total.item() == 0.0 and all(v.item() == 0.0 for v in result.terms.values())
    result.total.backward()
    assert pred.grad is not None


def test_a_negative_weight_with_opt_in_is_warned_once():
    with pytest.warns(UserWarning, match="term 'gen': loss_weight=-1.0 is negative"):
        mix = LossMix.from_config({"gen": {"type": "L1Loss", "loss_weight": -1.0, "allow_negative": True}})
    assert mix.terms["gen"].weight == -1.0


class NaNWeight(Regressor):
    def __init__(self) -> None:
        super().__init__(
            terms={
                "t0": {"type": "L1Loss", "inputs": {"pred": "pred", "target": "y"}},
                "t1": {"type": "MSELoss", "inputs": {"pred": "pred", "target": "y"}},
            },
            lr=0.1,
        )

    def training_step(self, batch, batch_idx):
        # a weight gone NaN (as a learned or scheduled factor can): set past set_scale's check
        self.loss_mix.find_term("t0").scale = math.nan if self.loss_step() == 1 else 1.0
        return self.compute_loss(self(batch["x"]), batch)


def test_guard_zero_drops_a_term_whose_weight_is_nan():
    model = NaNWeight()
    run = trainer(max_epochs=1, log_every_n_steps=50, callbacks=[NonFiniteLossGuard("zero")])
    with pytest.warns(UserWarning, match="dropped non-finite terms: t0 on 1 step"):
        run.fit(model, loader(12, 4))
    assert all(torch.isfinite(p).all() for p in model.parameters())


# -- from the app: the command line, in this process ----------------------------------------------
TINY = [
    "trainer.max_epochs=1",
    "data.num_train=16",
    "data.num_val=8",
    "data.batch_size=8",
    "trainer.enable_progress_bar=false",
    "hydra/job_logging=none",
    "hydra/hydra_logging=none",
]
APP = {
    "reduction=avg": (["loss.cls.reduction=avg"], r"term 'cls' \(FocalLoss\): reduction='avg' is not valid"),
    "every term removed": (["~loss/cls", "~loss/reg", "~loss/ctr"], "the config has no loss terms"),
    "max_epochs=abc": (
        ["trainer.max_epochs=abc"],
        "trainer.max_epochs='abc' is a str, but max_epochs expects int",
    ),
    "model and data disagree": (["model.num_classes=2"], "model.num_classes=2 but data.num_classes=3"),
    "the loss's type removed": (["~loss.cls.type"], r"term 'cls' \(loss.cls\): needs 'type'"),
    "a misspelt normaliser": (
        ["loss.cls.normalizer=num_poss"],
        "term 'cls': normalizer 'num_poss' .*'num_pos'",
    ),
    "an unknown loss": (
        ["loss.cls.type=FocalLos"],
        "term 'cls': Unknown loss 'FocalLos'. Did you mean 'FocalLoss'",
    ),
    "loss_weight nan": (["loss.cls.loss_weight=nan"], "term 'cls': loss_weight=nan is not valid"),
    "loss_weight inf": (["loss.cls.loss_weight=inf"], "term 'cls': loss_weight=inf is not valid"),
    "in_total a string": (["loss.cls.in_total=no"], "term 'cls' .*in_total='no' is a str"),
    "focal alpha=2.0": (["loss.cls.alpha=2.0"], "term 'cls': FocalLoss: alpha=2.0 is not valid"),
    "focal gamma=-1": (
        ["loss.cls.gamma=-1"],
        "term 'cls': FocalLoss: gamma=-1 is not valid; gamma must be a number >= 0.$",
    ),
    "sampler num=0": (
        ["+sampler@loss.cls.sampler=random", "loss.cls.sampler.num=0"],
        "term 'cls': sampler: RandomSampler: num=0 is not valid",
    ),
    "sampler pos_fraction=1.5": (
        ["+sampler@loss.cls.sampler=random", "loss.cls.sampler.pos_fraction=1.5"],
        "term 'cls': sampler: RandomSampler: pos_fraction=1.5 is not valid",
    ),
}


@pytest.mark.parametrize("case", sorted(APP))
def test_app(tmp_path, case, capsys, monkeypatch):
    overrides, match = APP[case]
    monkeypatch.setattr(sys, "argv", ["lossmix.train", f"hydra.run.dir={tmp_path}", *TINY, *overrides])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as info:
        try:
            train.main()
        finally:
            GlobalHydra.instance().clear()
    err = capsys.readouterr().err
    assert info.value.code == 1
    lines = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(match, lines[0]), lines[0]


def test_the_documented_gradnorm_override_composes():
    from lossmix.app.cli import main as cli

    assert cli(["show", "experiment=multitask", "++loss.weighting={type: gradnorm, shared: trunk.2}"]) == 0
