"""Pure element-wise loss kernels, one family per file, file names mirroring :mod:`lossmix.losses`.

Every kernel takes ``(pred, target, *, hyper-parameters)`` and returns an unreduced tensor;
none of them syncs with the host or branches on data, so they compile with
``torch.compile(fullgraph=True)``. The multi-task kernels live in :mod:`lossmix.mtl.functional`.
"""

from lossmix.functional.adversarial import (
    GAN_TYPES,
    NORM_MODES,
    check_gan_type,
    check_norm_mode,
    disc_shift_loss,
    discriminator_gradients,
    gan_loss,
    gaussian_blur,
    gaussian_kernel,
    interpolate_samples,
    r1_penalty,
    tv_differences,
    wgan_gp_penalty,
)
from lossmix.functional.class_balance import (
    CLASS_WEIGHT_METHODS,
    class_weights_from_counts,
    effective_number_weights,
    inverse_frequency_weights,
    label_histogram,
    ldam_logits,
    ldam_margins,
    logit_adjusted_logits,
)
from lossmix.functional.cross_entropy import (
    cross_entropy,
    mask_cross_entropy,
    one_hot_targets,
    sigmoid_cross_entropy,
)
from lossmix.functional.dice import (
    dice_loss,
    jaccard_loss,
    overlap_inputs,
    tversky_loss,
)
from lossmix.functional.focal import (
    distribution_focal_loss,
    quality_focal_loss,
    sigmoid_focal_loss,
    softmax_focal_loss,
    varifocal_loss,
)
from lossmix.functional.fused import (
    AUTOMATIC_MIN_NUMEL,
    FUSED_DTYPES,
    MEASURED_FASTER,
    fused_applies,
    fused_cross_entropy,
    fused_giou_loss,
    fused_sigmoid_focal_loss,
)
from lossmix.functional.ghm import (
    asl1_loss,
    ghm_density_weights,
    ghm_edges,
    ghmc_weights,
    ghmr_weights,
)
from lossmix.functional.heatmap import (
    associative_embedding_loss,
    gaussian_focal_loss,
    match_indices,
)
from lossmix.functional.imbalanced import (
    asymmetric_loss,
)
from lossmix.functional.iou import (
    IOU_MODES,
    aligned_box_iou,
    bounded_iou_loss,
    ciou_loss,
    diou_loss,
    eiou_loss,
    giou_loss,
    iou_loss,
    siou_loss,
)
from lossmix.functional.long_tail import (
    eqlv2_gradients,
    eqlv2_weights,
    seesaw_cross_entropy,
    seesaw_logits,
)
from lossmix.functional.lovasz import (
    lovasz_grad,
    lovasz_hinge,
    lovasz_softmax,
)
from lossmix.functional.path_regularizer import (
    moved_path_mean,
    path_gradients,
    path_length_penalty,
    path_lengths,
)
from lossmix.functional.perceptual import CRITERIA, check_criterion, feature_distance, gram_matrix
from lossmix.functional.pixel import alpha_composite, psnr_loss, rgb_to_y, sobel_gradients
from lossmix.functional.regression import (
    balanced_l1_loss,
    charbonnier_loss,
    l1_loss,
    mse_loss,
    smooth_l1_loss,
)
from lossmix.functional.tracking import (
    hard_triplet_loss,
    knowledge_distillation_kl_div,
    multi_pos_cross_entropy,
)

__all__ = [
    "AUTOMATIC_MIN_NUMEL",
    "CLASS_WEIGHT_METHODS",
    "CRITERIA",
    "FUSED_DTYPES",
    "GAN_TYPES",
    "IOU_MODES",
    "MEASURED_FASTER",
    "NORM_MODES",
    "aligned_box_iou",
    "alpha_composite",
    "asl1_loss",
    "associative_embedding_loss",
    "asymmetric_loss",
    "balanced_l1_loss",
    "bounded_iou_loss",
    "charbonnier_loss",
    "check_criterion",
    "check_gan_type",
    "check_norm_mode",
    "ciou_loss",
    "class_weights_from_counts",
    "cross_entropy",
    "dice_loss",
    "diou_loss",
    "disc_shift_loss",
    "discriminator_gradients",
    "distribution_focal_loss",
    "effective_number_weights",
    "eiou_loss",
    "eqlv2_gradients",
    "eqlv2_weights",
    "feature_distance",
    "fused_applies",
    "fused_cross_entropy",
    "fused_giou_loss",
    "fused_sigmoid_focal_loss",
    "gan_loss",
    "gaussian_blur",
    "gaussian_focal_loss",
    "gaussian_kernel",
    "ghm_density_weights",
    "ghm_edges",
    "ghmc_weights",
    "ghmr_weights",
    "giou_loss",
    "gram_matrix",
    "hard_triplet_loss",
    "interpolate_samples",
    "inverse_frequency_weights",
    "iou_loss",
    "jaccard_loss",
    "knowledge_distillation_kl_div",
    "l1_loss",
    "label_histogram",
    "ldam_logits",
    "ldam_margins",
    "logit_adjusted_logits",
    "lovasz_grad",
    "lovasz_hinge",
    "lovasz_softmax",
    "mask_cross_entropy",
    "match_indices",
    "moved_path_mean",
    "mse_loss",
    "multi_pos_cross_entropy",
    "one_hot_targets",
    "overlap_inputs",
    "path_gradients",
    "path_length_penalty",
    "path_lengths",
    "psnr_loss",
    "quality_focal_loss",
    "r1_penalty",
    "rgb_to_y",
    "seesaw_cross_entropy",
    "seesaw_logits",
    "sigmoid_cross_entropy",
    "sigmoid_focal_loss",
    "siou_loss",
    "smooth_l1_loss",
    "sobel_gradients",
    "softmax_focal_loss",
    "tv_differences",
    "tversky_loss",
    "varifocal_loss",
    "wgan_gp_penalty",
]
