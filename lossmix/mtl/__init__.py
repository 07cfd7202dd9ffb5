"""Multi-task balancing: weightings, scalarizers, the aggregation node and its aggregators.

Importing the package fills :data:`~lossmix.WEIGHTINGS` (the weightings and the
scalarizers) and :data:`~lossmix.AGGREGATORS`, as importing :mod:`lossmix.losses` fills
``LOSSES``: every entry registers itself with its registry's decorator where it is defined.
"""

from lossmix.mtl.aggregators import BaseAggregator, SeededAggregator, build_aggregator
from lossmix.mtl.scalarizers import FAMO, IMTLL, GeometricLossStrategy, LogLossBalancing, RandomLossWeighting
from lossmix.mtl.weighting import (
    BaseWeighting,
    DynamicWeightAverage,
    GradNorm,
    UncertaintyWeighting,
    build_weighting,
)

__all__ = [
    "FAMO",
    "IMTLL",
    "BaseAggregator",
    "BaseWeighting",
    "DynamicWeightAverage",
    "GeometricLossStrategy",
    "GradNorm",
    "LogLossBalancing",
    "RandomLossWeighting",
    "SeededAggregator",
    "UncertaintyWeighting",
    "build_aggregator",
    "build_weighting",
]
