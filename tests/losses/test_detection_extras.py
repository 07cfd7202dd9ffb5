"""GHM-R, CenterNet's listed positives, CornerNet's embeddings, EIoU/SIoU and the V3Det
custom losses: what the battery cannot see (state, other call forms, bad input).

References transcribe MMDetection 3.3: ``GHMR.forward`` (its per-bin loop) and
``gaussian_focal_loss_with_pos_inds``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

import lossmix
from lossmix import LossMix
from lossmix.errors import LossConfigError, LossInputError
from lossmix.losses import (
    GHMR,
    AssociativeEmbeddingLoss,
    CrossEntropyCustomLoss,
    EIoULoss,
    FocalCustomLoss,
    GaussianFocalLoss,
    SIoULoss,
)
from lossmix.reduction import EPS32
from tests.losses.cases_heatmap import MATCH, gaussian_focal_reference

F64 = torch.float64


class MMDetGHMR:
    """MMDetection's ``GHMR`` (reduction 'mean')."""

    def __init__(self, mu=0.02, bins=10, momentum=0.0):
        self.mu, self.bins, self.momentum = mu, bins, momentum
        self.edges = torch.arange(bins + 1).float() / bins
        self.edges[-1] = 1e3
        self.acc_sum = torch.zeros(bins)

    def __call__(self, pred, target, label_weight):
        mu, edges, mmt = self.mu, self.edges, self.momentum
        diff = pred - target
        loss = torch.sqrt(diff * diff + mu * mu) - mu
        g = torch.abs(diff / torch.sqrt(mu * mu + diff * diff)).detach()
        weights = torch.zeros_like(g)
        valid = label_weight > 0
        tot = max(label_weight.float().sum().item(), 1.0)
        n = 0
        for i in range(self.bins):
            inds = (g >= edges[i]) & (g < edges[i + 1]) & valid
            num_in_bin = inds.sum().item()
            if num_in_bin > 0:
                n += 1
                if mmt > 0:
                    self.acc_sum[i] = mmt * self.acc_sum[i] + (1 - mmt) * num_in_bin
                    weights[inds] = tot / self.acc_sum[i]
                else:
                    weights[inds] = tot / num_in_bin
        if n > 0:
            weights /= n
        return (loss * weights).sum() / (tot + EPS32)


@pytest.mark.parametrize("momentum", [0.0, 0.75])
def test_ghmr_matches_mmdetection_over_training_steps(momentum):
    ours, theirs = GHMR(momentum=momentum).double().train(), MMDetGHMR(momentum=momentum)
    for step in range(3):
        gen = torch.Generator().manual_seed(step)
        pred = torch.randn(20, 4, generator=gen, dtype=F64) * 0.05
        target = torch.randn(20, 4, generator=gen, dtype=F64) * 0.05
        label_weight = (torch.rand(20, 4, generator=gen) < 0.7).to(F64) * 2.0
        torch.testing.assert_close(ours(pred, target, label_weight), theirs(pred, target, label_weight))
        torch.testing.assert_close(ours.acc_sum, theirs.acc_sum.to(F64))


def test_ghmr_needs_label_weight_and_ignores_avg_factor():
    pred, target = torch.randn(6, 4), torch.randn(6, 4)
    weight = torch.ones(6, 4)
    loss = GHMR()
    with pytest.raises(LossInputError, match="label_weight is required"):
        loss(pred, target)
    torch.testing.assert_close(loss(pred, target, weight, 3.0), loss(pred, target, label_weight=weight))
    per_row = loss(pred, target, torch.ones(6))
    torch.testing.assert_close(per_row, loss(pred, target, weight))
    with pytest.raises(LossConfigError, match="mu"):
        GHMR(mu=0.0)


def mmdet_gaussian_focal_with_pos_inds(
    pred, target, pos_inds, pos_labels, reduction, avg_factor, pw=1.0, nw=1.0
):
    eps = 1e-12
    neg_weights = (1 - target).pow(4.0)
    pos_pred = pred[pos_inds].gather(1, pos_labels.unsqueeze(1))
    pos_loss = -(pos_pred + eps).log() * (1 - pos_pred).pow(2.0)
    neg_loss = -(1 - pred + eps).log() * pred.pow(2.0) * neg_weights

    def reduce(loss):
        if avg_factor is not None:
            return loss.sum() / (avg_factor + EPS32)
        return loss.mean() if reduction == "mean" else loss.sum()

    return pw * reduce(pos_loss) + nw * reduce(neg_loss)


