"""DDP with 2 CPU processes (gloo, ddp_fork): epoch values are means over both ranks' samples,
and lossmix's collectives per logging point do not grow with the number of terms."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from lossmix.lightning.term_logger import collective_count
from tests.lightning_models import Pairs, Regressor, loader, regression_terms

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)


class CountCollectives(L.Callback):
    """Each rank writes how many collectives lossmix issued during fit."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.before = 0

    def on_fit_start(self, trainer, pl_module):
        # the count is per process, and a forked rank starts with its parent's count (the
        # collectives of the tests run before this one in the same pytest process)
        self.before = collective_count()

    def on_fit_end(self, trainer, pl_module):
        path = Path(self.out) / f"rank{trainer.global_rank}.json"
        issued = collective_count() - self.before
        path.write_text(json.dumps({"collectives": issued, "world": torch.distributed.get_world_size()}))


def _fit(tmp_path: Path, k: int) -> tuple[dict, list[dict]]:
    out = tmp_path / f"k{k}"
    out.mkdir()
    run = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_fork",
        max_epochs=1,
        log_every_n_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[CountCollectives(str(out))],
    )
    run.fit(Regressor(terms=regression_terms(k)), loader(16, 4), loader(16, 4, seed=1))
    metrics = {k: v.item() for k, v in run.callback_metrics.items()}
    counts = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return metrics, counts


def test_ddp_epoch_means_and_collective_count(tmp_path):
    _, counts_1 = _fit(tmp_path, 1)
    metrics_8, counts_8 = _fit(tmp_path, 8)
    assert all(c["world"] == 2 for c in counts_1 + counts_8)

    # every rank saw different samples; the logged epoch value is the mean over all 16
    model = Regressor(terms=regression_terms(8))
    data = Pairs(16, seed=1)
    with torch.no_grad():
        pred = model.net(data.x)
    expected_t0 = 0.5 * (pred - data.y).abs().mean().item()
    expected_t1 = 1.5 * ((pred - data.y) ** 2).mean().item()
    assert metrics_8["val/loss/t0"] == pytest.approx(expected_t0, rel=1e-5)
    assert metrics_8["val/loss/t1"] == pytest.approx(expected_t1, rel=1e-5)
    train = Pairs(16)
    with torch.no_grad():
        pred = model.net(train.x)
    assert metrics_8["train/loss/t0_epoch"] == pytest.approx(
        0.5 * (pred - train.y).abs().mean().item(), rel=1e-5
    )

    # one collective per logging point, whatever the number of terms:
    # 2 train steps per rank (each a logging point) + train epoch end + val epoch end
    assert [c["collectives"] for c in counts_1] == [4, 4]
    assert [c["collectives"] for c in counts_8] == [4, 4]
