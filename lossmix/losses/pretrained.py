"""Weights files for the loss networks: read with ``torch.load(weights_only=True)``, never
downloaded, and refused in one line (naming the key, the file and the keys that do not fit)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lossmix.errors import LossConfigError

__all__ = ["TORCHVISION_FILES", "load_weights"]

# the files torchvision's ImageNet weights are cached as (``torchvision://vgg19`` reads them)
TORCHVISION_FILES: dict[str, str] = {
    "vgg11": "vgg11-8a719046.pth",
    "vgg13": "vgg13-19584684.pth",
    "vgg16": "vgg16-397923af.pth",
    "vgg19": "vgg19-dcbb9e9d.pth",
}


def _torchvision_file(owner: str, key: str, path: str) -> str:
    name = path.removeprefix("torchvision://")
    if name not in TORCHVISION_FILES:
        raise LossConfigError(
            f"{owner}: {key}='{path}' is not a torchvision VGG; use one of "
            f"{', '.join('torchvision://' + n for n in TORCHVISION_FILES)}, a file path, or null."
        )
    return os.path.join(torch.hub.get_dir(), "checkpoints", TORCHVISION_FILES[name])


def _weights_file(owner: str, key: str, path: Any, how: str) -> str:
    if not isinstance(path, str | os.PathLike) or not str(path):
        raise LossConfigError(
            f"{owner}: {key}={path!r} is not valid; give a file path or null (random init)."
        )
    text = os.fspath(path)
    if text.startswith(("http://", "https://")):
        raise LossConfigError(
            f"{owner}: {key}='{text}' is a URL; lossmix never downloads weights. Download the file "
            f"once and set {key}: /path/to/file.pth (or {key}: null for random init)."
        )
    found = _torchvision_file(owner, key, text) if text.startswith("torchvision://") else text
    if not os.path.isfile(found):
        where = f" (torchvision's cache: {found})" if found != text else ""
        raise LossConfigError(
            f"{owner}: {key}='{text}': no such weights file{where}. To get weights: {how}; then set "
            f"{key}: /path/to/file.pth, or {key}: null for random init."
        )
    return found


def _key_list(keys: Sequence[str]) -> str:
    shown = ", ".join(sorted(keys)[:6])
    return shown + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")


def load_weights(
    owner: str,
    key: str,
    path: Any,
    module: nn.Module,
    *,
    ignore_prefixes: Sequence[str] = (),
    how: str = "save the network's state_dict() with torch.save once",
) -> None:
    """Load the state dict saved at ``path`` into ``module``, strictly, or raise one line.

    ``path`` is a file (a plain state dict, or MMEngine's ``{"state_dict": ...}``) or
    ``torchvision://<vgg>`` (torchvision's cached ImageNet file, never downloaded). Keys under
    ``ignore_prefixes`` (a classifier the loss does not use) are skipped; ``how`` tells a
    user without the file how to get it.

    Raises:
        LossConfigError: naming ``owner``, ``key`` and the file: missing, unreadable, or not
            fitting (the missing and unexpected keys, or the first mismatched shape).
    """
    found = _weights_file(owner, key, path, how)
    try:
        state = torch.load(found, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file is the same configuration error
        raise LossConfigError(
            f"{owner}: {key}='{path}' could not be read as weights: {err}".split("\n")[0]
        ) from err
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise LossConfigError(f"{owner}: {key}='{path}' holds no state dict (a mapping of names to tensors).")
    state = {k: v for k, v in state.items() if not any(k.startswith(p) for p in ignore_prefixes)}
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise LossConfigError(
            f"{owner}: {key}='{path}' does not fit {type(module).__name__}: missing keys "
            f"[{_key_list(missing)}], unexpected keys [{_key_list(unexpected)}]; check that the file "
            "matches the network (e.g. vgg_type)."
        )
    for name, value in state.items():
        if value.shape != expected[name].shape:
            raise LossConfigError(
                f"{owner}: {key}='{path}' does not fit {type(module).__name__}: '{name}' has shape "
                f"{tuple(value.shape)}, the network {tuple(expected[name].shape)}."
            )
    module.load_state_dict(state)