@pytest.mark.parametrize(("reduction", "avg_factor"), [("mean", None), ("sum", None), ("mean", 3.0)])
def test_gaussian_focal_with_listed_positives_matches_mmdetection(reduction, avg_factor):
    gen = torch.Generator().manual_seed(0)
    pred = torch.sigmoid(torch.randn(12, 3, generator=gen, dtype=F64))
    target = torch.rand(12, 3, generator=gen, dtype=F64) ** 2
    pos_inds, pos_labels = torch.tensor([1, 4, 4, 9]), torch.tensor([0, 2, 1, 2])
    loss = GaussianFocalLoss(pos_weight=0.25, neg_weight=0.75, reduction=reduction)
    got = loss(pred, target, pos_inds=pos_inds, pos_labels=pos_labels, avg_factor=avg_factor)
    expected = mmdet_gaussian_focal_with_pos_inds(
        pred, target, pos_inds, pos_labels, reduction, avg_factor, 0.25, 0.75
    )
    torch.testing.assert_close(got, expected)


def test_gaussian_focal_listed_positives_need_both_and_count_duplicates():
    pred = torch.full((3, 2), 0.5, dtype=F64)
    target = torch.zeros(3, 2, dtype=F64)
    with pytest.raises(LossInputError, match="pos_inds and pos_labels go together"):
        GaussianFocalLoss()(pred, target, pos_inds=torch.tensor([0]))
    once = GaussianFocalLoss(reduction="sum")(
        pred, target, pos_inds=torch.tensor([0]), pos_labels=torch.tensor([1])
    )
    twice = GaussianFocalLoss(reduction="sum")(
        pred, target, pos_inds=torch.tensor([0, 0]), pos_labels=torch.tensor([1, 1])
    )
    neg = gaussian_focal_reference(pred, target).sum()
    torch.testing.assert_close(twice - neg, 2 * (once - neg))


def test_gaussian_focal_mmdetection_config_builds():
    loss = lossmix.build_loss(dict(type="GaussianFocalLoss", alpha=2.0, gamma=4.0, loss_weight=1.0))
    assert isinstance(loss, GaussianFocalLoss) and (loss.alpha, loss.gamma) == (2.0, 4.0)


def test_associative_embedding_keeps_multi_dimensional_embeddings():
    gen = torch.Generator().manual_seed(0)
    tl, br = (
        torch.randn(2, 3, 5, 5, generator=gen, dtype=F64),
        torch.randn(2, 3, 5, 5, generator=gen, dtype=F64),
    )
    pull, push = AssociativeEmbeddingLoss(pull_weight=1.0, push_weight=1.0, reduction="none")(tl, br, MATCH)
    for image, pairs in enumerate(MATCH):
        e_tl = torch.stack([tl[image, :, y, x] for (y, x), _ in pairs])
        e_br = torch.stack([br[image, :, y, x] for _, (y, x) in pairs])
        mean = (e_tl + e_br) / 2
        n = len(pairs)
        expected_pull = ((e_tl - mean) ** 2 + (e_br - mean) ** 2).sum() / n
        gaps = [torch.relu(1 - (mean[j] - mean[k]).sum().abs()) for j in range(n) for k in range(n) if j != k]
        expected_push = torch.stack(gaps).sum() / (n * (n - 1)) if n > 1 else torch.zeros((), dtype=F64)
        torch.testing.assert_close(pull[image], expected_pull)
        torch.testing.assert_close(push[image], expected_push)


