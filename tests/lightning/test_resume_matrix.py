"""Resume from any checkpoint, bit for bit on CPU: mid-epoch, at an epoch's last batch, at an
epoch's end; with the data shuffled or in order; with a random sampler, a weight schedule, DWA
and dropout (the global random stream) in the run."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lossmix.lightning import LossSchedule, TermLogger
from lossmix.lightning.callbacks.resume import ResumableSampler
from tests.lightning import test_resume
from tests.lightning_models import Pairs, Regressor, trainer

STEPS_PER_EPOCH, BATCH, N = 3, 4, 12  # 4 epochs
# test_resume's terms (a random sampler, DWA), with a larger sample
TERMS = {
    **test_resume.TERMS,
    "cls": {**test_resume.TERMS["cls"], "sampler": {"type": "RandomSampler", "num": 3, "pos_fraction": 0.5}},
}


class Model(Regressor):
    def __init__(self) -> None:
        super().__init__(terms=TERMS, lr=0.05)
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pred": self.net(self.drop(x))}

    def training_step(self, batch, batch_idx):
        label = (batch["y"][:, 0] > 0).long()
        return self.compute_loss(self(batch["x"]), {**batch, "label": label})

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class Record(L.Callback):
    def __init__(self) -> None:
        self.steps: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        result = pl_module.last_loss_result
        values = {
            **{f"term/{k}": v for k, v in result.terms.items()},
            **{f"weight/{k}": torch.as_tensor(w) for k, w in result.weights.items()},
            "batch/x": batch["x"],
        }
        self.steps[trainer.global_step - 1] = {k: v.detach().clone() for k, v in values.items()}


def _schedule() -> LossSchedule:
    return LossSchedule(
        {
            "reg": {"kind": "linear", "by": "step", "begin": 0, "end": 8, "initial": 0.2},
            "mse": {"kind": "onoff", "by": "epoch", "on": 1},
        }
    )


def _loader(shuffle: bool) -> DataLoader:
    data = Pairs(BATCH * STEPS_PER_EPOCH, seed=3)
    # the loader's own generator: creating an iterator then draws nothing from the global stream
    return DataLoader(
        data,
        batch_size=BATCH,
        sampler=ResumableSampler(len(data), shuffle=shuffle, seed=7),
        generator=torch.Generator(),
    )


def _fit(max_steps: int, callbacks: list, shuffle: bool, ckpt_path=None, **kwargs):
    L.seed_everything(0, verbose=False)
    model = Model()
    logger = TermLogger()
    run = trainer(
        max_steps=max_steps,
        log_every_n_steps=1,
        deterministic=True,
        callbacks=[_schedule(), logger, *callbacks],
        **kwargs,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint")
        run.fit(model, _loader(shuffle), ckpt_path=ckpt_path)
    return model, logger


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


CHECKPOINTS = {
    # name: (ModelCheckpoint arguments, the file, the step it holds)
    "mid-epoch": ({"every_n_train_steps": 4}, "step=4.ckpt", 4),
    "last batch": ({"every_n_train_steps": 6}, "step=6.ckpt", 6),
    "epoch end": ({"every_n_epochs": 1, "save_on_train_epoch_end": True}, "epoch=1-step=6.ckpt", 6),
}


@pytest.mark.parametrize("shuffle", [True, False], ids=["shuffle", "in order"])
@pytest.mark.parametrize("where", sorted(CHECKPOINTS))
def test_resume_from_any_checkpoint_is_bit_identical(tmp_path, where, shuffle):
    full = Record()
    full_model, full_logger = _fit(N, [full], shuffle)

    arguments, name, step = CHECKPOINTS[where]
    ckpt = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path, filename="{epoch}-{step}", save_top_k=-1, **arguments
    )
    _fit(step, [ckpt], shuffle, enable_checkpointing=True)
    path = next(p for p in tmp_path.iterdir() if p.name.endswith(name))
    torch.load(path, weights_only=True)  # plain containers only

    resumed = Record()
    resumed_model, resumed_logger = _fit(N, [resumed], shuffle, ckpt_path=str(path))
    assert sorted(resumed.steps) == list(range(step, N))
    for at in range(step, N):
        for key, value in full.steps[at].items():
            assert torch.equal(resumed.steps[at][key], value), (where, at, key)
    for (name_a, a), (_, b) in zip(
        full_model.state_dict().items(), resumed_model.state_dict().items(), strict=True
    ):
        assert _same(a, b), name_a
    # the epoch means of the curves: every epoch, every batch in it, as in the full run
    for key in ("train/loss/reg_epoch", "train/loss/cls_epoch"):
        assert resumed_logger.history[key] == full_logger.history[key], key
    # the weights really moved: the ramp, the epoch switch and DWA's λ
    assert full.steps[2]["weight/mse"].item() == 0.0 < full.steps[3]["weight/mse"].item()
    assert full.steps[9]["weight/cls"].item() != 1.0


def test_the_shuffle_order_is_the_epochs_own():
    sampler = ResumableSampler(10, seed=1)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    assert len({tuple(o) for o in orders}) == 3 and all(sorted(o) == list(range(10)) for o in orders)
    torch.manual_seed(123)  # the global stream does not matter
    sampler.set_epoch(1)
    assert list(sampler) == orders[1]
    sampler.skip(4)
    assert list(sampler) == orders[1][4:]
    assert list(sampler) == orders[1]  # the skip is for one iteration only
