"""The main job with ``trainer=ddp_spawn`` and ``trainer=ddp``: 2 CPU processes (gloo) on a
tiny run. With plain ``ddp`` Lightning re-launches the Hydra app for rank 1 into the same run
directory."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp"])
def test_ddp_run_logs_every_term_once(tmp_path, strategy):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lossmix.train",
            f"hydra.run.dir={run_dir}",
            f"trainer={strategy}",
            "trainer.accelerator=cpu",
            "trainer.max_epochs=1",
            "data.num_train=32",
            "data.num_val=16",
            "data.batch_size=8",
            "trainer.log_every_n_steps=1",
            "trainer.enable_progress_bar=false",
        ],
        capture_output=True,
        text=True,
        timeout=1800,  # s: sized for a machine several times slower than CI
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
    keys = set(rows[0])
    assert {"train/loss/cls", "train/loss/reg", "train/loss/ctr", "val/loss/cls"} <= keys
    # 32 samples / 2 ranks / batch 8 = 2 steps, each a logging point written once (rank 0)
    assert len([r for r in rows if r["train/loss/cls"]]) == 2
    assert (run_dir / "loss_curves.png").is_file()
    assert "share of |total|" in done.stdout
    # the summary's train column is filled (ddp_spawn: sent back from the ranks)
    row = next(line for line in done.stdout.splitlines() if line.strip("│┃ ").startswith("cls "))
    cells = [c.strip() for c in row.strip("│┃").split("│")]
    assert cells[0] == "cls" and float(cells[3]) > 0, row
    if strategy == "ddp":  # rank 1 was a re-launched copy of the app, in the same directory
        assert (run_dir / "train_ddp_process_1.log").is_file()
