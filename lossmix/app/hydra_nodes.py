"""What Hydra itself builds, calls or imports from a composed config, checked before Hydra does.

A config file may be someone else's (an experiment folder, a shared YAML), and Hydra acts
on parts of it before any lossmix code runs: it instantiates ``hydra.callbacks`` (and,
under ``-m``, the launcher and the sweeper, with everything nested in them), hands
``hydra.job_logging``/``hydra.hydra_logging`` to :func:`logging.config.dictConfig` (whose
``'()'`` key calls a factory and whose ``ext://`` values import modules), imports the
packages a primary config's ``hydra.searchpath`` names, and sets ``hydra.job.env_set`` in
the job's environment. The app (:func:`lossmix.app.runner.hydra_app`) checks each of them here
first, on the value Hydra will see, after interpolation and resolvers:

* every ``_target_`` anywhere in ``hydra.callbacks``, ``hydra.launcher`` and
  ``hydra.sweeper`` follows the one allow-list rule (:func:`lossmix.registry.allowlist.resolve_target`),
  a node whose value cannot be resolved before the run is refused;
* logging configs: no ``'()'`` factory outside the allowed packages, no ``'.'`` property
  setter, handler and formatter classes only from :data:`LOGGING_CLASSES`, ``ext://`` only
  for ``sys.stdout``/``sys.stderr``;
* ``hydra.searchpath`` from a config names installed packages and folders under the config
  directories the user passed; the command line's ``hydra.searchpath=[...]`` is the user's;
* ``hydra.job.env_set`` from a config may not set :data:`PROTECTED_ENV` variables (the
  allow-list, torch's loader switches, Python's and the dynamic loader's start-up
  variables); the command line may;
* a config's sweep (``hydra.sweeper.params``) may not sweep Hydra's own nodes (each job's
  logging is configured from its own composed config);
* the launcher's shell lines (SLURM's ``setup``, ``additional_parameters``) come from the
  command line only;
* ``hydra.overrides`` is Hydra's record of the command line: a config that sets it is
  forging grants, and is refused.

Grants come from :func:`command_line_overrides`, never from the composed config.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from lossmix.app.nodes import app_target
from lossmix.errors import LossConfigError
from lossmix.registry.allowlist import covers

__all__ = [
    "COMMAND_LINE_ENV",
    "LAUNCHER_SHELL_KEYS",
    "LOGGING_CLASSES",
    "PROTECTED_ENV",
    "PROTECTED_ENV_NAMES",
    "check_env_set",
    "check_hydra_node",
    "check_launcher_shell",
    "check_logging_config",
    "check_overrides_record",
    "check_search_path",
    "check_sweeper_params",
    "command_line_overrides",
    "record_command_line",
]

#: where :func:`record_command_line` keeps the real command line's overrides for the jobs a
#: launcher runs in other processes (they inherit the environment, a config cannot set it)
COMMAND_LINE_ENV = "LOSSMIX_COMMAND_LINE"
#: prefixes of the environment variables that a config's ``hydra.job.env_set`` may not set:
#: lossmix's grants, torch's loader switches (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``), what
#: Python, the dynamic loader and matplotlib read (``PYTHONPATH``, ``LD_PRELOAD``, ``MPLBACKEND``)
PROTECTED_ENV: tuple[str, ...] = ("LOSSMIX_", "TORCH_", "PYTORCH_", "PYTHON", "LD_", "DYLD_", "MPL")
#: and whole names: the program search path and what shells source at start-up
PROTECTED_ENV_NAMES: tuple[str, ...] = ("PATH", "BASH_ENV", "ENV")
#: the handler and formatter classes a logging config may name with ``class:``
LOGGING_CLASSES: tuple[str, ...] = (
    "logging.StreamHandler",
    "logging.FileHandler",
    "logging.NullHandler",
    "logging.Formatter",
    "logging.handlers.RotatingFileHandler",
    "logging.handlers.TimedRotatingFileHandler",
    "logging.handlers.WatchedFileHandler",
    "logging.handlers.MemoryHandler",
)
#: launcher keys that a cluster runs as shell commands or job-script lines (submitit's SLURM
#: launcher: ``setup`` lines before ``srun``, ``additional_parameters`` as ``#SBATCH`` lines)
LAUNCHER_SHELL_KEYS: tuple[str, ...] = ("setup", "srun_args", "additional_parameters")
_EXT_STREAMS = ("ext://sys.stdout", "ext://sys.stderr")
_INSTANTIATED = ("callbacks", "launcher", "sweeper")
_LOGGING = ("hydra_logging", "job_logging")
_PLUGIN_PACKAGES = ("hydra_plugins", "hydra._internal.core_plugins")


def record_command_line(overrides: Sequence[str]) -> None:
    """Keep the real command line's overrides for this process and the jobs it launches."""
    os.environ[COMMAND_LINE_ENV] = json.dumps(list(overrides))


