"""Name → class registries, and building from ``type:`` or ``_target_:`` configs.

A registry maps names to classes (or, for losses, functions) and builds an entry
from a config node: ``{type: Name, **kwargs}`` looks the name up;
``{_target_: dotted.path, **kwargs}`` (or a dotted ``type``) goes through
:func:`lossmix.registry.allowlist.resolve_target`, which accepts only classes and functions
defined in allowed packages. Each registry says what its entries must be (``base``,
whether functions are acceptable) so a config cannot build something else under the
registry's name: a sampler node cannot call a function at build time, a weighting node
cannot build an arbitrary class.

Arguments are checked by binding the constructor's signature before the call, so a
``TypeError`` raised inside a constructor reaches the caller unchanged.

**Scopes** hold same-named entries with another library's semantics, the way MMEngine's
registries do: ``type: mmagic.L1Loss`` is MMagic's masked-mean L1, ``type: mmdet.L1Loss``
MMDetection's, and a bare ``type: L1Loss`` lossmix's default (MMDetection's). A
``default_scope`` (on a node, or passed by the caller: a whole mix) makes bare names look
in that scope first and fall back to the default. A dotted ``type`` is read as
``scope.Name`` only when its first part is a registered scope; anything else is a dotted
path and goes through the allow-list as before.

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
from lossmix.registry.allowlist import (
    DEFAULT_ALLOWED_TARGETS,
    ENV_ALLOWED_TARGETS,
    allow_targets,
    allowed_prefixes,
    resolve_target,
)
from lossmix.registry.foreign_nodes import train_cfg_hint
from lossmix.registry.nodes import is_term_node, to_plain

__all__ = [
    "AGGREGATORS",
    "DEFAULT_SCOPE_KEY",
    "ENV_ALLOWED_TARGETS",
    "LOSSES",
    "REQUIRED",
    "SAMPLERS",
    "WEIGHTINGS",
    "Adapter",
    "EntryInfo",
    "Registry",
    "allow_targets",
    "allowed_prefixes",
    "bind_arguments",
    "build_loss",
    "build_sampler",
    "declare_term_keys",
    "resolve_target",
]

_HYDRA_PASSTHROUGH = ("_recursive_", "_convert_")
DEFAULT_SCOPE_KEY = "default_scope"
_SCOPE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
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
        raise LossConfigError(
            f"{label}: missing required argument '{missing[0]}'; add {missing[0]}: <value> to its config."
        )


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

    >>> from lossmix.registry.registry import Registry
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
        self._scopes: dict[str, dict[str, Any]] = {}
        self._scope_summaries: dict[str, str] = {}

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
        scopes: Sequence[str] = (),
        default: bool = True,
    ) -> _T: ...

    @overload
    def register(
        self,
        obj: str | None = None,
        *,
        name: str | None = None,
        aliases: tuple[str, ...] | list[str] = (),
        force: bool = False,
        scopes: Sequence[str] = (),
        default: bool = True,
    ) -> Callable[[_T], _T]: ...

    def register(
        self,
        obj: Any = None,
        *,
        name: str | None = None,
        aliases: tuple[str, ...] | list[str] = (),
        force: bool = False,
        scopes: Sequence[str] = (),
        default: bool = True,
    ) -> Any:
        """Register a class or function; use as ``@REG.register()`` or ``REG.register(obj)``.

        Args:
            obj: the class or function (omit when decorating).
            name: registered name (default: ``obj.__name__``); a positional string works too.
            aliases: other names that find the same entry.
            force: replace an existing entry of the same name instead of raising.
            scopes: also register it under ``name`` in these scopes (:meth:`add_scope`).
            default: register it under the bare name too (``False``: only in ``scopes``, for
                an entry whose bare name is another library's semantics).
        """
        if isinstance(obj, str):
            name, obj = obj, None

        def add(target: Any) -> Any:
            if not callable(target):
                raise LossConfigError(f"{self.kind} registry: {target!r} is not a class or function.")
            self._check_entry(target)
            key = name or target.__name__
            for scope in scopes:
                self.add_to_scope(scope, key, target, force=force)
            if not default:
                return target
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

    # -- scopes ---------------------------------------------------------------------------
    def add_scope(self, scope: str, summary: str) -> None:
        """Declare a scope (``mmagic``): a table of same-named entries with other semantics."""
        if not isinstance(scope, str) or not _SCOPE_NAME.match(scope):
            raise LossConfigError(
                f"{self.kind} registry: scope {scope!r} is not valid; use lower-case letters, "
                "digits and '_' (like mmagic)."
            )
        self._scopes.setdefault(scope, {})
        self._scope_summaries[scope] = summary

    def add_to_scope(self, scope: str, name: str, obj: Any = None, *, force: bool = False) -> None:
        """Put ``obj`` (default: the bare entry ``name``) in ``scope`` under ``name``."""
        table = self._scopes.get(self.check_scope(scope, owner=f"{self.kind} registry"))
        assert table is not None  # check_scope returned a declared scope
        target = self.get(name) if obj is None else obj
        self._check_entry(target)
        owner = table.get(name)
        if owner is not None and owner is not target and not force:
            raise LossConfigError(
                f"{self.kind} registry: '{scope}.{name}' is already registered to "
                f"{_dotted(owner)}; pick another name, or pass force=True to replace it."
            )
        table[name] = target

    def scopes(self) -> list[str]:
        """The declared scopes, sorted."""
        return sorted(self._scopes)

    def scope_summary(self, scope: str) -> str:
        """What a scope's entries reproduce (one line)."""
        return self._scope_summaries[self.check_scope(scope)]

    def scope_names(self, scope: str) -> list[str]:
        """The names registered in ``scope``, sorted."""
        return sorted(self._scopes[self.check_scope(scope)])

    def check_scope(self, scope: Any, *, owner: str = DEFAULT_SCOPE_KEY) -> str:
        """``scope`` if it is declared, else raise naming the scopes there are."""
        if isinstance(scope, str) and scope in self._scopes:
            return scope
        known = ", ".join(self.scopes()) or "(none)"
        raise LossConfigError(
            f"{owner}: unknown {self.kind} scope {scope!r}; scopes: {known}."
            f"{did_you_mean(str(scope), self._scopes)}"
        )

    def split_scoped(self, name: Any) -> tuple[str, str] | None:
        """``(scope, name)`` for ``"scope.Name"`` whose first part is a declared scope, else None."""
        if not isinstance(name, str) or "." not in name:
            return None
        scope, _, rest = name.partition(".")
        return (scope, rest) if scope in self._scopes else None

    def _scoped(self, scope: str, name: str) -> Any:
        table = self._scopes[scope]
        if name in table:
            return table[name]
        bare = f" The bare name '{name}' is lossmix's default." if name in self else ""
        raise LossConfigError(
            f"Unknown {self.kind} '{scope}.{name}': scope '{scope}' has no '{name}'."
            f"{did_you_mean(name, table)} It has: {', '.join(sorted(table)) or '(nothing)'}.{bare}"
        )

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
        scoped = self.split_scoped(name)
        if scoped is not None:
            return scoped[1] in self._scopes[scoped[0]]
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str, *, default_scope: str | None = None) -> Any:
        """The entry registered under ``name`` (an alias, or ``scope.Name``).

        With ``default_scope``, a bare name is looked up in that scope first, then as the
        default entry (MMEngine's rule: a scope falls back to its parent).
        """
        scoped = self.split_scoped(name)
        if scoped is not None:
            return self._scoped(*scoped)
        key = self._aliases.get(name, name)
        if default_scope is not None:
            table = self._scopes[self.check_scope(default_scope)]
            for candidate in (name, key):
                if candidate in table:
                    return table[candidate]
        if key in self._entries:
            return self._entries[key]
        options = [*self._entries, *self._aliases]
        scopes = f" Scoped names: {', '.join(f'{s}.<Name>' for s in self.scopes())}." if self._scopes else ""
        raise LossConfigError(
            f"Unknown {self.kind} '{name}'.{did_you_mean(name, options)} "
            f"Registered: {', '.join(self.names())}.{scopes} Register your own with "
            f"@lossmix.{self.public_name}.register()."
        )

    def canonical_name(self, name: str, *, default_scope: str | None = None) -> str:
        """The registered name behind ``name``: aliases resolved, ``scope.Name`` when a scope
        (given, or the ``default_scope``) supplies the entry."""
        self.get(name, default_scope=default_scope)
        if self.split_scoped(name) is not None:
            return name
        key = self._aliases.get(name, name)
        if default_scope is not None:
            table = self._scopes[default_scope]
            for candidate in (name, key):
                if candidate in table:
                    return f"{default_scope}.{candidate}"
        return key

    def resolve(
        self,
        ref: Any,
        *,
        extra_allowed: Sequence[str] = (),
        by_name: bool = True,
        default_scope: str | None = None,
    ) -> tuple[Any, str]:
        """``(entry, label)`` for a registered name, ``scope.Name``, or a dotted path (through
        the allow-list).

        ``by_name=False`` (a ``_target_``) always takes ``ref`` as a dotted path.
        """
        if (
            by_name
            and isinstance(ref, str)
            and ref
            and ("." not in ref or self.split_scoped(ref) is not None)
        ):
            return self.get(ref, default_scope=default_scope), self.canonical_name(
                ref, default_scope=default_scope
            )
        try:
            obj = resolve_target(
                ref,
                extra_allowed=extra_allowed,
                defaults=self.defaults,
                base=self.base,
                functions=self.functions,
                what=self.kind,
            )
        except LossConfigError as err:
            if by_name and self._scopes and isinstance(ref, str) and ref.count(".") == 1:
                scope = ref.split(".")[0]
                raise LossConfigError(
                    f"{err} If '{scope}' is meant as a {self.kind} scope: unknown scope "
                    f"'{scope}'; scopes: {', '.join(self.scopes())}.{did_you_mean(scope, self._scopes)}"
                ) from None
            raise
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

    def describe_scope(self, scope: str) -> list[tuple[EntryInfo, bool]]:
        """Every ``scope.Name`` entry, and whether it is the bare name's entry too.

        >>> from lossmix import LOSSES
        >>> [(i.name, same) for i, same in LOSSES.describe_scope("mmagic") if "L1" in i.name]
        [('mmagic.L1CompositionLoss', True), ('mmagic.L1Loss', False)]
        """
        rows = []
        for name in self.scope_names(scope):
            obj = self._scopes[scope][name]
            rows.append(
                (self.describe(f"{scope}.{name}"), name in self._entries and self._entries[name] is obj)
            )
        return rows

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
        default_scope: str | None = None,
        prepare: Callable[[Any, dict[str, Any]], None] | None = None,
        **overrides: Any,
    ) -> Any:
        """Build from ``{type: Name, **kwargs}`` or ``{_target_: dotted.path, **kwargs}``.

        Keyword ``overrides`` win over the config's values (as in Hydra). A bare ``type`` is
        looked up in ``default_scope`` first (the node's own ``default_scope`` key wins).
        ``prepare(entry, kwargs)`` may adjust the arguments once the entry is known (a term
        takes the loss's ``loss_weight`` this way).
        """
        node = _to_dict(cfg, self.kind)
        node.update(overrides)
        for key in _HYDRA_PASSTHROUGH:
            node.pop(key, None)
        if self._scopes and DEFAULT_SCOPE_KEY in node:
            default_scope = node.pop(DEFAULT_SCOPE_KEY)
        if default_scope is not None:
            self.check_scope(default_scope)
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
        obj, label = self.resolve(
            ref, extra_allowed=allowed_targets, by_name=has_type, default_scope=default_scope
        )
        if prepare is not None:
            prepare(obj, node)
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
LOSSES.add_scope(
    "mmdet", "MMDetection 3.x: a 'mean' over all elements (the weight sum is ignored), avg_factor"
)
LOSSES.add_scope(
    "mmagic", "MMagic 1.x: a weighted 'mean' divides by the weight (mask) sum; sample_wise means"
)
AGGREGATORS: Registry = Registry("aggregator", public_name="AGGREGATORS", supplied=("tasks",))


