"""What Hydra itself builds, calls or imports from a config cannot run someone else's code.

The routes a config file (or an override) has to Hydra's own machinery — nested
interpolations and resolver results inside ``hydra.callbacks``, the launcher and sweeper
nodes, logging configs, the primary config's search path, ``hydra.job.env_set`` and a
forged ``hydra.overrides.task`` — each carry a payload that creates a marker file (an
``os.mkdir``, a package's ``__init__``, a pickle's ``__reduce__``) and must be refused in
one line before it runs. One subprocess drives every command-line case in this process
way; the rules themselves are tested directly below it.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from lossmix.app.hydra_nodes import (
    COMMAND_LINE_ENV,
    check_env_set,
    check_hydra_node,
    check_logging_config,
    check_overrides_record,
    check_search_path,
    command_line_overrides,
)
from lossmix.errors import LossConfigError
from lossmix.registry.allowlist import ENV_ALLOWED_TARGETS
from lossmix.utilities.compat import single_interpolation

APP = Path(__file__).resolve().parents[2] / "examples" / "own_app"
MARK = "MARKER"  # replaced by each case's marker path
SECRET = "hunter2-hydra-routes-7f3a"  # read by every case through ${oc.env:...}; never shown or saved


class _Payload:
    """A pickle that makes the marker directory when unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.mkdir, (self.path,))


