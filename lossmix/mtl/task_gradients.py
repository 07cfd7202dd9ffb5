"""Per-task gradients inside one step's graph: the task Jacobian, the factors Lightning put on the
loss, and what else in the loss reaches a tensor.

Everything here runs ``torch.autograd.grad`` with the graph retained, so the step's own
backward still follows; :func:`other_gradient` first walks the autograd graph on the host
(no backward, no device sync) and differentiates only when something besides the task
terms reaches its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["flat_gradients", "loss_coefficients", "other_gradient", "task_jacobian", "weighted_sum"]


def task_jacobian(
    tasks: Sequence[Sequence[Tensor]], coefficients: Sequence[Sequence[Tensor]], inputs: Sequence[Tensor]
) -> Tensor:
    """``(K, D)``: row ``i`` is ``∇_inputs Σ_k c_ik t_ik`` flattened (zeros where unused).

    One ``torch.autograd.grad`` per task, the graph retained for the step's own backward;
    ``D`` is the total size of ``inputs``.
    """
    rows = []
    for terms, weights in zip(tasks, coefficients, strict=True):
        live = [(t, c) for t, c in zip(terms, weights, strict=True) if t.requires_grad]
        grads: Sequence[Tensor | None] = (
            torch.autograd.grad(
                [t for t, _ in live],
                list(inputs),
                grad_outputs=[c.to(t.dtype) for t, c in live],
                retain_graph=True,
                allow_unused=True,
            )
            if live
            else [None] * len(inputs)
        )
        rows.append(
            torch.cat(
                [
                    (torch.zeros_like(x) if g is None else g).flatten()
                    for g, x in zip(grads, inputs, strict=True)
                ]
            )
        )
    return torch.stack(rows)


def loss_coefficients(loss: Tensor, tasks: Sequence[Sequence[Tensor]]) -> list[list[Tensor]]:
    """``∂loss/∂t`` for every task term ``t`` (the accumulation factor, the AMP scale, ...)."""
    flat = [t for group in tasks for t in group if t.requires_grad]
    found = torch.autograd.grad(loss, flat, retain_graph=True, allow_unused=True) if flat else ()
    by_id = {id(t): g for t, g in zip(flat, found, strict=True) if g is not None}
    return [[by_id.get(id(t), torch.zeros_like(t)).detach() for t in group] for group in tasks]


def _reaches(loss: Tensor, stops: set[Any], inputs: Sequence[Tensor]) -> bool:
    """Whether ``loss``'s graph reaches ``inputs`` without passing through the ``stops`` nodes
    (a walk over the autograd graph on the host: no backward, no device sync)."""
    nodes = {x.grad_fn for x in inputs if x.grad_fn is not None}
    leaves = {id(x) for x in inputs if x.grad_fn is None}
    seen: set[Any] = set()
    stack = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen or node in stops:
            continue
        seen.add(node)
        if node in nodes or id(getattr(node, "variable", None)) in leaves:
            return True
        stack.extend(fn for fn, _ in node.next_functions)
    return False


def other_gradient(
    loss: Tensor,
    tasks: Sequence[Sequence[Tensor]],
    coefficients: Sequence[Sequence[Tensor]],
    inputs: Sequence[Tensor],
) -> list[Tensor] | None:
    """``∇_inputs (loss − Σ c·t)``: what reaches ``inputs`` other than through the task terms
    (a regulariser added to the loss), or ``None`` when nothing does (the usual case: no backward).

    The task paths cancel exactly at the terms (``c − c = 0``), so the result holds no
    rounding from them.
    """
    stops = {t.grad_fn for group in tasks for t in group if t.grad_fn is not None}
    if not _reaches(loss, stops, inputs):
        return None
    rest = loss - torch.stack([weighted_sum(g, cs) for g, cs in zip(tasks, coefficients, strict=True)]).sum()
    grads = torch.autograd.grad(rest, list(inputs), retain_graph=True, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)]


def weighted_sum(terms: Sequence[Tensor], coefficients: Sequence[Tensor]) -> Tensor:
    """``Σ c·t`` over one task's terms (detached terms for the losses, live ones for the rest)."""
    return torch.stack([(c * t).sum() for t, c in zip(terms, coefficients, strict=True)]).sum()


def flat_gradients(grads: Sequence[Tensor | None], like: Sequence[Tensor]) -> Tensor:
    return torch.cat(
        [(torch.zeros_like(x) if g is None else g).flatten() for g, x in zip(grads, like, strict=True)]
    )
