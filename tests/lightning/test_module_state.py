"""``CompositeLoss``'s state is one object (``LossState``), changed by two context managers.

A probe (FAMO's re-evaluation) silences ``self.log`` without replacing the module's
methods; a dry run (the pre-flight batch) computes without logging and nests.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from lossmix import CompositeLoss
from lossmix.lightning import LossState
from lossmix.lightning.access import dry_run_of


class Probed(CompositeLoss, pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(3, 1)
        self.configure_loss({"a": {"type": "L1Loss", "inputs": {"pred": "y", "target": "t"}}})

    def training_step(self, batch, batch_idx):
        loss = self.compute_loss({"y": self.net(batch["x"])}, batch, stage="train")
        self.log("extra", loss)
        return loss


def test_a_probe_silences_logging_without_patching_the_module(monkeypatch):
    model = Probed()
    calls: list[str] = []
    monkeypatch.setattr(pl.LightningModule, "log", lambda self, name, *a, **k: calls.append(name))
    batch = {"x": torch.randn(4, 3), "t": torch.randn(4, 1)}
    losses = model.reevaluate_tasks(batch, 0)
    assert calls == []  # the step's own self.log was silent
    assert "log" not in vars(model) and "log_dict" not in vars(model)  # nothing patched
    assert model.loss_state == LossState()  # the probe left no state behind
    assert losses is None  # no weighting: no task losses
    model.log("after", 1.0)
    assert calls == ["after"]


def test_a_dry_run_nests_and_restores(monkeypatch):
    model = Probed()
    assert not model.loss_state.dry_run
    with dry_run_of(model):
        assert model.loss_state.dry_run
        with model.loss_dry_run():
            assert model.loss_state.dry_run
        assert model.loss_state.dry_run
    assert not model.loss_state.dry_run
    with dry_run_of(torch.nn.Linear(1, 1)):  # another module: nothing to do
        pass
