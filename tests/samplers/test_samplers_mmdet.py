"""MMDetection's other samplers: Libra R-CNN's balanced samplers, PISA's Score-HLR, the
combined sampler, ``add_gt_as_proposals`` and the inputs a term routes to a sampler.

The references transcribe MMDetection 3.3's ``_sample_pos`` / ``_sample_neg`` into plain
Python (``random.sample`` for ``random_choice``, a Python ``nms_match``). The random
samplers are compared through how often each element is selected over thousands of
independent sets (batched along the first dim); Score-HLR's negatives are deterministic
once there are enough valid ones, and are compared exactly.
"""

from __future__ import annotations

import io
import math
import random

import pytest
import torch
from torch import nn

import lossmix
from lossmix import LossMix
from lossmix.errors import LossConfigError, LossInputError
from lossmix.samplers import (
    CombinedSampler,
    InstanceBalancedPosSampler,
    IoUBalancedNegSampler,
    OHEMSampler,
    RandomSampler,
    ScoreHLRSampler,
)

TRIALS = 3000


# -- MMDetection's algorithms in plain Python ------------------------------------------------
def mmdet_instance_balanced_pos(gt_inds: list[int], num_expected: int, rng: random.Random) -> set[int]:
    pos = [i for i, g in enumerate(gt_inds) if g > 0]
    if len(pos) <= num_expected:
        return set(pos)
    gts = sorted({gt_inds[i] for i in pos})
    per_gt = int(round(num_expected / float(len(gts))) + 1)
    sampled: list[int] = []
    for g in gts:
        inds = [i for i in pos if gt_inds[i] == g]
        sampled += rng.sample(inds, per_gt) if len(inds) > per_gt else inds
    if len(sampled) < num_expected:
        extra = sorted(set(pos) - set(sampled))
        sampled += rng.sample(extra, min(len(extra), num_expected - len(sampled)))
    elif len(sampled) > num_expected:
        sampled = rng.sample(sampled, num_expected)
    return set(sampled)


def mmdet_iou_balanced_neg(
    gt_inds: list[int],
    ious: list[float],
    num_expected: int,
    floor_thr: float,
    floor_fraction: float,
    num_bins: int,
    rng: random.Random,
) -> set[int]:
    neg = {i for i, g in enumerate(gt_inds) if g == 0}
    if len(neg) <= num_expected:
        return neg
    if floor_thr > 0:
        floor = {i for i, u in enumerate(ious) if 0 <= u < floor_thr}
        balanced = {i for i, u in enumerate(ious) if u >= floor_thr}
    elif floor_thr == 0:
        floor = {i for i, u in enumerate(ious) if u == 0}
        balanced = {i for i, u in enumerate(ious) if u > 0}
    else:  # -1: every negative is balanced; the bins start at 0
        floor, balanced, floor_thr = set(), {i for i, u in enumerate(ious) if u > -1}, 0
    floor, balanced = sorted(floor & neg), sorted(balanced & neg)
    expected_iou = int(num_expected * (1 - floor_fraction))
    if len(balanced) > expected_iou:
        if num_bins >= 2:
            interval = (max(ious) - floor_thr) / num_bins
            per_bin = int(expected_iou / num_bins)
            chosen: list[int] = []
            for b in range(num_bins):
                start, end = floor_thr + b * interval, floor_thr + (b + 1) * interval
                inds = [i for i in balanced if start <= ious[i] < end]
                chosen += rng.sample(inds, per_bin) if len(inds) > per_bin else inds
            if len(chosen) < expected_iou:
                rest = sorted(set(balanced) - set(chosen))
                chosen += rng.sample(rest, min(len(rest), expected_iou - len(chosen)))
        else:
            chosen = rng.sample(balanced, expected_iou)
    else:
        chosen = list(balanced)
    quota = num_expected - len(chosen)
    chosen += rng.sample(floor, quota) if len(floor) > quota else floor
    if len(chosen) < num_expected:
        rest = sorted(neg - set(chosen))
        chosen += rng.sample(rest, min(len(rest), num_expected - len(chosen)))
    return set(chosen)