def command_line_overrides() -> list[str]:
    """The overrides the user gave on the command line, the only ones that may grant trust.

    Recorded by :func:`record_command_line` (the app's entry point, inherited by the jobs a
    launcher starts elsewhere); else, inside a Hydra job of a plain ``@hydra.main`` app, this
    process's ``sys.argv``. Never ``hydra.overrides.task`` of the composed config: a config
    file can write entries there.
    """
    recorded = os.environ.get(COMMAND_LINE_ENV)
    if recorded is not None:
        try:
            values = json.loads(recorded)
        except ValueError:
            values = None
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise LossConfigError(
                f"the environment variable {COMMAND_LINE_ENV} is not a JSON list of overrides; "
                "lossmix's app sets it for its jobs, unset it."
            )
        return values
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    from lossmix.utilities.compat import parse_hydra_argv

    parsed = parse_hydra_argv(sys.argv[1:])
    return [] if parsed is None else list(parsed.overrides)


def _parsed(overrides: Iterable[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return list(OverridesParser.create().parse_overrides(list(overrides)))


def _protected(name: str) -> bool:
    upper = name.upper()
    return upper in PROTECTED_ENV_NAMES or upper.startswith(PROTECTED_ENV)


def check_env_set(env_set: Mapping[str, Any] | None, overrides: Sequence[str]) -> None:
    """Refuse a config's ``hydra.job.env_set`` entry for a :data:`PROTECTED_ENV` variable.

    An entry the command line gives (``hydra.job.env_set.TORCH_HOME=/data``) is the user's.

    Raises:
        LossConfigError: naming the variable and where it may be set instead.
    """
    if not env_set:
        return
    given: set[str] = set()
    for override in _parsed(overrides):
        key = override.get_key_element().lstrip("+~")
        if key == "hydra.job.env_set":
            value = override.value()
            given |= {str(k) for k in value} if isinstance(value, Mapping) else set()
        elif key.startswith("hydra.job.env_set."):
            given.add(key[len("hydra.job.env_set.") :])
    for name in env_set:
        if _protected(str(name)) and str(name) not in given:
            raise LossConfigError(
                f"hydra.job.env_set.{name} is set by a config file, and a config file may not set "
                f"{name} (it would change what lossmix trusts, how torch loads files or what "
                "Python and the loader run). If you mean it, set it in your shell "
                f"({name}=... python -m ...) or give it on the command line: "
                f"hydra.job.env_set.{name}=..."
            )


def _given(overrides: Sequence[str], key: str) -> bool:
    """Whether the command line sets ``key`` or something under it."""
    keys = (o.get_key_element().lstrip("+~") for o in _parsed(overrides))
    return any(k == key or k.startswith(key + ".") for k in keys)


def check_launcher_shell(launcher: Any, overrides: Sequence[str]) -> None:
    """A config's launcher may not carry shell commands (:data:`LAUNCHER_SHELL_KEYS`).

    Raises:
        LossConfigError: naming the key and how to give it on the command line.
    """
    if not isinstance(launcher, Mapping):
        return
    for key in LAUNCHER_SHELL_KEYS:
        if launcher.get(key) and not _given(overrides, f"hydra.launcher.{key}"):
            raise LossConfigError(
                f"hydra.launcher.{key} is set by a config file ({launcher[key]!r}), and the cluster "
                "runs it as shell commands or job-script lines; a config file may not. If you mean "
                f"it, give it on the command line: 'hydra.launcher.{key}=...'."
            )


def check_sweeper_params(sweeper: Any, overrides: Sequence[str]) -> None:
    """A config's sweep (``hydra.sweeper.params``) may not sweep Hydra's own nodes.

    Each job of a sweep is composed again with its parameters, and Hydra configures the job's
    logging from that job's config before any lossmix code runs; so a parameter that changes
    ``hydra/...`` or ``hydra.*`` (``hydra/job_logging: evil``) would be applied unchecked. Such
    a sweep is the user's only when the command line gives it (``-m hydra/job_logging=a,b``).

    Raises:
        LossConfigError: naming the parameter and where to give it instead.
    """
    params = sweeper.get("params") if isinstance(sweeper, Mapping) else None
    if not isinstance(params, Mapping):
        return
    for key in params:
        name = str(key).lstrip("+~")
        if (name == "hydra" or name.startswith(("hydra.", "hydra/"))) and not _given(
            overrides, f"hydra.sweeper.params.{key}"
        ):
            raise LossConfigError(
                f"hydra.sweeper.params.{key} is set by a config file; a sweep of Hydra's own nodes "
                "would change what Hydra builds for each job after lossmix checked it. Give it on "
                f"the command line instead: -m {name}=<value>,<value>."
            )


def check_overrides_record(record: Any, expected: int, where: str) -> None:
    """Hydra's ``hydra.overrides.<where>`` must hold the command line's entries alone.

    Hydra appends the command line's overrides to whatever the composed config already
    holds there, so a config file that writes ``hydra.overrides.task`` forges grants.
    """
    found = list(record or [])
    if len(found) != expected:
        forged = [str(v) for v in found[: max(len(found) - expected, 0)]]
        raise LossConfigError(
            f"hydra.overrides.{where} is set by a config file ({forged}); Hydra fills it from the "
            "command line alone, so a config may not write it. Remove the 'overrides' node from "
            "the config's 'hydra' section, and give overrides on the command line."
        )


def _installed(package: str) -> bool:
    """Whether the top-level package of ``package`` is found outside the working directory."""
    top = package.split(".", 1)[0]
    if top in sys.modules:  # imported already: importing it again runs nothing
        return True
    here = {os.path.abspath(os.curdir)}
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) not in here]
    for finder in sys.meta_path:
        if finder is importlib.machinery.PathFinder:
            found = importlib.machinery.PathFinder.find_spec(top, path)
        elif type(finder).__name__ in ("BuiltinImporter", "FrozenImporter"):
            continue
        else:
            try:
                found = finder.find_spec(top, None)
            except Exception:  # a finder that cannot answer for this name
                found = None
        if found is not None:
            return True
    return False


