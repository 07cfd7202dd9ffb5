"""A Hydra sweeper that searches term weights with Optuna, for several objectives at once.

``python -m lossmix.train -m hydra/sweeper=lossmix_optuna hydra.sweeper.n_trials=20`` asks
Optuna (its ask-and-tell API, any current version) for each trial's weights, launches the
trials as Hydra jobs through the configured launcher (in this process, joblib, SLURM) and
tells the study each trial's objectives: by default every term's raw validation value
``val/raw/<term>`` (minimised), so the result is a Pareto front, printed and drawn
(``pareto_front.png``) at the end (:mod:`lossmix.app.pareto_report`).

Why lossmix ships its own: ``hydra-optuna-sweeper`` 1.3.0 requires ``optuna<3`` and never
hands the trial to the job, so it can neither run beside a current Optuna nor prune. Here
the job gets its trial through a :class:`~lossmix.app.sweep_trial.TrialReporter` callback
(storage URL, study, trial number in its overrides), which reports intermediate values,
prunes, and writes the final objectives into the study.

* **Search space**: ``params`` maps an override key to a Hydra sweep expression:
  ``tag(log, interval(0.1, 10))`` (log-uniform float), ``interval(0, 1)`` (uniform; ints if both
  bounds are), ``choice(a, b)`` or ``a,b`` (categorical), ``range(1, 4)`` (int, end exclusive);
  sweeps on the command line (``loss.cls.gamma=1.0,2.0``) join them. Without ``params`` every
  term's ``loss_weight`` is searched log-uniformly in ``[weights.low, weights.high]``.
* **Storage**: SQLite in the sweep directory by default, so running the same command with the
  same ``hydra.sweep.dir`` resumes: finished trials are kept, an interrupted one is re-run with
  its weights. ``storage`` may be an RDB URL or ``journal:<file on a shared filesystem>``:
  several sweeper processes (SLURM array tasks) then share one study, and together stop at
  ``n_trials``.
* **DDP**: weights are sampled once, here; each job's ranks compose the same overrides.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lossmix.errors import LossConfigError, LossRunError

__all__ = ["SAMPLERS", "OptunaSweeper", "distribution_of", "quoted", "search_space"]

#: Optuna samplers by name (``hydra.sweeper.sampler.name``)
SAMPLERS = ("nsgaii", "tpe", "random")
_TRIAL_KEY = "callbacks.lossmix_trial"


def _hydra_sweeper_base() -> type:
    from hydra.plugins.sweeper import Sweeper

    return Sweeper


def quoted(value: Any) -> str:
    """A value as a Hydra override's quoted string (any path or metric key survives)."""
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def distribution_of(key: str, value: Any) -> Any:
    """The Optuna distribution of a parsed Hydra sweep (or a fixed value: ``None``).

    Raises:
        LossConfigError: a sweep Optuna cannot sample (an unbounded range, a shuffled one).
    """
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        start, end = value.start, value.end
        if start is None or end is None:
            raise LossConfigError(f"{key}: an interval sweep needs both bounds, e.g. interval(0.1, 10).")
        if isinstance(start, int) and isinstance(end, int):
            return IntDistribution(start, end, log=log)
        return FloatDistribution(float(start), float(end), log=log)
    if isinstance(value, RangeSweep):
        if value.shuffle or value.start is None or value.stop is None:
            raise LossConfigError(f"{key}: a sweep range needs a start and a stop and no shuffle.")
        start, stop, step = int(value.start), int(value.stop), int(value.step or 1)
        if stop <= start or step < 1:
            raise LossConfigError(f"{key}: range({start}, {stop}, {step}) holds no value to sample.")
        last = start + (stop - 1 - start) // step * step  # range's end is exclusive
        return IntDistribution(start, last, step=step)
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(
            [v if isinstance(v, (bool, int, float, str)) else str(v) for v in value.list]
        )
    return None


