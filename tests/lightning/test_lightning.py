"""CompositeLoss in real Lightning runs (CPU): logged keys and values, epoch means, checkpoint
monitoring, manual optimization with groups, and no host syncs from lossmix in the steps."""

from __future__ import annotations

import csv
import sys

import lightning as L
import pytest
import torch

import lossmix
from lossmix import CompositeLoss
from lossmix.lightning import TermLogger
from tests.lightning_models import Pairs, Regressor, loader, regression_terms, trainer


def _hand_terms(model: Regressor, data: Pairs, rows: slice) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        pred = model.net(data.x[rows])
    y = data.y[rows]
    raw = {"t0": (pred - y).abs().mean(), "t1": ((pred - y) ** 2).mean()}
    terms = {"t0": 0.5 * raw["t0"], "t1": 1.5 * raw["t1"]}
    return {**terms, "total": terms["t0"] + terms["t1"]}


def _epoch_mean(model: Regressor, data: Pairs, batch_size: int) -> dict[str, float]:
    sums: dict[str, float] = {}
    for start in range(0, len(data), batch_size):
        rows = slice(start, min(start + batch_size, len(data)))
        n = rows.stop - rows.start
        for key, value in _hand_terms(model, data, rows).items():
            sums[key] = sums.get(key, 0.0) + float(value) * n
    return {k: v / len(data) for k, v in sums.items()}


def test_logged_train_and_val_values_equal_hand_computed_terms(tmp_path):
    model = Regressor()
    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="run")
    run = trainer(max_epochs=1, log_every_n_steps=1, logger=logger)
    run.fit(model, loader(12, 4), loader(10, 4, seed=1))  # last val batch has 2 rows
    metrics = run.callback_metrics
    # train step values: the last step (rows 8..12)
    last = _hand_terms(model, Pairs(12), slice(8, 12))
    assert metrics["train/loss"].item() == pytest.approx(float(last["total"]), rel=1e-5)
    for term in ("t0", "t1"):
        assert metrics[f"train/loss/{term}"].item() == pytest.approx(float(last[term]), rel=1e-5)
    # val epoch means weighted by batch size (4, 4, 2)
    val = _epoch_mean(model, Pairs(10, seed=1), 4)
    assert metrics["val/loss"].item() == pytest.approx(val["total"], rel=1e-5)
    for term in ("t0", "t1"):
        assert metrics[f"val/loss/{term}"].item() == pytest.approx(val[term], rel=1e-5)
    train = _epoch_mean(model, Pairs(12), 4)
    assert metrics["train/loss/t0_epoch"].item() == pytest.approx(train["t0"], rel=1e-5)
    # every key reached the CSV logger, with one row per train step
    rows = list(csv.DictReader(open(tmp_path / "run" / "version_0" / "metrics.csv")))
    assert {"train/loss/t0", "train/loss/t1", "val/loss/t0", "train/loss_epoch"} <= set(rows[0])
    assert len([r for r in rows if r["train/loss/t0"]]) == 3


def test_step_values_reach_loggers_only_at_logging_points(tmp_path):
    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="run")
    run = trainer(max_epochs=1, log_every_n_steps=2, logger=logger)
    run.fit(Regressor(), loader(24, 4))
    rows = list(csv.DictReader(open(tmp_path / "run" / "version_0" / "metrics.csv")))
    steps = [int(r["step"]) for r in rows if r["train/loss/t0"]]
    assert steps == [1, 3, 5]


def test_model_checkpoint_can_monitor_a_term(tmp_path):
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, monitor="val/loss/t1", mode="min")
    run = trainer(max_epochs=2, callbacks=[ckpt], enable_checkpointing=True)
    model = Regressor(lr=0.05)
    run.fit(model, loader(16, 4), loader(8, 4, seed=1))
    history = next(c for c in run.callbacks if isinstance(c, TermLogger)).history
    val = [value for _, value in history["val/loss/t1"]][-2:]  # the two epochs (not sanity)
    assert ckpt.best_model_score.item() == pytest.approx(min(val), rel=1e-6)
    state = torch.load(ckpt.best_model_path, weights_only=True)  # loads with the safe default
    assert "net.weight" in state["state_dict"]


def test_test_stage_logs_epoch_means():
    model = Regressor()
    run = trainer()
    (metrics,) = run.test(model, loader(10, 4, seed=2), verbose=False)
    expected = _epoch_mean(model, Pairs(10, seed=2), 4)
    assert metrics["test/loss/t0"] == pytest.approx(expected["t0"], rel=1e-5)
    assert metrics["test/loss"] == pytest.approx(expected["total"], rel=1e-5)