def _inside(path: str, folders: Iterable[str]) -> bool:
    real = os.path.realpath(path)
    return any(
        real == f or real.startswith(f.rstrip(os.sep) + os.sep) for f in map(os.path.realpath, folders)
    )


def check_search_path(entries: Any, *, user_dirs: Sequence[str], from_command_line: bool) -> None:
    """A primary config's ``hydra.searchpath`` names installed packages and the user's folders.

    Hydra imports a ``pkg://`` or ``structured://`` entry's package while it composes, so a
    package sitting in the working directory (someone else's experiment folder) would run.
    A ``file://`` entry must lie under a config directory the user passed (``--config-dir``,
    the app's own config path). The command line's ``hydra.searchpath=[...]`` is the user's.

    Raises:
        LossConfigError: naming the entry and how to use it if it is trusted.
    """
    if entries is None or from_command_line:
        return
    if isinstance(entries, str) or not isinstance(entries, Sequence):
        raise LossConfigError(
            f"hydra.searchpath must be a list of 'pkg://...' or 'file://...'; got {entries!r}."
        )
    for entry in entries:
        text = str(entry)
        scheme, sep, rest = text.partition("://")
        if not sep:
            scheme, rest = "file", text
        fix = f"If it is trusted, give it on the command line: hydra.searchpath=[{text}]"
        if scheme in ("pkg", "structured"):
            package = rest.replace("/", ".").strip(".")
            if not package or not _installed(package):
                raise LossConfigError(
                    f"hydra.searchpath entry '{text}' in a config file names '{package}', which is "
                    "not an installed package (it would be imported from the working directory, "
                    f"running its code while Hydra composes). {fix}, or install the package."
                )
        elif scheme == "file":
            if not _inside(os.path.abspath(rest), user_dirs):
                raise LossConfigError(
                    f"hydra.searchpath entry '{text}' in a config file lies outside the config "
                    f"directories you gave ({', '.join(user_dirs) or 'none'}). {fix}."
                )
        else:
            raise LossConfigError(
                f"hydra.searchpath entry '{text}': unknown scheme '{scheme}://'; use pkg:// or file://."
            )