def frequencies(select, n: int, trials: int = TRIALS) -> torch.Tensor:
    counts = torch.zeros(n)
    for _ in range(trials):
        for i in select():
            counts[i] += 1
    return counts / trials


def assert_frequencies_close(ours: torch.Tensor, reference: torch.Tensor) -> None:
    # binomial standard error <= 0.5 / sqrt(TRIALS) ~ 0.009; 0.045 is five of those
    assert torch.allclose(ours, reference, atol=0.045), torch.stack([ours, reference])


# -- add_gt_as_proposals and the seed's own sampler config -----------------------------------
def test_the_tutorial_sampler_dict_builds_unchanged():
    cfg = dict(type="RandomSampler", num=256, pos_fraction=0.5, neg_pos_ub=-1, add_gt_as_proposals=False)
    sampler = lossmix.build_sampler(cfg)
    assert isinstance(sampler, RandomSampler)
    assert (sampler.num, sampler.pos_fraction, sampler.neg_pos_ub, sampler.add_gt_as_proposals) == (
        256,
        0.5,
        -1.0,
        False,
    )
    mix = LossMix.from_config({"cls": {"type": "CrossEntropyLoss", "sampler": cfg}})
    assert isinstance(mix.terms["cls"].sampler, RandomSampler)


@pytest.mark.parametrize(
    "name",
    [
        "RandomSampler",
        "OHEMSampler",
        "InstanceBalancedPosSampler",
        "IoUBalancedNegSampler",
        "ScoreHLRSampler",
    ],
)
def test_add_gt_as_proposals_true_explains_where_gt_proposals_come_from(name):
    with pytest.raises(LossConfigError) as info:
        lossmix.build_sampler({"type": name, "num": 8, "pos_fraction": 0.5, "add_gt_as_proposals": True})
    message = str(info.value)
    assert "\n" not in message and name in message
    assert "assigner" in message and "positives" in message and "add_gt_as_proposals=False" in message
    with pytest.raises(LossConfigError, match="add_gt_as_proposals=1"):
        lossmix.build_sampler({"type": name, "num": 8, "pos_fraction": 0.5, "add_gt_as_proposals": 1})


# -- InstanceBalancedPosSampler --------------------------------------------------------------
@pytest.mark.parametrize(
    ("sizes", "num", "pos_fraction"),
    [
        pytest.param((10, 2), 16, 0.25, id="cut-at-random"),  # per gt 3: 3 + 2 > 4
        pytest.param((10, 1, 1), 24, 0.5, id="topped-up"),  # per gt 5: 5 + 1 + 1 < 12
        pytest.param((6, 6, 3, 1), 20, 0.5, id="round-half-even"),  # 10 / 4 = 2.5 -> 2, per gt 3
        pytest.param((2, 1), 16, 0.25, id="few-positives-all-kept"),
    ],
)
def test_instance_balanced_positives_match_mmdetection(sizes, num, pos_fraction):
    gt_inds = [g + 1 for g, size in enumerate(sizes) for _ in range(size)] + [0] * 30
    n, expected = len(gt_inds), int(num * pos_fraction)
    rng = random.Random(0)
    reference = frequencies(lambda: mmdet_instance_balanced_pos(gt_inds, expected, rng), n)
    gt = torch.tensor(gt_inds).expand(TRIALS, n)
    sampler = InstanceBalancedPosSampler(num=num, pos_fraction=pos_fraction, seed=1)
    result = sampler(gt > 0, gt == 0, gt_inds=gt)
    assert torch.equal(result.pos_mask.sum(1), torch.full((TRIALS,), min(sum(sizes), expected)))
    assert_frequencies_close(result.pos_mask.float().mean(0), reference)
    assert not (result.pos_mask & (gt == 0)).any()


