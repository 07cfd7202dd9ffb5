"""A checkpoint written by an earlier lossmix still resumes, step for step.

``fixtures/before_relayout.pt`` (60 KB) is the app's mid-epoch checkpoint at step 6 of the
run below, written before the package's modules moved (callback states keyed by class
name, the sampler's stream, the term logger's sums, the data position). Resuming from it
must give the same per-step values as a run that never stopped.
"""

from __future__ import annotations

import csv
from pathlib import Path

import lossmix.train as train
from tests.app.test_train import TINY, compose_train

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "before_relayout.pt"
COMMON = [
    *TINY,
    "trainer.max_epochs=-1",
    "data.num_train=32",
    "model.width=4",
    "+loss.cls.sampler.type=RandomSampler",
    "+loss.cls.sampler.num=32",
    "+loss.cls.sampler.pos_fraction=0.25",
]


def _steps(run_dir: Path) -> dict[str, str]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    return {r["step"]: r["train/loss/cls"] for r in rows if r.get("train/loss/cls")}


def test_a_checkpoint_from_before_the_move_resumes_exactly(tmp_path, capsys):
    full_dir, resumed_dir = tmp_path / "full", tmp_path / "resumed"
    train.run(compose_train(full_dir, *COMMON, "trainer.max_steps=10"))
    train.run(compose_train(resumed_dir, *COMMON, "trainer.max_steps=10", f"ckpt_path={FIXTURE}"))
    capsys.readouterr()
    full, resumed = _steps(full_dir), _steps(resumed_dir)
    assert set(resumed) == {"6", "7", "8", "9"}, resumed
    assert all(full[step] == value for step, value in resumed.items()), (full, resumed)
