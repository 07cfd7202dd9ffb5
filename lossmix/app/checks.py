"""The Hydra front end's checks: every term node against its loss's signature, before training.

Hydra's struct mode refuses a misspelt plain override (``loss.cls.gama=1.5``), but
``+loss.cls.gama=1.5`` adds the key and a value override can change a type
(``loss.cls.gamma=abc``). :func:`check_loss_config` catches both before anything is
built, with the term, the key, the valid keys and the closest one; the rest of the
checks (inputs, normalisers, samplers' values) are :meth:`LossMix.from_config`'s.
:func:`one_line_error` turns these and Hydra's composition errors into the one line
the command line prints.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from lossmix.app.compose import compose_config
from lossmix.app.trust import AppTrust
from lossmix.errors import LossConfigError
from lossmix.mix.keys import check_term_node, loss_node_takes_key
from lossmix.mix.loss_mix import AGGREGATION_KEY, WEIGHTING_KEY, LossMix
from lossmix.registry.allowlist import allowed_prefixes, covers
from lossmix.registry.foreign_nodes import check_bool_keys, train_cfg_hint
from lossmix.registry.nodes import (
    env_secrets,
    errors_hidden,
    is_group_node,
    loss_key_label,
    resolve_env_values,
    to_plain,
)
from lossmix.registry.registry import DEFAULT_SCOPE_KEY, LOSSES
from lossmix.registry.signature import check_node_values, expected_types
from lossmix.utilities.compat import parse_hydra_argv

__all__ = [
    "build_loss_mix",
    "check_loss_config",
    "check_node_values",
    "command_line_overrides_of",
    "expected_types",
    "explain_override_error",
    "import_modules",
    "iter_term_nodes",
    "one_line_error",
    "quoted_integer_keys",
    "term_rows",
]


def iter_term_nodes(node: Mapping[str, Any]) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """``(path, name, node)`` of every term: ``("cls", "cls", ...)`` or ``("gen.adv", "adv", ...)``.

    ``None`` children (dropped terms), the ``weighting`` and ``aggregation`` nodes and the
    mix's ``default_scope`` are skipped, as :meth:`LossMix.from_config` does.
    """
    for name, child in node.items():
        if child is None or name in (WEIGHTING_KEY, AGGREGATION_KEY, DEFAULT_SCOPE_KEY):
            continue
        if is_group_node(child):
            for leaf, grandchild in child.items():
                if grandchild is not None:
                    yield f"{name}.{leaf}", str(leaf), grandchild
        else:
            yield str(name), str(name), child


# -- user modules ------------------------------------------------------------------------------
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", re.ASCII)


def import_modules(names: Any, *, allowed_targets: Sequence[str] = (), granted: Sequence[str] = ()) -> None:
    """Import each module of ``lossmix.imports``, so its ``@LOSSES.register()`` calls run.

    A module is imported only if it lies under an allowed package (``lossmix``, what the
    user allowed: :func:`lossmix.allow_targets`, ``LOSSMIX_ALLOWED_TARGETS``,
    ``allowed_targets``) or is named in ``granted`` (the app passes the modules given on
    the command line), never an arbitrary module a config file names.

    Args:
        names: dotted module names (a list, a ListConfig, or None for none), e.g.
            ``["my_project.losses"]``; each must be importable (installed, on
            ``sys.path``/``PYTHONPATH``, or in the current directory, as ``python -m`` finds it).
        allowed_targets: extra trusted prefixes.
        granted: module names the user gave explicitly.

    Raises:
        LossConfigError: a name that is not a dotted module name, a module outside the
            allowed packages, or a module whose import fails (naming it and the error).

    >>> import_modules(["lossmix.demo.custom_losses"])
    >>> import_modules(["my-losses"])
    Traceback (most recent call last):
    ...
    lossmix.errors.LossConfigError: lossmix.imports: 'my-losses' is not a dotted module name ...
    """
    names = to_plain(names) or []
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise LossConfigError(
            f"lossmix.imports must be a list of module names, e.g. lossmix.imports=[my_project.losses]; "
            f"got {names!r}."
        )
    allowed = allowed_prefixes(allowed_targets, defaults=("lossmix",))
    for name in names:
        if not isinstance(name, str) or not _MODULE_NAME.fullmatch(name):
            raise LossConfigError(
                f"lossmix.imports: {name!r} is not a dotted module name (like my_project.losses: "
                "letters, digits and underscores, parts separated by dots)."
            )
        _check_importable(name, allowed, granted)
        _current_directory_on_path()
        try:
            importlib.import_module(name)
        except Exception as err:  # the user's module: any error in it is a configuration error
            first = str(err).splitlines()[0] if str(err) else ""
            raise LossConfigError(
                f"lossmix.imports: could not import module '{name}': {type(err).__name__}: {first}"
            ) from err


def _current_directory_on_path() -> None:
    """Let an allowed or granted module of the current directory be found, as ``python -m``
    finds it (the ``lossmix`` command and ``python my_app.py`` put only the script's
    directory on ``sys.path``); appended, so it shadows no installed package."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def _check_importable(name: str, allowed: Sequence[str], granted: Sequence[str]) -> None:
    from lossmix.registry.allowlist import check_prefix

    try:
        check_prefix(name, source="lossmix.imports")
    except LossConfigError as err:
        raise LossConfigError(f"{err} A module of lossmix.imports must be trusted code.") from None
    if name in granted or any(covers(prefix, name) for prefix in allowed):
        return
    top = name.split(".")[0]
    raise LossConfigError(
        f"lossmix.imports: '{name}' is refused: it is outside the allowed packages "
        f"{list(allowed)}, and a config file cannot make lossmix import it. Name it on the command line "
        f"(lossmix.imports=[{name}]), allow its package there (lossmix.allowed_targets=[{top}]),"
        f" or set LOSSMIX_ALLOWED_TARGETS={top}."
    )