@contextmanager
def _hydra_config(cfg: Any) -> Iterator[None]:
    """``${hydra:...}`` resolves against ``cfg`` inside the block, as during the run."""
    from hydra.core.hydra_config import HydraConfig

    instance = HydraConfig.instance()
    saved = instance.cfg
    instance.set_config(cfg)
    try:
        yield
    finally:
        instance.cfg = saved


def _resolved(node: Any, path: str) -> Any:
    """``node`` as plain containers, resolved as Hydra will resolve it.

    A value that cannot be resolved yet (``${hydra:runtime.output_dir}``, which Hydra sets
    when the job starts) is kept as written when it can only become a string (text around
    an interpolation); a lone interpolation could become a node, so it is refused.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not OmegaConf.is_config(node):
        return node
    try:
        return OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException:
        return _leniently(node, OmegaConf.to_container(node, resolve=False), path)


def _leniently(node: Any, raw: Any, path: str) -> Any:
    """``raw`` (``node`` unresolved) with each value resolved where it can be (see :func:`_resolved`)."""
    if not _nests(raw):
        return raw
    items = raw.items() if isinstance(raw, Mapping) else enumerate(raw)
    out = {
        k: _leniently(node[k], v, f"{path}.{k}") if _nests(v) else _leaf(node, k, v, path) for k, v in items
    }
    return out if isinstance(raw, Mapping) else list(out.values())


def _nests(raw: Any) -> bool:
    return isinstance(raw, (Mapping, list))


def _leaf(parent: Any, key: Any, raw: Any, path: str) -> Any:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from lossmix.utilities.compat import single_interpolation

    if not isinstance(raw, str) or "${" not in raw:
        return raw
    where = f"{path}.{key}"
    try:
        value = parent[key]
    except OmegaConfBaseException as err:
        if single_interpolation(raw):
            first = str(err).split("\n", 1)[0]
            raise LossConfigError(
                f"{where}={raw} cannot be resolved before the run ({first}); Hydra builds or calls "
                "what it holds, so lossmix checks its resolved value first. Give it a value that "
                f"resolves, or remove it with '~{where}'."
            ) from None
        return raw  # text around the interpolation: a string whatever it resolves to
    return _resolved(value, where) if OmegaConf.is_config(value) else value


def _nested_targets(tree: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(tree, Mapping):
        if "_target_" in tree:
            yield path, tree["_target_"]
        for key, value in tree.items():
            if key != "_target_":
                yield from _nested_targets(value, f"{path}.{key}")
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from _nested_targets(value, f"{path}.{index}")


def _check_instantiated(tree: Any, path: str, allowed: Sequence[str]) -> None:
    """Every ``_target_`` Hydra would instantiate from ``hydra.<callbacks|launcher|sweeper>``."""
    from hydra.experimental.callback import Callback

    if not isinstance(tree, Mapping):
        return
    if path == "hydra.callbacks":
        for name, child in tree.items():
            if child is None:
                continue
            where = f"{path}.{name}"
            if not isinstance(child, Mapping) or "_target_" not in child:
                raise LossConfigError(
                    f"{where} has no _target_; Hydra instantiates every child of hydra.callbacks. "
                    f"Give it a _target_ (a hydra.experimental.callback.Callback) or remove it with "
                    f"'~{where}'."
                )
            for here, target in _nested_targets(child, where):
                app_target(target, here, allowed, Callback if here == where else None)
        return
    own = tree.get("_target_")
    if own is not None and not any(covers(p, str(own)) for p in _PLUGIN_PACKAGES):
        raise LossConfigError(
            f"{path}._target_='{own}' is refused: Hydra's {path.split('.')[-1]} must be an installed "
            "Hydra plugin (hydra_plugins.*); choose one with hydra/"
            f"{path.split('.')[-1]}=<option>."
        )
    for key, value in tree.items():
        if key != "_target_":
            for here, target in _nested_targets(value, f"{path}.{key}"):
                app_target(target, here, allowed, None)


def check_logging_config(tree: Any, path: str, allowed: Sequence[str] = ()) -> None:
    """A logging config (``hydra.job_logging``) that :func:`logging.config.dictConfig` may run.

    Refused: a ``'()'`` factory outside the allowed packages (``lossmix``, ``torch.nn`` and the
    user's grants; never the standard library), a ``'.'`` property setter, a ``class`` that
    is not one of :data:`LOGGING_CLASSES`, and ``ext://`` values other than
    ``ext://sys.stdout``/``ext://sys.stderr`` (``ext://`` imports the module it names).

    Raises:
        LossConfigError: naming the key and what to write instead.
    """
    if isinstance(tree, list):
        for index, value in enumerate(tree):
            check_logging_config(value, f"{path}.{index}", allowed)
        return
    if isinstance(tree, str):
        if tree.startswith("ext://") and tree not in _EXT_STREAMS:
            raise LossConfigError(
                f"{path}='{tree}' is refused: ext:// imports the module it names; a logging "
                "config may use ext://sys.stdout or ext://sys.stderr."
            )
        return
    if not isinstance(tree, Mapping):
        return
    for key, value in tree.items():
        here = f"{path}.{key}"
        if key == "()":
            if callable(value) and not isinstance(value, str):
                raise LossConfigError(f"{here}: a factory must be a dotted class name.")
            app_target(value, here, allowed, None)
        elif key == ".":
            raise LossConfigError(
                f"{here}: a logging config may not set attributes with '.'; give the handler's or "
                "formatter's arguments as keys."
            )
        elif key == "class":
            if value not in LOGGING_CLASSES:
                raise LossConfigError(
                    f"{here}='{value}' is refused: a logging config's class must be one of "
                    f"{', '.join(LOGGING_CLASSES)}."
                )
        else:
            check_logging_config(value, here, allowed)


def check_hydra_node(cfg: Any, overrides: Sequence[str], allowed: Sequence[str] = ()) -> None:
    """Check everything Hydra builds, calls or trusts from ``cfg.hydra`` (see the module doc).

    Args:
        cfg: the config Hydra composed, with its ``hydra`` node.
        overrides: the real command line's overrides (:func:`command_line_overrides`).
        allowed: the user's extra allowed packages (:class:`lossmix.app.trust.AppTrust`).

    Raises:
        LossConfigError: one line naming the node, what is refused and the fix.
    """
    hydra = cfg.get("hydra") if hasattr(cfg, "get") else None
    if hydra is None:
        return
    job = hydra.get("job") or {}
    check_env_set(job.get("env_set"), overrides)
    with _hydra_config(cfg):
        for key in _INSTANTIATED:
            node = hydra.get(key)
            if node is not None:
                tree = _resolved(node, f"hydra.{key}")
                _check_instantiated(tree, f"hydra.{key}", allowed)
                if key == "launcher":
                    check_launcher_shell(tree, overrides)
                if key == "sweeper":
                    check_sweeper_params(tree, overrides)
        for key in _LOGGING:
            node = hydra.get(key)
            if node is not None:
                check_logging_config(_resolved(node, f"hydra.{key}"), f"hydra.{key}", allowed)
