"""The engine, with no Lightning and no Hydra: :class:`LossMix` (named terms, weighted and
summed), :class:`Term` (one term's five steps), routing, normalisers (step 4), building
from a config node, and one step's :class:`LossResult`."""

from lossmix.mix.loss_mix import LossMix
from lossmix.mix.normalizers import Normalizer
from lossmix.mix.result import LossResult
from lossmix.mix.term import Term

__all__ = ["LossMix", "LossResult", "Normalizer", "Term"]
