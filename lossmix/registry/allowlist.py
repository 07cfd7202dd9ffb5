"""Safe resolution of dotted ``_target_`` paths: the allow-list and what it never allows.

A config file can come from someone else (a shared YAML, an experiment folder, a
checkpoint's hyper-parameters), so a dotted path in it must not be able to reach
arbitrary code. :func:`resolve_target` returns an object only when all of this holds,
checked before anything is called:

1. **The string.** Dotted ASCII identifiers: no empty segment (leading, trailing or
   doubled dots), no segment starting with ``_`` (private names, ``__globals__``,
   ``__subclasses__``, ``__dict__``), no look-alike unicode letters.
2. **Never allowed**, whatever the allow-list says: the standard library (every module
   in :data:`sys.stdlib_module_names`: ``os``, ``posix``, ``sys``, ``subprocess``,
   ``builtins``, ``importlib``, ``pickle``, ``shutil``, ``pathlib``, ``functools``,
   ``operator``, ``inspect``, ``logging``, ...), Hydra and OmegaConf (they instantiate and
   resolve code themselves), the loaders of torch and Lightning (``torch.load``,
   ``torch.hub``, ``torch.jit``, ``lightning.pytorch.cli``, ...): :data:`NEVER_ALLOWED`.
3. **Allowed packages.** The path lies under an allowed prefix (whole dotted components:
   ``lossmix`` does not cover ``lossmixevil``). Defaults: ``lossmix`` and ``torch.nn``;
   more come from :func:`allow_targets`, the environment variable
   ``LOSSMIX_ALLOWED_TARGETS`` (comma-separated) or a caller's ``extra_allowed``.
4. **No walk.** The longest importable module path is imported (an ancestor of the
   allowed path, which importing it would import anyway); the rest must be a chain of
   classes ending in a class, or one module-level function. Every object on the way is checked where it is
   *defined* (``__module__``): a module that a module merely imports
   (``lossmix.registry.registry.os``), a function imported from elsewhere
   (``lossmix.train.instantiate`` is Hydra's), an instance, a method or a built-in is
   refused. A module is never a result.

Callers add what their node may be: a subclass of a base class (samplers, weightings,
the app's model, data, trainer, callbacks and loggers) and whether a function is
acceptable at all (only loss terms, which wrap a function and call it on tensors during
the step, never at build time; functions must then be defined under
:data:`FUNCTION_PREFIXES` or a package the user allowed).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from lossmix.errors import LossConfigError, did_you_mean

__all__ = [
    "DEFAULT_ALLOWED_TARGETS",
    "ENV_ALLOWED_TARGETS",
    "FUNCTION_PREFIXES",
    "NEVER_ALLOWED",
    "allow_targets",
    "allowed_prefixes",
    "check_prefix",
    "covers",
    "resolve_target",
    "trusting",
]

DEFAULT_ALLOWED_TARGETS: tuple[str, ...] = ("lossmix", "torch.nn")
ENV_ALLOWED_TARGETS = "LOSSMIX_ALLOWED_TARGETS"
# lossmix's and torch's own functions a loss term may wrap; a user's allowed package adds its own.
FUNCTION_PREFIXES: tuple[str, ...] = ("lossmix.functional", "torch.nn.functional")
NEVER_ALLOWED: tuple[str, ...] = (
    # code loaders, compilers and process tools outside the standard library
    "torch.load",
    "torch.save",
    "torch.hub",
    "torch.package",
    "torch.jit",
    "torch.serialization",
    "torch.utils.cpp_extension",
    "torch.utils.model_zoo",
    "torch.ops",
    "torch.library",
    "torch.classes",
    "torch.multiprocessing",
    "torch.distributed",
    "torch.from_file",
    "torch.compile",
    "torch.compiler",
    "torch.backends",
    "torch.export",
    "hydra",
    "omegaconf",
    "lightning.pytorch.cli",
    "lightning.fabric.cli",
    "lightning.pytorch.core.saving",
    "lightning.fabric.utilities.cloud_io",
    "pytorch_lightning.cli",
    "pip",
    "setuptools",
    "pkg_resources",
    "pytest",
    "IPython",
)
_user_allowed: list[str] = []
_SEGMENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*", re.ASCII)
_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*", re.ASCII)


def covers(prefix: str, path: str) -> bool:
    """True when ``path`` is ``prefix`` or lies under it, by whole dotted components.

    >>> covers("lossmix", "lossmix.losses.FocalLoss"), covers("lossmix", "lossmixevil.Loss")
    (True, False)
    """
    return path == prefix or path.startswith(prefix + ".")


def _never(path: str) -> str | None:
    """Why ``path`` is never allowed, or None."""
    top = path.split(".", 1)[0]
    if top in sys.stdlib_module_names:
        return f"'{top}' is part of Python's standard library"
    for banned in NEVER_ALLOWED:
        if covers(banned, path):
            return f"'{banned}' loads, builds or runs code"
    return None


def check_prefix(prefix: Any, *, source: str = "allow_targets") -> str:
    """Normalise an allow-list entry (``"pkg"``, ``"pkg."``, ``"pkg.*"``) or raise.

    Raises:
        LossConfigError: not a string, empty or ``*`` (everything), not a dotted name,
            or a package lossmix never allows.
    """
    if not isinstance(prefix, str):
        raise LossConfigError(f"{source}: {prefix!r} is not a string; give a prefix like 'mypkg'.")
    cleaned = prefix.strip().removesuffix("*").removesuffix(".")
    if not cleaned or cleaned in {"*", "."}:
        raise LossConfigError(
            f"{source}: {prefix!r} would allow everything; give a package prefix like 'mypkg'."
        )
    if not _PREFIX.fullmatch(cleaned):
        raise LossConfigError(
            f"{source}: {prefix!r} is not a dotted package name like 'my_project.losses' "
            "(ASCII letters, digits and '_', no segment starting with '_')."
        )
    reason = _never(cleaned)
    if reason is not None:
        raise LossConfigError(f"{source}: '{cleaned}' cannot be allowed: {reason}.")
    return cleaned


def allow_targets(*prefixes: str) -> None:
    """Allow ``_target_`` paths under these trusted packages (``"mypkg"`` or ``"mypkg.losses"``).

    Allowing a package trusts every class and function defined in it.

    >>> allow_targets("my_project.losses")
    >>> "my_project.losses" in allowed_prefixes()
    True
    """
    for prefix in prefixes:
        cleaned = check_prefix(prefix)
        if cleaned not in _user_allowed:
            _user_allowed.append(cleaned)


@contextmanager
def trusting(prefixes: Sequence[str]) -> Iterator[None]:
    """Allow ``prefixes`` inside the block only (the app's command-line grants).

    Anything built inside the block (a model whose ``__init__`` builds its terms) sees
    them; a checkpoint's hyper-parameters, loaded later, do not.

    >>> with trusting(["my_project"]):
    ...     "my_project" in allowed_prefixes()
    True
    >>> "my_project" in allowed_prefixes()
    False
    """
    saved = list(_user_allowed)
    try:
        allow_targets(*prefixes)
        yield
    finally:
        _user_allowed[:] = saved


def _user_prefixes(extra: Iterable[str]) -> list[str]:
    """What the user allowed: :func:`allow_targets`, the environment, ``extra``."""
    env = [p for p in os.environ.get(ENV_ALLOWED_TARGETS, "").split(",") if p.strip()]
    found = list(_user_allowed)
    found += [check_prefix(p, source=ENV_ALLOWED_TARGETS) for p in env]
    found += [check_prefix(p, source="allowed_targets") for p in extra]
    return list(dict.fromkeys(found))


def allowed_prefixes(
    extra: Sequence[str] = (), *, defaults: Sequence[str] = DEFAULT_ALLOWED_TARGETS
) -> tuple[str, ...]:
    """The prefixes in force: ``defaults``, :func:`allow_targets`, the environment, ``extra``."""
    return tuple(dict.fromkeys([*defaults, *_user_prefixes(extra)]))


def _refuse(path: str, why: str) -> LossConfigError:
    return LossConfigError(f"_target_='{path}' is refused: {why}.")


def _check_syntax(path: Any) -> list[str]:
    if not isinstance(path, str) or not path.strip():
        raise LossConfigError(f"_target_={path!r} is not a dotted path like 'lossmix.losses.FocalLoss'.")
    parts = path.split(".")
    for part in parts:
        if not part:
            raise _refuse(
                path,
                "it is not a dotted path like 'lossmix.losses.FocalLoss' (it has "
                "an empty segment: a leading, trailing or doubled '.')",
            )
        if not part.isascii():
            raise _refuse(
                path,
                f"segment {part!r} has non-ASCII characters (look-alike "
                "letters); type the name in plain ASCII",
            )
        if part.startswith("_"):
            raise _refuse(
                path, f"segment '{part}' is private; lossmix builds only public classes and functions"
            )
        if not _SEGMENT.fullmatch(part):
            raise _refuse(path, f"segment {part!r} is not a Python identifier")
    return parts


def _import_longest(path: str, parts: list[str]) -> tuple[ModuleType, int]:
    """Import the longest module path of ``parts`` (``path`` is already allowed)."""
    for cut in range(len(parts), 0, -1):
        # Every candidate is an ancestor of ``path``, which lies under an allowed prefix;
        # importing it is what importing the allowed object does anyway.
        name = ".".join(parts[:cut])
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and (name == err.name or name.startswith(err.name + ".")):
                continue  # this prefix is not a module: try a shorter one
            raise LossConfigError(f"_target_='{path}': importing '{name}' failed: {err}") from err
        except Exception as err:  # an allowed module failing to import is a config error
            raise LossConfigError(
                f"_target_='{path}': importing '{name}' failed: {type(err).__name__}: {err}"
            ) from err
        if getattr(module, "__name__", None) != name:
            raise _refuse(path, f"'{name}' is an alias of the module '{getattr(module, '__name__', '?')}'")
        return module, cut
    raise LossConfigError(f"_target_='{path}' could not be found; check the module and the name.")


def _defined_under(obj: Any, path: str, allowed: Sequence[str], what: str) -> None:
    """Refuse ``obj`` unless where it is *defined* (``module.qualname``) is allowed."""
    module = getattr(obj, "__module__", None)
    if not isinstance(module, str):
        raise _refuse(path, f"{what} has no defining module")
    location = f"{module}.{getattr(obj, '__qualname__', '')}"
    reason = _never(location)
    if reason is not None:
        raise _refuse(path, f"{what} is defined in '{module}': {reason}")
    if not any(covers(prefix, location) for prefix in allowed):
        raise _refuse(
            path,
            f"{what} is defined in '{module}', outside the allowed packages "
            f"{list(allowed)}; name it where it is defined, and allow that "
            "package if it is trusted",
        )


def _walk(
    path: str,
    module: ModuleType,
    rest: list[str],
    allowed: Sequence[str],
    function_prefixes: Sequence[str] | None,
) -> Any:
    obj: Any = module
    where = module.__name__
    for index, attr in enumerate(rest):
        last = index == len(rest) - 1
        try:
            child = inspect.getattr_static(obj, attr)
        except AttributeError:
            public = [n for n in dir(obj) if not n.startswith("_")]
            raise LossConfigError(
                f"_target_='{path}' could not be found: '{where}' has no '{attr}'."
                f"{did_you_mean(attr, public)}"
            ) from None
        if isinstance(child, ModuleType):
            raise _refuse(
                path,
                f"'{where}.{attr}' is the module '{child.__name__}' that "
                f"'{where}' imports; a target cannot walk through a module. "
                "Name the class or function where it is defined",
            )
        if inspect.isclass(child):
            _defined_under(child, path, allowed, f"'{where}.{attr}'")
        elif inspect.isfunction(child) and last and inspect.ismodule(obj):
            if function_prefixes is None:
                raise _refuse(path, f"'{where}.{attr}' is a function; this node builds a class")
            _defined_under(child, path, function_prefixes, f"the function '{where}.{attr}'")
        else:
            kind = "a method" if inspect.isclass(obj) else f"a {type(child).__name__}"
            raise _refuse(path, f"'{where}.{attr}' is {kind}, not a class or a module-level function")
        obj, where = child, f"{where}.{attr}"
    return obj


def resolve_target(
    path: Any,
    *,
    extra_allowed: Sequence[str] = (),
    defaults: Sequence[str] = DEFAULT_ALLOWED_TARGETS,
    base: type | tuple[type, ...] | None = None,
    functions: bool = True,
    what: str = "target",
) -> Any:
    """The class or function at dotted ``path``, if the rules of this module allow it.

    Args:
        path: e.g. ``"lossmix.losses.FocalLoss"`` or ``"torch.nn.SmoothL1Loss"``.
        extra_allowed: more trusted prefixes for this call (they do not stick).
        defaults: the built-in prefixes of the caller's kind of node.
        base: the result must be a subclass of this class (or one of these classes).
        functions: whether a module-level function may be the result.
        what: what the node builds, for the error message (``"sampler"``).

    Raises:
        LossConfigError: the path is refused (one line saying why and how to fix it) or
            cannot be found.

    >>> resolve_target("torch.nn.SmoothL1Loss")
    <class 'torch.nn.modules.loss.SmoothL1Loss'>
    >>> resolve_target("torch.nn.functional.torch.load")
    Traceback (most recent call last):
    ...
    lossmix.errors.LossConfigError: _target_='torch.nn.functional.torch.load' is refused: ...
    """
    parts = _check_syntax(path)
    reason = _never(path)
    if reason is not None:
        raise _refuse(path, f"lossmix never builds it: {reason}")
    user = _user_prefixes(extra_allowed)
    allowed = tuple(dict.fromkeys([*defaults, *user]))
    if not any(covers(prefix, path) for prefix in allowed):
        top = parts[0]
        raise _refuse(
            path,
            f"it is outside the allowed packages {list(allowed)}. If '{top}' is trusted code, "
            f"allow it with lossmix.allow_targets('{top}'), the environment variable "
            f"{ENV_ALLOWED_TARGETS}={top}, or (in the app, on the command line) "
            f"lossmix.allowed_targets=[{top}]",
        )
    module, cut = _import_longest(path, parts)
    if cut == len(parts):
        raise _refuse(path, f"'{path}' is a module; name a class or function in it")
    function_prefixes = (*FUNCTION_PREFIXES, *user) if functions else None
    obj = _walk(path, module, parts[cut:], allowed, function_prefixes)
    if base is not None and inspect.isclass(obj) and not issubclass(obj, base):
        bases = base if isinstance(base, tuple) else (base,)
        names = " or ".join(f"{b.__module__}.{b.__qualname__}" for b in bases)
        raise _refuse(path, f"a {what} must be a subclass of {names}")
    return obj
