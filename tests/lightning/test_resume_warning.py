"""A mid-epoch resume whose training loader would replay the epoch from its start warns once
(``InexactResumeWarning``: what differs, the fix), in place of Lightning's generic warning; a
``ResumableSampler`` or an epoch-end checkpoint resumes exactly and warns about nothing."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
from torch.utils.data import DataLoader

from lossmix.lightning.callbacks import resume
from lossmix.lightning.callbacks.resume import DataPosition, InexactResumeWarning, ResumableSampler
from lossmix.utilities.compat import LIGHTNING_MID_EPOCH_WARNING
from tests.lightning_models import Pairs, Regressor, regression_terms, trainer

BATCH, STEPS_PER_EPOCH = 4, 3
CHECKPOINTS = {  # name: (ModelCheckpoint arguments, the file's ending, the step it holds)
    "mid-epoch": ({"every_n_train_steps": 4}, "step=4.ckpt", 4),
    "epoch end": ({"every_n_epochs": 1, "save_on_train_epoch_end": True}, "epoch=1-step=6.ckpt", 6),
}
LOADERS = {
    "shuffled": lambda data: DataLoader(data, batch_size=BATCH, shuffle=True),
    "in order": lambda data: DataLoader(data, batch_size=BATCH),
    "resumable": lambda data: DataLoader(data, batch_size=BATCH, sampler=ResumableSampler(len(data), seed=1)),
}


def _fit(kind: str, max_steps: int, ckpt_args: dict | None = None, ckpt_path: str | None = None, **kw):
    """Fit a tiny regressor on ``kind``'s loader; the warnings it raised, every one recorded."""
    L.seed_everything(0, verbose=False)
    run = trainer(max_steps=max_steps, enable_checkpointing=ckpt_args is not None, **kw)
    if ckpt_args is not None:
        run.callbacks.append(
            L.pytorch.callbacks.ModelCheckpoint(filename="{epoch}-{step}", save_top_k=-1, **ckpt_args)
        )
    model = Regressor(terms=regression_terms(1), lr=0.05)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.fit(model, LOADERS[kind](Pairs(BATCH * STEPS_PER_EPOCH)), ckpt_path=ckpt_path)
    return caught


def _resume(tmp_path: Path, kind: str, where: str):
    arguments, ending, step = CHECKPOINTS[where]
    _fit(kind, step, {"dirpath": tmp_path, **arguments})
    path = next(p for p in tmp_path.iterdir() if p.name.endswith(ending))
    return _fit(kind, 8, ckpt_path=str(path))


def _about_resuming(caught) -> tuple[list[str], list[str]]:
    ours = [str(w.message) for w in caught if issubclass(w.category, InexactResumeWarning)]
    lightnings = [str(w.message) for w in caught if str(w.message).startswith(LIGHTNING_MID_EPOCH_WARNING)]
    return ours, lightnings


@pytest.mark.parametrize("kind", ["shuffled", "in order"])
def test_a_plain_loader_resumed_mid_epoch_warns_once(tmp_path, kind):
    filters = list(warnings.filters)
    ours, lightnings = _about_resuming(_resume(tmp_path, kind, "mid-epoch"))
    assert len(ours) == 1, ours
    assert lightnings == []  # Lightning's vaguer one is replaced, not added to
    sampler = "RandomSampler" if kind == "shuffled" else "SequentialSampler"
    assert "middle of epoch 1 (after 1 of its batches)" in ours[0]
    assert f"cannot continue where the checkpoint stopped (its sampler: {sampler};" in ours[0]
    assert (
        "sampler=lossmix.lightning.callbacks.resume.ResumableSampler(len(dataset), shuffle=..., seed=...)"
        in ours[0]
    )
    assert "or resume from an epoch-end checkpoint" in ours[0]
    assert warnings.filters == filters  # Lightning's warning is hidden for the resume only


@pytest.mark.parametrize(("kind", "where"), [("resumable", "mid-epoch"), ("shuffled", "epoch end")])
def test_an_exact_resume_warns_about_nothing(tmp_path, kind, where):
    assert _about_resuming(_resume(tmp_path, kind, where)) == ([], [])


def test_a_fresh_fit_does_not_warn():
    assert _about_resuming(_fit("shuffled", 4)) == ([], [])


def test_under_ddp_only_rank_zero_warns_and_the_fix_is_an_epoch_end_checkpoint(monkeypatch):
    monkeypatch.setattr(resume, "close_epoch_ended_in_checkpoint", lambda trainer: False)
    monkeypatch.setattr(resume, "resumed_mid_epoch", lambda trainer: 2)
    loader = LOADERS["shuffled"](Pairs(12))
    for global_zero, expected in ((False, 0), (True, 1)):
        fake = SimpleNamespace(
            train_dataloader=loader, is_global_zero=global_zero, current_epoch=3, world_size=2
        )
        callback = DataPosition()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            callback.on_train_start(fake, None)
            callback.on_train_end(fake, None)
        ours = [str(w.message) for w in caught if issubclass(w.category, InexactResumeWarning)]
        assert len(ours) == expected
    assert "middle of epoch 3 (after 2 of its batches)" in ours[0]
    # Lightning's distributed sampler wraps a ResumableSampler too: it would not help
    assert "resume from an epoch-end checkpoint for an exact run" in ours[0]
    assert "sampler=lossmix" not in ours[0]


def test_each_loader_of_a_collection_is_checked():
    data = Pairs(12)
    exact = LOADERS["resumable"](data)
    assert resume._inexact_samplers(exact) == []
    assert resume._inexact_samplers([exact, LOADERS["in order"](data)]) == [
        "ResumableSampler",
        "SequentialSampler",
    ]
    # a dict of loaders has no one batch size to skip by, so even its ResumableSampler replays
    assert resume._inexact_samplers({"a": exact}) == ["ResumableSampler"]
