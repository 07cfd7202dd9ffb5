"""torch's reduced losses called below ``torch.nn.functional``'s Python wrappers.

``F.l1_loss(pred, target)`` spends about as long in Python (``__torch_function__`` dispatch,
the size warning, ``broadcast_tensors``, the reduction's enum) as in its kernel on a small
tensor. A loss's :meth:`~lossmix.losses.base.BaseLoss.reduced` hook has checked the shapes
and dtypes already, so it calls the kernel torch's wrapper ends in (``torch._C._nn.l1_loss``
and its kin), with the same arguments: the same value and gradient, bit for bit.

Where a tensor subclass or a ``TorchFunctionMode`` takes part (``__torch_function__``), the
public functional runs instead, so such code sees the call it expects. Each function expects
``pred`` and ``target`` of one shape (the hook's check); ``reduction`` is ``'mean'`` or
``'sum'`` (``'none'`` too).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch._C import _has_torch_function_variadic as _overridden
from torch._C._nn import cross_entropy_loss as _cross_entropy_loss
from torch._C._nn import l1_loss as _l1_loss
from torch._C._nn import mse_loss as _mse_loss
from torch._C._nn import smooth_l1_loss as _smooth_l1_loss

__all__ = ["binary_cross_entropy_with_logits", "cross_entropy", "l1_loss", "mse_loss", "smooth_l1_loss"]

# A reduction's code for torch's kernels (``torch.nn._reduction.get_enum``) is its index in
# ("none", "mean", "sum"), spelt out in each call: under torch.compile a module-level name read
# by a call costs guards at every call, a literal none. torch's stubs type the argument as a
# string; the kernels take the integer code, as torch.nn.functional passes it (hence the
# ignore comments below).


def l1_loss(pred: Tensor, target: Tensor, reduction: str) -> Tensor:
    """``F.l1_loss(pred, target, reduction=reduction)``.

    >>> l1_loss(torch.tensor([1.0, -1.0]), torch.zeros(2), "sum")
    tensor(2.)
    """
    if _overridden(pred, target):
        return F.l1_loss(pred, target, reduction=reduction)
    return _l1_loss(pred, target, ("none", "mean", "sum").index(reduction))  # type: ignore[arg-type]


def mse_loss(pred: Tensor, target: Tensor, reduction: str) -> Tensor:
    """``F.mse_loss(pred, target, reduction=reduction)``."""
    if _overridden(pred, target):
        return F.mse_loss(pred, target, reduction=reduction)
    return _mse_loss(pred, target, ("none", "mean", "sum").index(reduction))  # type: ignore[arg-type]


def smooth_l1_loss(pred: Tensor, target: Tensor, reduction: str, beta: float) -> Tensor:
    """``F.smooth_l1_loss(pred, target, reduction=reduction, beta=beta)`` (``beta = 0``: L1, as
    torch does)."""
    if _overridden(pred, target):
        return F.smooth_l1_loss(pred, target, reduction=reduction, beta=beta)
    if beta == 0.0:
        return _l1_loss(pred, target, ("none", "mean", "sum").index(reduction))  # type: ignore[arg-type]
    return _smooth_l1_loss(pred, target, ("none", "mean", "sum").index(reduction), beta)  # type: ignore[arg-type]


def binary_cross_entropy_with_logits(pred: Tensor, target: Tensor, reduction: str) -> Tensor:
    """``F.binary_cross_entropy_with_logits(pred, target, reduction=reduction)``."""
    if _overridden(pred, target):
        return F.binary_cross_entropy_with_logits(pred, target, reduction=reduction)
    code = ("none", "mean", "sum").index(reduction)
    return torch.binary_cross_entropy_with_logits(pred, target, None, None, code)


def cross_entropy(
    pred: Tensor, target: Tensor, reduction: str, *, ignore_index: int, label_smoothing: float
) -> Tensor:
    """``F.cross_entropy(pred, target, reduction=..., ignore_index=..., label_smoothing=...)``
    without class weights."""
    if _overridden(pred, target):
        return F.cross_entropy(
            pred, target, reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing
        )
    code = ("none", "mean", "sum").index(reduction)
    return _cross_entropy_loss(pred, target, None, code, ignore_index, label_smoothing)  # type: ignore[arg-type]
