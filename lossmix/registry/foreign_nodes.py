"""Nodes a loss config gets from elsewhere, named for what they are before anything is built.

Two come up when a config is pasted from another tool:

* a **boolean key**: YAML 1.1 (PyYAML, OmegaConf, Hydra) reads a bare ``on``, ``yes`` or ``y``
  as ``True`` and ``off``, ``no`` or ``n`` as ``False``, keys included, so
  ``aggregation: {on: shared}`` arrives as ``{True: 'shared'}``;
* **MMDetection's** ``train_cfg`` (``{rpn: {assigner: ..., sampler: ...}}``): lossmix has no
  ``train_cfg``; a sampler is a key of the term whose loss it samples for
  (``loss.<term>.sampler``), and assigning is the model's job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lossmix.errors import LossConfigError
from lossmix.registry.nodes import TERM_REFS

__all__ = ["MMDET_TRAIN_CFG", "check_bool_keys", "train_cfg_hint"]

#: MMDetection's name of the node that holds its samplers and assigners
MMDET_TRAIN_CFG = "train_cfg"
_TRAIN_CFG_KEYS = ("sampler", "assigner")
# a term node that lost its ``type`` holds some of these; a train_cfg stage none
_TERM_SIGNS = ("inputs", "data_info", "normalizer", "loss_weight", "reduction", "every")
_SAMPLER_EXAMPLE = (
    "e.g. loss.cls.sampler: {type: RandomSampler, num: 256, pos_fraction: 0.5}, or on the command "
    "line +sampler@loss.cls.sampler=random"
)


def check_bool_keys(node: Any, where: str) -> None:
    """Refuse a key that YAML turned into a boolean, anywhere in ``node``, naming where it is.

    Args:
        node: a plain node (dicts and lists).
        where: the node's config path, e.g. ``loss.aggregation`` or ``loss.cls``.

    Raises:
        LossConfigError: ``<where>: the key 'on' was read by YAML as the boolean True; ...``.

    >>> check_bool_keys({"type": "upgrad", True: "shared"}, "loss.aggregation")
    Traceback (most recent call last):
    ...
    lossmix.errors.LossConfigError: loss.aggregation: the key 'on' was read by YAML as the boolean True; ...
    """
    if isinstance(node, Mapping):
        for key, value in node.items():
            if isinstance(key, bool):
                raise LossConfigError(_bool_key_message(where, key))
            check_bool_keys(value, f"{where}.{key}")
    elif isinstance(node, (list, tuple)):
        for index, item in enumerate(node):
            check_bool_keys(item, f"{where}.{index}")


def _bool_key_message(where: str, key: bool) -> str:
    if key and where.rsplit(".", 1)[-1] == "aggregation":
        return (
            f"{where}: the key 'on' was read by YAML as the boolean True; write 'over:' "
            "(e.g. over: shared, module: trunk)."
        )
    spelt = "on, yes or y" if key else "off, no or n"
    return (
        f"{where}: a key was read by YAML as the boolean {key} (YAML 1.1 reads a bare {spelt} as "
        f"{key}); write the key's own name, or quote it ('{'on' if key else 'off'}': ...)."
    )


def _stage_like(node: Any) -> bool:
    """A mapping that names nothing to build and has none of a term's own keys."""
    return isinstance(node, Mapping) and not any(k in node for k in (*TERM_REFS, *_TERM_SIGNS))


def train_cfg_hint(name: Any, node: Any, where: str = "", *, by_name: bool = True) -> str | None:
    """The one-line message for MMDetection's ``train_cfg`` given as a loss node, or ``None``.

    Recognised: a node that names no loss but holds a ``sampler`` or ``assigner``, itself
    (``rpn: {sampler: ...}``) or in a stage (``{rpn: {sampler: ...}}``), and with ``by_name``
    any such node named ``train_cfg``. ``where`` prefixes the path in the message (``loss.``).

    >>> train_cfg_hint("rpn", {"sampler": {"type": "RandomSampler", "num": 256}})
    "rpn.sampler: MMDetection's train_cfg is not read by lossmix; a sampler goes on the term ..."
    """
    path = f"{where}{name}"
    if not _stage_like(node):
        return None
    found = next((k for k in _TRAIN_CFG_KEYS if k in node), None)
    if found is None:
        inner = next(
            (
                f"{path}.{k}.{key}"
                for k, v in node.items()
                if _stage_like(v)
                for key in _TRAIN_CFG_KEYS
                if key in v
            ),
            None,
        )
        if inner is None and not (by_name and name == MMDET_TRAIN_CFG):
            return None
        shown = inner or path
    else:
        shown = f"{path}.{found}"
    return (
        f"{shown}: MMDetection's train_cfg is not read by lossmix; a sampler goes on the term "
        f"whose loss it samples for, as loss.<term>.sampler ({_SAMPLER_EXAMPLE}); assigning "
        "positives is the model's job."
    )
