"""The main job: command-line errors, every experiment, resume, and the real entry point.

Most cases run the app in this process, as the command line does (``lossmix.train.main``
with Hydra's logging left alone) or through the compose API and ``lossmix.train.run``; only
the entry point itself and a multirun start a subprocess, each on its own, with a timeout
sized for a machine several times slower than CI's.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

import lossmix.train as train
from lossmix.errors import LossConfigError

SUBPROCESS_TIMEOUT = 1800  # s: a loaded 2-core machine runs the tiny job in well under a minute
TINY = [
    "trainer.max_epochs=2",
    "data.num_train=16",
    "data.num_val=8",
    "data.batch_size=8",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
]
QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=none"]  # leave pytest's logging alone
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
    "detection": ["cls", "reg", "ctr"],
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


def main_in_process(argv: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """``python -m lossmix.train <argv>`` in this process: exit code, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["lossmix.train", *QUIET, *argv])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    code = 0
    try:
        train.main()
    except SystemExit as exit:
        code = int(exit.code or 0)
    finally:
        GlobalHydra.instance().clear()
    out, err = capsys.readouterr()
    return code, out, err


def compose_train(output_dir: Path, *overrides: str):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="lossmix.conf", version_base="1.3"):
            return compose("train", overrides=[f"paths.output_dir={output_dir}", *overrides])
    finally:
        GlobalHydra.instance().clear()


def rows_of(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("case", list(ERRORS))
def test_config_errors_are_one_line_before_training(tmp_path, case, capsys, monkeypatch):
    code, _, err = main_in_process([f"hydra.run.dir={tmp_path}", *TINY, *ERRORS[case]], capsys, monkeypatch)
    assert code == 1
    assert "Traceback" not in err and "Error executing job" not in err
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, err
    assert not (tmp_path / "checkpoints").exists()
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


def test_full_error_shows_the_trace(tmp_path, monkeypatch):
    monkeypatch.setattr(
        sys, "argv", ["lossmix.train", *QUIET, f"hydra.run.dir={tmp_path}", "+loss.cls.gama=1"]
    )
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    try:
        with pytest.raises(LossConfigError, match="'gama'"):  # the exception itself, traced
            train.main()
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_experiment_runs_and_reports_every_term(tmp_path, experiment, capsys):
    cfg = compose_train(tmp_path, f"experiment={experiment}", *EXPERIMENT_TINY)
    train.run(cfg)
    out = capsys.readouterr().out
    rows = rows_of(tmp_path)
    for term in EXPERIMENTS[experiment]:
        assert any(r.get(f"train/loss/{term}") for r in rows), term
        assert f"│ {term} " in out, term
    assert (tmp_path / "loss_curves.png").stat().st_size > 1000
    assert f"Run directory: {tmp_path}" in out


def test_the_app_resumes_from_a_mid_epoch_checkpoint(tmp_path, capsys):
    """``ckpt_path=`` continues a stopped run; its step values equal the uninterrupted run's."""
    common = [
        *TINY,
        "trainer.max_epochs=-1",
        "data.num_train=32",
        "+loss.cls.sampler.type=RandomSampler",
        "+loss.cls.sampler.num=32",
        "+loss.cls.sampler.pos_fraction=0.25",
    ]
    full_dir, first_dir, resumed_dir = tmp_path / "full", tmp_path / "first", tmp_path / "resumed"
    train.run(compose_train(full_dir, *common, "trainer.max_steps=10"))
    every = "+callbacks.model_checkpoint.every_n_train_steps=6"
    train.run(compose_train(first_dir, *common, "trainer.max_steps=6", every))
    step_ckpt = next((first_dir / "checkpoints").glob("*.ckpt"))
    train.run(compose_train(resumed_dir, *common, "trainer.max_steps=10", f"ckpt_path={step_ckpt}"))
    capsys.readouterr()

    def steps(run_dir: Path) -> dict[str, str]:
        return {r["step"]: r["train/loss/cls"] for r in rows_of(run_dir) if r.get("train/loss/cls")}

    full, resumed = steps(full_dir), steps(resumed_dir)
    assert resumed and all(full[step] == value for step, value in resumed.items()), (full, resumed)
    with pytest.raises(LossConfigError, match="ckpt_path='nope.ckpt' is not a checkpoint file"):
        train.run(compose_train(tmp_path / "bad", *TINY, "ckpt_path=nope.ckpt"))


# -- the real entry point: two subprocesses, each on its own ------------------------------------
def _python(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "lossmix.train", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )


def test_run_writes_config_csv_plot_checkpoint_and_summary(tmp_path):
    run_dir = tmp_path / "run"
    result = _python([f"hydra.run.dir={run_dir}", *TINY])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "loss_curves.png").stat().st_size > 1000
    rows = rows_of(run_dir)
    columns = set(rows[0])
    for term in ("cls", "reg", "ctr"):
        assert {f"train/loss/{term}", f"train/loss/{term}_epoch", f"val/loss/{term}"} <= columns
    assert any(r["train/loss/cls"] for r in rows) and any(r["train/loss/cls_epoch"] for r in rows)
    assert "per-term summary" in result.stdout and f"Run directory: {run_dir}" in result.stdout
    for term in ("cls", "reg", "ctr"):
        assert f"│ {term} " in result.stdout
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["loss"]["cls"]["type"] == "FocalLoss"


def test_multirun_gives_one_run_dir_per_job(tmp_path):
    result = _python(["-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", *TINY, "loss.cls.gamma=1.0,2.0"])
    assert result.returncode == 0, result.stderr[-3000:]
    for job, gamma in (("0", "1.0"), ("1", "2.0")):
        job_dir = tmp_path / "sweep" / job
        assert (job_dir / "csv" / "metrics.csv").is_file()
        assert (job_dir / "loss_curves.png").is_file()
        assert f"loss.cls.gamma={gamma}" in (job_dir / ".hydra" / "overrides.yaml").read_text()
