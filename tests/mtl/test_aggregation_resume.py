"""Stopping mid-epoch and resuming from its checkpoint reproduces the uninterrupted run bit for
bit for the stateful methods: GradVac's cosine targets, DB-MTL's gradient average, GradDrop's
generator, FAMO's logits and Adam moments, RLW's generator."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from tests.aggregation_models import SharedTrunk
from tests.lightning.test_resume import SameBatch
from tests.lightning_models import trainer

STOP, END = 4, 9  # mid-epoch 1 (3 steps an epoch), to the end of epoch 2: as tests/lightning/test_resume.py

METHODS = {
    "gradvac": {"aggregation": {"type": "gradvac", "beta": 0.5, "over": "shared", "module": "trunk"}},
    "db_mtl": {"aggregation": {"type": "db_mtl", "beta": 0.5, "over": "shared", "module": "trunk"}},
    "graddrop": {"aggregation": {"type": "graddrop", "over": "shared", "module": "trunk", "seed": 5}},
    "famo": {"weighting": {"type": "famo", "lr": 0.1}},
    "rlw": {"weighting": {"type": "rlw", "seed": 2}},
}


class Record(L.Callback):
    def __init__(self) -> None:
        self.params: dict[int, list[torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.params[trainer.global_step] = [p.detach().clone() for p in pl_module.parameters()]


def fit(kwargs: dict, max_steps: int, callbacks: list, ckpt_path=None, **extra) -> SharedTrunk:
    L.seed_everything(0, verbose=False)
    model = SharedTrunk(**kwargs)
    run = trainer(max_steps=max_steps, callbacks=callbacks, deterministic=True, **extra)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended")
        run.fit(model, DataLoader(SameBatch(), batch_size=4), ckpt_path=ckpt_path)
    return model


@pytest.mark.parametrize("method", list(METHODS))
def test_resume_reproduces_the_uninterrupted_run(tmp_path, method):
    kwargs = METHODS[method]
    full = Record()
    whole = fit(kwargs, END, [full])
    ckpt = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path, every_n_train_steps=STOP, save_last=True, save_top_k=-1
    )
    fit(kwargs, STOP, [ckpt], enable_checkpointing=True)
    resumed = Record()
    again = fit(kwargs, END, [resumed], ckpt_path=str(tmp_path / "last.ckpt"))
    assert sorted(resumed.params) == list(range(STOP + 1, END + 1))
    for step in range(STOP + 1, END + 1):
        for a, b in zip(full.params[step], resumed.params[step], strict=True):
            assert torch.equal(a, b), (method, step)
    state, restored = whole.loss_mix.state_dict(), again.loss_mix.state_dict()
    assert state.keys() == restored.keys()
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, restored[key]), key
    moved = [
        k
        for k, v in state.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and v.abs().sum() > 0
    ]
    assert moved or method in ("graddrop", "rlw"), "the method's state must have moved"
