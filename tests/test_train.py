"""The main job in real subprocesses: a tiny run, a multirun, every experiment, and errors
before training.

The subprocesses of each fixture start together, so the module costs about one run's
start-up per fixture rather than one per case.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TINY = [
    "trainer.max_epochs=2",
    "data.num_train=16",
    "data.num_val=8",
    "data.batch_size=8",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
]
ERRORS = {
    "plain typo": ["loss.cls.gama=1.5"],
    "appended typo": ["+loss.cls.gama=1.5"],
    "unknown option": ["loss/cls=nope"],
    "wrong type": ["loss.cls.gamma=abc"],
    "sampler not set": ["loss.cls.sampler.num=64"],
    "import fails": ["lossmix.imports=[lossmix_no_such_module]"],
}
# every experiment, tiny: its terms in the CSV (train/loss/<term>) and the summary (│ <term> │)
EXPERIMENTS = {
    "segmentation": ["dice", "bce"],
    "custom": ["seg", "smooth"],
    "gan": ["gen/adv", "disc/real", "disc/fake", "disc/r1", "disc/shift"],
    "multitask": ["depth", "cls"],
    "stylegan2": ["gen/adv", "gen/pl", "disc/real", "disc/r1"],
    "inpainting": ["gen/l1_hole", "gen/percep.style", "gen/tv", "gen/adv", "disc/fake"],
}
EXPERIMENT_TINY = [
    "trainer.max_steps=4",
    "data.num_train=16",
    "data.batch_size=8",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
]


def _start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    full_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "lossmix.train", *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    started = {
        "run": _start([f"hydra.run.dir={root / 'run'}", *TINY]),
        "multirun": _start(["-m", f"hydra.sweep.dir={root / 'sweep'}", *TINY, "loss.cls.gamma=1.0,2.0"]),
    }
    started.update(
        {name: _start([f"hydra.run.dir={root / 'err'}", *TINY, *args]) for name, args in ERRORS.items()}
    )
    started.update(
        {
            name: _start([f"experiment={name}", f"hydra.run.dir={root / name}", *EXPERIMENT_TINY])
            for name in EXPERIMENTS
        }
    )
    started["full error"] = _start(
        [f"hydra.run.dir={root / 'err'}", *TINY, "+loss.cls.gama=1"], env={"HYDRA_FULL_ERROR": "1"}
    )
    return root, {name: _finish(p) for name, p in started.items()}


def test_run_writes_config_csv_plot_checkpoint_and_summary(runs):
    root, done = runs
    result = done["run"]
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = root / "run"
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "loss_curves.png").stat().st_size > 1000
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    columns = set(rows[0])
    for term in ("cls", "reg", "ctr"):
        assert {f"train/loss/{term}", f"train/loss/{term}_epoch", f"val/loss/{term}"} <= columns
    assert any(r["train/loss/cls"] for r in rows) and any(r["train/loss/cls_epoch"] for r in rows)
    assert "per-term summary" in result.stdout and f"Run directory: {run_dir}" in result.stdout
    for term in ("cls", "reg", "ctr"):
        assert f"│ {term} " in result.stdout
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["loss"]["cls"]["type"] == "FocalLoss"


def test_multirun_gives_one_run_dir_per_job(runs):
    root, done = runs
    result = done["multirun"]
    assert result.returncode == 0, result.stderr[-3000:]
    for job, gamma in (("0", "1.0"), ("1", "2.0")):
        job_dir = root / "sweep" / job
        assert (job_dir / "csv" / "metrics.csv").is_file()
        assert (job_dir / "loss_curves.png").is_file()
        assert f"loss.cls.gamma={gamma}" in (job_dir / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.parametrize("case", list(ERRORS))
def test_config_errors_are_one_line_before_training(runs, case):
    root, done = runs
    result = done[case]
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    assert "Error executing job" not in result.stderr
    assert not Path(root / "err" / "checkpoints").exists()
    line = errors[0]
    if "typo" in case:
        assert "term 'cls'" in line and "'gama'" in line and "Did you mean 'gamma'?" in line
        assert "Valid keys: use_sigmoid, gamma" in line
    elif case == "unknown option":
        assert "Available options in 'loss/cls': ce, focal, varifocal" in line
    elif case == "wrong type":
        assert "term 'cls'" in line and "expects float" in line
    elif case == "import fails":
        assert line == (
            "Error: lossmix.imports: could not import module 'lossmix_no_such_module': "
            "ModuleNotFoundError: No module named 'lossmix_no_such_module'"
        )
    else:
        assert "+sampler@loss.cls.sampler=random" in line


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_experiment_runs_and_reports_every_term(runs, experiment):
    root, done = runs
    result = done[experiment]
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = root / experiment
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    for term in EXPERIMENTS[experiment]:
        assert any(r.get(f"train/loss/{term}") for r in rows), term
        assert f"│ {term} " in result.stdout, term
    assert (run_dir / "loss_curves.png").is_file()
    assert f"Run directory: {run_dir}" in result.stdout


def test_full_error_shows_the_trace(runs):
    _, done = runs
    result = done["full error"]
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "LossConfigError" in result.stderr