def test_instance_balanced_needs_gt_inds_and_keeps_random_negatives():
    sampler = InstanceBalancedPosSampler(num=8, pos_fraction=0.5, seed=0)
    pos = torch.tensor([True] * 6 + [False] * 10)
    with pytest.raises(LossInputError, match=r"\['gt_inds'\] missing.*ground-truth instance"):
        sampler(pos, ~pos)
    with pytest.raises(LossInputError, match="unexpected routed input"):
        sampler(pos, ~pos, gt_inds=torch.ones(16), ious=torch.ones(16))
    with pytest.raises(LossInputError, match=r"'gt_inds' of shape \(15,\)"):
        sampler(pos, ~pos, gt_inds=torch.ones(15))
    result = sampler(pos, ~pos, gt_inds=pos.long())
    assert result.num_pos == 4 and result.num_neg == 4


# -- IoUBalancedNegSampler -------------------------------------------------------------------
def _iou_layout():
    """30 negatives spread over IoU 0 to 0.5 (six at exactly 0), 5 positives, 3 ignored."""
    ious = [0.0] * 6 + [0.02 * i for i in range(1, 25)] + [0.7, 0.8, 0.9, 0.6, 0.75] + [0.3, 0.4, 0.45]
    gt_inds = [0] * 30 + [1, 1, 2, 2, 3] + [-1, -1, -1]
    return gt_inds, ious


@pytest.mark.parametrize(
    ("floor_thr", "floor_fraction", "num_bins"),
    [(-1, 0.0, 3), (0.0, 0.0, 3), (0.1, 0.5, 3), (0.1, 0.0, 1), (0.2, 0.25, 2)],
)
def test_iou_balanced_negatives_match_mmdetection(floor_thr, floor_fraction, num_bins):
    gt_inds, ious = _iou_layout()
    n, num, pos_fraction = len(gt_inds), 24, 0.25
    expected = num - min(5, int(num * pos_fraction))
    rng = random.Random(0)
    reference = frequencies(
        lambda: mmdet_iou_balanced_neg(gt_inds, ious, expected, floor_thr, floor_fraction, num_bins, rng), n
    )
    gt = torch.tensor(gt_inds).expand(TRIALS, n)
    iou = torch.tensor(ious).expand(TRIALS, n)
    sampler = IoUBalancedNegSampler(
        num=num,
        pos_fraction=pos_fraction,
        floor_thr=floor_thr,
        floor_fraction=floor_fraction,
        num_bins=num_bins,
        seed=2,
    )
    result = sampler(gt > 0, gt == 0, ious=iou)
    assert torch.equal(result.neg_mask.sum(1), torch.full((TRIALS,), expected))
    assert_frequencies_close(result.neg_mask.float().mean(0), reference)


def test_iou_balanced_keeps_every_negative_when_there_are_few():
    pos = torch.tensor([True] * 4 + [False] * 4)
    result = IoUBalancedNegSampler(num=16, pos_fraction=0.25, seed=0)(pos, ~pos, ious=torch.rand(8))
    assert torch.equal(result.neg_mask, ~pos)


# -- ScoreHLRSampler -------------------------------------------------------------------------
def mmdet_nms_match(boxes: list[list[float]], scores: list[float], thr: float) -> list[list[int]]:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    area = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
    suppressed, groups = set(), []
    for a, i in enumerate(order):
        if i in suppressed:
            continue
        group = [i]
        for j in order[a + 1 :]:
            if j in suppressed:
                continue
            w = max(0.0, min(boxes[i][2], boxes[j][2]) - max(boxes[i][0], boxes[j][0]))
            h = max(0.0, min(boxes[i][3], boxes[j][3]) - max(boxes[i][1], boxes[j][1]))
            if w * h / (area[i] + area[j] - w * h) >= thr:
                suppressed.add(j)
                group.append(j)
        groups.append(group)
    return groups


