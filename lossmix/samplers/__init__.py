"""Samplers: step 1 of a term, which elements count (MMDetection's sampler arithmetic).

* :mod:`~lossmix.samplers.base`: :class:`SampleResult`, :class:`BaseSampler` (masks,
  routed inputs, per-set rows) and :class:`PseudoSampler`;
* :mod:`~lossmix.samplers.quota`: MMDetection's quotas (:class:`QuotaSampler`),
  :class:`RandomSampler` and :class:`OHEMSampler`;
* :mod:`~lossmix.samplers.balanced`: Libra R-CNN's :class:`InstanceBalancedPosSampler`
  and :class:`IoUBalancedNegSampler`, and :class:`CombinedSampler` joining two samplers;
* :mod:`~lossmix.samplers.score_hlr`: PISA's :class:`ScoreHLRSampler`.

Every sampler is registered in :data:`lossmix.SAMPLERS`; none reads tensor data on
the host (see :mod:`~lossmix.samplers.base`).
"""

from lossmix.samplers.balanced import CombinedSampler, InstanceBalancedPosSampler, IoUBalancedNegSampler
from lossmix.samplers.base import BaseSampler, PseudoSampler, SampleResult
from lossmix.samplers.quota import OHEMSampler, QuotaSampler, RandomSampler
from lossmix.samplers.score_hlr import ScoreHLRSampler

__all__ = [
    "BaseSampler",
    "CombinedSampler",
    "InstanceBalancedPosSampler",
    "IoUBalancedNegSampler",
    "OHEMSampler",
    "PseudoSampler",
    "QuotaSampler",
    "RandomSampler",
    "SampleResult",
    "ScoreHLRSampler",
]
