"""Name → class registries, building from ``type:``/``_target_:`` nodes, the ``_target_``
allow-list (:mod:`~lossmix.registry.allowlist`) and config-node helpers
(:mod:`~lossmix.registry.nodes`)."""

from lossmix.registry.registry import (
    AGGREGATORS,
    DEFAULT_SCOPE_KEY,
    ENV_ALLOWED_TARGETS,
    LOSSES,
    REQUIRED,
    SAMPLERS,
    WEIGHTINGS,
    Adapter,
    EntryInfo,
    Registry,
    allow_targets,
    allowed_prefixes,
    bind_arguments,
    build_loss,
    build_sampler,
    resolve_target,
)

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
    "resolve_target",
]
