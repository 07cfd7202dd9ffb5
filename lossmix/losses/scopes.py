"""Which losses each scope holds, beyond those registered with ``scopes=`` where defined.

``mmdet``: every loss that reproduces an MMDetection 3.x class of the same name (the bare
names are MMDetection's, so ``mmdet.L1Loss`` is ``L1Loss``). ``mmagic``: MMagic 1.x's
losses, whose classes are registered there where they are defined (``mmagic.L1Loss`` is
:class:`~lossmix.losses.pixel.MaskedL1Loss`), plus the existing MMagic ones below and
MMagic's ``*Comps`` spellings of them. Imported last by :mod:`lossmix.losses`.
"""

from __future__ import annotations

from lossmix.losses.adversarial import GANLoss, GradientPenaltyLoss, R1GradientPenalty
from lossmix.losses.path_regularizer import GeneratorPathRegularizer
from lossmix.registry.registry import LOSSES

__all__ = ["MMAGIC_COMPS", "MMAGIC_NAMES", "MMDET_NAMES"]

MMDET_NAMES: tuple[str, ...] = (
    "AssociativeEmbeddingLoss",
    "BalancedL1Loss",
    "BoundedIoULoss",
    "CIoULoss",
    "CrossEntropyCustomLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "DIoULoss",
    "DistributionFocalLoss",
    "EIoULoss",
    "EQLV2Loss",
    "FocalCustomLoss",
    "FocalLoss",
    "GaussianFocalLoss",
    "GHMC",
    "GHMR",
    "GIoULoss",
    "IoULoss",
    "KnowledgeDistillationKLDivLoss",
    "L1Loss",
    "L2Loss",
    "MarginL2Loss",
    "MSELoss",
    "MultiPosCrossEntropyLoss",
    "QualityFocalLoss",
    "SeesawLoss",
    "SIoULoss",
    "SmoothL1Loss",
    "TripletLoss",
    "VarifocalLoss",
)
MMAGIC_NAMES: tuple[str, ...] = (
    "CharbonnierLoss",
    "DiscShiftLoss",
    "GANLoss",
    "GradientPenaltyLoss",
    "MaskedTVLoss",
)
# MMagic's loss components with the same arguments as a lossmix loss (data_info, loss_name
# are term keys in lossmix; a comps ``interval`` is ``every`` with ``scale_by_every: false``)
MMAGIC_COMPS: dict[str, type] = {
    "GANLossComps": GANLoss,
    "GradientPenaltyLossComps": GradientPenaltyLoss,
    "R1GradientPenaltyComps": R1GradientPenalty,
    "GeneratorPathRegularizerComps": GeneratorPathRegularizer,
}

for _name in MMDET_NAMES:
    LOSSES.add_to_scope("mmdet", _name)
for _name in MMAGIC_NAMES:
    LOSSES.add_to_scope("mmagic", _name)
for _name, _cls in MMAGIC_COMPS.items():
    LOSSES.add_to_scope("mmagic", _name, _cls)