def check_loss_config(node: Any, *, allowed_targets: tuple[str, ...] | list[str] = ()) -> None:
    """Check every term node's keys and simple value types against its loss (and sampler).

    Raises:
        LossConfigError: naming the term, the key, what is valid and the closest match.

    >>> check_loss_config({"cls": {"type": "FocalLoss", "gama": 1.5}})
    Traceback (most recent call last):
    ...
    lossmix.errors.LossConfigError: term 'cls' (FocalLoss): unknown key 'gama' ... 'gamma'? ...
    """
    secrets = env_secrets(node)
    with errors_hidden(secrets):
        node = to_plain(node)
        # a stored node (a checkpoint's hyper-parameters) keeps ${oc.env:NAME}: read it now
        node, read = resolve_env_values(node, label=functools.partial(loss_key_label, node))
    with errors_hidden({**read, **secrets}):
        if not isinstance(node, Mapping) or not node:
            raise LossConfigError(
                f"the loss config must map term names to term nodes, e.g. loss/cls=focal; got {node!r}."
            )
        check_bool_keys(node, "loss")
        for name, child in node.items():
            hint = train_cfg_hint(name, child, where="loss.")
            if hint is not None:
                raise LossConfigError(hint)
        scope = node.get(DEFAULT_SCOPE_KEY)
        if scope is not None:
            LOSSES.check_scope(scope, owner=f"loss.{DEFAULT_SCOPE_KEY}")
        for path, name, child in iter_term_nodes(node):
            check_term_node(path, name, child, allowed_targets=tuple(allowed_targets), default_scope=scope)


def build_loss_mix(node: Any, *, allowed_targets: tuple[str, ...] | list[str] = ()) -> LossMix:
    """:func:`check_loss_config`, then :meth:`LossMix.from_config`."""
    check_loss_config(node, allowed_targets=allowed_targets)
    return LossMix.from_config(node, allowed_targets=allowed_targets)