def mmdet_score_hlr_neg(logits, boxes, losses, num_expected, k, bias, score_thr, iou_thr):
    """MMDetection's ScoreHLRSampler._sample_neg when every element is a negative and
    there are at least ``num_expected`` valid ones (no random part)."""
    probs = logits.softmax(-1)[:, :-1]
    max_score = probs.max(-1).values
    valid = [i for i in range(len(max_score)) if max_score[i] > score_thr]
    num_valid = len(valid)
    assert num_valid >= num_expected
    v_scores = [float(max_score[i]) for i in valid]
    groups = mmdet_nms_match([boxes[i].tolist() for i in valid], v_scores, iou_thr)
    imp = [0.0] * num_valid
    for group in groups:
        for rank, g in enumerate(group):
            imp[g] = num_valid - rank + v_scores[g]
    order = sorted(range(num_valid), key=lambda i: -imp[i])
    imp_rank = {i: r for r, i in enumerate(order)}
    hlr = order[:num_expected]
    up = max(num_expected, num_valid)
    weights = [((bias + (1 - bias) * (up - imp_rank[i]) / up) ** k) for i in hlr]
    selected = [valid[i] for i in hlr]
    sel_loss = [float(losses[i]) for i in selected]
    ratio = sum(sel_loss) / sum(w * s for w, s in zip(weights, sel_loss, strict=True))
    return {i: w * ratio for i, w in zip(selected, weights, strict=True)}


def _hlr_inputs(n=40, classes=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes + 1, generator=gen, dtype=torch.float64) * 2
    centre = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 6
    size = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 3 + 1
    boxes = torch.cat([centre, centre + size], -1)
    losses = torch.rand(n, generator=gen, dtype=torch.float64) + 0.1
    return logits, boxes, losses


@pytest.mark.parametrize(("k", "bias"), [(0.5, 0.0), (1.0, 0.2), (2.0, 0.5)])
def test_score_hlr_negatives_and_weights_match_mmdetection(k, bias):
    logits, boxes, losses = _hlr_inputs()
    n, num = logits.shape[0], 16
    reference = mmdet_score_hlr_neg(logits, boxes, losses, num, k, bias, 0.05, 0.5)
    sampler = ScoreHLRSampler(num=num, pos_fraction=0.25, k=k, bias=bias, seed=0)
    none = torch.zeros(n, dtype=torch.bool)
    result = sampler(none, ~none, losses, pred=logits, boxes=boxes)
    assert sorted(torch.nonzero(result.neg_mask).flatten().tolist()) == sorted(reference)
    expected = torch.zeros(n)
    for i, w in reference.items():
        expected[i] = w
    torch.testing.assert_close(result.weight, expected, rtol=1e-5, atol=1e-6)
    # the weights keep the loss total of the selected negatives
    torch.testing.assert_close((result.weight * losses).sum(), (result.neg_mask * losses).sum())


def test_score_hlr_fills_with_invalid_negatives_at_the_smallest_weight():
    logits, boxes, losses = _hlr_inputs(n=30)
    logits[:25, -1] = 20.0  # 25 confident background: invalid
    none = torch.zeros(30, dtype=torch.bool)
    sampler = ScoreHLRSampler(num=12, pos_fraction=0.25, k=1.0, seed=0)
    result = sampler(none, ~none, losses, pred=logits, boxes=boxes)
    valid = torch.zeros(30, dtype=torch.bool)
    valid[25:] = True
    assert result.num_neg == 12 and torch.equal(result.neg_mask & valid, valid)
    weights = result.weight[result.neg_mask & ~valid]
    assert torch.allclose(weights, weights[0].expand_as(weights))
    assert weights[0] <= result.weight[valid].min() + 1e-6


def test_score_hlr_without_valid_negatives_weights_uniformly():
    logits, boxes, losses = _hlr_inputs(n=20)
    logits[:, -1] = 30.0
    pos = torch.zeros(20, dtype=torch.bool)
    pos[:3] = True
    result = ScoreHLRSampler(num=8, pos_fraction=0.25, seed=0)(pos, ~pos, losses, pred=logits, boxes=boxes)
    assert result.num_pos == 2 and result.num_neg == 6
    assert torch.equal(result.weight, (result.pos_mask | result.neg_mask).float())


