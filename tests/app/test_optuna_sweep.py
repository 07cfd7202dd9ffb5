"""``hydra/sweeper=lossmix_optuna``: a multi-objective Optuna search over the term weights."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

optuna = pytest.importorskip("optuna", reason="the sweep needs optuna: pip install lossmix[sweep]")

import lossmix.train as train  # noqa: E402
from lossmix.app.hydra_nodes import check_hydra_node  # noqa: E402
from lossmix.app.optuna_sweeper import OptunaSweeper, _sampler, _tell, search_space  # noqa: E402
from lossmix.app.pareto_report import write_pareto_report  # noqa: E402
from lossmix.app.sweep_trial import (  # noqa: E402
    INTERMEDIATE,
    PRUNED,
    TrialReporter,
    open_storage,
    should_prune,
)
from lossmix.errors import LossConfigError  # noqa: E402

QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=none"]
TINY = [
    "trainer.max_steps=2",
    "data.num_train=16",
    "data.num_val=8",
    "data.batch_size=8",
    "trainer.enable_progress_bar=false",
    "callbacks.model_checkpoint=null",
    "callbacks.loss_curves=null",
]
SWEEP = ["hydra/sweeper=lossmix_optuna", "hydra.sweeper.sampler.name=random"]


def test_the_default_space_is_every_terms_weight_log_uniform():
    space, fixed = search_space(["trainer.max_steps=2"], {}, ["cls", "reg"], {"low": 0.01, "high": 100})
    assert fixed == ["trainer.max_steps=2"]
    assert set(space) == {"loss.cls.loss_weight", "loss.reg.loss_weight"}
    assert all(d.log and (d.low, d.high) == (0.01, 100) for d in space.values())


def test_params_and_command_line_sweeps_make_the_space():
    params = {"loss.cls.loss_weight": "tag(log, interval(0.1, 10))", "loss.cls.gamma": "1.0,2.0"}
    space, fixed = search_space(
        ["loss.reg.loss_weight=interval(0, 1)", "seed=range(1, 4)", "x=3"], params, [], {}
    )
    assert space["loss.cls.loss_weight"].log and not space["loss.reg.loss_weight"].log
    assert space["loss.cls.gamma"].choices == (1.0, 2.0)
    assert (space["seed"].low, space["seed"].high) == (1, 3)  # range's end is exclusive
    assert fixed == ["x=3"]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: search_space([], {}, ["cls"], {"low": 0, "high": 1}), r"needs 0 < low < high"),
        (lambda: _sampler({"name": "cmaes"}), r"sampler.name='cmaes' is not valid; use one of: nsgaii"),
        (lambda: _sampler({"name": "tpe", "popsize": 3}), r"hydra.sweeper.sampler: .*popsize"),
        (lambda: open_storage("optuna.db"), r"storage='optuna.db' is not a storage; use sqlite:///"),
        (lambda: OptunaSweeper(objectives=["a"], directions=["up"])._objectives([]), r"minimize or maximize"),
    ],
)
def test_bad_sweeper_settings_are_one_line_errors(call, match):
    with pytest.raises(LossConfigError, match=match):
        call()


def test_sweepers_sharing_a_study_do_not_propose_the_same_weights(monkeypatch):
    from optuna.distributions import FloatDistribution

    def first_proposal(task: str, shared: bool) -> float:
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", task)
        study = optuna.create_study(sampler=_sampler({"name": "random", "seed": 42}, shared=shared))
        return study.ask({"w": FloatDistribution(0.1, 10, log=True)}).params["w"]

    assert first_proposal("0", shared=False) == first_proposal("1", shared=False)  # seeded: reproducible
    assert first_proposal("0", shared=True) != first_proposal("1", shared=True)
    assert first_proposal("1", shared=True) == first_proposal("1", shared=True)


@pytest.mark.parametrize(
    ("value", "direction", "startup", "pruned"),
    [
        (2.5, "minimize", 3, True),
        (1.5, "minimize", 3, False),
        (2.5, "minimize", 4, False),
        (1.5, "maximize", 3, True),
        (float("nan"), "minimize", 9, True),
    ],
)
def test_the_median_rule(value, direction, startup, pruned):
    done = [{"10": 1.0}, {"10": 2.0}, {"10": 3.0}, {"20": 0.0}]
    assert should_prune(value, done, 10, direction=direction, n_startup_trials=startup) is pruned


def test_a_trial_worse_than_the_median_is_pruned_and_told_so(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    for value in (1.0, 2.0):
        done = study.ask()
        done.set_user_attr(INTERMEDIATE, {"4": value})
        study.tell(done, value)
    trial = study.ask()
    reporter = TrialReporter(
        url, "s", trial.number, ["val/loss"], prune_metric="val/loss", n_startup_trials=2
    )
    trainer = SimpleNamespace(
        sanity_checking=False,
        global_step=4,
        is_global_zero=True,
        callback_metrics={"val/loss": torch.tensor(3.0)},
        strategy=SimpleNamespace(broadcast=lambda value, src: value),
        should_stop=False,
    )
    reporter.on_validation_end(trainer, None)
    assert trainer.should_stop and reporter.pruned_at == 4
    _tell(study, trial, SimpleNamespace(return_value=None), ["val/loss"])
    frozen = study.trials[trial.number]
    assert frozen.state == optuna.trial.TrialState.PRUNED and frozen.user_attrs[PRUNED] == 4


@pytest.mark.parametrize("objectives", [["a"], ["a", "b", "c"]])
def test_the_pareto_report_of_one_and_of_three_objectives(tmp_path, capsys, objectives):
    from optuna.distributions import FloatDistribution

    study = optuna.create_study(directions=["minimize"] * len(objectives))
    points = [(1.0, 3.0, 1.0), (2.0, 2.0, 2.0), (3.0, 3.0, 3.0)]  # the third is dominated
    for point in points:
        trial = study.ask({"w": FloatDistribution(0.1, 10)})
        study.tell(trial, list(point[: len(objectives)]))
    rows = write_pareto_report(study, objectives, tmp_path)
    assert [r["trial"] for r in rows] == ([0] if len(objectives) == 1 else [0, 1])
    assert (tmp_path / "pareto_front.png").stat().st_size > 0
    assert (tmp_path / "pareto_front.csv").read_text().splitlines()[0] == ",".join(
        ["trial", "w", *objectives]
    )
    assert "Pareto front" in capsys.readouterr().out


class Interrupted(BaseException):
    """A kill in the middle of a job (not an Exception: Hydra does not catch it)."""


def _sweep(argv, capsys, monkeypatch, interrupt_at=None):
    """The app in this process; returns how many jobs ran, and what it printed."""
    jobs = []
    real_run = train.run

    def run(cfg):
        jobs.append(cfg.loss.cls.loss_weight)
        if len(jobs) == interrupt_at:
            raise Interrupted
        return real_run(cfg)

    monkeypatch.setattr(train, "run", run)
    monkeypatch.setattr(sys, "argv", ["lossmix.train", "-m", *QUIET, *argv])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    try:
        train.main()
    finally:
        GlobalHydra.instance().clear()
    return jobs, capsys.readouterr().out


def test_a_six_trial_two_objective_sweep_resumes_and_prints_the_pareto_front(tmp_path, capsys, monkeypatch):
    sweep_dir = tmp_path / "sweep"
    argv = [*SWEEP, f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.n_trials=6", "hydra.sweeper.pruner=null"]
    argv += ["~loss/ctr", *TINY]
    with pytest.raises(Interrupted):  # killed during its 4th trial
        _sweep(argv, capsys, monkeypatch, interrupt_at=4)
    study = optuna.load_study(study_name="lossmix", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    first = [(t.number, t.state.name, t.params) for t in study.trials]
    assert [s for _, s, _ in first] == ["COMPLETE"] * 3 + ["RUNNING"]
    jobs, out = _sweep(argv, capsys, monkeypatch)  # the same command again: resumes
    trials = optuna.load_study(study_name="lossmix", storage=f"sqlite:///{sweep_dir / 'optuna.db'}").trials
    assert [(t.number, t.state.name, t.params) for t in trials[:3]] == first[:3]  # kept, not re-run
    assert trials[3].state.name == "FAIL" and trials[4].params == first[3][2]  # re-run with its weights
    assert [t.state.name for t in trials[4:]] == ["COMPLETE"] * 3 and len(jobs) == 3
    assert sorted(trials[5].values) == sorted(trials[5].user_attrs["lossmix.values"].values())
    assert set(trials[5].user_attrs["lossmix.values"]) == {"val/raw/cls", "val/raw/reg"}
    assert "Pareto front" in out and "val/raw/cls" in out
    assert (sweep_dir / "pareto_front.png").stat().st_size > 0
    assert (sweep_dir / "pareto_front.csv").read_text().startswith("trial,")
    for trial in trials[4:]:  # each job trained with its trial's weights
        assert trial.user_attrs["lossmix.rank_weights"] == [
            {"cls": trial.params["loss.cls.loss_weight"], "reg": trial.params["loss.reg.loss_weight"]}
        ]


RECIPE = [
    "hydra/sweeper=lossmix_optuna",
    "hydra/launcher=slurm",
    "hydra.launcher.partition=gpu",
    "hydra.sweeper.storage=journal:/shared/sweeps/detector.journal",
    "hydra.sweeper.study_name=detector",
    "hydra.sweeper.n_trials=64",
    "hydra.sweeper.n_jobs=8",
    "trainer=gpu",
    "trainer.devices=4",
    "trainer.strategy=ddp",
]


def test_the_slurm_and_shared_storage_recipe_composes_and_passes_the_checks(capsys, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install lossmix[slurm]")
    monkeypatch.setattr(sys, "argv", ["lossmix.train", *QUIET, *RECIPE, "--cfg", "hydra"])
    try:
        train.main()
    finally:
        GlobalHydra.instance().clear()
    out = capsys.readouterr().out
    assert "_target_: hydra_plugins.lossmix_sweeper.LossmixOptunaSweeper" in out
    assert "storage: journal:/shared/sweeps/detector.journal" in out and "SlurmLauncher" in out
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="lossmix.conf", version_base="1.3"):
            cfg = compose("train", overrides=RECIPE, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    check_hydra_node(cfg, RECIPE)  # what Hydra builds from it passes lossmix's checks
    assert cfg.hydra.sweeper.n_jobs == 8 and cfg.hydra.launcher.tasks_per_node == 4


def test_under_ddp_both_ranks_train_with_the_trials_weights(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lossmix.train",
            "-m",
            *SWEEP,
            f"hydra.sweep.dir={tmp_path}",
            "hydra.sweeper.n_trials=1",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            *TINY,
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    trials = optuna.load_study(study_name="lossmix", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    assert len(trials) == 1  # rank 1 ran the job, not a sweep of its own
    params = {k.split(".")[1]: v for k, v in trials[0].params.items()}
    assert trials[0].user_attrs["lossmix.rank_weights"] == [params, params]
    assert (tmp_path / "0" / "train_ddp_process_1.log").is_file()