def term_rows(node: Any) -> list[dict[str, str]]:
    """One row per term for tables: term, loss, weight, inputs, sampler, normalizer, every."""
    rows = []
    node = to_plain(node)
    for path, _, child in iter_term_nodes(node):
        sampler = child.get("sampler")
        normalizer = child.get("normalizer")
        if isinstance(sampler, Mapping):
            sampler = ", ".join(f"{k}={v}" for k, v in sampler.items() if v is not None)
        if isinstance(normalizer, Mapping):
            normalizer = ", ".join(f"{k}={v}" for k, v in normalizer.items())
        inputs = child.get("inputs") or child.get("data_info") or {}
        rows.append(
            {
                "term": path,
                "loss": _loss_label(child, node.get(DEFAULT_SCOPE_KEY)),
                "weight": str(child.get("loss_weight", "default")),
                "inputs": ", ".join(f"{k}←{v}" for k, v in inputs.items()),
                "sampler": str(sampler or "-"),
                "normalizer": str(normalizer or "-"),
                "every": str(child.get("every", 1)),
                "in_total": "yes" if child.get("in_total", True) else "no",
            }
        )
    return rows


def _loss_label(child: Mapping[str, Any], mix_scope: Any) -> str:
    """The term's ``type`` as it resolves (``mmagic.L1Loss`` under a default scope), or its target."""
    ref = child.get("type")
    if not isinstance(ref, str):
        return str(child.get("_target_"))
    try:
        return LOSSES.canonical_name(ref, default_scope=child.get(DEFAULT_SCOPE_KEY, mix_scope))
    except LossConfigError:
        return ref


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def command_line_overrides_of(argv: Sequence[str]) -> list[str]:
    """The overrides among a command line's arguments (``--cfg job``'s ``job`` is not one).

    >>> command_line_overrides_of(["loss.cls.gamma=1.5", "--cfg", "job"])
    ['loss.cls.gamma=1.5']
    """
    parsed = parse_hydra_argv(argv)
    return [o for o in argv if not o.startswith("-")] if parsed is None else list(parsed.overrides)


def explain_override_error(
    err: BaseException,
    overrides: Sequence[str],
    compose: Callable[[Sequence[str]], Any] | None = None,
) -> str | None:
    """For Hydra's "Could not override 'loss.<term>.<key>'", lossmix's own message.

    Composes the config again without that override (with ``compose``: lossmix's training
    config by default, a user's app passes its own) and checks the term with the key
    added, which names the term, the valid keys and the closest one.
    """
    quoted = quoted_integer_keys(err, overrides)
    if quoted is not None:
        return quoted
    twice = already_in_defaults(err, overrides)
    if twice is not None:
        return twice
    found = re.match(r"Could not override '(loss\.[^']+)'", str(err))
    if not found:
        return None
    key = found.group(1)
    rest = [o for o in overrides if _override_key(o) != key]
    try:
        cfg = (compose or compose_config)(rest)
        trust = AppTrust(cfg, command_line_overrides_of(rest))
        lossmix_node = cfg.get("lossmix") or {}
        import_modules(
            lossmix_node.get("imports"), allowed_targets=trust.allowed, granted=trust.imports_granted
        )
        loss = to_plain(cfg.loss)
        if loss_node_takes_key(loss, key.split(".")[1:], allowed_targets=trust.allowed):
            given = next(o for o in overrides if _override_key(o) == key)
            return (
                f"{key} is not in the composed config (its node does not spell it out), so Hydra "
                f"cannot override it; add it with a +: +{given.lstrip('+~')}."
            )
        parent = loss
        for depth, part in enumerate(key.split(".")[1:-1], start=2):
            parent = parent[part]
            if parent is None:
                return _null_parent_hint(".".join(key.split(".")[:depth]), key)
        parent[key.rsplit(".", 1)[1]] = None
        check_loss_config(loss, allowed_targets=trust.allowed)
    except LossConfigError as explained:
        return str(explained)
    except Exception:  # the original message is still right; only the hint is lost
        return None
    return None


def already_in_defaults(err: BaseException, overrides: Sequence[str]) -> str | None:
    """For Hydra's "<group>@<package> appears more than once in the final defaults list": the
    option is in the config already (the app's defaults put it there, e.g. the NaN guard), so
    the override sets its keys, or swaps the option without the ``+``.

    >>> already_in_defaults(Exception("callback@callbacks.g appears more than once in the final "
    ...     "defaults list"), ["+callback@callbacks.g=g"])  # doctest: +ELLIPSIS
    "+callback@callbacks.g=g: 'callbacks.g' is in the config already ...; set its keys ..."
    """
    found = re.match(r"(\S+)@(\S+) appears more than once in the final defaults list", str(err))
    if not found:
        return None
    group, package = found.groups()
    given = next((o for o in overrides if o.lstrip("+").split("=", 1)[0] == f"{group}@{package}"), None)
    if given is None:
        return None
    option = given.split("=", 1)[1] if "=" in given else "<option>"
    return (
        f"{given}: '{package}' is in the config already (the defaults list puts it there), so it "
        f"cannot be added again; set its keys ({package}.<key>=...) or swap its option without "
        f"the +: {group}@{package}={option}."
    )


