"""Name → class registries, building from ``type:``/``_target_:`` nodes, the ``_target_``
allow-list (:mod:`~lossmix.registry.allowlist`) and config-node helpers
(:mod:`~lossmix.registry.nodes`)."""

from lossmix.registry.allowlist import allow_targets, allowed_prefixes, resolve_target
from lossmix.registry.registry import (
    AGGREGATORS,
    LOSSES,
    SAMPLERS,
    WEIGHTINGS,
    Registry,
    build_loss,
    build_sampler,
)

__all__ = [
    "AGGREGATORS",
    "LOSSES",
    "SAMPLERS",
    "WEIGHTINGS",
    "Registry",
    "allow_targets",
    "allowed_prefixes",
    "build_loss",
    "build_sampler",
    "resolve_target",
]
