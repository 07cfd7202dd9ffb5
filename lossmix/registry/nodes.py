"""Config containers: OmegaConf nodes as plain dicts and lists, and keeping secrets out of sight.

Every layer that accepts a config node (a dict or an OmegaConf ``DictConfig``) turns it
into plain containers here, once, so checkpoints and messages only ever see plain
Python values. A value interpolated from the environment (``${oc.env:SECRET}``) is
never shown: :func:`env_secrets` finds such values and :func:`redact` replaces them in
a message with the interpolation that produced them; :func:`redacting` does so for
every error, warning and log line of a block; :func:`env_paths` says where a config
holds them, so what is stored (a checkpoint's hyper-parameters) keeps the interpolation,
and :func:`resolve_env_values` reads such an interpolation again when a stored node is
built (nothing else in it is evaluated).
"""

from __future__ import annotations

import copy
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = [
    "RedactingFilter",
    "env_paths",
    "env_secrets",
    "errors_hidden",
    "hidden_error",
    "is_group_node",
    "is_omegaconf",
    "is_term_node",
    "loss_key_label",
    "redact",
    "redacted",
    "redacting",
    "register_resolvers",
    "replace_at",
    "resolve_env_values",
    "secrets_hidden",
    "to_plain",
]

TERM_REFS: tuple[str, ...] = ("type", "_target_")

_ENV = re.compile(r"\$\{\s*oc\.env\s*:")
_ENV_NAME = re.compile(r"\$\{\s*oc\.env\s*:\s*([A-Za-z_][A-Za-z0-9_]*)")
# a whole value that is one ${oc.env:NAME} or ${oc.env:NAME,default} (no nested interpolation)
_ENV_WHOLE = re.compile(r"\$\{\s*oc\.env\s*:\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:,[^${}\\]*)?\}")
# a whole value that is one node interpolation, ${a.b} or relative ${..a.b}
_NODE_REF = re.compile(r"\$\{(\.*)([A-Za-z_][\w-]*(?:\.[\w-]+)*)\}")
_CHAIN_DEPTH = 16


def is_omegaconf(node: Any) -> bool:
    """True for a ``DictConfig`` or ``ListConfig``."""
    return type(node).__module__.startswith("omegaconf")


def to_plain(node: Any) -> Any:
    """A DictConfig/ListConfig as plain dicts and lists (interpolations resolved); anything
    else as is.

    >>> from omegaconf import OmegaConf
    >>> to_plain(OmegaConf.create({"a": 1, "b": "${a}"}))
    {'a': 1, 'b': 1}
    """
    if is_omegaconf(node):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(node, resolve=True)
    return node


def is_term_node(node: Any) -> bool:
    """A node that names what to build, with ``type`` or ``_target_`` (a term's, a sampler's, a
    weighting's, an aggregation's): the one test of what such a node is.

    >>> is_term_node({"type": "FocalLoss"}), is_term_node({"cls": {"type": "FocalLoss"}})
    (True, False)
    """
    return isinstance(node, Mapping) and any(ref in node for ref in TERM_REFS)


def is_group_node(node: Any) -> bool:
    """A group's node: a non-empty mapping, not a term, whose children are mappings (each a
    term's node, checked as one) or None (a removed term).

    >>> is_group_node({"adv": {"type": "GANLoss", "gan_type": "hinge"}, "rec": None})
    True
    >>> is_group_node({"gamma": 2.0})  # a term's node that lost its type: not a group
    False
    """
    return (
        isinstance(node, Mapping)
        and bool(node)
        and not is_term_node(node)
        and all(c is None or isinstance(c, Mapping) for c in node.values())
    )


