"""Stopping at step k and resuming from its checkpoint reproduces the uninterrupted run's
per-term values bit for bit (CPU, deterministic): schedules, DWA history, a sampler's
generator, Adam and the TermLogger history all come back."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from lossmix.lightning import LossSchedule, TermLogger
from tests.lightning_models import Regressor, trainer

STEPS_PER_EPOCH, K, N = 3, 4, 9  # stop mid-epoch 1; run to the end of epoch 2


class SameBatch(Dataset):
    """Every batch is the same four rows, so a mid-epoch resume (which replays the
    non-resumable loader from the epoch start) sees the data the uninterrupted run saw."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(4, 4, generator=gen), torch.randn(4, 2, generator=gen)

    def __len__(self) -> int:
        return 4 * STEPS_PER_EPOCH

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i % 4], "y": self.y[i % 4]}


TERMS = {
    "reg": {"type": "L1Loss", "inputs": {"pred": "pred", "target": "y"}},
    "mse": {"type": "MSELoss", "loss_weight": 2.0, "inputs": {"pred": "pred", "target": "y"}},
    "cls": {
        "type": "FocalLoss",
        "inputs": {"pred": "pred", "target": "label"},
        "sampler": {"type": "RandomSampler", "num": 2, "pos_fraction": 0.5},
    },
    "weighting": {"type": "dwa", "temperature": 2.0},
}


class Model(Regressor):
    def __init__(self) -> None:
        super().__init__(terms=TERMS, lr=0.05)

    def training_step(self, batch, batch_idx):
        label = (batch["y"][:, 0] > 0).long()
        return self.compute_loss(self(batch["x"]), {**batch, "label": label})

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class Record(L.Callback):
    def __init__(self) -> None:
        self.steps: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, *args):
        result = pl_module.last_loss_result
        values = {
            **{f"term/{k}": v for k, v in result.terms.items()},
            **{f"raw/{k}": v for k, v in result.raw.items()},
            **{f"weight/{k}": torch.as_tensor(w) for k, w in result.weights.items()},
        }
        self.steps[trainer.global_step - 1] = {k: v.detach().clone() for k, v in values.items()}


def _schedule() -> LossSchedule:
    return LossSchedule(
        {
            "reg": {"kind": "linear", "by": "step", "begin": 0, "end": 8},
            "mse": {"kind": "onoff", "by": "epoch", "on": 1},
        }
    )


def _fit(max_steps: int, callbacks: list, ckpt_path=None, **kwargs) -> Model:
    L.seed_everything(0, verbose=False)
    model = Model()
    run = trainer(max_steps=max_steps, log_every_n_steps=1, deterministic=True, callbacks=callbacks, **kwargs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended")
        run.fit(model, DataLoader(SameBatch(), batch_size=4), ckpt_path=ckpt_path)
    return model


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    full = Record()
    _fit(N, [_schedule(), full])

    ckpt = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path, every_n_train_steps=K, save_last=True, save_top_k=-1
    )
    _fit(K, [_schedule(), ckpt], enable_checkpointing=True)
    path = tmp_path / "last.ckpt"
    state = torch.load(path, weights_only=True)  # plain containers only
    assert state["global_step"] == K
    assert any(k.endswith("weighting.epoch_sum") for k in state["state_dict"])

    logger = TermLogger()
    resumed = Record()
    _fit(N, [_schedule(), resumed, logger], ckpt_path=str(path))
    assert sorted(resumed.steps) == list(range(K, N))
    for step in range(K, N):
        for key, value in full.steps[step].items():
            assert torch.equal(resumed.steps[step][key], value), (step, key)
    # the weights really moved: the ramp, the epoch switch and DWA's λ after two epochs
    assert full.steps[2]["weight/mse"].item() == 0.0 < full.steps[3]["weight/mse"].item()
    assert full.steps[5]["weight/reg"].item() != full.steps[6]["weight/reg"].item()
    assert full.steps[8]["weight/cls"].item() != 1.0
    # the curves' history came back too: steps before K are in the resumed logger
    assert logger.history["train/loss/reg"][0][0] == 1.0


@pytest.mark.parametrize("key", ["schedules", "values"])
def test_schedule_state_is_checkpointed(tmp_path, key):
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    schedule = _schedule()
    _fit(2, [schedule, ckpt], enable_checkpointing=True)
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert key in state["callbacks"][schedule.state_key]
