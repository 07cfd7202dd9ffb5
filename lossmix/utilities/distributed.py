"""Distributed reductions lossmix uses: one collective for many values, a no-op on one process.

Every collective lossmix issues goes through :func:`all_reduce_sum`, which counts them
(:func:`collective_count`), so tests can check that a step costs one collective
whatever the number of terms.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["all_reduce_mean", "all_reduce_min", "all_reduce_sum", "collective_count", "rank", "world_size"]

_collectives = {"count": 0}


def _initialized() -> bool:
    dist = torch.distributed
    return bool(dist.is_available() and dist.is_initialized())


def world_size() -> int:
    """The default process group's size, 1 outside distributed runs."""
    return torch.distributed.get_world_size() if _initialized() else 1


def rank() -> int:
    """This process's rank in the default process group, 0 outside distributed runs."""
    return torch.distributed.get_rank() if _initialized() else 0


def collective_count() -> int:
    """How many collectives lossmix has issued in this process (for tests)."""
    return _collectives["count"]


def all_reduce_sum(values: Tensor) -> Tensor:
    """Sum ``values`` over ranks with one collective (a copy; ``values`` itself without a group).

    >>> all_reduce_sum(torch.tensor([1.0, 2.0]))
    tensor([1., 2.])
    """
    if world_size() == 1:
        return values
    _collectives["count"] += 1
    values = values.clone()
    torch.distributed.all_reduce(values)
    return values


def all_reduce_min(values: Tensor) -> Tensor:
    """The element-wise minimum of ``values`` over ranks, in one collective.

    >>> all_reduce_min(torch.tensor([3, 1]))
    tensor([3, 1])
    """
    if world_size() == 1:
        return values
    _collectives["count"] += 1
    values = values.clone()
    torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.MIN)
    return values


def all_reduce_mean(values: list[Tensor]) -> list[Tensor]:
    """Average 0-dim tensors over ranks with one collective for all of them.

    Without an initialised process group this returns the values unchanged.
    """
    world = world_size()
    if world == 1 or not values:
        return values
    stacked = all_reduce_sum(torch.stack([v.float() for v in values]))
    return list((stacked / world).unbind())
