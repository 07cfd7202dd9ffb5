"""Everything you subclass or decorate to extend lossmix, importable from one place.

* a loss (steps 2–4): subclass :class:`BaseLoss` (one hook, ``elementwise``) or wrap a
  kernel with :func:`weighted_loss`; register with ``@LOSSES.register()``;
* a sampler (step 1): :class:`BaseSampler`, ``@SAMPLERS.register()``;
* a normaliser source (step 4): a function of :class:`NormalizerInputs`,
  ``@normalizer_source("name")``;
* a dynamic task weighting: :class:`BaseWeighting`, ``@WEIGHTINGS.register()``;
* a gradient aggregator: :class:`BaseAggregator` (or :class:`SeededAggregator`),
  ``@AGGREGATORS.register()``;
* a schedule kind: :class:`BaseScheduleKind`, ``@schedule_kind``.

The template gives every loss the five-step contract (``weight``, ``avg_factor``,
``reduction_override``, ``loss_weight``); decorate the class with ``@LOSSES.register()`` to
name it in a term node (``type: HalfL1``):

>>> import torch
>>> from lossmix.extend import BaseLoss
>>> class HalfL1(BaseLoss):
...     def elementwise(self, pred, target):
...         return (pred - target).abs() / 2
>>> loss = HalfL1(reduction="sum")
>>> float(loss(torch.ones(2), torch.zeros(2), weight=torch.tensor([1.0, 0.0])))
0.5
"""

from lossmix.losses.base import BaseLoss
from lossmix.mix.normalizers import NormalizerInputs, normalizer_source
from lossmix.mtl.aggregators.base import BaseAggregator, SeededAggregator
from lossmix.mtl.weighting import BaseWeighting
from lossmix.reduction import weighted_loss
from lossmix.registry.registry import AGGREGATORS, LOSSES, SAMPLERS, WEIGHTINGS
from lossmix.samplers.base import BaseSampler
from lossmix.schedules.kinds import BaseScheduleKind, schedule_kind

__all__ = [
    "AGGREGATORS",
    "LOSSES",
    "SAMPLERS",
    "WEIGHTINGS",
    "BaseAggregator",
    "BaseLoss",
    "BaseSampler",
    "BaseScheduleKind",
    "BaseWeighting",
    "NormalizerInputs",
    "SeededAggregator",
    "normalizer_source",
    "schedule_kind",
    "weighted_loss",
]