PACKAGE = 'import os\nos.makedirs("MARKER", exist_ok=True)\n'
# (name, files relative to the case directory, argv); MARKER becomes the case's marker path
CASES: list[tuple[str, dict[str, str], list[str]]] = [
    (
        "nested interpolation in hydra.callbacks",
        {},
        [
            "+evil={_target_: os.mkdir, path: MARKER}",
            "+hydra.callbacks.r={_target_: lossmix.app.report.SweepReport, x: '${evil}'}",
        ],
    ),
    (
        "nested interpolation under -m",
        {},
        [
            "-m",
            "loss.cls.gamma=1.0,2.0",
            "+evil={_target_: os.mkdir, path: MARKER}",
            "+hydra.callbacks.r={_target_: lossmix.app.report.SweepReport, x: '${evil}'}",
        ],
    ),
    (
        "a function outside the allow-list, interpolated",
        {},
        [
            "+evil={_target_: sympy.sympify, a: x}",
            "+hydra.callbacks.r={_target_: lossmix.app.report.SweepReport, x: '${evil}'}",
        ],
    ),
    (
        "oc.create in an experiment file",
        {
            "exp/run.yaml": """
                defaults: [train, _self_]
                hydra:
                  callbacks:
                    sweep_report:
                      x: ${oc.create:{_target_:os.mkdir,path:MARKER}}
            """
        },
        ["--config-dir", "exp", "--config-name", "run"],
    ),
    (
        "oc.decode in an experiment file",
        {
            "exp/run.yaml": """
                defaults: [train, _self_]
                hydra:
                  callbacks:
                    sweep_report:
                      x: '${oc.decode:"{_target_: os.mkdir, path: MARKER}"}'
            """
        },
        ["--config-dir", "exp", "--config-name", "run"],
    ),
    (
        "torch.load of a pickle nested in a callback",
        {
            "exp/run.yaml": """
                defaults: [train, _self_]
                hydra:
                  callbacks:
                    sweep_report:
                      x: {_target_: torch.load, f: evil.pkl, weights_only: false}
            """
        },
        ["--config-dir", "exp", "--config-name", "run"],
    ),
    (
        "a target nested in the launcher node",
        {},
        ["-m", "loss.cls.gamma=1.0,2.0", "+hydra.launcher.x={_target_: os.mkdir, path: MARKER}"],
    ),
    (
        "env_set widens the allow-list for an import",
        {
            "evilmod.py": PACKAGE,
            "exp/run.yaml": """
                defaults: [train, _self_]
                lossmix: {imports: [evilmod]}
                hydra: {job: {env_set: {LOSSMIX_ALLOWED_TARGETS: evilmod}}}
            """,
        },
        ["--config-dir", "exp", "--config-name", "run"],
    ),
    (
        "env_set widens the allow-list for a loss target",
        {
            "evilmod.py": PACKAGE,
            "exp/run.yaml": """
                defaults: [train, _self_]
                loss: {reg: {_target_: evilmod.Loss, type: null}}
                hydra: {job: {env_set: {LOSSMIX_ALLOWED_TARGETS: evilmod}}}
            """,
        },
        ["--config-dir", "exp", "--config-name", "run"],
    ),
    (
        "a forged hydra.overrides.task",
        {
            "evilmod.py": PACKAGE,
            "exp/run.yaml": """
                defaults: [train, _self_]
                lossmix: {imports: [evilmod]}
                hydra: {overrides: {task: ['lossmix.imports=[evilmod]']}}
            """,
        },
        ["--config-dir", "exp", "--config-name", "run"],
    ),
    (
        "env_set turns off weights_only for a pickled checkpoint",
        {
            "exp/run.yaml": """
                defaults: [train, _self_]
                ckpt_path: evil.ckpt
                hydra: {job: {env_set: {TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD: '1'}}}
            """
        },
        ["--config-dir", "exp", "--config-name", "run"],
    ),
    (
        "a search path into the working directory",
        {
            "evilpkg/__init__.py": PACKAGE,
            "evilpkg/conf/__init__.py": "",
            "exp/run.yaml": """
                defaults: [train, _self_]
                hydra: {searchpath: ['pkg://evilpkg.conf']}
            """,
        },
        ["--config-dir", "exp", "--config-name", "run"],
    ),
    (
        "a search path into the working directory, --cfg job",
        {
            "evilpkg/__init__.py": PACKAGE,
            "evilpkg/conf/__init__.py": "",
            "exp/run.yaml": """
                defaults: [train, _self_]
                hydra: {searchpath: ['structured://evilpkg']}
            """,
        },
        ["--config-dir", "exp", "--config-name", "run", "--cfg", "job"],
    ),
    (
        "a logging factory from a file:// search path outside the config dir",
        {
            "elsewhere/hydra/job_logging/evil.yaml": """
                version: 1
                formatters: {f: {'()': os.mkdir, path: MARKER}}
                root: {level: INFO}
            """,
            "exp/run.yaml": """
                defaults: [train, override hydra/job_logging: evil, _self_]
                hydra: {searchpath: ['file://elsewhere']}
            """,
        },
        ["--config-dir", "exp", "--config-name", "run"],
    ),
    (
        "a logging factory in the config dir",
        {
            "exp/hydra/job_logging/evil.yaml": """
                version: 1
                formatters: {f: {'()': os.mkdir, path: MARKER}}
                root: {level: INFO}
            """,
            "exp/run.yaml": "defaults: [train, override hydra/job_logging: evil, _self_]",
        },
        ["--config-dir", "exp", "--config-name", "run"],
    ),
    (
        "a logging handler class from the working directory",
        {
            "evilmod.py": PACKAGE + "import logging\nclass Handler(logging.Handler):\n    pass\n",
            "exp/run.yaml": """
                defaults: [train, _self_]
                hydra:
                  hydra_logging:
                    version: 1
                    handlers: {h: {class: evilmod.Handler}}
                    root: {level: INFO, handlers: [h]}
            """,
        },
        ["--config-dir", "exp", "--config-name", "run"],
    ),
    (
        "a logging ext:// import",
        {
            "evilmod.py": PACKAGE + "import sys\nstream = sys.stdout\n",
            "exp/run.yaml": """
                defaults: [train, _self_]
                hydra:
                  job_logging:
                    version: 1
                    handlers: {h: {class: logging.StreamHandler, stream: 'ext://evilmod.stream'}}
                    root: {level: INFO, handlers: [h]}
            """,
        },
        ["--config-dir", "exp", "--config-name", "run"],
    ),
    (
        "a config's sweep of Hydra's job logging",
        {
            "exp/hydra/job_logging/evil.yaml": """
                version: 1
                formatters: {f: {'()': os.mkdir, path: MARKER}}
                root: {level: INFO}
            """,
            "exp/run.yaml": """
                defaults: [train, _self_]
                hydra: {sweeper: {params: {hydra/job_logging: evil}}}
            """,
        },
        ["-m", "--config-dir", "exp", "--config-name", "run"],
    ),
    (
        "the own app: nested interpolation in hydra.callbacks",
        {},
        [
            "+evil={_target_: os.mkdir, path: MARKER}",
            "+hydra.callbacks.r={_target_: lossmix.app.report.SweepReport, x: '${evil}'}",
        ],
    ),
]
CASE_IDS = [name for name, _, _ in CASES]

