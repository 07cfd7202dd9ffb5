"""QDTrack's mining, the triplet and distillation losses' bad input, and the generator state.

The mining reference transcribes MMDetection 3.3's ``MarginL2Loss.update_weight``.
"""

from __future__ import annotations

import io

import pytest
import torch

import lossmix
from lossmix.errors import LossConfigError, LossInputError
from lossmix.losses import KnowledgeDistillationKLDivLoss, L2Loss, MarginL2Loss, TripletLoss
from lossmix.reduction import EPS32

F64 = torch.float64


def mmdet_margin_l2_hard(pred, target, weight, neg_pos_ub, pos_margin, neg_margin):
    """``update_weight`` with hard mining, then ``mse_loss`` with ``avg_factor``."""
    pred, target, weight = pred.clone(), target.clone(), weight.clone()
    target[weight <= 0] = -1
    pos_inds, neg_inds = target == 1, target == 0
    if pos_margin > 0:
        pred[pos_inds] -= pos_margin
    if neg_margin > 0:
        pred[neg_inds] -= neg_margin
    pred = torch.clamp(pred, min=0, max=1)
    num_pos, num_neg = int((target == 1).sum()), int((target == 0).sum())
    if neg_pos_ub > 0 and num_neg / (num_pos + 1e-6) > neg_pos_ub:
        num_neg = num_pos * neg_pos_ub
        neg_idx = torch.nonzero(target == 0, as_tuple=False)
        costs = ((pred - target) ** 2)[neg_idx[:, 0], neg_idx[:, 1]].detach()
        neg_idx = neg_idx[costs.topk(num_neg)[1], :]
        new_neg_inds = neg_inds.new_zeros(neg_inds.size()).bool()
        new_neg_inds[neg_idx[:, 0], neg_idx[:, 1]] = True
        weight[torch.logical_xor(neg_inds, new_neg_inds)] = 0
    avg_factor = (weight > 0).sum().item()
    return ((pred - target) ** 2 * weight).sum() / (avg_factor + EPS32)


def _similarities(seed=0, rows=6, cols=10):
    gen = torch.Generator().manual_seed(seed)
    pred = torch.rand(rows, cols, generator=gen, dtype=F64)
    target = (torch.rand(rows, cols, generator=gen) < 0.15).to(F64)
    weight = (torch.rand(rows, cols, generator=gen) < 0.9).to(F64)
    return pred, target, weight


@pytest.mark.parametrize(("ub", "pos_margin", "neg_margin"), [(3, 0.0, 0.1), (1, 0.2, 0.0), (100, 0.0, 0.0)])
def test_margin_l2_hard_mining_matches_mmdetection(ub, pos_margin, neg_margin):
    pred, target, weight = _similarities()
    loss = MarginL2Loss(neg_pos_ub=ub, pos_margin=pos_margin, neg_margin=neg_margin, hard_mining=True)
    expected = mmdet_margin_l2_hard(pred, target, weight, ub, pos_margin, neg_margin)
    torch.testing.assert_close(loss(pred, target, weight), expected)


def test_margin_l2_random_mining_keeps_the_quota_and_resumes_its_stream():
    pred, target, weight = _similarities(cols=40)
    loss = MarginL2Loss(neg_pos_ub=2, seed=3, reduction="none")
    kept = loss(pred, target, weight) != 0
    valid = weight > 0
    positives, negatives = (valid & (target == 1)), (valid & (target == 0))
    assert (kept & negatives).sum() <= 2 * positives.sum()
    assert (kept & negatives).sum() >= 2 * positives.sum() - 2  # a kept element may have zero error
    buffer = io.BytesIO()
    torch.save(loss.state_dict(), buffer)
    buffer.seek(0)
    resumed = MarginL2Loss(neg_pos_ub=2, seed=3, reduction="none")
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(loss(pred, target, weight), resumed(pred, target, weight))


def test_l2_loss_mean_counts_weighted_elements_unless_avg_factor_is_given():
    pred, target, weight = _similarities()
    value = L2Loss()(pred, target, weight)
    squared = (pred.clamp(0, 1) - target) ** 2 * weight
    torch.testing.assert_close(value, squared.sum() / ((weight > 0).sum() + EPS32))
    torch.testing.assert_close(L2Loss()(pred, target, weight, avg_factor=4.0), squared.sum() / (4.0 + EPS32))


def test_qdtrack_configs_build():
    aux = lossmix.build_loss(
        dict(
            type="MarginL2Loss", neg_pos_ub=3, pos_margin=0, neg_margin=0.1, hard_mining=True, loss_weight=1.0
        )
    )
    assert isinstance(aux, MarginL2Loss) and aux.neg_pos_ub == 3
    assert isinstance(
        lossmix.build_loss(dict(type="MultiPosCrossEntropyLoss", loss_weight=0.25)), torch.nn.Module
    )
    assert isinstance(lossmix.build_loss(dict(type="L2Loss", loss_weight=1.0)), L2Loss)
    with pytest.raises(LossConfigError, match="neg_pos_ub"):
        MarginL2Loss(neg_pos_ub=2.5)


def test_triplet_loss_config_and_bad_input():
    loss = lossmix.build_loss(dict(type="TripletLoss", margin=0.3, loss_weight=1.0, hard_mining=True))
    assert isinstance(loss, TripletLoss)
    with pytest.raises(LossConfigError, match="hard_mining=False"):
        TripletLoss(hard_mining=False)
    with pytest.raises(LossInputError, match=r"\(B, D\)"):
        loss(torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))
    # an identity without any other identity has no negative: 0, not MMDetection's error
    single = TripletLoss(reduction="none")(torch.randn(3, 2), torch.zeros(3, dtype=torch.long))
    assert torch.equal(single, torch.zeros(3))


@pytest.mark.parametrize("temperature", [0, -1.0, float("inf"), "10", True])
def test_kd_temperature_must_be_positive(temperature):
    with pytest.raises(LossConfigError) as info:
        lossmix.build_loss({"type": "KnowledgeDistillationKLDivLoss", "T": temperature})
    message = str(info.value)
    assert "KnowledgeDistillationKLDivLoss" in message and "T=" in message and "> 0" in message
    assert "\n" not in message


def test_kd_mmdetection_config_and_a_small_temperature():
    loss = lossmix.build_loss(dict(type="KnowledgeDistillationKLDivLoss", loss_weight=0.25, T=10))
    assert isinstance(loss, KnowledgeDistillationKLDivLoss) and loss.T == 10
    pred, soft = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.isfinite(KnowledgeDistillationKLDivLoss(T=0.5)(pred, soft))
    same = pred.double()
    assert KnowledgeDistillationKLDivLoss()(same, same).item() == pytest.approx(0.0, abs=1e-12)
