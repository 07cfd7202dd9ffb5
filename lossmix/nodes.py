"""Config containers: OmegaConf nodes as plain dicts and lists, and keeping secrets out of errors.

Every layer that accepts a config node (a dict or an OmegaConf ``DictConfig``) turns it
into plain containers here, once, so checkpoints and messages only ever see plain
Python values. A value interpolated from the environment (``${oc.env:SECRET}``) is
never echoed by an error: :func:`env_secrets` finds such values and :func:`redact`
replaces them in a message with the interpolation that produced them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = [
    "env_secrets",
    "is_group_node",
    "is_omegaconf",
    "is_term_node",
    "redact",
    "redacted",
    "register_resolvers",
    "secrets_hidden",
    "to_plain",
]

TERM_REFS: tuple[str, ...] = ("type", "_target_")

_ENV = re.compile(r"\$\{\s*oc\.env\s*:")


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
    """A term's node: a mapping with ``type`` or ``_target_``.

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


def env_secrets(node: Any) -> dict[str, str]:
    """``{resolved value: interpolation}`` for every value of ``node`` read from the environment.

    Only OmegaConf nodes carry interpolations; a plain container gives ``{}``.

    >>> import os; os.environ["LOSSMIX_DOC_SECRET"] = "hunter2"
    >>> from omegaconf import OmegaConf
    >>> env_secrets(OmegaConf.create({"gamma": "${oc.env:LOSSMIX_DOC_SECRET}"}))
    {'hunter2': '${oc.env:LOSSMIX_DOC_SECRET}'}
    """
    if not is_omegaconf(node):
        return {}
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(node, resolve=False)
    found: dict[str, str] = {}
    for path, value in _leaves(raw):
        if not isinstance(value, str) or not _ENV.search(value):
            continue
        try:
            resolved = OmegaConf.select(node, ".".join(map(str, path)), throw_on_missing=False)
        except Exception:  # an unresolvable interpolation: nothing to hide
            continue
        if resolved is not None and str(resolved):
            found[str(resolved)] = value
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


@contextmanager
def secrets_hidden(node: Any) -> Iterator[None]:
    """Re-raise an error from the block with the environment-read values of ``node`` hidden.

    The hidden error is raised ``from None``: its cause would show the value again.
    """
    secrets = env_secrets(node)
    try:
        yield
    except Exception as err:
        hidden = redacted(err, secrets) if secrets else err
        if hidden is err:
            raise
        raise hidden from None


def register_resolvers() -> None:
    """OmegaConf resolvers lossmix's configs use: ``${lossmix.pid:}``, this process's id.

    The app's run directories end with it, after the time to the microsecond, so two runs
    started at the same moment (two terminals, a job array) never share a directory.
    """
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("lossmix.pid"):
        OmegaConf.register_new_resolver("lossmix.pid", os.getpid)
