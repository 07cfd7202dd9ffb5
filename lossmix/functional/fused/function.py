"""What the three fused kernels share: the rule that picks them and their Function's steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch._C._functorch import is_functorch_wrapped_tensor

__all__ = ["AUTOMATIC_MIN_NUMEL", "FUSED_DTYPES", "MEASURED_FASTER", "fused_applies"]

#: the dtypes the automatic rule fuses (half types are fused only when asked for)
FUSED_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
_HALF = (torch.float16, torch.bfloat16)

#: the device types on which the automatic rule takes each fused kernel: where
#: ``benchmarks/fused_kernels.py`` measured it faster than the plain path (RESULTS.md,
#: section ``fused_kernels``; float32, one CPU thread, one training step): sigmoid focal
#: 0.85× the plain step's time and 0.45× its peak memory at 1M logits, 0.65× and 0.30× at 8M;
#: GIoU 0.66× at 16K boxes (its peak 1.7× of a 1.5 MB one there: one block's temporaries) and
#: 0.50× time, 0.54× memory at 1M. Not the softmax cross-entropy: 1.3-1.8× the time at
#: 1-1048 rows of 1000 classes, 0.75-1.07× at 8388 (runs differ), the same memory (torch's
#: ``log_softmax`` and ``nll_loss`` are native kernels already). CUDA is not listed until
#: ``benchmarks/gpu.py``
#: has measured it there.
MEASURED_FASTER: dict[str, frozenset[str]] = {
    "sigmoid_focal_loss": frozenset({"cpu"}),
    "giou_loss": frozenset({"cpu"}),
    "cross_entropy": frozenset(),
}
#: the automatic rule's smallest ``pred``: below it the fused focal's extra Python calls
#: cost more than they save (1.3-1.5× the plain step at 960 logits, 0.96-1.04× at 16K)
AUTOMATIC_MIN_NUMEL = 2**14


def fused_applies(fused: bool | None, kernel: str, pred: Tensor, *others: Tensor | None) -> bool:
    """Whether a loss takes its fused ``kernel`` for this call; reads metadata only (no host sync).

    Args:
        fused: the loss's switch. ``False``: never. ``True``: in any floating dtype, with or
            without grad mode, and under ``torch.compile``. ``None`` (automatic): only where
            the fused kernel is exact and measured faster: ``pred`` needs a gradient (it
            requires grad and grad mode is on), is float32 or float64, lies on a device type
            :data:`MEASURED_FASTER` lists for ``kernel``, has at least
            :data:`AUTOMATIC_MIN_NUMEL` elements, and the call is neither compiled
            (Inductor fuses the plain formula itself) nor inside a ``torch.func`` transform
            (``hessian``/``jacfwd`` need forward-mode AD, which the fused Functions lack).
        kernel: the plain kernel's name, a key of :data:`MEASURED_FASTER`.
        pred: the input the fused kernel differentiates.
        others: the call's other tensor inputs; if one needs a gradient (a soft target from
            a teacher, a learned class weight) the plain path runs, which gives it one.

    >>> x = torch.zeros(2**12, 4, requires_grad=True)
    >>> [fused_applies(f, "giou_loss", x) for f in (None, True, False)]
    [True, True, False]
    >>> fused_applies(None, "giou_loss", x.detach()), fused_applies(None, "cross_entropy", x)
    (False, False)
    """
    if fused is False:
        return False
    if fused is None and pred.numel() < AUTOMATIC_MIN_NUMEL:  # the cheapest check says no first
        return False
    grad_mode = torch.is_grad_enabled()
    if grad_mode and any(t is not None and t.requires_grad for t in others):
        return False
    if fused:
        return True
    return (
        grad_mode
        and pred.requires_grad
        and not torch.compiler.is_compiling()
        and not is_functorch_wrapped_tensor(pred)
        and pred.dtype in FUSED_DTYPES
        and pred.device.type in MEASURED_FASTER[kernel]
    )


def work_dtype(pred: Tensor) -> Tensor:
    """``pred`` in the dtype the fused kernels compute in: float32 for half types."""
    return pred.float() if pred.dtype in _HALF else pred


#: elements of the block of rows a fused kernel computes at a time (per device type): its
#: temporaries then stay in a CPU core's cache, and out of the peak memory on any device
_BLOCK: dict[str, int] = {"cpu": 2**18}
_BLOCK_ELSEWHERE = 2**24


def by_rows(kernel: Callable[..., tuple[Tensor, ...]], pred: Tensor, *inputs: Any) -> tuple[Tensor, ...]:
    """``kernel(pred, target, *hyper)`` over blocks of rows (dim 0 of ``pred`` and ``target``),
    its row-aligned outputs copied into tensors allocated once; in one block under
    ``torch.compile`` (Inductor plans the memory itself). The block size depends on shapes
    and the device type only."""
    target, *hyper = inputs
    n = pred.size(0) if pred.dim() else 0
    block = _BLOCK.get(pred.device.type, _BLOCK_ELSEWHERE)
    rows = max(1, block // max(1, pred[0].numel())) if n else 1
    if n <= rows or torch.compiler.is_compiling():
        return kernel(pred, target, *hyper)
    outs: tuple[Tensor, ...] = ()
    for start in range(0, n, rows):
        parts = kernel(pred[start : start + rows], target[start : start + rows], *hyper)
        if not outs:
            outs = tuple(part.new_empty((n, *part.shape[1:])) for part in parts)
        for out, part in zip(outs, parts, strict=True):
            out[start : start + rows].copy_(part)
    return outs


def save_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    """A Function's ``setup_context``: keep ``pred`` and ``target`` (references, for double
    backward), the gradient buffer and the per-row scale if any."""
    pred, target, *hyper = inputs
    buffers = output[1:]
    ctx.mark_non_differentiable(*buffers)
    ctx.save_for_backward(pred, target, *buffers)
    ctx.hyper = tuple(hyper)


def backward_from_buffer(
    ctx: Any, grad_loss: Tensor, plain: Callable[..., Tensor], dim: int | None
) -> tuple[Tensor | None, ...]:
    """``grad_loss × buffer`` (× the per-row scale, if any), ``grad_loss`` unsqueezed at ``dim``
    where the gradient has a dimension the loss has not; under ``create_graph=True`` the
    gradient of the ``plain`` formula, so that it can be differentiated again."""
    pred, target, grad, *rows = ctx.saved_tensors
    nones = (None,) * (1 + len(ctx.hyper))
    if not ctx.needs_input_grad[0]:
        return (None, *nones)
    if torch.is_grad_enabled():
        with torch.enable_grad():
            loss = plain(pred, target, *ctx.hyper)
            (grad_pred,) = torch.autograd.grad(loss, pred, grad_loss, create_graph=True)
        return (grad_pred, *nones)
    scale = grad_loss * rows[0] if rows else grad_loss
    if dim is not None:
        scale = scale.unsqueeze(dim)
    return (scale.to(grad.dtype) * grad, *nones)
