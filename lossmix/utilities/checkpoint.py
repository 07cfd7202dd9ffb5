"""Reading a checkpoint file safely: only tensors and plain containers, and what is wrong in one line.

:func:`read_checkpoint` loads with ``weights_only=True`` passed to ``torch.load`` explicitly
(so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot turn it off: a file cannot run code), and
says which file is empty, truncated, not a checkpoint at all, or holds other objects.
:func:`check_checkpoint` refuses a file without a ``state_dict`` and one whose parameters or
buffers hold NaN or infinity (a bit flip, or a run that diverged), which would otherwise
train on NaN without a word. :func:`state_dict_mismatch` words PyTorch's multi-line
``load_state_dict`` error (missing, unexpected, wrong-shaped keys) as one line.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lossmix.errors import LossConfigError

__all__ = [
    "bare_state_dict",
    "check_checkpoint",
    "earlier_checkpoints",
    "is_bare_state_dict",
    "read_checkpoint",
    "state_dict_mismatch",
]

_SHOWN = 3  # names listed in a message before "and N more"


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def earlier_checkpoints(path: str | Path) -> str:
    """``" (in its directory: a.ckpt, b.ckpt)"`` (the newest first), or ``""``."""
    path = Path(path)
    try:
        others = sorted(
            (p for p in path.parent.glob("*.ckpt") if p.name != path.name and p.is_file()),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
    except OSError:
        return ""
    return f" (in its directory: {_listed([p.name for p in others])})" if others else ""


def _first_line(err: BaseException) -> str:
    """The first sentence of ``err``'s first line (torch's explanations go on for lines)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0].split(". ")[0].rstrip(".") if lines else type(err).__name__


def _unpickling_reason(err: BaseException) -> str:
    """The one line of torch's weights-only refusal that says what was refused."""
    for line in str(err).splitlines():
        line = line.strip()
        if line.startswith(("Unsupported", "Trying to load")) or "GLOBAL" in line:
            return line.rstrip(".")
    return _first_line(err)