class TwoPlayer(CompositeLoss, L.LightningModule):
    """Manual optimization with a ``gen`` and a ``disc`` group."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.gen = torch.nn.Linear(4, 2)
        self.disc = torch.nn.Linear(2, 1)
        self.configure_loss(
            {
                "gen": {
                    "rec": {"type": "L1Loss", "inputs": {"pred": "fake", "target": "y"}},
                    "adv": {
                        "type": "MSELoss",
                        "loss_weight": 0.1,
                        "inputs": {"pred": "fake_score", "target": "ones"},
                    },
                },
                "disc": {
                    "real": {"type": "MSELoss", "inputs": {"pred": "real_score", "target": "ones"}},
                    "fake": {"type": "MSELoss", "inputs": {"pred": "fake_score", "target": "zeros"}},
                    "reg": {
                        "type": "L1Loss",
                        "every": 2,
                        "loss_weight": 0.01,
                        "inputs": {"pred": "real_score", "target": "zeros"},
                    },
                },
            }
        )

    def training_step(self, batch, batch_idx):
        opt_g, opt_d = self.optimizers()
        fake = self.gen(batch["x"])
        n = fake.shape[0]
        ones, zeros = torch.ones(n, 1), torch.zeros(n, 1)
        loss_g = self.compute_loss(
            {"fake": fake, "fake_score": self.disc(fake)}, {**batch, "ones": ones}, group="gen"
        )
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        loss_d = self.compute_loss(
            {"real_score": self.disc(batch["y"]), "fake_score": self.disc(fake.detach())},
            {"ones": ones, "zeros": zeros},
            group="disc",
        )
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()

    def configure_optimizers(self):
        return (
            torch.optim.SGD(self.gen.parameters(), lr=0.01),
            torch.optim.SGD(self.disc.parameters(), lr=0.01),
        )


def test_manual_optimization_with_groups_logs_each_group():
    run = trainer(max_epochs=1, log_every_n_steps=1)
    model = TwoPlayer()
    run.fit(model, loader(16, 4))
    keys = set(run.callback_metrics)
    assert {
        "train/loss/gen",
        "train/loss/gen/rec",
        "train/loss/gen/adv",
        "train/loss/disc",
        "train/loss/disc/real",
        "train/loss/disc/fake",
        "train/loss/disc/reg",
    } <= keys
    last = model.last_loss_result
    assert last.group == "disc"
    # 4 batches: the lazy regulariser ran on batches 0 and 2, so the last batch (3) skipped it;
    # its logged value is the one of the batch it last ran, never the skipped step's zero
    assert last.weights["reg"] == 0.0
    logged = run.callback_metrics["train/loss/disc/reg"].item()
    history = next(c for c in run.callbacks if isinstance(c, TermLogger)).history["train/loss/disc/reg"]
    assert logged > 0.0 and [v for _, v in history] == [history[0][1]] * 2 + [history[2][1]] * 2
    assert logged == history[-1][1]


def test_term_logger_is_installed_once():
    run = trainer(max_epochs=1)
    run.fit(Regressor(), loader(8, 4))
    assert sum(isinstance(c, TermLogger) for c in run.callbacks) == 1


def test_compute_loss_without_configure_loss_is_a_clear_error():
    class Bare(CompositeLoss, L.LightningModule):
        pass

    with pytest.raises(RuntimeError, match="configure_loss"):
        Bare().compute_loss({}, {})


def test_log_raw_adds_raw_values_and_weights():
    run = trainer(max_epochs=1, log_every_n_steps=1, callbacks=[TermLogger(log_raw=True)])
    run.fit(Regressor(), loader(8, 4))
    metrics = run.callback_metrics
    assert metrics["train/weight/t1"].item() == 1.5
    assert metrics["train/loss/t1"].item() == pytest.approx(1.5 * metrics["train/raw/t1"].item(), rel=1e-6)


def test_no_item_or_tolist_from_lossmix_inside_steps(monkeypatch):
    """lossmix reads the host only at logging points: once per interval and per epoch end."""
    calls = {"item": 0, "tolist": 0}
    originals = {name: getattr(torch.Tensor, name) for name in calls}

    def counting(name):
        def wrapper(self, *args, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("lossmix"):
                calls[name] += 1
            return originals[name](self, *args, **kwargs)

        return wrapper

    for name in calls:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    terms = {
        **regression_terms(3),
        "cls": {
            "type": "FocalLoss",
            "inputs": {"pred": "pred", "target": "label"},
            "sampler": {"type": "RandomSampler", "num": 2, "pos_fraction": 0.5},
            "normalizer": {"type": "num_pos", "sync": True},
        },
    }

    class WithLabels(Regressor):
        def training_step(self, batch, batch_idx):
            label = (batch["y"][:, 0] > 0).long()
            return self.compute_loss(self(batch["x"]), {**batch, "label": label})

    run = trainer(max_epochs=2, log_every_n_steps=5, num_sanity_val_steps=0)
    run.fit(WithLabels(terms=terms, lr=0.01), loader(40, 4))  # 10 steps per epoch
    # 20 steps: logging points at steps 5, 10, 15, 20 plus two epoch ends
    assert calls["item"] == 0
    assert calls["tolist"] == 6


def test_lossmix_imports_without_lightning_layer():
    assert "CompositeLoss" not in vars(lossmix)
    assert lossmix.CompositeLoss is CompositeLoss


@pytest.mark.parametrize("stop", [{"max_steps": 3}, {"max_epochs": 1}])
def test_short_run_leaves_last_step_values_in_callback_metrics(stop):
    model = Regressor()
    run = trainer(log_every_n_steps=50, **stop)
    run.fit(model, loader(16, 4))  # 4 batches per epoch; no logging point is reached
    rows = slice(8, 12) if stop.get("max_steps") == 3 else slice(12, 16)
    last = _hand_terms(model, Pairs(16), rows)
    for key, term in (("train/loss", "total"), ("train/loss/t0", "t0"), ("train/loss/t1", "t1")):
        assert run.callback_metrics[key].item() == pytest.approx(float(last[term]), rel=1e-5)
