"""DDP, 2 CPU processes (gloo, ddp_fork), one spawn: a NaN on rank 1 only makes both ranks
skip the same step, and the learned (uncertainty) weights stay identical on every rank."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from lossmix.lightning import NonFiniteLossGuard
from tests.lightning_models import Regressor, loader

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)
NAN_STEP = 1


class NaNOnRank1(Regressor):
    def __init__(self) -> None:
        terms = {
            "small": {"type": "MSELoss", "inputs": {"pred": "pred", "target": "bad"}},
            "large": {"type": "L1Loss", "loss_weight": 10.0, "inputs": {"pred": "pred", "target": "y"}},
            "weighting": {"type": "uncertainty"},
        }
        super().__init__(terms=terms, lr=0.05)

    def training_step(self, batch, batch_idx):
        bad = batch["y"].clone()
        if self.global_rank == 1 and self.loss_step() == NAN_STEP:
            bad[0, 0] = float("nan")
        return self.compute_loss(self(batch["x"]), {**batch, "bad": bad})

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class Dump(L.Callback):
    def __init__(self, out: str) -> None:
        self.out, self.params = out, []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.params.append([p.detach().flatten().tolist() for p in pl_module.parameters()])

    def on_fit_end(self, trainer, pl_module):
        guard = next(c for c in trainer.callbacks if isinstance(c, NonFiniteLossGuard))
        Path(self.out, f"rank{trainer.global_rank}.json").write_text(
            json.dumps(
                {
                    "params": self.params,
                    "skipped": guard.skipped,
                    "log_vars": pl_module.loss_mix.weighting.log_vars.detach().tolist(),
                }
            )
        )


def test_guard_decision_and_learned_weights_are_shared(tmp_path):
    run = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_fork",
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[NonFiniteLossGuard("skip"), Dump(str(tmp_path))],
    )
    run.fit(NaNOnRank1(), loader(24, 4))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["skipped"] == [[NAN_STEP, []]]  # decided with rank 1
    assert ranks[1]["skipped"] == [[NAN_STEP, ["small", "total"]]]
    for rank in ranks:
        assert rank["params"][NAN_STEP] == rank["params"][NAN_STEP - 1]  # skipped on both
        assert rank["params"][-1] != rank["params"][NAN_STEP]  # and trained on
    assert ranks[0]["params"] == ranks[1]["params"]  # identical every step
    assert ranks[0]["log_vars"] == ranks[1]["log_vars"] != [0.0, 0.0]


class GradNormModel(Regressor):
    def __init__(self) -> None:
        terms = {
            "small": {"type": "MSELoss", "inputs": {"pred": "pred", "target": "y"}},
            "large": {"type": "L1Loss", "loss_weight": 10.0, "inputs": {"pred": "pred", "target": "y"}},
            "weighting": {"type": "gradnorm", "shared": "net", "alpha": 1.5},
        }
        super().__init__(terms=terms, lr=0.05)


class DumpWeights(L.Callback):
    def __init__(self, out: str) -> None:
        self.out, self.weights = out, []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.weights.append(pl_module.loss_mix.weighting.weights.detach().tolist())

    def on_fit_end(self, trainer, pl_module):
        Path(self.out, f"gradnorm{trainer.global_rank}.json").write_text(
            json.dumps(
                {
                    "weights": self.weights,
                    "final": pl_module.loss_mix.weighting.weights.detach().tolist(),
                    "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
                }
            )
        )


def test_gradnorm_weights_and_gradient_monitor_under_ddp(tmp_path):
    from lossmix.lightning import TermGradientMonitor

    run = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_fork",
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        callbacks=[TermGradientMonitor(every_n_steps=1), DumpWeights(str(tmp_path))],
    )
    run.fit(GradNormModel(), loader(24, 4, seed=3))
    ranks = [json.loads((tmp_path / f"gradnorm{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["weights"] == ranks[1]["weights"]  # identical on every rank
    assert ranks[0]["weights"][-1] != [1.0, 1.0]  # and actually learned
    assert ranks[0]["final"] == ranks[1]["final"]
    assert sum(ranks[0]["final"]) == pytest.approx(2.0)  # renormalised to Σw = K
    for rank in ranks:
        assert {"train/grad_norm/small", "train/grad_norm/large"} <= set(rank["metrics"])
        assert rank["metrics"]["train/grad_norm/large"] > 0


class DumpDrops(L.Callback):
    def __init__(self, out: str) -> None:
        self.out = out

    def on_fit_end(self, trainer, pl_module):
        guard = next(c for c in trainer.callbacks if isinstance(c, NonFiniteLossGuard))
        Path(self.out, f"drops{trainer.global_rank}.json").write_text(json.dumps(guard.dropped))


def test_a_term_dropped_on_one_rank_is_reported_from_all_ranks(tmp_path):
    """zero: the NaN on rank 1 is counted by every rank's report (gathered once per epoch)."""
    run = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_fork",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[NonFiniteLossGuard("zero"), DumpDrops(str(tmp_path))],
    )
    run.fit(NaNOnRank1(), loader(24, 4))
    drops = [json.loads((tmp_path / f"drops{r}.json").read_text()) for r in range(2)]
    assert drops[0] == drops[1]  # rank 0 had no NaN, and reports rank 1's
    assert any(d.startswith(f"small on 1 step(s) over all ranks from step {NAN_STEP}") for d in drops[0])
