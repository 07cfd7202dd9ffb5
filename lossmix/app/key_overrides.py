"""Overriding a key a term node does not spell out: ``loss.reg.loss_weight=0.5`` just works.

Hydra only overrides a key that the composed config has; a compact term node (your own
``{_target_: torch.nn.HuberLoss, inputs: ...}``, or the shipped ``sampler/random.yaml``
without ``add_gt_as_proposals``) leaves out most of its loss's arguments, and Hydra would
refuse the override ("use +loss.reg.loss_weight=0.5"). Before Hydra composes, each plain
``loss.<term>.<key>=value`` (and ``loss.<term>.sampler.<key>=value``) whose key the composed
node lacks but the term's loss (or sampler) takes by that name is written
``++loss.<term>.<key>=value`` (add or override), so it works in a run, a sweep, ``--cfg job``
and ``lossmix show``. A key the loss does not take is left to Hydra, and lossmix's message
names the term, the valid keys and the closest one (:func:`lossmix.app.checks.explain_override_error`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from omegaconf import DictConfig

from lossmix.app.checks import command_line_overrides_of, import_modules
from lossmix.app.compose import compose_config
from lossmix.app.trust import AppTrust
from lossmix.mix.keys import loss_node_takes_key
from lossmix.registry.nodes import to_plain

__all__ = ["compose_adding_keys", "needs_added_keys", "plain_loss_key", "with_added_keys"]

# a plain value override of a key two or more levels under loss (no +, ++, ~, no group, no @)
_PLAIN_LOSS_KEY = re.compile(r"(loss(?:\.[A-Za-z_][\w-]*){2,})=", re.ASCII)


def plain_loss_key(override: str) -> str | None:
    """``loss.reg.loss_weight`` for ``loss.reg.loss_weight=0.5``; ``None`` for any other override.

    >>> plain_loss_key("loss.reg.loss_weight=0.5"), plain_loss_key("+loss.reg.x=1")
    ('loss.reg.loss_weight', None)
    """
    found = _PLAIN_LOSS_KEY.match(override)
    return found.group(1) if found else None


def needs_added_keys(argv: Sequence[str]) -> bool:
    """Whether any argument is a plain ``loss.<term>.<key>=value`` override (cheap: no compose)."""
    return any(plain_loss_key(arg) is not None for arg in argv)


def with_added_keys(argv: Sequence[str], compose: Callable[[Sequence[str]], Any]) -> list[str]:
    """``argv`` with each plain ``loss.<term>.<key>=value`` that the composed node lacks and its
    loss takes written ``++loss.<term>.<key>=value``; anything else as it is.

    Args:
        argv: the command line's arguments (flags and overrides, as Hydra's parser takes them).
        compose: composes the config for an ``argv`` (the app's, as ``@hydra.main`` will),
            returning the config or ``None``; it is called once, without the plain loss
            overrides, and only when there is one.

    Any error while composing leaves ``argv`` as it is: the run then reports it.
    """
    picked = {i for i, arg in enumerate(argv) if plain_loss_key(arg) is not None}
    if not picked:
        return list(argv)
    rest = [arg for i, arg in enumerate(argv) if i not in picked]
    try:
        cfg = compose(rest)
        loss = to_plain(cfg.get("loss")) if cfg is not None else None
        if not isinstance(loss, Mapping):
            return list(argv)
        trust = AppTrust(cfg, command_line_overrides_of(rest))
        # the user's @LOSSES.register() calls, so their terms' types resolve
        imports = (cfg.get("lossmix") or {}).get("imports")
        import_modules(imports, allowed_targets=trust.allowed, granted=trust.imports_granted)
        allowed = trust.allowed
    except Exception:  # the run composes again and reports the error itself
        return list(argv)
    added = list(argv)
    for index in sorted(picked):
        key = plain_loss_key(argv[index])
        assert key is not None  # picked above
        if loss_node_takes_key(loss, key.split(".")[1:], allowed_targets=allowed):
            added[index] = "++" + argv[index]
    return added


def compose_adding_keys(
    overrides: Sequence[str], config_name: str | None = None, config_dir: str | None = None
) -> DictConfig:
    """:func:`~lossmix.app.compose.compose_config`; when Hydra refuses a plain
    ``loss.<term>.<key>=value`` whose key the node lacks but its loss takes, composed again with
    that key added (what ``lossmix show`` composes, as the app would run it)."""
    from hydra.errors import ConfigCompositionException

    try:
        return compose_config(overrides, config_name, config_dir)
    except ConfigCompositionException as err:
        if "Could not override 'loss." not in str(err):
            raise
        added = with_added_keys(overrides, lambda rest: compose_config(rest, config_name, config_dir))
        if added == list(overrides):
            raise
        return compose_config(added, config_name, config_dir)
