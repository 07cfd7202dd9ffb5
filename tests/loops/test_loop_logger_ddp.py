"""LoopLogger under torch.distributed (2 CPU processes, gloo): one collective per logging point
and per epoch end for every key together; values averaged (steps) and batch-weighted (epochs)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lossmix import LossMix
from lossmix.loops import LoopLogger
from lossmix.utilities.distributed import collective_count

NODE = {
    "a": {"type": "L1Loss", "inputs": {"pred": "p", "target": "y"}},
    "b": {"type": "MSELoss", "every": 2, "inputs": {"pred": "p", "target": "y"}},
}


def _worker(rank: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        mix = LossMix.from_config(NODE)
        sent: list[dict[str, float]] = []
        logger = LoopLogger(sent.append, every=2)
        before = collective_count()
        for step in range(4):
            value = torch.full((rank + 1,), float(step + rank))  # rank 1: twice the rows
            logger.update(
                mix({"p": value}, {"y": torch.zeros(rank + 1)}, step=step), step=step, batch_size=rank + 1
            )
        epoch = logger.end_epoch()
        result = {"sent": sent, "epoch": epoch, "collectives": collective_count() - before}
        with open(f"{out}.{rank}", "w") as handle:
            json.dump(result, handle)
    finally:
        dist.destroy_process_group()


def test_one_collective_per_read_and_exact_means(tmp_path):
    init = f"file://{tmp_path / 'init'}"
    mp.spawn(_worker, args=(init, str(tmp_path / "out")), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"out.{r}").read_text()) for r in range(2)]
    assert results[1]["sent"] == [] and results[0]["epoch"] == results[1]["epoch"]  # sinks: rank 0 only
    zero = results[0]
    assert zero["collectives"] == 3  # two logging points and one epoch end
    # step 1 and 3: the ranks' a-values (step, step + 1) averaged
    assert [s["train/loss/a"] for s in zero["sent"] if "train/loss/a" in s] == [1.5, 3.5]
    # epoch mean of a, weighted by rows: rank 0 rows 1 × (0+1+2+3), rank 1 rows 2 × (1+2+3+4)
    assert zero["epoch"]["train/loss/a_epoch"] == pytest.approx((6 + 2 * 10) / (4 + 8))
    # b ran at steps 0 and 2 only (weight × 2): MSE values step², (step + 1)²
    b = (2 * (0 + 4) + 2 * 2 * (1 + 9)) / (2 + 4)
    assert zero["epoch"]["train/loss/b_epoch"] == pytest.approx(b)