DRIVER = """
import contextlib, io, json, os, runpy, sys
import lossmix.train
from hydra.core.global_hydra import GlobalHydra
root, app, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
results = []
for index, (name, argv) in enumerate(cases):
    os.chdir(os.path.join(root, str(index)))
    err, out, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            if name.startswith("the own app"):
                sys.path.insert(0, app)
                sys.argv = [os.path.join(app, "train.py"), *argv]
                runpy.run_path(os.path.join(app, "train.py"), run_name="__main__")
            else:
                sys.argv = ["lossmix.train", *argv]
                lossmix.train.main()
        except SystemExit as exit:
            code = exit.code
        except BaseException as exc:
            code = repr(exc)
        finally:
            GlobalHydra.instance().clear()
    results.append({"name": name, "code": code, "stderr": err.getvalue(), "stdout": out.getvalue(),
                "imported": [m for m in ("evilmod", "evilpkg") if m in sys.modules]})
print(json.dumps(results))
"""


def _write_case(folder: Path, files: dict[str, str], marker: Path) -> None:
    folder.mkdir(parents=True)
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).replace(MARK, str(marker)))
    with open(folder / "evil.pkl", "wb") as handle:
        pickle.dump(_Payload(str(marker)), handle)
    (folder / "evil.ckpt").write_bytes((folder / "evil.pkl").read_bytes())


@pytest.fixture(scope="module")
def hostile_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hydra_routes")
    quiet = ["hydra/job_logging=none", "hydra/hydra_logging=none"]
    cases = []
    for index, (name, files, argv) in enumerate(CASES):
        marker = root / f"marker{index}"
        _write_case(root / str(index), files, marker)
        logging_case = any("logging" in f for f in files.values())
        extra = [
            f"hydra.run.dir={root / str(index) / 'run'}",
            "hydra.sweep.dir=sweep",
            "+token=${oc.env:LOSSMIX_TEST_TOKEN}",
        ]
        if not logging_case and "--cfg" not in argv:
            extra = [*extra, *quiet]
        cases.append((name, [a.replace(MARK, str(marker)) for a in argv] + extra))
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "LOSSMIX_TEST_TOKEN": SECRET}
    for key in (
        "HYDRA_FULL_ERROR",
        ENV_ALLOWED_TARGETS,
        COMMAND_LINE_ENV,
        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD",
    ):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(root), str(APP), json.dumps(cases)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return root, {r["name"]: r for r in results}


@pytest.mark.parametrize("index", range(len(CASES)), ids=CASE_IDS)
def test_a_hostile_hydra_route_is_refused_in_one_line(hostile_runs, index):
    root, results = hostile_runs
    result = results[CASES[index][0]]
    assert not (root / f"marker{index}").exists(), f"the payload ran: {result}"
    lines = result["stderr"].strip().splitlines()
    assert result["code"] == 1, result
    assert len(lines) == 1 and lines[0].startswith("Error: "), result
    assert "Traceback" not in result["stderr"]
    assert not result["imported"], result


def test_no_route_shows_or_saves_the_secret(hostile_runs):
    root, results = hostile_runs
    for result in results.values():
        assert SECRET not in result["stderr"] + result["stdout"], result["name"]
    for path in root.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_each_route_names_what_it_refuses(hostile_runs):
    _, results = hostile_runs
    expected = {
        "nested interpolation in hydra.callbacks": "hydra.callbacks.r.x: _target_='os.mkdir' is refused",
        "oc.create in an experiment file": "hydra.callbacks.sweep_report.x: _target_='os.mkdir'",
        "torch.load of a pickle nested in a callback": "_target_='torch.load' is refused",
        "a target nested in the launcher node": "hydra.launcher.x: _target_='os.mkdir' is refused",
        "env_set widens the allow-list for an import": "hydra.job.env_set.LOSSMIX_ALLOWED_TARGETS",
        "a forged hydra.overrides.task": "hydra.overrides.task is set by a config file",
        "env_set turns off weights_only for a pickled checkpoint": "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD",
        "a search path into the working directory": "'pkg://evilpkg.conf'",
        "a logging factory from a file:// search path outside the config dir": "'file://elsewhere'",
        "a logging factory in the config dir": "hydra.job_logging.formatters.f.(): _target_='os.mkdir'",
        "a logging handler class from the working directory": "class='evilmod.Handler' is refused",
        "a logging ext:// import": "ext:// imports the module",
        "a config's sweep of Hydra's job logging": "params.hydra/job_logging is set by a config",
    }
    for name, text in expected.items():
        assert text in results[name]["stderr"], results[name]


