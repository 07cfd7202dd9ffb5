"""Everything you subclass or decorate to extend lossmix, importable from one place.

============================  ====================================  =========================
to add                        subclass                              and register with
============================  ====================================  =========================
a loss (steps 2–4)            :class:`WeightedLoss` (one hook:      ``@LOSSES.register()``
                              ``elementwise``), or a kernel with
                              :func:`weighted_loss`
a sampler (step 1)            :class:`BaseSampler`                  ``@SAMPLERS.register()``
a dynamic task weighting      :class:`TaskWeighting`                ``@WEIGHTINGS.register()``
a gradient aggregator         :class:`Aggregator` (or               ``@AGGREGATORS.register()``
                              :class:`SeededAggregator`)
a schedule kind               :class:`ScheduleKind`                 ``@schedule_kind``
============================  ====================================  =========================

The template gives every loss the five-step contract (``weight``, ``avg_factor``,
``reduction_override``, ``loss_weight``); decorate the class with ``@LOSSES.register()`` to
name it in a term node (``type: HalfL1``):

>>> import torch
>>> from lossmix.extend import WeightedLoss
>>> class HalfL1(WeightedLoss):
...     def elementwise(self, pred, target):
...         return (pred - target).abs() / 2
>>> loss = HalfL1(reduction="sum")
>>> float(loss(torch.ones(2), torch.zeros(2), weight=torch.tensor([1.0, 0.0])))
0.5
"""

from lossmix.losses.base import WeightedLoss
from lossmix.mtl.aggregators.base import Aggregator, SeededAggregator
from lossmix.mtl.weighting import TaskWeighting
from lossmix.reduction import weighted_loss
from lossmix.registry.registry import AGGREGATORS, LOSSES, SAMPLERS, WEIGHTINGS
from lossmix.samplers.base import BaseSampler
from lossmix.schedules.kinds import ScheduleKind, schedule_kind

__all__ = [
    "AGGREGATORS",
    "LOSSES",
    "SAMPLERS",
    "WEIGHTINGS",
    "Aggregator",
    "BaseSampler",
    "ScheduleKind",
    "SeededAggregator",
    "TaskWeighting",
    "WeightedLoss",
    "schedule_kind",
    "weighted_loss",
]
