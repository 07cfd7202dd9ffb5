"""The pre-flight batch: a wrong key fails before the first step, and the check leaves no trace."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lossmix import LossInputError
from lossmix.demo import SyntheticRing, ToyGAN
from tests.lightning_models import Regressor, loader, trainer


class Recorder(L.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.values.append(pl_module.last_loss_result.total.item())


def test_a_wrong_input_key_fails_before_any_step():
    model = Regressor(
        terms={"reg": {"type": "L1Loss", "inputs": {"pred": "pred", "target": "box_target"}}}, lr=0.1
    )
    before = [p.detach().clone() for p in model.parameters()]
    run = trainer(max_steps=5)
    with pytest.raises(LossInputError, match="term 'reg': input 'target' wants key 'box_target'"):
        run.fit(model, loader(16, 4))
    assert run.global_step == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def _fit_regressor(preflight: bool) -> tuple[list[float], list[torch.Tensor]]:
    L.seed_everything(0, verbose=False)
    terms = {
        "reg": {"type": "L1Loss", "inputs": {"pred": "pred", "target": "y"}},
        "cls": {
            "type": "FocalLoss",
            "inputs": {"pred": "pred", "target": "label"},
            "sampler": {"type": "RandomSampler", "num": 3, "pos_fraction": 0.5},
        },
        "weighting": {"type": "dwa"},
    }

    class Model(Regressor):
        def __init__(self) -> None:
            super().__init__(terms=terms, lr=0.05)
            self.norm = torch.nn.BatchNorm1d(4)

        def forward(self, x):
            return {"pred": self.net(torch.nn.functional.dropout(self.norm(x), 0.2, self.training))}

        def training_step(self, batch, batch_idx):
            label = (batch["y"][:, 0] > 0).long()
            return self.compute_loss(self(batch["x"]), {**batch, "label": label})

    model = Model()
    model.loss_preflight = preflight
    record = Recorder()
    trainer(max_steps=6, callbacks=[record]).fit(model, loader(24, 4))
    return record.values, [
        t.detach().clone() for t in model.state_dict().values() if isinstance(t, torch.Tensor)
    ]


def test_the_check_leaves_the_run_unchanged():
    """Batch-norm statistics, DWA's sums, the sampler's generator, dropout's stream: restored."""
    with_check, state_with = _fit_regressor(True)
    without, state_without = _fit_regressor(False)
    assert with_check == without
    assert all(torch.equal(a, b) for a, b in zip(state_with, state_without, strict=True))


def test_manual_optimization_takes_no_step_in_the_dry_run():
    def fit(preflight: bool) -> list[float]:
        L.seed_everything(1, verbose=False)
        loss = {
            "gen": {
                "adv": {
                    "type": "GANLoss",
                    "gan_type": "hinge",
                    "inputs": {"pred": "fake_score", "target_is_real": True},
                }
            },
            "disc": {
                "real": {
                    "type": "GANLoss",
                    "gan_type": "hinge",
                    "inputs": {"pred": "real_score", "target_is_real": True, "is_disc": True},
                },
                "r1": {
                    "type": "R1GradientPenalty",
                    "every": 4,
                    "inputs": {"discriminator": "disc", "real_data": "real"},
                },
            },
        }
        model = ToyGAN(loss, hidden=8)
        model.loss_preflight = preflight
        record = Recorder()
        trainer(max_steps=6, callbacks=[record]).fit(model, SyntheticRing(num_train=32, batch_size=8))
        return record.values

    assert fit(True) == fit(False)


def test_a_training_step_that_reads_the_last_result_works_in_the_dry_run():
    seen: list[object] = []

    class Reads(Regressor):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            seen.append(self.last_loss_result.total)  # the dry run's result too
            return loss

    model = Reads(terms={"reg": {"type": "L1Loss", "inputs": {"pred": "pred", "target": "y"}}}, lr=0.1)
    trainer(max_steps=2).fit(model, loader(16, 4))
    assert len(seen) == 3  # the dry run, then two steps
    assert model.last_loss_result is not None and model.last_loss_result.total is seen[-1]