def build_loss(
    cfg: Any, *, allowed_targets: Sequence[str] = (), default_scope: str | None = None, **overrides: Any
) -> Any:
    """Build a loss from ``{type: Name, ...}`` or ``{_target_: dotted.path, ...}``.

    Any ``torch.nn`` loss class (``_target_: torch.nn.SmoothL1Loss``) and any
    registered or allow-listed function get lossmix's ``weight``/``avg_factor``/
    ``loss_weight`` handling. An ``nn.Module`` given directly is returned as is.

    ``type: mmagic.L1Loss`` (or ``default_scope="mmagic"`` with ``type: L1Loss``) builds
    the scope's entry (:meth:`Registry.get`).

    >>> loss = build_loss({"type": "L1Loss", "loss_weight": 2.0})
    >>> import torch; loss(torch.zeros(2), torch.ones(2))
    tensor(2.)
    """
    if isinstance(cfg, nn.Module):
        return cfg
    plain = to_plain(cfg)
    if isinstance(plain, Mapping) and not is_term_node(plain):
        for name, child in plain.items():
            hint = train_cfg_hint(name, child)
            if hint is not None:
                raise LossConfigError(hint)
    try:
        return LOSSES.build(cfg, allowed_targets=allowed_targets, default_scope=default_scope, **overrides)
    except LossConfigError as err:
        key = next((k for k in _TERM_KEYS if f"unknown argument '{k}'" in str(err)), None)
        if key is None:
            raise
        what = " (MMagic's spelling of inputs)" if key == "data_info" else ""
        raise LossConfigError(
            f"{err} '{key}' is a term key{what}, not an argument of the loss: build_loss builds the "
            f"loss alone; give the node to a term (LossMix.from_config({{'rec': node}}) or the config's "
            f"loss.<term>), or drop {key}."
        ) from err


#: the keys of a term node (declared by the engine's schema, :data:`lossmix.mix.keys.TERM_KEYS`),
#: named when :func:`build_loss` gets one
_TERM_KEYS: list[str] = []


def declare_term_keys(keys: Sequence[str]) -> None:
    """Tell :func:`build_loss` the keys a term node takes beyond its loss's arguments."""
    _TERM_KEYS[:] = list(keys)


def build_sampler(cfg: Any, *, allowed_targets: Sequence[str] = (), **overrides: Any) -> Any:
    """Build a sampler from ``{type: RandomSampler, num: 256, ...}``."""
    return SAMPLERS.build(cfg, allowed_targets=allowed_targets, **overrides)
