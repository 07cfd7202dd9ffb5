"""Registered loss modules with MMDetection's and MMagic's arguments; importing this fills
``LOSSES`` and its scopes (``mmdet``, ``mmagic``)."""

from lossmix.losses.adversarial import (
    AdversarialLoss,
    DiscShiftLoss,
    GANLoss,
    GradientPenalty,
    GradientPenaltyLoss,
    MaskedTVLoss,
    R1GradientPenalty,
)
from lossmix.losses.base import BaseLoss
from lossmix.losses.cross_entropy import (
    CrossEntropyLoss,
)
from lossmix.losses.custom_classes import (
    CrossEntropyCustomLoss,
    FocalCustomLoss,
)
from lossmix.losses.deblurgan import (
    ADV_LOSS_TYPES,
    AdvLoss,
)
from lossmix.losses.dice import (
    EMPTY_TARGET_POLICIES,
    DiceLoss,
    JaccardLoss,
    OverlapLoss,
    TverskyLoss,
)
from lossmix.losses.focal import (
    DistributionFocalLoss,
    FocalLoss,
    QualityFocalLoss,
    VarifocalLoss,
)
from lossmix.losses.ghm import (
    GHMC,
    GHMR,
)
from lossmix.losses.heatmap import (
    AssociativeEmbeddingLoss,
    GaussianFocalLoss,
)
from lossmix.losses.identity import (
    CLIPLoss,
    FaceIdLoss,
)
from lossmix.losses.imbalanced import (
    AsymmetricLoss,
    LDAMLoss,
    LogitAdjustedLoss,
)
from lossmix.losses.iou import (
    BoundedIoULoss,
    CIoULoss,
    DIoULoss,
    EIoULoss,
    GIoULoss,
    IoULoss,
    SIoULoss,
)
from lossmix.losses.long_tail import (
    EQLV2Loss,
    SeesawLoss,
)
from lossmix.losses.lovasz import (
    LovaszHingeLoss,
    LovaszSoftmaxLoss,
)
from lossmix.losses.path_regularizer import (
    GeneratorPathRegularizer,
)
from lossmix.losses.perceptual import (
    LightCNNFeatureLoss,
    PerceptualLoss,
    TransferalPerceptualLoss,
)
from lossmix.losses.pixel import (
    CharbonnierCompLoss,
    CompositionLoss,
    GradientLoss,
    L1CompositionLoss,
    MaskedL1Loss,
    MaskedMeanLoss,
    MaskedMSELoss,
    MSECompositionLoss,
    PSNRLoss,
)
from lossmix.losses.regression import (
    BalancedL1Loss,
    CharbonnierLoss,
    L1Loss,
    MSELoss,
    SmoothL1Loss,
)
from lossmix.losses.tracking import (
    KnowledgeDistillationKLDivLoss,
    L2Loss,
    MarginL2Loss,
    MultiPosCrossEntropyLoss,
    TripletLoss,
)
from lossmix.losses.wrappers import FunctionLoss, LossInput, TorchLoss, loss_inputs

# isort: split
from lossmix.losses import scopes as _scopes  # noqa: F401  (last: it fills the scopes)

__all__ = [
    "ADV_LOSS_TYPES",
    "EMPTY_TARGET_POLICIES",
    "GHMC",
    "GHMR",
    "AdvLoss",
    "AdversarialLoss",
    "AssociativeEmbeddingLoss",
    "AsymmetricLoss",
    "BalancedL1Loss",
    "BaseLoss",
    "BoundedIoULoss",
    "CIoULoss",
    "CLIPLoss",
    "CharbonnierCompLoss",
    "CharbonnierLoss",
    "CompositionLoss",
    "CrossEntropyCustomLoss",
    "CrossEntropyLoss",
    "DIoULoss",
    "DiceLoss",
    "DiscShiftLoss",
    "DistributionFocalLoss",
    "EIoULoss",
    "EQLV2Loss",
    "FaceIdLoss",
    "FocalCustomLoss",
    "FocalLoss",
    "FunctionLoss",
    "GANLoss",
    "GIoULoss",
    "GaussianFocalLoss",
    "GeneratorPathRegularizer",
    "GradientLoss",
    "GradientPenalty",
    "GradientPenaltyLoss",
    "IoULoss",
    "JaccardLoss",
    "KnowledgeDistillationKLDivLoss",
    "L1CompositionLoss",
    "L1Loss",
    "L2Loss",
    "LDAMLoss",
    "LightCNNFeatureLoss",
    "LogitAdjustedLoss",
    "LossInput",
    "LovaszHingeLoss",
    "LovaszSoftmaxLoss",
    "MSECompositionLoss",
    "MSELoss",
    "MarginL2Loss",
    "MaskedL1Loss",
    "MaskedMSELoss",
    "MaskedMeanLoss",
    "MaskedTVLoss",
    "MultiPosCrossEntropyLoss",
    "OverlapLoss",
    "PSNRLoss",
    "PerceptualLoss",
    "QualityFocalLoss",
    "R1GradientPenalty",
    "SIoULoss",
    "SeesawLoss",
    "SmoothL1Loss",
    "TorchLoss",
    "TransferalPerceptualLoss",
    "TripletLoss",
    "TverskyLoss",
    "VarifocalLoss",
    "loss_inputs",
]