# -- the rules, directly ------------------------------------------------------------------------
@pytest.fixture
def train_cfg():
    def make(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_module(config_module="lossmix.conf", version_base="1.3"):
            return compose("train", overrides=list(overrides), return_hydra_config=True)

    yield make
    GlobalHydra.instance().clear()


def test_the_shipped_hydra_node_passes_with_hydras_own_logging(train_cfg):
    check_hydra_node(train_cfg(), [])  # default job/hydra logging, the sweep report callback
    check_hydra_node(train_cfg("hydra/job_logging=disabled", "hydra/hydra_logging=none"), [])


def test_a_lone_interpolation_that_cannot_resolve_yet_is_refused(train_cfg):
    cfg = train_cfg(
        "+hydra.callbacks.r={_target_: lossmix.app.report.SweepReport, x: '${hydra:runtime.choices}'}"
    )
    check_hydra_node(cfg, [])
    cfg = train_cfg("+hydra.callbacks.r={_target_: lossmix.app.report.SweepReport, x: '${no_such_key}'}")
    with pytest.raises(LossConfigError, match=r"hydra.callbacks.r.x=\$\{no_such_key\} cannot be"):
        check_hydra_node(cfg, [])
    # text around it: a string whatever it resolves to, as Hydra's own log file name
    cfg = train_cfg("+hydra.callbacks.r={_target_: lossmix.app.report.SweepReport, x: 'a/${no_such_key}'}")
    check_hydra_node(cfg, [])


def test_hydra_callbacks_must_be_hydra_callbacks_in_allowed_packages(train_cfg):
    with pytest.raises(LossConfigError, match="hydra.callbacks.r: .*must be a subclass"):
        check_hydra_node(train_cfg("+hydra.callbacks.r={_target_: lossmix.losses.FocalLoss}"), [])
    with pytest.raises(LossConfigError, match="hydra.callbacks.r has no _target_"):
        check_hydra_node(train_cfg("+hydra.callbacks.r={x: 1}"), [])


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"formatters": {"f": {"()": "os.mkdir"}}}, r"formatters.f.\(\): _target_='os.mkdir' is refused"),
        ({"filters": {"f": {"()": "builtins.eval"}}}, "builtins.eval"),
        ({"handlers": {"h": {"class": "os.system"}}}, "class='os.system' is refused"),
        ({"handlers": {"h": {"class": "logging.handlers.SocketHandler"}}}, "SocketHandler' is refused"),
        ({"handlers": {"h": {"class": "logging.StreamHandler", ".": {"x": 1}}}}, "set attributes"),
        ({"handlers": {"h": {"class": "logging.StreamHandler", "stream": "ext://os.system"}}}, "ext://"),
        ({"loggers": {"a": {"handlers": ["ext://evil.x"]}}}, "ext://"),
    ],
)
def test_logging_configs_run_no_code(config, match):
    with pytest.raises(LossConfigError, match=match):
        check_logging_config({"version": 1, **config}, "hydra.job_logging")


def test_logging_configs_keep_what_hydra_ships():
    check_logging_config(
        {
            "version": 1,
            "formatters": {"simple": {"format": "%(message)s"}},
            "handlers": {
                "console": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout"},
                "file": {"class": "logging.FileHandler", "filename": "run.log"},
            },
            "root": {"level": "INFO", "handlers": ["console", "file"]},
        },
        "hydra.job_logging",
    )
    # a factory in a package the user allowed
    check_logging_config({"formatters": {"f": {"()": "lossmix.demo.DenseDetector"}}}, "x")


@pytest.mark.parametrize(
    "name",
    ["LOSSMIX_ALLOWED_TARGETS", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "PYTHONPATH", "LD_PRELOAD", "PATH"],
)
def test_env_set_may_not_set_protected_variables(name):
    with pytest.raises(LossConfigError, match=f"hydra.job.env_set.{name} is set by a config file"):
        check_env_set({name: "x"}, [])
    check_env_set({name: "x"}, [f"+hydra.job.env_set.{name}=x"])  # the user's own command line
    check_env_set({name: "x"}, [f"hydra.job.env_set={{{name}: x}}"])


