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
    "callback setting without the callback": ["+callbacks.loss_weights.schedules.reg.end=200"],
    "logger setting without the logger": ["+logger.tensorboard.save_dir=tb"],
    "a callback that is not a node": ["+callbacks.mine=3"],
    "sweep and print at once": ["-m", "--cfg", "job"],
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
    elif case == "callback setting without the callback":
        assert line == (
            "Error: callbacks.loss_weights has no _target_, so nothing would be built and the "
            "setting (schedules) would do nothing; add the callback first: "
            "+callback@callbacks.loss_weights=loss_weights (then set schedules)."
        )
    elif case == "logger setting without the logger":
        assert "logger.tensorboard has no _target_" in line and "logger=tensorboard" in line
    elif case == "a callback that is not a node":
        assert "callbacks.mine=3 is not a node" in line and "'~callbacks.mine'" in line
    elif case == "sweep and print at once":
        assert "only one of --run, --multirun (-m), --cfg" in line
    else:
        assert "+sampler@loss.cls.sampler=random" in line


def test_a_missing_optional_logger_is_one_line_naming_the_package(tmp_path, capsys, monkeypatch):
    pytest.importorskip("lightning")
    try:
        import tensorboard  # noqa: F401

        pytest.skip("tensorboard is installed here")
    except ImportError:
        pass
    code, _, err = main_in_process(
        [f"hydra.run.dir={tmp_path}", *TINY, "logger=tensorboard"], capsys, monkeypatch
    )
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert code == 1 and len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith(
        "Error: logger.tensorboard: TensorBoardLogger needs a package that is not installed"
    )
    assert "pip install tensorboard" in errors[0] and "\\n" not in errors[0]


def test_a_hyper_parameter_scheduled_from_the_command_line(tmp_path, capsys):
    ramp = "{kind: linear, by: step, end: 3, initial: 0.0, final: 1.5}"
    train.run(compose_train(tmp_path, *TINY, f"+callbacks.loss_schedule.schedules.cls.gamma={ramp}"))
    capsys.readouterr()
    logged = [
        (r["step"], float(r["train/param/cls.gamma"]))
        for r in rows_of(tmp_path)
        if r.get("train/param/cls.gamma")
    ]
    assert logged == [("0", 0.0), ("1", 0.5), ("2", 1.0), ("3", 1.5)]


def test_log_raw_from_the_command_line(tmp_path, capsys):
    train.run(compose_train(tmp_path, *TINY, "callbacks.term_logger.log_raw=true"))
    capsys.readouterr()
    columns = set(rows_of(tmp_path)[0])
    assert {"train/raw/cls", "train/weight/cls", "val/raw/reg"} <= columns


def test_the_slurm_recipe_composes(capsys, monkeypatch):
    """The SLURM command of docs/scaling.md, printed with --cfg hydra (Hydra refuses -m with --cfg, so
    without -m and the sweep), and its launcher built as Hydra will build it."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    recipe = [
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "trainer=gpu",
        "trainer.devices=4",
        "trainer.strategy=ddp",
    ]
    code, out, err = main_in_process([*recipe, "--cfg", "hydra"], capsys, monkeypatch)
    assert code == 0, err
    assert "_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in out
    assert "partition: gpu" in out and "tasks_per_node: ${trainer.devices}" in out
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from lossmix.registry.nodes import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="lossmix.conf", version_base="1.3"):
            cfg = compose("train", overrides=[*recipe, "loss.cls.gamma=1.5"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        launcher = instantiate(cfg.hydra.launcher)
    finally:
        GlobalHydra.instance().clear()
    assert launcher.params["partition"] == "gpu"
    assert launcher.params["gpus_per_node"] == launcher.params["tasks_per_node"] == 4  # one task per GPU
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.num_nodes == launcher.params["nodes"] == 1


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


def test_a_lazy_term_logged_at_its_own_interval_is_never_zero(tmp_path, capsys):
    """experiment=gan runs R1 every 16 steps and logs every 16 steps: each logged R1 value is
    the one of the step it last ran (not the zero of the skipped steps in between), and so
    is its epoch mean."""
    cfg = compose_train(
        tmp_path,
        "experiment=gan",
        "trainer.max_steps=192",  # 96 batches, two optimizer steps each
        "data.num_train=768",
        "data.batch_size=8",
        "trainer.log_every_n_steps=16",
        "trainer.enable_progress_bar=false",
    )
    train.run(cfg)
    capsys.readouterr()
    rows = rows_of(tmp_path)
    r1 = [float(r["train/loss/disc/r1"]) for r in rows if r.get("train/loss/disc/r1")]
    assert len(r1) >= 4 and all(v > 0 for v in r1), r1
    epoch = [float(r["train/loss/disc/r1_epoch"]) for r in rows if r.get("train/loss/disc/r1_epoch")]
    assert epoch and all(v > 0 for v in epoch)


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


def test_multirun_gives_one_run_dir_per_job_and_a_sweep_report(tmp_path):
    result = _python(["-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", *TINY, "loss.cls.gamma=1.0,2.0"])
    assert result.returncode == 0, result.stderr[-3000:]
    finals = {}
    for job, gamma in (("0", "1.0"), ("1", "2.0")):
        job_dir = tmp_path / "sweep" / job
        assert (job_dir / "loss_curves.png").is_file()
        assert f"loss.cls.gamma={gamma}" in (job_dir / ".hydra" / "overrides.yaml").read_text()
        finals[job] = [r["val/loss/cls"] for r in rows_of(job_dir) if r.get("val/loss/cls")][-1]
    with (tmp_path / "sweep" / "sweep_report.csv").open() as handle:
        report = list(csv.DictReader(handle))
    assert [r["overrides"] for r in report] == ["loss.cls.gamma=1.0", "loss.cls.gamma=2.0"]
    assert [r["val/loss/cls"] for r in report] == [finals["0"], finals["1"]]
    assert {"train/loss/cls_epoch", "train/loss/reg_epoch", "val/loss"} <= set(report[0])
    assert "sweep of 2 jobs" in result.stdout and "loss.cls.gamma=2.0" in result.stdout


def test_two_runs_started_at_once_get_two_directories(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "lossmix.train", *TINY, "trainer.max_epochs=1"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for process in started:
        _, err = process.communicate(timeout=SUBPROCESS_TIMEOUT)
        assert process.returncode == 0, err[-3000:]
    runs = sorted(p.parent.parent for p in (tmp_path / "outputs").glob("*/*/csv/metrics.csv"))
    assert len(runs) == 2, runs
    for run in runs:
        assert (run / "checkpoints" / "last.ckpt").is_file()
        assert {r["epoch"] for r in rows_of(run)} == {"0"}  # one run's rows, not both