def search_space(
    arguments: Sequence[str],
    params: Mapping[str, Any] | None,
    terms: Sequence[str],
    weights: Mapping[str, Any],
) -> tuple[dict[str, Any], list[str]]:
    """The search space (override key → Optuna distribution) and the fixed overrides.

    ``params`` (the sweeper's node) first, then the command line's overrides, whose sweeps
    join the space and whose plain values are passed to every job. Without any sweep, every
    term's ``loss.<term>.loss_weight`` is log-uniform in ``[weights.low, weights.high]``.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from optuna.distributions import FloatDistribution

    parser = OverridesParser.create()
    given = [f"{k}={v}" for k, v in (params or {}).items()]
    space: dict[str, Any] = {}
    fixed: list[str] = []
    for override in parser.parse_overrides([*given, *arguments]):
        key = override.get_key_element()
        found = distribution_of(key, override.value()) if override.is_sweep_override() else None
        if found is not None:
            space[key] = found
        else:
            fixed.append(str(override.input_line))
    if not space:
        low, high = float(weights.get("low", 0.1)), float(weights.get("high", 10.0))
        if not 0 < low < high:
            raise LossConfigError(
                f"hydra.sweeper.weights: low={low}, high={high}; a log-uniform range needs 0 < low < high."
            )
        space = {f"loss.{t}.loss_weight": FloatDistribution(low, high, log=True) for t in terms}
    return space, fixed


def _sampler(node: Mapping[str, Any] | None, shared: bool = False) -> Any:
    """The sampler ``node`` names. On a shared storage, its seed is offset by the SLURM array
    task's id (else the process id), so sweepers sharing a study propose different weights."""
    import optuna

    options = dict(node or {})
    name = str(options.pop("name", "nsgaii"))
    if shared and options.get("seed") is not None:
        options["seed"] = int(options["seed"]) + int(os.environ.get("SLURM_ARRAY_TASK_ID") or os.getpid())
    kinds = {
        "nsgaii": optuna.samplers.NSGAIISampler,
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
    }
    if name not in kinds:
        raise LossConfigError(
            f"hydra.sweeper.sampler.name={name!r} is not valid; use one of: {', '.join(SAMPLERS)}."
        )
    try:
        return kinds[name](**options)
    except TypeError as err:
        raise LossConfigError(
            f"hydra.sweeper.sampler: {err}; see optuna.samplers.{kinds[name].__name__}."
        ) from None


class OptunaSweeper(_hydra_sweeper_base()):  # type: ignore[misc]  # Hydra's Sweeper, untyped
    """The sweeper behind ``hydra/sweeper=lossmix_optuna`` (keys: ``conf/hydra/sweeper/lossmix_optuna.yaml``).

    Hydra only instantiates sweepers from the ``hydra_plugins`` package, so the config names
    ``hydra_plugins.lossmix_sweeper.LossmixOptunaSweeper``, this class under a plugin's name.
    """

    def __init__(
        self,
        params: Mapping[str, Any] | None = None,
        weights: Mapping[str, Any] | None = None,
        objectives: Sequence[str] | None = None,
        directions: Sequence[str] | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        sampler: Mapping[str, Any] | None = None,
        storage: str | None = None,
        study_name: str = "lossmix",
        pruner: Mapping[str, Any] | None = None,
    ) -> None:
        self.params = dict(params or {})
        self.weights = dict(weights or {})
        self.objectives = list(objectives) if objectives else None
        self.directions = list(directions) if directions else None
        self.n_trials, self.n_jobs = int(n_trials), max(int(n_jobs), 1)
        self.sampler, self.storage, self.study_name = sampler, storage, str(study_name)
        self.pruner = dict(pruner) if pruner else None
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.hydra_context: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _terms(self) -> list[str]:
        assert self.config is not None
        loss = self.config.get("loss") or {}
        return [str(k) for k, v in loss.items() if v is not None and (v.get("in_total", True) is not False)]

    def _objectives(self, terms: Sequence[str]) -> tuple[list[str], list[str]]:
        objectives = self.objectives or [f"val/raw/{t}" for t in terms]
        directions = self.directions or ["minimize"] * len(objectives)
        if len(directions) != len(objectives) or any(d not in ("minimize", "maximize") for d in directions):
            raise LossConfigError(
                f"hydra.sweeper.directions={directions} must give minimize or maximize for each of the "
                f"{len(objectives)} objectives {objectives}."
            )
        return objectives, directions

    def _storage_url(self, sweep_dir: Path) -> str:
        if self.storage:
            return str(self.storage)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(sweep_dir / 'optuna.db').absolute()}"

    def sweep(self, arguments: list[str]) -> Any:
        """Ask, launch, tell until the study holds ``n_trials`` trials; then the Pareto front."""
        try:
            import optuna
        except ImportError:
            raise LossConfigError(
                "hydra/sweeper=lossmix_optuna needs Optuna, which is not installed: "
                "pip install 'lossmix[sweep]'."
            ) from None

        from lossmix.app.pareto_report import write_pareto_report
        from lossmix.app.sweep_trial import open_storage

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        terms = self._terms()
        space, fixed = search_space(arguments, self.params, terms, self.weights)
        objectives, directions = self._objectives(terms)
        url = self._storage_url(sweep_dir)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=open_storage(url),
            sampler=_sampler(self.sampler, shared=bool(self.storage)),
            directions=[optuna.study.StudyDirection[d.upper()] for d in directions],
            load_if_exists=True,
        )
        if not self.storage:
            _retry_interrupted(study)
        OmegaConf.save(
            OmegaConf.create({"storage": url, "study_name": self.study_name}),
            _mkdir(sweep_dir) / "study.yaml",
        )
        while True:
            remaining = self.n_trials - _counted(study)
            if remaining <= 0:
                break
            trials = [study.ask(space) for _ in range(min(self.n_jobs, remaining))]
            batch = [self._job_overrides(t, fixed, url, objectives, directions) for t in trials]
            self.validate_batch_is_legal(batch)
            for start, chunk in _consecutive(trials, batch):
                returns = self.launcher.launch(chunk, initial_job_idx=start)
                for trial, ret in zip(
                    [t for t in trials if start <= t.number < start + len(chunk)], returns, strict=True
                ):
                    _tell(study, trial, ret, objectives)
        return write_pareto_report(study, objectives, sweep_dir)

    def _job_overrides(
        self, trial: Any, fixed: Sequence[str], url: str, objectives: Sequence[str], directions: Sequence[str]
    ) -> list[str]:
        reporter = {
            "_target_": "lossmix.app.sweep_trial.TrialReporter",
            "storage": url,
            "study": self.study_name,
            "trial": trial.number,
            "objectives": list(objectives),
        }
        if self.pruner:
            reporter["prune_metric"] = self.pruner.get("metric", "val/loss")
            reporter["direction"] = self.pruner.get("direction", directions[0])
            reporter["n_startup_trials"] = int(self.pruner.get("n_startup_trials", 3))
            reporter["n_warmup_steps"] = int(self.pruner.get("n_warmup_steps", 0))
        sampled = [f"{k}={_literal(v)}" for k, v in trial.params.items()]
        handed = [f"+{_TRIAL_KEY}.{k}={_literal(v)}" for k, v in reporter.items()]
        return [*fixed, *sampled, *handed]