def test_env_set_keeps_ordinary_variables():
    check_env_set({"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}, [])


def test_a_forged_overrides_record_is_refused():
    check_overrides_record(["a=1"], 1, "task")
    with pytest.raises(LossConfigError, match=r"\['lossmix.imports=\[evilmod\]'\]"):
        check_overrides_record(["lossmix.imports=[evilmod]", "a=1"], 1, "task")


def test_search_path_entries(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evilpkg").mkdir()
    (tmp_path / "evilpkg" / "__init__.py").write_text("raise SystemExit('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    conf = tmp_path / "conf"
    check_search_path(
        ["pkg://lossmix.conf", "pkg://hydra.conf", f"file://{conf}/sub"],
        user_dirs=[str(conf)],
        from_command_line=False,
    )
    for entry in ("pkg://evilpkg.conf", "structured://evilpkg", "pkg://no_such_package_here"):
        with pytest.raises(LossConfigError, match="not an installed package"):
            check_search_path([entry], user_dirs=[str(conf)], from_command_line=False)
    with pytest.raises(LossConfigError, match="outside the config directories"):
        check_search_path([f"file://{tmp_path}"], user_dirs=[str(conf)], from_command_line=False)
    with pytest.raises(LossConfigError, match="outside the config directories"):
        check_search_path([f"file://{conf}/../x"], user_dirs=[str(conf)], from_command_line=False)
    check_search_path(["pkg://evilpkg.conf"], user_dirs=[], from_command_line=True)  # the user's
    assert "evilpkg" not in sys.modules


def test_grants_come_from_the_real_command_line(monkeypatch, train_cfg):
    monkeypatch.setenv(COMMAND_LINE_ENV, json.dumps(["lossmix.allowed_targets=[my_project]"]))
    assert command_line_overrides() == ["lossmix.allowed_targets=[my_project]"]
    monkeypatch.delenv(COMMAND_LINE_ENV)
    assert command_line_overrides() == []  # outside a Hydra job and no record: nothing
    monkeypatch.setenv(COMMAND_LINE_ENV, "{not json")
    with pytest.raises(LossConfigError, match=COMMAND_LINE_ENV):
        command_line_overrides()


def test_a_plain_hydra_main_app_reads_grants_from_sys_argv(monkeypatch, train_cfg):
    from hydra.core.hydra_config import HydraConfig

    cfg = train_cfg()
    monkeypatch.delenv(COMMAND_LINE_ENV, raising=False)
    OmegaConf.set_readonly(cfg.hydra, False)
    cfg.hydra.overrides.task = ["lossmix.allowed_targets=[forged]"]  # what a config file can write
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        monkeypatch.setattr(sys, "argv", ["app.py", "loss.cls.gamma=1.5", "lossmix.allowed_targets=[mine]"])
        assert command_line_overrides() == ["loss.cls.gamma=1.5", "lossmix.allowed_targets=[mine]"]
        monkeypatch.setattr(sys, "argv", ["pytest", "-q", "--weird"])  # not a Hydra command line
        assert command_line_overrides() == []
    finally:
        HydraConfig.instance().cfg = saved


@pytest.mark.parametrize(
    ("text", "single"),
    [
        ("${a}", True),
        ("${oc.create:'{a: 1}'}", True),
        ("x${a}", False),
        ("${a}/${b}.log", False),
        ("plain", False),
    ],
)
def test_single_interpolation(text, single):
    assert single_interpolation(text) is single


def test_lossmix_show_checks_the_search_path_before_composing(tmp_path, monkeypatch, capsys):
    from lossmix.app import cli

    marker = tmp_path / "marker"
    _write_case(
        tmp_path / "case",
        {
            "evilpkg/__init__.py": PACKAGE,
            "evilpkg/conf/__init__.py": "",
            "exp/run.yaml": "hydra: {searchpath: ['pkg://evilpkg.conf']}\nloss: {}\n",
        },
        marker,
    )
    monkeypatch.chdir(tmp_path / "case")
    monkeypatch.syspath_prepend("")
    code = cli.main(["show", "--config-dir", "exp", "--config-name", "run"])
    err = capsys.readouterr().err
    assert code == 1 and "not an installed package" in err and "Traceback" not in err
    assert not marker.exists() and "evilpkg" not in sys.modules


def test_the_docs_quote_the_real_message(hostile_runs):
    _, results = hostile_runs
    line = results["nested interpolation in hydra.callbacks"]["stderr"].strip()
    readme = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    assert f"```text\n{line}\n```" in readme


@pytest.mark.parametrize("key", ["setup", "additional_parameters"])
def test_the_slurm_launchers_shell_lines_come_from_the_command_line(train_cfg, key):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install lossmix[slurm]")
    value = "['touch MARKER']" if key == "setup" else "{wrap: 'touch MARKER'}"
    plus = "" if key == "setup" else "+"
    cfg = train_cfg("hydra/launcher=slurm", f"{plus}hydra.launcher.{key}={value}")
    with pytest.raises(LossConfigError, match=f"hydra.launcher.{key} is set by a config file"):
        check_hydra_node(cfg, [])  # what a config file wrote
    check_hydra_node(cfg, ["hydra/launcher=slurm", f"{plus}hydra.launcher.{key}={value}"])
    check_hydra_node(train_cfg("hydra/launcher=slurm"), [])  # the shipped option sets neither
