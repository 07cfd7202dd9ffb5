"""What a composed app config may trust: the allow-list and imports the user gave.

A config file may come from someone else, so it cannot trust a package: an entry of
``lossmix.allowed_targets`` counts only when it was given on the command line
(``lossmix.allowed_targets=[my_project]``), and ``lossmix.imports`` imports a module
only under an allowed package or named on the command line. The environment variable
``LOSSMIX_ALLOWED_TARGETS`` and :func:`lossmix.allow_targets` (in Python) are the user's
too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from lossmix.errors import LossConfigError
from lossmix.registry.allowlist import check_prefix
from lossmix.registry.nodes import env_secrets, to_plain

__all__ = ["ALLOWED_KEY", "IMPORTS_KEY", "AppTrust"]

ALLOWED_KEY = "lossmix.allowed_targets"
IMPORTS_KEY = "lossmix.imports"


def _command_line_values(overrides: Iterable[str], key: str) -> list[str]:
    """The strings that command-line ``overrides`` give to ``key`` (``key=[a,b]``, ``+key=a``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    found: list[str] = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.key_or_group != key or override.is_delete():
            continue
        values: Any = (
            list(override.sweep_string_iterator()) if override.is_sweep_override() else override.value()
        )
        items = values if isinstance(values, list) else [values]
        found += [v for v in items if isinstance(v, str)]
    return found


class AppTrust:
    """What the app trusts for one composed config: allowed prefixes and importable modules.

    Args:
        cfg: the composed config (it must have the ``lossmix`` node of ``train.yaml``).
        overrides: the command line's overrides (the job's ``hydra.overrides.task``).

    Raises:
        LossConfigError: ``lossmix.allowed_targets`` lists a package that no command-line
            override gave.
    """

    def __init__(self, cfg: Any, overrides: Sequence[str]) -> None:
        node = cfg.get("lossmix") or {}
        listed = to_plain(node.get("allowed_targets")) or []
        if isinstance(listed, str) or not isinstance(listed, list):
            raise LossConfigError(
                f"{ALLOWED_KEY} must be a list of package prefixes, e.g. "
                f"{ALLOWED_KEY}=[my_project]; got {listed!r}."
            )
        granted = {check_prefix(p, source=ALLOWED_KEY) for p in _command_line_values(overrides, ALLOWED_KEY)}
        self.allowed: list[str] = []
        for prefix in listed:
            cleaned = check_prefix(prefix, source=ALLOWED_KEY)
            if cleaned not in granted:
                raise LossConfigError(
                    f"{ALLOWED_KEY}: '{cleaned}' comes from a config file, and a config file "
                    "cannot widen the allow-list (it may be someone else's). If the package is "
                    f"trusted, give it on the command line: {ALLOWED_KEY}=[{cleaned}], or set "
                    f"LOSSMIX_ALLOWED_TARGETS={cleaned}."
                )
            self.allowed.append(cleaned)
        self.imports_granted = tuple(_command_line_values(overrides, IMPORTS_KEY))
        self.secrets = env_secrets(cfg)