# -- CombinedSampler (Libra R-CNN's config) --------------------------------------------------
def test_libra_rcnn_combined_sampler_builds_and_samples():
    cfg = dict(
        type="CombinedSampler",
        num=24,
        pos_fraction=0.25,
        add_gt_as_proposals=False,
        pos_sampler=dict(type="InstanceBalancedPosSampler"),
        neg_sampler=dict(type="IoUBalancedNegSampler", floor_thr=-1, floor_fraction=0, num_bins=3),
    )
    sampler = lossmix.build_sampler(cfg)
    assert isinstance(sampler, CombinedSampler)
    assert isinstance(sampler.pos_sampler, InstanceBalancedPosSampler) and sampler.pos_sampler.num == 24
    assert set(sampler.routed_inputs) == {"gt_inds", "ious"}
    gt_inds, ious = _iou_layout()
    gt, iou = torch.tensor(gt_inds), torch.tensor(ious)
    result = sampler(gt > 0, gt == 0, gt_inds=gt, ious=iou)
    assert result.num_pos == 5 and result.num_neg == 19
    with pytest.raises(LossConfigError, match="pos_sampler: .*num_bin"):
        lossmix.build_sampler({**cfg, "pos_sampler": {"type": "IoUBalancedNegSampler", "num_bin": 2}})
    with pytest.raises(LossConfigError, match="neg_sampler: neg_sampler must be a quota sampler"):
        lossmix.build_sampler({**cfg, "neg_sampler": {"type": "PseudoSampler"}})


# -- routing through a term ------------------------------------------------------------------
def test_a_term_routes_the_inputs_its_sampler_declares():
    sampler = {"type": "IoUBalancedNegSampler", "num": 16, "pos_fraction": 0.25, "seed": 0}
    with pytest.raises(LossConfigError) as info:
        LossMix.from_config(
            {"cls": {"type": "CrossEntropyLoss", "sampler": sampler, "inputs": {"pred": "x", "target": "y"}}}
        )
    message = str(info.value)
    assert "term 'cls'" in message and "'ious'" in message and "inputs.ious" in message
    assert "The term routes: pred, target" in message and "\n" not in message
    mix = LossMix.from_config(
        {
            "cls": {
                "type": "CrossEntropyLoss",
                "sampler": {**sampler, "background": 4},
                "inputs": {"pred": "x", "target": "y", "ious": "max_overlaps"},
            }
        }
    )
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(60, 5, generator=gen, requires_grad=True)
    labels = torch.full((60,), 4)
    labels[:6] = 1
    out = mix({"x": pred}, {"y": labels, "max_overlaps": torch.rand(60, generator=gen)})
    assert out.stats["cls.num_pos"] == 4 and out.stats["cls.num_neg"] == 12
    out.total.backward()
    assert (pred.grad.abs().sum(1) > 0).sum() == 16


def test_score_hlr_weights_reach_the_loss_through_the_term():
    logits, boxes, _ = _hlr_inputs(n=30)
    labels = torch.full((30,), 4)
    labels[:3] = 2
    node = {
        "type": "CrossEntropyLoss",
        "reduction": "sum",
        "sampler": {"type": "ScoreHLRSampler", "num": 12, "pos_fraction": 0.25, "seed": 0, "background": 4},
        "inputs": {"pred": "cls_score", "target": "labels", "boxes": "boxes"},
    }
    mix = LossMix.from_config({"cls": node})
    pred = logits.float().requires_grad_()
    out = mix({"cls_score": pred, "boxes": boxes.float()}, {"labels": labels})
    raw = torch.nn.functional.cross_entropy(pred.detach(), labels, reduction="none")
    sampler = ScoreHLRSampler(num=12, pos_fraction=0.25, seed=0)
    again = sampler(labels < 4, labels == 4, raw, pred=pred.detach(), boxes=boxes.float())
    torch.testing.assert_close(out.raw["cls"], (raw * again.weight).sum())


# -- no host sync, checkpointed generators, bad arguments -----------------------------------
def _refuse(*args, **kwargs):
    raise AssertionError("host sync in a sampler")


