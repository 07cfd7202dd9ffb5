"""DDP with 2 CPU processes (gloo, ddp_fork) and gradient accumulation: both ranks hold identical
parameters, equal (to 1e-6, float64) to one process on the concatenated batch, for one method of
each mode (and, without accumulation, one process taking the Gramian engine's route); and the
aggregation costs one collective per optimizer step (shared) or per micro-batch (representation)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Sampler

from lossmix.utilities.distributed import collective_count, rank, world_size
from tests.aggregation_models import SharedTrunk
from tests.lightning_models import Pairs

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)
STEPS, WINDOW, BATCH = 3, 2, 4


class Interleaved(Sampler[int]):
    """Rank r reads rows r, r + W, r + 2W, ...: its batch m and the other ranks' batch m make up
    rows m·W·B ... (m+1)·W·B − 1, the one-process batch m (Lightning's own sampler shuffles)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        return iter(range(rank(), self.n, world_size()))

    def __len__(self) -> int:
        return self.n // world_size()


class Dump(L.Callback):
    """Each rank writes its parameters and lossmix's collective count at each optimizer step."""

    def __init__(self, out: str) -> None:
        self.out, self.counts = out, []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.counts.append(collective_count())

    def on_fit_end(self, trainer, pl_module):
        params = [p.detach().flatten().tolist() for p in pl_module.parameters()]
        rank = trainer.global_rank
        Path(self.out, f"rank{rank}.json").write_text(json.dumps({"params": params, "counts": self.counts}))


def run(aggregation: dict, devices: int, batch: int, out: Path, window: int = WINDOW) -> None:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_fork" if devices > 1 else "auto",
        max_steps=STEPS,
        accumulate_grad_batches=window,
        log_every_n_steps=1000,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Dump(str(out))],
        use_distributed_sampler=False,
    )
    n = 2 * STEPS * window * BATCH
    data = DataLoader(Pairs(n), batch_size=batch, sampler=Interleaved(n))
    trainer.fit(SharedTrunk(aggregation, dtype=torch.float64), data)


@pytest.mark.parametrize(
    "aggregation, window, per_step",
    [
        ({"type": "upgrad", "over": "shared", "module": "trunk"}, WINDOW, 1),
        ({"type": "aligned_mtl", "over": "representation", "input": "features"}, WINDOW, WINDOW),
        ({"type": "mgda", "over": "shared", "module": "trunk"}, 1, 1),  # one process: the Gramian engine
    ],
    ids=["shared-upgrad", "representation-aligned_mtl", "shared-mgda-no-accumulation"],
)
def test_ranks_agree_with_each_other_and_with_one_process_on_the_whole_batch(
    tmp_path, aggregation, window, per_step
):
    (tmp_path / "ddp").mkdir()
    (tmp_path / "one").mkdir()
    run(aggregation, 2, BATCH, tmp_path / "ddp", window)
    run(aggregation, 1, 2 * BATCH, tmp_path / "one", window)
    ranks = [json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in range(2)]
    single = json.loads((tmp_path / "one" / "rank0.json").read_text())
    assert ranks[0]["params"] == ranks[1]["params"]  # bit for bit
    for got, want in zip(ranks[0]["params"], single["params"], strict=True):
        torch.testing.assert_close(torch.tensor(got), torch.tensor(want), atol=1e-6, rtol=0)
    start = SharedTrunk(dtype=torch.float64)
    assert ranks[0]["params"][0] != start.trunk[0].weight.flatten().tolist()  # it trained
    for dumped in ranks:  # one collective per optimizer step (shared) or per micro-batch (representation)
        steps = [b - a for a, b in zip(dumped["counts"], dumped["counts"][1:], strict=False)]
        assert steps == [per_step] * (STEPS - 1)
