"""Name → class registries, and building from ``type:`` or ``_target_:`` configs.

A registry maps names to classes (or, for losses, functions) and builds an entry
from a config node: ``{type: Name, **kwargs}`` looks the name up;
``{_target_: dotted.path, **kwargs}`` (or a dotted ``type``) goes through
:func:`lossmix.targets.resolve_target`, which accepts only classes and functions
defined in allowed packages. Each registry says what its entries must be (``base``,
whether functions are acceptable) so a config cannot build something else under the
registry's name: a sampler node cannot call a function at build time, a weighting node
cannot build an arbitrary class.

Arguments are checked by binding the constructor's signature before the call, so a
``TypeError`` raised inside a constructor reaches the caller unchanged.

This module is a leaf: it knows no loss. ``lossmix.losses`` plugs the adapters that
turn ``torch.nn`` losses and plain functions into lossmix losses into :data:`LOSSES`
(:meth:`Registry.add_adapter`).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, overload

from torch import nn

from lossmix.errors import LossConfigError, did_you_mean
from lossmix.nodes import to_plain
from lossmix.targets import (
    DEFAULT_ALLOWED_TARGETS,
    ENV_ALLOWED_TARGETS,
    allow_targets,
    allowed_targets,
    resolve_target,
)

__all__ = [
    "AGGREGATORS",
    "ENV_ALLOWED_TARGETS",
    "LOSSES",
    "REQUIRED",
    "SAMPLERS",
    "WEIGHTINGS",
    "Adapter",
    "EntryInfo",
    "Registry",
    "allow_targets",
    "allowed_targets",
    "bind_arguments",
    "build_loss",
    "build_sampler",
    "resolve_target",
]

_HYDRA_PASSTHROUGH = ("_recursive_", "_convert_")
_T = TypeVar("_T")
REQUIRED = inspect.Parameter.empty


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
        return ", ".join(f"{k}=<required>" if v is REQUIRED else f"{k}={v!r}" for k, v in self.params.items())

    def __str__(self) -> str:
        aliases = f" (aliases: {', '.join(self.aliases)})" if self.aliases else ""
        return f"{self.name}{aliases}: {self.summary}\n  {self.format_params()}"


class Adapter(Protocol):
    """Builds entries a registry does not instantiate directly (foreign losses, functions)."""

    def accepts(self, obj: Any) -> bool:
        """True when this adapter builds ``obj``."""

    def parameters(self, obj: Any) -> tuple[dict[str, Any], bool]:
        """The arguments a node may give for ``obj``, and whether it takes ``**kwargs``."""

    def build(self, obj: Any, label: str, kwargs: dict[str, Any]) -> Any:
        """Build the entry (arguments already checked)."""


def _summary(obj: Any) -> str:
    doc = (inspect.getdoc(obj) or "").strip()
    first = doc.split("\n\n")[0].replace("\n", " ") if doc else ""
    first = re.sub(r":\w+:`~?([^`]*)`", r"\1", first)
    return first.replace("``", "")


def _dotted(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def signature_parameters(obj: Any) -> tuple[dict[str, Any], bool]:
    """Constructor (or function) arguments of ``obj`` → defaults, and whether it takes ``**kwargs``."""
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


def check_keys(label: str, kwargs: Mapping[str, Any], params: Mapping[str, Any], var_kw: bool) -> None:
    """Raise :class:`LossConfigError` for an unknown (with the closest) or a missing argument."""
    unknown = [k for k in kwargs if k not in params]
    if unknown and not var_kw:
        raise LossConfigError(
            f"{label}: unknown argument '{unknown[0]}'.{did_you_mean(unknown[0], params)} "
            f"Valid arguments: {', '.join(params) or '(none)'}."
        )
    missing = [k for k, v in params.items() if v is REQUIRED and k not in kwargs]
    if missing:
        raise LossConfigError(f"{label}: missing required argument '{missing[0]}'.")


def bind_arguments(label: str, obj: Any, kwargs: Mapping[str, Any]) -> None:
    """Raise :class:`LossConfigError` unless ``obj(**kwargs)`` binds to its signature.

    The call itself is not made, so a ``TypeError`` raised inside the constructor is
    never mistaken for a config error.
    """
    params, var_kw = signature_parameters(obj)
    check_keys(label, kwargs, params, var_kw)
    try:
        inspect.signature(obj).bind(**kwargs)
    except (TypeError, ValueError) as err:
        raise LossConfigError(f"{label}: {err}.") from None


class Registry:
    """A name → class (or function) table with aliases, descriptions and building.

    Args:
        kind: what the entries are, for messages (``"loss"``, ``"sampler"``).
        public_name: the registry's name in ``lossmix`` (``LOSSES``), for messages.
        base: entries, and classes named by ``_target_``, must subclass it (``None``: any
            class; set later with :meth:`require_base` when the base lives in a higher layer).
        functions: whether a ``_target_`` may name a module-level function.
        defaults: the built-in allowed prefixes for this registry's ``_target_`` paths.
        supplied: constructor arguments the builder supplies, not the config (a weighting's
            ``tasks``); :meth:`describe` leaves them out.

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

    def __init__(
        self,
        kind: str,
        *,
        public_name: str | None = None,
        base: type | None = None,
        functions: bool = False,
        defaults: Sequence[str] = DEFAULT_ALLOWED_TARGETS,
        supplied: Sequence[str] = (),
    ) -> None:
        self.kind = kind
        self.public_name = public_name or f"{kind.upper()}S"
        self.base = base
        self.functions = functions
        self.defaults = tuple(defaults)
        self.supplied = tuple(supplied)
        self._entries: dict[str, Any] = {}
        self._aliases: dict[str, str] = {}
        self._adapters: list[Adapter] = []

    def require_base(self, base: type) -> None:
        """Entries and ``_target_`` classes must subclass ``base`` from now on."""
        self.base = base

    def add_adapter(self, adapter: Adapter) -> None:
        """Let ``adapter`` describe and build the entries it accepts (first match wins)."""
        self._adapters.append(adapter)

    def _adapter_for(self, obj: Any) -> Adapter | None:
        return next((a for a in self._adapters if a.accepts(obj)), None)

    # -- registration ---------------------------------------------------------------------
    @overload
    def register(
        self,
        obj: _T,
        *,
        name: str | None = None,
        aliases: tuple[str, ...] | list[str] = (),
        force: bool = False,
    ) -> _T: ...

    @overload
    def register(
        self,
        obj: str | None = None,
        *,
        name: str | None = None,
        aliases: tuple[str, ...] | list[str] = (),
        force: bool = False,
    ) -> Callable[[_T], _T]: ...

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
            self._check_entry(target)
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

    def _check_entry(self, target: Any) -> None:
        if inspect.isclass(target):
            if (
                self.base is not None
                and not issubclass(target, self.base)
                and (self._adapter_for(target) is None)
            ):
                raise LossConfigError(
                    f"{self.kind} registry: {_dotted(target)} is not a subclass of "
                    f"{_dotted(self.base)}; a {self.kind} must derive from it."
                )
        elif not self.functions:
            raise LossConfigError(
                f"{self.kind} registry: {target!r} is not a class; register a {self.kind} class."
            )

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

    def resolve(
        self, ref: Any, *, extra_allowed: Sequence[str] = (), by_name: bool = True
    ) -> tuple[Any, str]:
        """``(entry, label)`` for a registered name or a dotted path (through the allow-list).

        ``by_name=False`` (a ``_target_``) always takes ``ref`` as a dotted path.
        """
        if by_name and isinstance(ref, str) and ref and "." not in ref:
            return self.get(ref), self.canonical_name(ref)
        obj = resolve_target(
            ref,
            extra_allowed=extra_allowed,
            defaults=self.defaults,
            base=self.base,
            functions=self.functions,
            what=self.kind,
        )
        return obj, str(ref)

    # -- description ----------------------------------------------------------------------
    def parameters(self, obj: Any) -> tuple[dict[str, Any], bool]:
        """Arguments a node may give for ``obj`` → defaults, and whether it takes ``**kwargs``."""
        adapter = self._adapter_for(obj)
        if adapter is not None:
            return adapter.parameters(obj)
        return signature_parameters(obj)

    def describe(self, name: str) -> EntryInfo:
        """Arguments, defaults and one-line summary of an entry.

        >>> from lossmix import LOSSES
        >>> print(LOSSES.describe("L1Loss").params["reduction"])
        mean
        """
        obj = self.get(name)
        key = self.canonical_name(name)
        params, _ = self.parameters(obj)
        params = {k: v for k, v in params.items() if k not in self.supplied}
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
    def build(
        self,
        cfg: Any,
        *,
        allowed_targets: Sequence[str] = (),
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
        obj, label = self.resolve(ref, extra_allowed=allowed_targets, by_name=has_type)
        return self.build_resolved(obj, label, node)

    def build_resolved(self, obj: Any, label: str, kwargs: dict[str, Any]) -> Any:
        """Check ``kwargs`` against the entry's arguments, then build it."""
        adapter = self._adapter_for(obj)
        if adapter is not None:
            params, var_kw = adapter.parameters(obj)
            check_keys(label, kwargs, params, var_kw)
            return adapter.build(obj, label, kwargs)
        if not inspect.isclass(obj):
            raise LossConfigError(f"{label} is not a {self.kind} class.")
        bind_arguments(label, obj, kwargs)
        return obj(**kwargs)


def _to_dict(cfg: Any, kind: str) -> dict[str, Any]:
    cfg = to_plain(cfg)
    if not isinstance(cfg, Mapping):
        raise LossConfigError(
            f"A {kind} config must be a mapping with 'type' or '_target_', got {type(cfg).__name__}: {cfg!r}."
        )
    return dict(cfg)


LOSSES: Registry = Registry("loss", public_name="LOSSES", base=nn.Module, functions=True)
SAMPLERS: Registry = Registry("sampler", public_name="SAMPLERS")
WEIGHTINGS: Registry = Registry("weighting", public_name="WEIGHTINGS", supplied=("tasks",))
AGGREGATORS: Registry = Registry("aggregator", public_name="AGGREGATORS", supplied=("tasks",))


def build_loss(cfg: Any, *, allowed_targets: Sequence[str] = (), **overrides: Any) -> Any:
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


def build_sampler(cfg: Any, *, allowed_targets: Sequence[str] = (), **overrides: Any) -> Any:
    """Build a sampler from ``{type: RandomSampler, num: 256, ...}``."""
    return SAMPLERS.build(cfg, allowed_targets=allowed_targets, **overrides)