def _all_samplers():
    gt_inds, ious = _iou_layout()
    gt, iou = torch.tensor(gt_inds).expand(3, -1), torch.tensor(ious).expand(3, -1)
    logits, boxes, losses = _hlr_inputs(n=gt.shape[1])
    common = {"num": 16, "pos_fraction": 0.25, "seed": 0}
    return gt, {
        "InstanceBalancedPosSampler": (InstanceBalancedPosSampler(**common), {"gt_inds": gt}, None),
        "IoUBalancedNegSampler": (IoUBalancedNegSampler(floor_thr=0.1, **common), {"ious": iou}, None),
        "ScoreHLRSampler": (
            ScoreHLRSampler(**common),
            {"pred": logits.expand(3, -1, -1), "boxes": boxes.expand(3, -1, -1)},
            losses.expand(3, -1),
        ),
    }


@pytest.mark.parametrize("name", ["InstanceBalancedPosSampler", "IoUBalancedNegSampler", "ScoreHLRSampler"])
def test_no_host_sync(monkeypatch, name):
    gt, samplers = _all_samplers()
    sampler, routed, scores = samplers[name]
    with monkeypatch.context() as patch:
        for method in ("item", "tolist", "__bool__", "nonzero", "__int__", "__float__", "numpy"):
            patch.setattr(torch.Tensor, method, _refuse)
        result = sampler(gt > 0, gt == 0, scores, **routed)
        _ = result.num_sampled
    assert not (result.pos_mask & ~(gt > 0)).any() and not (result.neg_mask & ~(gt == 0)).any()


def _round_trip(module: nn.Module) -> dict:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name", ["InstanceBalancedPosSampler", "IoUBalancedNegSampler", "ScoreHLRSampler"])
def test_generators_are_checkpointed(name):
    gt, samplers = _all_samplers()
    sampler, routed, scores = samplers[name]
    sampler(gt > 0, gt == 0, scores, **routed)
    state = _round_trip(sampler)
    resumed = _all_samplers()[1][name][0]
    resumed.load_state_dict(state)
    first = sampler(gt > 0, gt == 0, scores, **routed)
    second = resumed(gt > 0, gt == 0, scores, **routed)
    assert torch.equal(first.weight, second.weight)


def test_combined_sampler_checkpoints_both_generators():
    cfg = {
        "num": 16,
        "pos_fraction": 0.25,
        "pos_sampler": {"type": "RandomSampler", "seed": 1},
        "neg_sampler": {"type": "RandomSampler", "seed": 2},
    }
    sampler = CombinedSampler(**cfg)
    pos = torch.rand(200, generator=torch.Generator().manual_seed(0)) < 0.2
    sampler(pos, ~pos)
    state = _round_trip(sampler)
    assert {"pos_sampler._extra_state", "neg_sampler._extra_state"} <= set(state)
    resumed = CombinedSampler(**cfg)
    resumed.load_state_dict(state)
    assert torch.equal(sampler(pos, ~pos).weight, resumed(pos, ~pos).weight)


@pytest.mark.parametrize(
    ("cls", "argument", "value"),
    [
        (IoUBalancedNegSampler, "floor_thr", -0.5),
        (IoUBalancedNegSampler, "floor_fraction", 1.5),
        (IoUBalancedNegSampler, "num_bins", 0),
        (ScoreHLRSampler, "k", 0.0),
        (ScoreHLRSampler, "bias", 2.0),
        (ScoreHLRSampler, "iou_thr", 1.5),
        (OHEMSampler, "neg_pos_ub", "3"),
    ],
)
def test_bad_arguments_raise(cls, argument, value):
    with pytest.raises(LossConfigError, match=f"{cls.__name__}: {argument}="):
        cls(num=8, pos_fraction=0.5, **{argument: value})


def test_nms_match_groups_match_mmcv():
    from lossmix.samplers.score_hlr import nms_match_groups

    _, boxes, _ = _hlr_inputs(n=25, seed=3)
    scores = torch.rand(25, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    eligible = torch.ones(1, 25, dtype=torch.bool)
    ranks = nms_match_groups(boxes[None], scores[None], eligible, 0.3)[0]
    expected = torch.zeros(25, dtype=torch.long)
    for group in mmdet_nms_match(boxes.tolist(), scores.tolist(), 0.3):
        for rank, i in enumerate(group):
            expected[i] = rank
    assert torch.equal(ranks, expected)
    assert math.isfinite(float(ranks.max()))