def _literal(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    return quoted(value)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _counted(study: Any) -> int:
    """Trials that count towards ``n_trials``: finished (complete or pruned) and running ones
    (another process's, on a shared storage)."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return len(study.get_trials(deepcopy=False, states=states))


def _retry_interrupted(study: Any) -> None:
    """With this process's own storage, a trial still running is one an interrupted sweep
    left: it is marked failed and its weights are asked again first."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)


def _consecutive(
    trials: Sequence[Any], batch: Sequence[Sequence[str]]
) -> list[tuple[int, list[Sequence[str]]]]:
    """The batch in runs of consecutive trial numbers (the job's number is its trial's, so a
    resumed or shared study never writes into a finished job's directory)."""
    runs: list[tuple[int, list[Sequence[str]]]] = []
    for trial, overrides in zip(trials, batch, strict=True):
        if runs and runs[-1][0] + len(runs[-1][1]) == trial.number:
            runs[-1][1].append(overrides)
        else:
            runs.append((trial.number, [overrides]))
    return runs


def _tell(study: Any, trial: Any, ret: Any, objectives: Sequence[str]) -> None:
    """Tell the study what the job reported (its values, or that it was pruned)."""
    from optuna.trial import TrialState

    from lossmix.app.sweep_trial import PRUNED, VALUES

    try:
        ret.return_value  # noqa: B018  (raises the job's exception)
    except Exception:
        study.tell(trial, state=TrialState.FAIL)
        raise
    attrs = study.get_trials(deepcopy=False)[trial.number].user_attrs
    if PRUNED in attrs:
        study.tell(trial, state=TrialState.PRUNED)
        return
    values = attrs.get(VALUES)
    if not isinstance(values, Mapping) or any(k not in values for k in objectives):
        study.tell(trial, state=TrialState.FAIL)
        raise LossRunError(
            f"trial {trial.number} reported no objectives; its job must build the config's 'callbacks' "
            f"node, to which the sweeper adds {_TRIAL_KEY} (a TrialReporter)."
        )
    found = [float(values[k]) for k in objectives]
    if not all(math.isfinite(v) for v in found):
        study.tell(trial, state=TrialState.FAIL)
        return
    study.tell(trial, found)