def test_associative_embedding_sums_images_by_default_and_logs_pull_and_push():
    tl = torch.randn(2, 1, 5, 5, dtype=F64)
    br = torch.randn(2, 1, 5, 5, dtype=F64)
    loss = AssociativeEmbeddingLoss()
    pull, push = loss(tl, br, MATCH)
    each_pull, each_push = AssociativeEmbeddingLoss(reduction="none")(tl, br, MATCH)
    torch.testing.assert_close(pull, each_pull.sum())
    torch.testing.assert_close(push, each_push.sum())
    no_objects = loss(tl, br, [[], []])
    assert no_objects[0].item() == 0.0 and no_objects[1].item() == 0.0
    mix = LossMix.from_config(
        {
            "embed": {
                "type": "AssociativeEmbeddingLoss",
                "inputs": {"pred": "tl", "target": "br", "match": "match"},
            }
        }
    )
    result = mix({"tl": tl, "br": br}, {"match": MATCH})
    assert set(result.terms) == {"embed.pull", "embed.push"}
    with pytest.raises(LossInputError, match="match has 1 images but pred has 2"):
        loss(tl, br, MATCH[:1])


@pytest.mark.parametrize("loss_cls", [EIoULoss, SIoULoss])
def test_eiou_siou_stay_finite_on_degenerate_boxes(loss_cls):
    pred = torch.tensor(
        [[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0], [3.0, 3.0, 1.0, 1.0], [0.0, 0.0, 0.0, 5.0]],
        requires_grad=True,
    )
    target = torch.tensor(
        [[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 3.0, 5.0]]
    )
    loss = loss_cls(reduction="none")(pred, target)
    (grad,) = torch.autograd.grad(loss.sum(), pred)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert loss[1].item() == pytest.approx(0.0, abs=1e-5)  # identical boxes


def test_eiou_siou_mmdetection_configs_build():
    assert (
        lossmix.build_loss(dict(type="EIoULoss", eps=1e-6, smooth_point=0.1, loss_weight=5.0)).smooth_point
        == 0.1
    )
    assert lossmix.build_loss(dict(type="SIoULoss", eps=1e-6, neg_gamma=True, loss_weight=5.0)).neg_gamma
    with pytest.raises(LossConfigError, match="smooth_point"):
        EIoULoss(smooth_point=0.0)


def test_custom_losses_need_num_classes_and_check_the_channels():
    for name in ("CrossEntropyCustomLoss", "FocalCustomLoss"):
        with pytest.raises(LossConfigError, match=f"{name}: missing required argument 'num_classes'"):
            lossmix.build_loss({"type": name})
    softmax = CrossEntropyCustomLoss(num_classes=3)
    assert (
        softmax.get_cls_channels(3) == 4
        and CrossEntropyCustomLoss(num_classes=3, use_sigmoid=True).get_cls_channels(3) == 3
    )
    with pytest.raises(LossInputError, match="needs 4 channels"):
        softmax(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(LossConfigError, match="get_cls_channels"):
        softmax.get_cls_channels(5)
    focal = FocalCustomLoss(num_classes=3)
    with pytest.raises(LossInputError, match="needs 3 channels"):
        focal(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(LossConfigError, match="use_sigmoid"):
        FocalCustomLoss(num_classes=3, use_sigmoid=False)


def test_custom_activations_follow_mmdetection():
    scores = torch.randn(5, 4)
    softmax = CrossEntropyCustomLoss(num_classes=3).get_activation(scores)
    torch.testing.assert_close(softmax, scores.softmax(-1))
    sigmoid = CrossEntropyCustomLoss(num_classes=3, use_sigmoid=True).get_activation(scores[:, :3])
    torch.testing.assert_close(sigmoid[:, :3], scores[:, :3].sigmoid())
    torch.testing.assert_close(sigmoid[:, 3], (1 - scores[:, :3].sigmoid().sum(1)).clamp(0, 1))
    torch.testing.assert_close(FocalCustomLoss(num_classes=3).get_activation(scores), scores[:, :3].sigmoid())


def test_focal_custom_honours_activated():
    probs = torch.rand(4, 3, dtype=F64) * 0.9 + 0.05
    labels = torch.tensor([0, 3, 2, 1])
    got = FocalCustomLoss(num_classes=3, activated=True, reduction="none")(probs, labels)
    target = TF.one_hot(labels, 4)[:, :3].to(F64)
    pt = (1 - probs) * target + probs * (1 - target)
    expected = (
        TF.binary_cross_entropy(probs, target, reduction="none")
        * (0.25 * target + 0.75 * (1 - target))
        * pt**2
    )
    torch.testing.assert_close(got, expected)
