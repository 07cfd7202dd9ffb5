"""Battery cases for CornerNet/CenterNet's heatmap losses, with MMDetection's formulas as references.

``gaussian_focal_reference`` is MMDetection's ``gaussian_focal_loss`` line by line;
``ae_reference`` its ``ae_loss_per_image`` with the per-object Python loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF

from lossmix import functional as F
from lossmix.losses import AssociativeEmbeddingLoss, GaussianFocalLoss
from tests.losses.battery import LossCase

# per image: [[tl_y, tl_x], [br_y, br_x]] of each object (3 objects, 1 object)
MATCH = [
    [[[0, 1], [3, 4]], [[1, 0], [4, 2]], [[2, 2], [4, 4]]],
    [[[0, 0], [2, 3]]],
]


def heatmaps(dtype, gen, scale):
    """Probabilities (2, 3, 5, 5) and a Gaussian-like heatmap with exact 1s at the peaks."""
    pred = torch.sigmoid(torch.randn(2, 3, 5, 5, generator=gen, dtype=torch.float64) * scale)
    target = torch.rand(2, 3, 5, 5, generator=gen, dtype=torch.float64) ** 3
    target[0, 0, 2, 2] = target[1, 2, 0, 4] = target[1, 1, 3, 3] = 1.0
    return pred.to(dtype), target.to(dtype)


def gaussian_focal_reference(pred, gaussian_target, alpha=2.0, gamma=4.0, pos_weight=1.0, neg_weight=1.0):
    eps = 1e-12
    pos_weights = gaussian_target.eq(1)
    neg_weights = (1 - gaussian_target).pow(gamma)
    pos_loss = -(pred + eps).log() * (1 - pred).pow(alpha) * pos_weights
    neg_loss = -(1 - pred + eps).log() * pred.pow(alpha) * neg_weights
    return pos_weight * pos_loss + neg_weight * neg_loss


def embeddings(dtype, gen, scale):
    """CornerNet's one-dimensional corner embeddings (2, 1, 5, 5); MMDetection's
    ``view(-1, 1)`` treats an M-dimensional one as M objects, so M = 1 is where both agree."""
    tl = torch.randn(2, 1, 5, 5, generator=gen, dtype=torch.float64) * scale
    br = torch.randn(2, 1, 5, 5, generator=gen, dtype=torch.float64) * scale
    return tl.to(dtype), br.to(dtype)


def ae_per_image(tl_preds, br_preds, match):
    """MMDetection's ``ae_loss_per_image``."""
    if len(match) == 0:
        return tl_preds.sum() * 0.0, tl_preds.sum() * 0.0
    tl_list, br_list, me_list = [], [], []
    for (tl_y, tl_x), (br_y, br_x) in match:
        tl_e = tl_preds[:, tl_y, tl_x].view(-1, 1)
        br_e = br_preds[:, br_y, br_x].view(-1, 1)
        tl_list.append(tl_e)
        br_list.append(br_e)
        me_list.append((tl_e + br_e) / 2.0)
    tl_list, br_list, me_list = torch.cat(tl_list), torch.cat(br_list), torch.cat(me_list)
    n, m = tl_list.size()
    pull = ((tl_list - me_list).pow(2) + (br_list - me_list).pow(2)).sum() / n
    conf_mat = me_list.expand((n, n, m)).permute(1, 0, 2) - me_list
    conf_weight = 1 - torch.eye(n).type_as(me_list)
    conf_mat = conf_weight * (1 - conf_mat.sum(-1).abs())
    push = TF.relu(conf_mat).sum() / (n * (n - 1)) if n > 1 else tl_preds.sum() * 0.0
    return pull, push


def ae_reference(pred, target, pull_weight=0.25, push_weight=0.25):
    """Per image ``pull_weight · pull + push_weight · push`` (the battery checks the parts' sum)."""
    values = []
    for i in range(pred.shape[0]):
        pull, push = ae_per_image(pred[i], target[i], MATCH[i])
        values.append(pull_weight * pull + push_weight * push)
    return torch.stack(values)


def _match(pred, target):
    return {"match": MATCH[: pred.shape[0]]}


CORNERS = F.match_indices(MATCH, len(MATCH), torch.device("cpu"))


def ae_kernel(pred, target):
    pull, push = F.associative_embedding_loss(pred, target, *CORNERS)
    return pull + push


CASES = [
    LossCase(
        "GaussianFocalLoss",
        lambda **kw: GaussianFocalLoss(**kw),
        heatmaps,
        reference=gaussian_focal_reference,
        kernel=F.gaussian_focal_loss,
    ),
    LossCase(
        "GaussianFocalLoss-weighted",
        lambda **kw: GaussianFocalLoss(alpha=1.5, gamma=3.0, pos_weight=0.25, neg_weight=0.75, **kw),
        heatmaps,
        reference=lambda p, t: gaussian_focal_reference(p, t, 1.5, 3.0, 0.25, 0.75),
        kernel=lambda p, t: F.gaussian_focal_loss(
            p, t, alpha=1.5, gamma=3.0, pos_weight=0.25, neg_weight=0.75
        ),
    ),
    LossCase(
        "AssociativeEmbeddingLoss",
        lambda **kw: AssociativeEmbeddingLoss(**{"reduction": "mean", **kw}),
        embeddings,
        reference=ae_reference,
        kernel=ae_kernel,
        call_kwargs=_match,
    ),
]
