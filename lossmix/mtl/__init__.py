"""Multi-task balancing: weightings, scalarizers, the aggregation node and its aggregators.

Importing the package fills :data:`~lossmix.WEIGHTINGS` (the weightings and the
scalarizers) and :data:`~lossmix.AGGREGATORS`, as importing :mod:`lossmix.losses` fills
``LOSSES``: every entry registers itself with its registry's decorator where it is defined.
"""

from lossmix.mtl.aggregators import BaseAggregator, SeededAggregator, build_aggregator
from lossmix.mtl.preference_scalarizers import COSMOS, PBI, SmoothTchebycheff
from lossmix.mtl.scalarizers import FAMO, IMTLL, GeometricLossStrategy, LogLossBalancing, RandomLossWeighting
from lossmix.mtl.weighting import (
    BaseWeighting,
    DynamicWeightAverage,
    GradNorm,
    UncertaintyWeighting,
    build_weighting,
)

__all__ = [
    "COSMOS",
    "FAMO",
    "IMTLL",
    "PBI",
    "BaseAggregator",
    "BaseWeighting",
    "DynamicWeightAverage",
    "GeometricLossStrategy",
    "GradNorm",
    "LogLossBalancing",
    "RandomLossWeighting",
    "SeededAggregator",
    "SmoothTchebycheff",
    "UncertaintyWeighting",
    "build_aggregator",
    "build_weighting",
]
