"""NonFiniteLossGuard with a term forced to NaN at a known step: raise, skip, zero."""

from __future__ import annotations

import copy
import sys

import lightning as L
import pytest
import torch

from lossmix import LossConfigError
from lossmix.lightning import NonFiniteLoss, NonFiniteLossGuard
from tests.lightning_models import Regressor, loader, trainer

TERMS = {
    "t0": {"type": "L1Loss", "inputs": {"pred": "pred", "target": "bad"}},
    "t1": {"type": "MSELoss", "inputs": {"pred": "pred", "target": "y"}},
}


class NaNAt(Regressor):
    """``t0``'s target is NaN on step ``nan_step``; Adam, so skipping must keep its state."""

    def __init__(self, nan_step: int = 2, terms: dict | None = None) -> None:
        super().__init__(terms=terms or TERMS, lr=0.01)
        self.nan_step = nan_step

    def training_step(self, batch, batch_idx):
        bad = batch["y"].clone()
        if self.loss_step() == self.nan_step:
            bad[0, 0] = float("nan")
        return self.compute_loss(self(batch["x"]), {**batch, "bad": bad})

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class Snapshots(L.Callback):
    """Parameters and Adam state after each step."""

    def __init__(self):
        self.params, self.states = [], []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.params.append({k: v.detach().clone() for k, v in pl_module.named_parameters()})
        opt = trainer.optimizers[0]
        self.states.append(copy.deepcopy(opt.state_dict()["state"]))


def test_raise_names_the_term_the_step_and_the_input_ranges():
    run = trainer(max_steps=4, callbacks=[NonFiniteLossGuard("raise")])
    with pytest.raises(NonFiniteLoss) as err:
        run.fit(NaNAt(nan_step=2), loader(16, 4))
    message = str(err.value)
    assert "step 2" in message and "term(s) t0." in message
    assert "t1" not in message.split("\n")[0]
    assert "t0.target: shape (4, 2)" in message and "non-finite 1" in message
    assert "t0.pred" in message
    assert "\n" not in message and err.value.step == 2 and err.value.terms == ("t0",)  # one line


def test_skip_leaves_parameters_and_adam_state_bitwise_unchanged():
    snaps, guard = Snapshots(), NonFiniteLossGuard("skip")
    run = trainer(max_steps=4, callbacks=[guard, snaps])
    with pytest.warns(UserWarning, match="skipped the optimizer step at step 2: non-finite t0"):
        run.fit(NaNAt(nan_step=2), loader(16, 4))
    assert guard.skipped == [(2, ["t0", "total"])]
    before, after = snaps.params[1], snaps.params[2]
    assert all(torch.equal(before[k], after[k]) for k in before)
    state_before, state_after = snaps.states[1], snaps.states[2]
    for i in state_before:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(state_before[i][key], state_after[i][key]), key
    assert not torch.equal(snaps.params[3]["net.weight"], after["net.weight"])  # trains on
    assert run.global_step == 4


def test_zero_drops_only_that_term_and_its_gradient():
    guard = NonFiniteLossGuard("zero")
    run = trainer(max_steps=1, callbacks=[guard])
    model = NaNAt(nan_step=0)
    with pytest.warns(UserWarning, match="dropped non-finite terms: t0 on 1 step"):
        run.fit(model, loader(4, 4))
    result = model.last_loss_result
    assert result.terms["t0"].item() == 0.0 and torch.isnan(result.raw["t0"])
    assert torch.equal(result.total, result.terms["t1"])
    # the step equals one taken on t1 alone
    alone = Regressor(terms={"t1": TERMS["t1"]}, lr=0.01)
    alone.configure_optimizers = lambda: torch.optim.Adam(alone.parameters(), lr=0.01)
    trainer(max_steps=1).fit(alone, loader(4, 4))
    for (name, p), q in zip(model.named_parameters(), alone.parameters(), strict=True):
        assert torch.isfinite(p).all(), name
        assert torch.equal(p, q), name


def test_zero_needs_no_host_sync_in_the_step(monkeypatch):
    """zero reads the host once per epoch (its report), like the logging; never per step."""
    calls = {"item": 0, "tolist": 0}
    originals = {name: getattr(torch.Tensor, name) for name in calls}

    def counting(name):
        def wrapper(self, *args, **kwargs):
            if sys._getframe(1).f_globals.get("__name__", "").startswith("lossmix"):
                calls[name] += 1
            return originals[name](self, *args, **kwargs)

        return wrapper

    for name in calls:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    run = trainer(max_epochs=2, log_every_n_steps=50, callbacks=[NonFiniteLossGuard("zero")])
    with pytest.warns(UserWarning, match="t0 on 1 step"):
        run.fit(NaNAt(nan_step=1), loader(12, 4))  # 2 epochs × 3 steps
    # per epoch: the logger's last-step and epoch-mean reads, and the guard's report
    assert calls == {"item": 0, "tolist": 6}


def test_unknown_policy_is_an_error():
    with pytest.raises(LossConfigError, match="policy='ignore'"):
        NonFiniteLossGuard("ignore")