_QUOTED_INT_KEY = re.compile(r"""([{,]\s*)(['"])(-?\d+)\2(\s*:)""")


def quoted_integer_keys(err: BaseException, overrides: Sequence[str]) -> str | None:
    """For Hydra's grammar error on a dict with quoted integer keys (MMagic's
    ``layer_weights={'2': 0.1}``), the override written as Hydra reads it (``{2: 0.1}``).

    >>> from hydra.errors import OverrideParseException
    >>> quoted_integer_keys(OverrideParseException("", "no viable"), ["x={'2': 0.1}"])  # doctest: +ELLIPSIS
    "override x={'2': 0.1}: Hydra's override grammar takes no quoted dict keys; write x={2: 0.1} ..."
    """
    from hydra.errors import OverrideParseException

    if not isinstance(err, OverrideParseException):
        return None
    for override in overrides:
        fixed = _QUOTED_INT_KEY.sub(r"\1\3\4", override)
        if fixed != override:
            return (
                f"override {override}: Hydra's override grammar takes no quoted dict keys; write "
                f"{fixed} (the keys become integers, which lossmix's losses take in place of MMagic's "
                "strings)."
            )
    return None


def _null_parent_hint(parent: str, key: str) -> str:
    if parent.endswith(".sampler"):
        return (
            f"{parent} is null, so {key} cannot be set; add a sampler first: "
            f"+sampler@{parent}=random (or ohem, pseudo), then {key}=<value>."
        )
    return f"{parent} is null, so {key} cannot be set; give {parent} a value first."


# -- one-line errors -----------------------------------------------------------------------------
_MISSING = re.compile(
    r"Could not find '([^']+)'.*?Available options in '([^']+)':\s*(.*?)"
    r"(?:Config search path:|$)",
    re.S,
)


#: the pip package behind each of Hydra's launcher plugins the configs name
_PLUGINS = {
    "hydra/launcher/submitit": "hydra-submitit-launcher",
    "hydra/launcher/joblib": "hydra-joblib-launcher",
}


def _yaml_error(err: BaseException) -> str | None:
    """A YAML file's own mistake (PyYAML's marked error: a duplicate key, a bad indent) as
    ``file, line N: problem; fix``, or ``None`` for another error."""
    import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs

    if not isinstance(err, yaml.MarkedYAMLError):
        return None
    mark = err.problem_mark
    where = f"{mark.name}, line {mark.line + 1}" if mark is not None else "a config file"
    problem = " ".join(str(err.problem or err).split())
    if problem.startswith("found duplicate key"):
        key = problem.removeprefix("found duplicate key").strip()
        return (
            f"{where}: the key '{key}' is given twice in one mapping; keep one of them (YAML "
            "allows a key once)."
        )
    return f"{where}: {problem} (the file is not valid YAML); fix the file."


def one_line_error(err: BaseException) -> str:
    """A user-facing error on one line: Hydra's multi-line texts folded, causes appended."""
    found = _yaml_error(err)
    if found is not None:
        return found
    text = str(err)
    missing = _MISSING.search(text)
    if missing:
        wanted, group, options = missing.groups()
        listed = ", ".join(options.split())
        plugin = next((p for k, p in _PLUGINS.items() if wanted.startswith(k)), None)
        hint = f" Install the launcher plugin: pip install {plugin}." if plugin else ""
        return f"Could not find '{wanted}'. Available options in '{group}': {listed}.{hint}"
    text = text.split("Config search path:")[0]
    cause = err.__cause__
    if cause is not None and type(cause).__module__.startswith("omegaconf"):
        text += f" ({str(cause).splitlines()[0]})"
    return " ".join(text.split())