def read_checkpoint(path: str | Path, *, map_location: Any = "cpu", weights_only: bool = True) -> Any:
    """``torch.load(path, weights_only=...)`` with a one-line :class:`LossConfigError` naming
    ``path`` when it cannot be read, is empty, truncated or corrupt, or holds objects
    ``weights_only`` loading refuses.

    Args:
        path: a local checkpoint file.
        map_location: as for ``torch.load``.
        weights_only: passed to ``torch.load`` explicitly (``False`` only for a file you trust).
    """
    path = Path(path)
    earlier = earlier_checkpoints(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise LossConfigError(f"checkpoint {path} is a directory, not a checkpoint file; give a file.")
        if size == 0:
            raise LossConfigError(
                f"checkpoint {path} is empty (0 bytes): it was never written completely; resume from an "
                f"earlier checkpoint{earlier}."
            )
        with path.open("rb") as handle:
            return torch.load(handle, map_location=map_location, weights_only=weights_only)
    except LossConfigError:
        raise
    except OSError as err:
        raise LossConfigError(
            f"could not read checkpoint {path}: [Errno {err.errno}] {err.strerror}; check that the file "
            "exists and is readable."
        ) from err
    except pickle.UnpicklingError as err:
        if weights_only and "Weights only load failed" in str(err):
            reason = _unpickling_reason(err)
            kind = (
                "holds objects other than tensors and plain containers"
                if "GLOBAL" in reason
                else "is not a PyTorch checkpoint (or is corrupt)"
            )
            raise LossConfigError(
                f"checkpoint {path} {kind} ({reason}); it is only loaded with weights_only=True, so a "
                f"file cannot run code: resume from a checkpoint lossmix or Lightning wrote{earlier}."
            ) from err
        raise LossConfigError(
            f"checkpoint {path} is not a PyTorch checkpoint ({_first_line(err)}); resume from a "
            f"checkpoint lossmix or Lightning wrote{earlier}."
        ) from err
    except Exception as err:  # torch reports a damaged file as RuntimeError, EOFError, KeyError, ...
        damaged = _starts_like_a_checkpoint(path)
        kind = "is truncated or corrupt" if damaged else "is not a PyTorch checkpoint"
        raise LossConfigError(
            f"checkpoint {path} ({size} bytes) {kind} ({type(err).__name__}: {_first_line(err)[:120]}); "
            f"resume from an earlier checkpoint{earlier}."
        ) from err


def _starts_like_a_checkpoint(path: Path) -> bool:
    """Whether ``path`` begins as ``torch.save`` files do: a zip archive, or a legacy pickle."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return head.startswith((b"PK\x03\x04", b"\x80"))


def _nonfinite(state_dict: Mapping[str, Any]) -> list[str]:
    """``"name (k of n)"`` for each floating tensor of ``state_dict`` with a NaN or infinity."""
    found = []
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
            bad = int((~torch.isfinite(value)).sum())  # once, at load: not the hot path
            if bad:
                found.append(f"{name} ({bad} of {value.numel()})")
    return found


def check_checkpoint(
    checkpoint: Any,
    path: str | Path,
    *,
    allow_nonfinite: bool = False,
    allow_hint: str = "allow_nonfinite=True",
) -> None:
    """Refuse a loaded checkpoint that has no ``state_dict`` of tensors, or whose parameters or
    buffers hold NaN or infinity (unless ``allow_nonfinite``). A bare state_dict (a mapping of
    tensors only, as Lightning's ``ddp_spawn`` passes the weights back) is checked as one.

    Args:
        checkpoint: what :func:`read_checkpoint` returned.
        path: the file it came from (named in the message).
        allow_nonfinite: accept NaN/inf values (a run that wants to inspect a diverged model).
        allow_hint: the setting that accepts them, named in the message.

    Raises:
        LossConfigError: one line naming ``path`` and the first few keys or tensors.
    """
    earlier = earlier_checkpoints(path)
    if not isinstance(checkpoint, Mapping):
        raise LossConfigError(
            f"checkpoint {path} holds a {type(checkpoint).__name__}, not a checkpoint's dict; resume from a "
            f"checkpoint Lightning wrote (Trainer.save_checkpoint, ModelCheckpoint){earlier}."
        )
    state_dict = checkpoint.get("state_dict")
    if is_bare_state_dict(checkpoint):
        state_dict = checkpoint  # a bare state_dict (what ddp_spawn's workers hand back): checked as is
    if not isinstance(state_dict, Mapping):
        keys = _listed([str(k) for k in checkpoint]) or "none"
        missing = "has no 'state_dict'" if state_dict is None else "has a 'state_dict' that is not a dict"
        raise LossConfigError(
            f"checkpoint {path} {missing} (its keys: {keys}), so it is not a Lightning checkpoint of a "
            f"model; resume from one Lightning wrote (Trainer.save_checkpoint, ModelCheckpoint){earlier}."
        )
    if allow_nonfinite:
        return
    bad = _nonfinite(state_dict)
    if bad:
        raise LossConfigError(
            f"checkpoint {path} has non-finite values (NaN or inf) in {_listed(bad)}; training from it "
            f"would train on NaN: resume from an earlier checkpoint{earlier}, or set {allow_hint} "
            "to load it anyway."
        )


_SIZE = re.compile(
    r"size mismatch for (\S+): copying a param with shape (?:torch\.Size\()?(\[[^\]]*\])\)? from "
    r"checkpoint, the shape in current model is (?:torch\.Size\()?(\[[^\]]*\])\)?"
)
_QUOTED = re.compile(r'"([^"]*)"')
_KEYS = re.compile(r'(Missing|Unexpected) key\(s\) in state_dict: ((?:"[^"]*"(?:, )?)+)')


def state_dict_mismatch(err: BaseException, path: str | Path, model: str) -> LossConfigError | None:
    """PyTorch's ``Error(s) in loading state_dict`` as one line naming ``path``, the model and
    the first few missing, unexpected and wrong-shaped keys; ``None`` for any other error."""
    text = str(err)
    if not isinstance(err, RuntimeError) or "Error(s) in loading state_dict" not in text:
        return None
    parts = []
    for kind, keys in _KEYS.findall(text):
        names = _QUOTED.findall(keys)
        parts.append(f"{kind.lower()} keys: {_listed(names)}")
    shapes = [f"{name} (checkpoint {old}, model {new})" for name, old, new in _SIZE.findall(text)]
    if shapes:
        parts.append(f"wrong shapes: {_listed(shapes)}")
    found = "; ".join(parts) or _first_line(err)
    return LossConfigError(
        f"checkpoint {path} does not fit the model {model}: {found}; it was written by another model or "
        "config: resume with the config that wrote it, or from a checkpoint of this model."
    )


def bare_state_dict(path: str | Path) -> LossConfigError:
    """The one line for a resume from a bare state_dict (weights only, no training state),
    which Lightning would stop on with a ``KeyError``."""
    return LossConfigError(
        f"checkpoint {path} is a bare state_dict (tensors only), not a Lightning checkpoint with the "
        "training state to resume; to start from these weights, load them into the model "
        "(model.load_state_dict) and train without ckpt_path."
    )


def is_bare_state_dict(checkpoint: Any) -> bool:
    """Whether ``checkpoint`` is a non-empty mapping of tensors only, without ``state_dict``."""
    return (
        isinstance(checkpoint, Mapping)
        and "state_dict" not in checkpoint
        and bool(checkpoint)
        and all(isinstance(v, torch.Tensor) for v in checkpoint.values())
    )