def _leaves(raw: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(raw, Mapping):
        for key, value in raw.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(raw, list):
        for index, value in enumerate(raw):
            yield from _leaves(value, (*path, index))
    else:
        yield path, raw


def _lookup(raw: Any, path: tuple[Any, ...]) -> tuple[bool, Any]:
    """``(found, value)`` at ``path`` in plain containers (a list index may be a digit string)."""
    node = raw
    for key in path:
        if isinstance(node, Mapping) and key in node:
            node = node[key]
        elif isinstance(node, list) and str(key).isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return False, None
    return True, node


def _env_sources(raw: Any, path: tuple[Any, ...], value: Any, depth: int = 0) -> dict[tuple[Any, ...], str]:
    """``{sub-path: ${oc.env:...} text}`` of what the value at ``path`` reads from the
    environment: ``()`` for the value itself (its own text, or the end of a chain of node
    interpolations: ``model.token: ${data.token}``), or paths inside a node it interpolates
    (``model.loss: ${loss}``)."""
    if depth > _CHAIN_DEPTH:  # a cycle: OmegaConf refuses it when resolving
        return {}
    if isinstance(value, (Mapping, list)):
        found: dict[tuple[Any, ...], str] = {}
        for sub, leaf in _leaves(value):
            for rest, text in _env_sources(raw, (*path, *sub), leaf, depth + 1).items():
                found[(*sub, *rest)] = text
        return found
    if not isinstance(value, str):
        return {}
    if _ENV.search(value):
        return {(): value}
    ref = _NODE_REF.fullmatch(value.strip())
    if ref is None:
        return {}
    dots, dotted = ref.groups()
    if len(dots) > len(path):
        return {}
    base = path[: len(path) - len(dots)] if dots else ()  # ${.x}: a sibling of the leaf
    target = (*base, *dotted.split("."))
    found_it, target_value = _lookup(raw, target)
    return _env_sources(raw, target, target_value, depth + 1) if found_it else {}


def env_paths(node: Any) -> dict[tuple[Any, ...], str]:
    """``{path: interpolation}`` for every leaf of ``node`` whose value is read from the environment.

    A leaf counts when its own text holds ``${oc.env:...}`` or when it interpolates another
    leaf that does (``${data.token}``, also relative: ``${..token}``), and so does every such
    leaf inside a node that a leaf interpolates whole (``model.loss: ${loss}``); the
    interpolation given is the ``${oc.env:...}`` text. Only OmegaConf nodes carry
    interpolations; a plain container gives ``{}``. What a run stores (a model's
    hyper-parameters) is rewritten at these paths, by path rather than by value, so a secret
    ``1`` leaves every other ``1`` alone.

    >>> from omegaconf import OmegaConf
    >>> env_paths(OmegaConf.create({"a": {"key": "${oc.env:TOKEN}"}, "b": "${a.key}", "c": 1}))
    {('a', 'key'): '${oc.env:TOKEN}', ('b',): '${oc.env:TOKEN}'}
    """
    if not is_omegaconf(node):
        return {}
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(node, resolve=False)
    found: dict[tuple[Any, ...], str] = {}
    for path, value in _leaves(raw):
        for rest, source in _env_sources(raw, path, value).items():
            found[(*path, *rest)] = source
    return found


def env_secrets(node: Any) -> dict[str, str]:
    """``{resolved value: interpolation}`` for every value of ``node`` read from the environment.

    Besides each such leaf's resolved value, the value of every environment variable the
    interpolations name (``prefix-${oc.env:TOKEN}`` hides ``TOKEN`` alone too). Only
    OmegaConf nodes carry interpolations; a plain container gives ``{}``.

    >>> import os; os.environ["LOSSMIX_DOC_SECRET"] = "hunter2"
    >>> from omegaconf import OmegaConf
    >>> env_secrets(OmegaConf.create({"gamma": "${oc.env:LOSSMIX_DOC_SECRET}"}))
    {'hunter2': '${oc.env:LOSSMIX_DOC_SECRET}'}
    """
    if not is_omegaconf(node):
        return {}
    from omegaconf import OmegaConf

    found: dict[str, str] = {}
    names: list[str] = []
    for path, source in env_paths(node).items():
        names += [n for n in _ENV_NAME.findall(source) if n not in names]
        try:
            resolved = OmegaConf.select(node, ".".join(map(str, path)), throw_on_missing=False)
        except Exception:  # an unresolvable interpolation: nothing to hide
            continue
        if resolved is not None and str(resolved):
            found.setdefault(str(resolved), source)
    for name in names:
        value = os.environ.get(name)
        if value:
            found.setdefault(value, f"${{oc.env:{name}}}")
    return found


def redact(text: str, secrets: Mapping[str, str]) -> str:
    """``text`` with every secret value (and its ``repr``) replaced by its interpolation.

    >>> redact("gamma='hunter2' is a str", {"hunter2": "${oc.env:S}"})
    'gamma=${oc.env:S} is a str'
    """
    for value in sorted(secrets, key=len, reverse=True):
        shown = secrets[value]
        text = text.replace(repr(value), shown).replace(value, shown)
    return text


def redacted(err: BaseException, secrets: Mapping[str, str]) -> BaseException:
    """``err``, or a new error of its type whose message hides every secret value."""
    text = str(err)
    hidden = redact(text, secrets)
    if hidden == text:
        return err
    try:
        return type(err)(hidden)
    except Exception:  # an exception type that needs other arguments
        from lossmix.errors import LossConfigError

        return LossConfigError(hidden)


def _chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and every exception a trace prints with it (its cause, else its context)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        if current.__cause__ is not None:
            current = current.__cause__
        else:
            current = None if current.__suppress_context__ else current.__context__


def _shows(err: BaseException, secrets: Mapping[str, str]) -> bool:
    try:
        text = " ".join([str(err), *map(str, getattr(err, "__notes__", None) or [])])
    except Exception:  # a __str__ that fails: a trace would not show it either
        return False
    return any(value in text or repr(value) in text for value in secrets)


def hidden_error(err: BaseException, secrets: Mapping[str, str]) -> BaseException | None:
    """The error to raise ``from None`` in place of ``err`` when its message, its notes or any
    exception chained to it shows a secret value; ``None`` when none does.

    A wrapper around lossmix's own error (Hydra's ``InstantiationException`` around a
    ``LossConfigError``) gives way to that error, as the app's one-line message does. The
    error keeps its traceback (the frames show code, not values); its chain is dropped (its
    cause cleared, its context suppressed), since it would show the value again.
    """
    if not secrets or not any(_shows(e, secrets) for e in _chain(err)):
        return None
    from lossmix.errors import LossConfigError, LossInputError

    own = (LossConfigError, LossInputError)
    cause = err.__cause__
    top: BaseException = cause if isinstance(cause, own) and not isinstance(err, own) else err
    hidden = redacted(top, secrets)
    notes = getattr(top, "__notes__", None)
    if notes:
        hidden.__notes__ = [redact(str(note), secrets) for note in notes]
    hidden.__cause__, hidden.__suppress_context__ = None, True  # as ``raise ... from None``
    return hidden.with_traceback(top.__traceback__)


@contextmanager
def secrets_hidden(node: Any) -> Iterator[None]:
    """Re-raise an error from the block with the environment-read values of ``node`` hidden.

    The hidden error is raised ``from None``: its cause would show the value again.
    """
    with errors_hidden(env_secrets(node)):
        yield


@contextmanager
def errors_hidden(secrets: Mapping[str, str]) -> Iterator[None]:
    """Re-raise an error from the block with ``secrets`` (``{value: interpolation}``) hidden,
    ``from None`` (see :func:`hidden_error`)."""
    try:
        yield
    except Exception as err:
        hidden = hidden_error(err, secrets)
        if hidden is None:
            raise
        raise hidden from None


class RedactingFilter(logging.Filter):
    """A handler filter that rewrites each record to show the interpolation in place of every
    secret value: its message (with its arguments merged in), its exception and its stack.

    It never drops a record; a record it changes is changed for every handler after it too.
    """

    def __init__(self, secrets: Mapping[str, str]) -> None:
        super().__init__()
        self.secrets = dict(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit: logging's report would print them
            record.msg, record.args = redact(str(record.msg), self.secrets), None
        else:
            hidden = redact(message, self.secrets)
            if hidden != message:
                record.msg, record.args = hidden, None
        if record.exc_info and record.exc_info[1] is not None:
            # the handler formats this one: its message hidden, its chain dropped (the frames
            # of a trace show code, not values)
            shown = hidden_error(record.exc_info[1], self.secrets)
            if shown is not None:
                record.exc_info = (type(shown), shown, shown.__traceback__)
        if record.exc_text:  # formatted by a handler before this one
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


def _handlers_in_force() -> list[logging.Handler]:
    """Every handler of the root logger, of every named logger, and logging's last resort."""
    loggers: list[Any] = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    found: dict[int, logging.Handler] = {}
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):  # a PlaceHolder has none
            found.setdefault(id(handler), handler)
    if logging.lastResort is not None:
        found.setdefault(id(logging.lastResort), logging.lastResort)
    return list(found.values())


@contextmanager
def redacting(secrets: Mapping[str, str]) -> Iterator[None]:
    """For the block, show the interpolation in place of every secret value everywhere.

    * an error leaving the block is re-raised with the values hidden, ``from None`` (a
      cause or context would show them again), under ``HYDRA_FULL_ERROR=1`` too;
    * a :class:`RedactingFilter` sits on every logging handler in force when the block
      starts (the root logger's, Lightning's and every other named logger's, and logging's
      last resort);
    * ``warnings.showwarning`` is wrapped, so a warning's message is redacted.

    Both are removed on the way out. With no secrets, nothing is installed.
    """
    if not secrets:
        yield
        return
    hide = dict(secrets)
    log_filter = RedactingFilter(hide)
    handlers = _handlers_in_force()
    for handler in handlers:
        handler.addFilter(log_filter)
    shown: Callable[..., None] = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        text = str(message)
        hidden = redact(text, hide)
        if hidden != text:
            try:
                message = category(hidden)
            except Exception:  # a warning class that needs other arguments: the text
                message = hidden
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        with errors_hidden(hide):
            yield
    finally:
        if warnings.showwarning is show:
            warnings.showwarning = shown
        for handler in handlers:
            handler.removeFilter(log_filter)


def replace_at(node: Any, replacements: Mapping[tuple[Any, ...], tuple[Any, Any]]) -> Any:
    """``node`` with the value at each path replaced where it still is the expected one.

    ``replacements`` maps a path to ``(expected, replacement)``; a path that is absent, or
    whose value differs from ``expected`` (type included: a secret ``"1"`` is not ``1``), is
    left alone. Dicts and lists along a changed path are copied (``node`` itself is not
    changed; the rest is shared).

    >>> replace_at({"a": {"k": "v", "n": 1}}, {("a", "k"): ("v", "${oc.env:K}"), ("a", "n"): ("1", "x")})
    {'a': {'k': '${oc.env:K}', 'n': 1}}
    """
    for path, (expected, replacement) in replacements.items():
        node = _replaced(node, path, expected, replacement)
    return node


def _replaced(node: Any, path: tuple[Any, ...], expected: Any, replacement: Any) -> Any:
    if not path:
        return replacement if type(node) is type(expected) and node == expected else node
    key, rest = path[0], path[1:]
    if isinstance(node, dict) and key in node:
        child = node[key]
    elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
        child = node[key]
    else:
        return node
    changed = _replaced(child, rest, expected, replacement)
    if changed is child:
        return node
    copied = copy.copy(node)
    copied[key] = changed
    return copied


def loss_key_label(node: Any, path: tuple[Any, ...]) -> str:
    """Where ``path`` points in a loss node, as an error names it: ``term 'cls', key
    'inputs.target'`` (``term 'gen/adv'`` in a group), else ``loss.<path>``.

    >>> loss_key_label({"cls": {"type": "FocalLoss", "inputs": {"target": "x"}}}, ("cls", "inputs", "target"))
    "term 'cls', key 'inputs.target'"
    """
    current = node
    for depth, key in enumerate(path[:-1]):
        if not isinstance(current, Mapping) or key not in current:
            break
        current = current[key]
        if is_term_node(current):
            name = "/".join(map(str, path[: depth + 1]))
            return f"term '{name}', key '{'.'.join(map(str, path[depth + 1 :]))}'"
    return "loss." + ".".join(map(str, path))


def resolve_env_values(
    node: Any, *, label: Callable[[tuple[Any, ...]], str] | None = None
) -> tuple[Any, dict[str, str]]:
    """``node`` (plain containers) with every string that is exactly ``${oc.env:NAME}`` or
    ``${oc.env:NAME,default}`` replaced by what OmegaConf reads for it now, and
    ``{value: interpolation}`` of what was read (to hide it again).

    A run stores a value read from the environment as its interpolation (a checkpoint's
    hyper-parameters); building from the stored node (``load_from_checkpoint``) reads the
    variable again here. Only that form is read: nothing else in the node is evaluated.

    Args:
        node: plain dicts and lists (anything else is returned as is).
        label: names a path in errors (default: the dotted path).

    Raises:
        LossConfigError: the variable is not set and the interpolation has no default, or a
            string mixes ``${oc.env:...}`` with other text (it cannot be read back exactly);
            naming the path, the variable and the fix.

    >>> import os; os.environ["LOSSMIX_DOC_KEY"] = "labels"
    >>> resolve_env_values({"cls": {"inputs": {"target": "${oc.env:LOSSMIX_DOC_KEY}"}}})
    ({'cls': {'inputs': {'target': 'labels'}}}, {'labels': '${oc.env:LOSSMIX_DOC_KEY}'})
    """
    name_of = label or (lambda path: ".".join(map(str, path)))
    secrets: dict[str, str] = {}
    replacements: dict[tuple[Any, ...], tuple[Any, Any]] = {}
    for path, value in _leaves(node):
        if not isinstance(value, str) or not _ENV.search(value):
            continue
        replacements[path] = (value, _read_env(value.strip(), name_of(path), secrets))
    return replace_at(node, replacements), secrets


def _read_env(text: str, where: str, secrets: dict[str, str]) -> Any:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from lossmix.errors import LossConfigError

    whole = _ENV_WHOLE.fullmatch(text)
    if whole is None:
        raise LossConfigError(
            f"{where} is {text!r}: only a whole ${{oc.env:NAME}} (or ${{oc.env:NAME,default}}) "
            "value is read from the environment when a stored node is built again; give the "
            "whole value through one environment variable, or the value itself."
        )
    name = whole.group(1)
    try:
        value = OmegaConf.create({"value": text})["value"]
    except OmegaConfBaseException:
        raise LossConfigError(
            f"{where} is {text}, and the environment variable {name} is not set; set it "
            f"(export {name}=...) before building from this node (load_from_checkpoint), "
            "or give the value itself."
        ) from None
    if value is not None and str(value):
        secrets.setdefault(str(value), text)
    if os.environ.get(name):
        secrets.setdefault(os.environ[name], f"${{oc.env:{name}}}")
    return value


def register_resolvers() -> None:
    """OmegaConf resolvers lossmix's configs use: ``${lossmix.pid:}``, this process's id.

    The app's run directories end with it, after the time to the microsecond, so two runs
    started at the same moment (two terminals, a job array) never share a directory.
    """
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("lossmix.pid"):
        OmegaConf.register_new_resolver("lossmix.pid", os.getpid)
