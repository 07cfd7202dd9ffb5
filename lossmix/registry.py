"""Name → class registries, and safe building from ``type:`` or ``_target_:`` configs.

``_target_`` paths resolve only under allow-listed prefixes: ``lossmix.`` and
``torch.nn.`` by default, plus what :func:`allow_targets` or the environment
variable ``LOSSMIX_ALLOWED_TARGETS`` (comma-separated) add. A prefix ``pkg``,
``pkg.`` or ``pkg.*`` allows ``pkg`` and everything under it. Process-spawning
and code-evaluating callables (``os.system``, ``subprocess.*``, ``eval``, ...)
are refused whatever the allow-list says. The check runs on the string,
*before* anything is imported.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from lossmix.errors import LossConfigError, did_you_mean

__all__ = [
    "LOSSES",
    "SAMPLERS",
    "EntryInfo",
    "Registry",
    "allow_targets",
    "allowed_targets",
    "build_loss",
    "build_sampler",
    "resolve_target",
]

DEFAULT_ALLOWED_TARGETS: tuple[str, ...] = ("lossmix", "torch.nn")
ENV_ALLOWED_TARGETS = "LOSSMIX_ALLOWED_TARGETS"
_NEVER_ALLOWED: tuple[str, ...] = (
    "builtins", "subprocess", "os.system", "os.popen", "os.exec", "os.spawn", "os.fork",
    "os.kill", "os.remove", "os.unlink", "os.rmdir", "shutil", "pty", "importlib", "runpy",
    "pickle", "marshal", "ctypes", "sys", "code", "eval", "exec", "__import__", "compile",
)
_HYDRA_PASSTHROUGH = ("_recursive_", "_convert_")
_user_allowed: list[str] = []

REQUIRED = inspect.Parameter.empty


def _normalise_prefix(prefix: str) -> str:
    if not isinstance(prefix, str):
        raise LossConfigError(f"allow_targets: {prefix!r} is not a string; give a prefix like 'mypkg'.")
    cleaned = prefix.strip().removesuffix("*").removesuffix(".")
    if not cleaned or cleaned in {"*", "."}:
        raise LossConfigError(
            f"allow_targets: {prefix!r} would allow everything; give a package prefix like 'mypkg'."
        )
    return cleaned


def _covers(prefix: str, path: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def allow_targets(*prefixes: str) -> None:
    """Allow ``_target_`` paths under these trusted packages (``"mypkg"`` or ``"mypkg.losses"``).

    >>> allow_targets("my_project.losses")
    >>> "my_project.losses" in allowed_targets()
    True
    """
    for prefix in prefixes:
        cleaned = _normalise_prefix(prefix)
        if cleaned not in _user_allowed:
            _user_allowed.append(cleaned)


def allowed_targets(extra: tuple[str, ...] | list[str] = ()) -> tuple[str, ...]:
    """The prefixes in force: defaults, :func:`allow_targets`, the environment, ``extra``."""
    env = [p for p in os.environ.get(ENV_ALLOWED_TARGETS, "").split(",") if p.strip()]
    found = [*DEFAULT_ALLOWED_TARGETS, *_user_allowed]
    found += [_normalise_prefix(p) for p in (*env, *extra)]
    return tuple(dict.fromkeys(found))


def resolve_target(path: str, *, extra_allowed: tuple[str, ...] | list[str] = ()) -> Any:
    """Import and return the object at dotted ``path`` if it is allow-listed.

    Raises:
        LossConfigError: the path is refused, or cannot be imported.
    """
    if not isinstance(path, str) or not path or path.startswith("."):
        raise LossConfigError(f"_target_={path!r} is not a dotted path like 'lossmix.losses.FocalLoss'.")
    if any(_covers(bad, path) for bad in _NEVER_ALLOWED):
        raise LossConfigError(f"_target_='{path}' is refused: lossmix never builds it.")
    allowed = allowed_targets(tuple(extra_allowed))
    if not any(_covers(prefix, path) for prefix in allowed):
        top = path.split(".")[0]
        raise LossConfigError(
            f"_target_='{path}' is refused: it is outside the allowed packages {list(allowed)}. "
            f"If '{top}' is trusted code, allow it with lossmix.allow_targets('{top}'), the "
            f"environment variable {ENV_ALLOWED_TARGETS}={top}, or the Hydra key "
            f"lossmix.allowed_targets=[{top}]."
        )
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError as err:
            missing = getattr(err, "name", None) or ""
            if missing and (module_name == missing or module_name.startswith(missing + ".")):
                continue  # this prefix is not a module: try a shorter one
            raise LossConfigError(
                f"_target_='{path}': importing '{module_name}' failed: {err}"
            ) from err
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise LossConfigError(f"_target_='{path}' could not be found; check the module and the name.")


@dataclass(frozen=True)
class EntryInfo:
    """What a registry knows about one entry: name, summary, arguments and defaults."""

    name: str
    summary: str
    params: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    target: str = ""

    def format_params(self) -> str:
        """``gamma=2.0, alpha=0.25, num=<required>``."""
        return ", ".join(
            f"{k}=<required>" if v is REQUIRED else f"{k}={v!r}" for k, v in self.params.items()
        )

    def __str__(self) -> str:
        aliases = f" (aliases: {', '.join(self.aliases)})" if self.aliases else ""
        return f"{self.name}{aliases}: {self.summary}\n  {self.format_params()}"


def _summary(obj: Any) -> str:
    doc = (inspect.getdoc(obj) or "").strip()
    first = doc.split("\n\n")[0].replace("\n", " ") if doc else ""
    first = re.sub(r":\w+:`~?([^`]*)`", r"\1", first)
    return first.replace("``", "")


def _dotted(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


class Registry:
    """A name → class (or function) table with aliases, descriptions and building.

    >>> from lossmix.registry import Registry
    >>> FRUIT = Registry("fruit")
    >>> @FRUIT.register(aliases=["pear"])
    ... class Pear:
    ...     '''A pear.'''
    ...     def __init__(self, ripe: bool = True):
    ...         self.ripe = ripe
    >>> FRUIT.build({"type": "pear", "ripe": False}).ripe
    False
    """

    def __init__(self, kind: str, *, public_name: str | None = None) -> None:
        self.kind = kind
        self.public_name = public_name or f"{kind.upper()}S"
        self._entries: dict[str, Any] = {}
        self._aliases: dict[str, str] = {}

    # -- registration ---------------------------------------------------------------------
    def register(
        self,
        obj: Any = None,
        *,
        name: str | None = None,
        aliases: tuple[str, ...] | list[str] = (),
        force: bool = False,
    ) -> Any:
        """Register a class or function; use as ``@REG.register()`` or ``REG.register(obj)``.

        Args:
            obj: the class or function (omit when decorating).
            name: registered name (default: ``obj.__name__``); a positional string works too.
            aliases: other names that find the same entry.
            force: replace an existing entry of the same name instead of raising.
        """
        if isinstance(obj, str):
            name, obj = obj, None

        def add(target: Any) -> Any:
            if not callable(target):
                raise LossConfigError(f"{self.kind} registry: {target!r} is not a class or function.")
            key = name or target.__name__
            for n in (key, *aliases):
                owner = self._entries.get(n) or self._entries.get(self._aliases.get(n, ""))
                if owner is not None and owner is not target and not force:
                    raise LossConfigError(
                        f"{self.kind} registry: '{n}' is already registered to {_dotted(owner)}; "
                        "pick another name, or pass force=True to replace it."
                    )
            self._entries[key] = target
            self._aliases.pop(key, None)
            for alias in aliases:
                self._aliases[alias] = key
            return target

        return add if obj is None else add(obj)

    # -- lookup ---------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Registered names (without aliases), sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> Any:
        """The class or function registered under ``name`` (or an alias of it)."""
        key = self._aliases.get(name, name)
        if key in self._entries:
            return self._entries[key]
        options = [*self._entries, *self._aliases]
        raise LossConfigError(
            f"Unknown {self.kind} '{name}'.{did_you_mean(name, options)} "
            f"Registered: {', '.join(self.names())}. Register your own with "
            f"@lossmix.{self.public_name}.register()."
        )

    def canonical_name(self, name: str) -> str:
        """The registered name behind ``name`` (resolving aliases)."""
        self.get(name)
        return self._aliases.get(name, name)

    # -- description ----------------------------------------------------------------------
    def parameters(self, obj: Any) -> tuple[dict[str, Any], bool]:
        """Constructor arguments of ``obj`` → defaults, and whether it takes ``**kwargs``."""
        try:
            sig = inspect.signature(obj)
        except (TypeError, ValueError):
            return {}, True
        params: dict[str, Any] = {}
        var_kw = False
        for p in sig.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                var_kw = True
            elif p.kind is not p.VAR_POSITIONAL:
                params[p.name] = p.default
        return params, var_kw

    def describe(self, name: str) -> EntryInfo:
        """Arguments, defaults and one-line summary of an entry.

        >>> from lossmix import LOSSES
        >>> print(LOSSES.describe("L1Loss").params["reduction"])
        mean
        """
        obj = self.get(name)
        key = self.canonical_name(name)
        params, _ = self.parameters(obj)
        aliases = tuple(a for a, k in self._aliases.items() if k == key)
        return EntryInfo(key, _summary(obj), params, aliases, _dotted(obj))

    def describe_all(self) -> list[EntryInfo]:
        """:meth:`describe` for every entry, sorted by name."""
        return [self.describe(n) for n in self.names()]

    def __repr__(self) -> str:
        infos = self.describe_all()
        width = max((len(i.name) for i in infos), default=0)
        lines = [f"Registry({self.kind!r}, {len(infos)} entries)"]
        lines += [f"  {i.name:<{width}}  {i.summary}" for i in infos]
        return "\n".join(lines)

    # -- building -------------------------------------------------------------------------
    def instantiate(self, obj: Any, label: str, kwargs: dict[str, Any]) -> Any:
        """Call ``obj(**kwargs)`` after checking the keys against its signature."""
        params, var_kw = self.parameters(obj)
        unknown = [k for k in kwargs if k not in params]
        if unknown and not var_kw:
            hint = did_you_mean(unknown[0], params)
            raise LossConfigError(
                f"{label}: unknown argument '{unknown[0]}'.{hint} "
                f"Valid arguments: {', '.join(params) or '(none)'}."
            )
        missing = [k for k, v in params.items() if v is REQUIRED and k not in kwargs]
        if missing:
            raise LossConfigError(f"{label}: missing required argument '{missing[0]}'.")
        try:
            return obj(**kwargs)
        except TypeError as err:
            raise LossConfigError(f"{label}: {err}") from err

    def build(
        self,
        cfg: Any,
        *,
        allowed_targets: tuple[str, ...] | list[str] = (),
        **overrides: Any,
    ) -> Any:
        """Build from ``{type: Name, **kwargs}`` or ``{_target_: dotted.path, **kwargs}``.

        Keyword ``overrides`` win over the config's values (as in Hydra).
        """
        node = _to_dict(cfg, self.kind)
        node.update(overrides)
        for key in _HYDRA_PASSTHROUGH:
            node.pop(key, None)
        has_type, has_target = "type" in node, "_target_" in node
        if has_type == has_target:
            raise LossConfigError(
                f"A {self.kind} config needs exactly one of 'type' (a registered name, e.g. "
                f"type: {self.names()[0] if self._entries else 'Name'}) or '_target_' (a dotted "
                f"path); got keys {sorted(node)}."
            )
        ref = node.pop("type") if has_type else node.pop("_target_")
        if has_type and (not isinstance(ref, str) or not ref):
            raise LossConfigError(
                f"type={ref!r} is not a {self.kind} name; give a registered name such as "
                f"{self.names()[0] if self._entries else 'Name'}."
            )
        if has_type and isinstance(ref, str) and "." not in ref:
            obj, label = self.get(ref), self.canonical_name(ref)
        else:
            obj, label = resolve_target(ref, extra_allowed=allowed_targets), str(ref)
        return self.build_resolved(obj, label, node)

    def build_resolved(self, obj: Any, label: str, kwargs: dict[str, Any]) -> Any:
        """Instantiate a resolved entry; subclasses adapt functions and foreign classes."""
        return self.instantiate(obj, label, kwargs)


def _to_dict(cfg: Any, kind: str) -> dict[str, Any]:
    if type(cfg).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, Mapping):
        raise LossConfigError(
            f"A {kind} config must be a mapping with 'type' or '_target_', got "
            f"{type(cfg).__name__}: {cfg!r}."
        )
    return dict(cfg)


def _is_torch_loss(obj: Any) -> bool:
    return inspect.isclass(obj) and issubclass(obj, nn.modules.loss._Loss)


class LossRegistry(Registry):
    """The loss registry: plain functions and ``torch.nn`` losses become lossmix losses."""

    _COMMON: ClassVar[dict[str, Any]] = {"reduction": "mean", "loss_weight": 1.0}
    _TORCH_LEGACY = ("size_average", "reduce", "reduction")

    def parameters(self, obj: Any) -> tuple[dict[str, Any], bool]:
        params, var_kw = super().parameters(obj)
        if _is_torch_loss(obj):
            params = {k: v for k, v in params.items() if k not in self._TORCH_LEGACY}
            return {**params, **self._COMMON}, var_kw
        if inspect.isfunction(obj) or inspect.isbuiltin(obj):
            names = list(params)
            params = {k: params[k] for k in names[2:] if k != "reduction"}
            return {**params, **self._COMMON}, var_kw
        return params, var_kw

    def build_resolved(self, obj: Any, label: str, kwargs: dict[str, Any]) -> nn.Module:
        from lossmix.losses.wrappers import FunctionLoss, TorchLoss

        params, var_kw = self.parameters(obj)
        unknown = [k for k in kwargs if k not in params]
        if unknown and not var_kw:
            raise LossConfigError(
                f"{label}: unknown argument '{unknown[0]}'.{did_you_mean(unknown[0], params)} "
                f"Valid arguments: {', '.join(params) or '(none)'}."
            )
        if _is_torch_loss(obj):
            return _call(label, lambda: TorchLoss(obj, **kwargs))
        if inspect.isclass(obj):
            return self.instantiate(obj, label, kwargs)
        if callable(obj):
            return _call(label, lambda: FunctionLoss(obj, **kwargs))
        raise LossConfigError(f"{label} is not a loss class or function.")


def _call(label: str, make: Callable[[], Any]) -> Any:
    try:
        return make()
    except TypeError as err:
        raise LossConfigError(f"{label}: {err}") from err


LOSSES: LossRegistry = LossRegistry("loss", public_name="LOSSES")
SAMPLERS: Registry = Registry("sampler", public_name="SAMPLERS")


def build_loss(cfg: Any, *, allowed_targets: tuple[str, ...] | list[str] = (), **overrides: Any
               ) -> nn.Module:
    """Build a loss from ``{type: Name, ...}`` or ``{_target_: dotted.path, ...}``.

    Any ``torch.nn`` loss class (``_target_: torch.nn.SmoothL1Loss``) and any
    registered or allow-listed function get lossmix's ``weight``/``avg_factor``/
    ``loss_weight`` handling. An ``nn.Module`` given directly is returned as is.

    >>> loss = build_loss({"type": "L1Loss", "loss_weight": 2.0})
    >>> import torch; loss(torch.zeros(2), torch.ones(2))
    tensor(2.)
    """
    if isinstance(cfg, nn.Module):
        return cfg
    return LOSSES.build(cfg, allowed_targets=allowed_targets, **overrides)


def build_sampler(cfg: Any, **overrides: Any) -> Any:
    """Build a sampler from ``{type: RandomSampler, num: 256, ...}``."""
    return SAMPLERS.build(cfg, **overrides)
