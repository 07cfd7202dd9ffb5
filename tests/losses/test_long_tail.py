"""Seesaw and EQL v2: MMDetection's full forwards (with background rows and state), bad input.

The references transcribe MMDetection 3.3's ``SeesawLoss.forward`` (counts updated first,
the class loss over the foreground rows only) and ``EQLV2Loss.forward`` +
``collect_grad``.
"""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as TF

import lossmix
from lossmix import LossMix
from lossmix.errors import LossConfigError, LossInputError
from lossmix.losses import EQLV2Loss, SeesawLoss
from lossmix.reduction import EPS32
from tests.losses.cases_long_tail import eqlv2_reference, seesaw_reference

C = 4


class MMDetSeesaw:
    """MMDetection's ``SeesawLoss`` (its state and forward), for C classes."""

    def __init__(self, p=0.8, q=2.0, eps=1e-2):
        self.p, self.q, self.eps = p, q, eps
        self.cum_samples = torch.zeros(C + 1, dtype=torch.float64)

    def __call__(self, cls_score, labels, label_weights=None, avg_factor=None, reduction="mean"):
        pos_inds = labels < C
        obj_labels = (labels == C).long()
        for u_l in labels.unique():
            self.cum_samples[u_l] += (labels == u_l.item()).sum()
        if label_weights is None:
            label_weights = labels.new_ones(labels.size(), dtype=cls_score.dtype)
        classes, objectness = cls_score[..., :-2], cls_score[..., -2:]
        if pos_inds.sum() > 0:
            loss = seesaw_reference(
                classes[pos_inds], labels[pos_inds], self.cum_samples[:C], self.p, self.q, self.eps
            )
            loss_classes = _mmdet_reduce(loss, label_weights[pos_inds], reduction, avg_factor)
        else:
            loss_classes = classes[pos_inds].sum()
        loss = TF.cross_entropy(objectness, obj_labels, reduction="none")
        loss_objectness = _mmdet_reduce(loss, label_weights, reduction, avg_factor)
        return {"loss_cls_objectness": loss_objectness, "loss_cls_classes": loss_classes}


def _mmdet_reduce(loss, weight, reduction, avg_factor):
    loss = loss * weight
    if avg_factor is None:
        return loss.mean() if reduction == "mean" else loss.sum()
    return loss.sum() / (avg_factor + EPS32)


def _rows(n=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pred = torch.randn(n, C + 2, generator=gen, dtype=torch.float64) * 2
    labels = torch.randint(0, C + 1, (n,), generator=gen)
    labels[:2] = C
    return pred, labels, torch.rand(n, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize(
    "call",
    [{}, {"weight": True}, {"avg_factor": 7.0}, {"reduction": "sum"}, {"weight": True, "avg_factor": 5.0}],
)
def test_seesaw_matches_mmdetection_over_training_steps(call):
    ours, theirs = SeesawLoss(num_classes=C).train(), MMDetSeesaw()
    for step in range(3):
        pred, labels, weight = _rows(seed=step)
        kwargs = {"avg_factor": call.get("avg_factor")}
        if "reduction" in call:
            kwargs["reduction_override"] = call["reduction"]
        got = ours(pred, labels, weight if call.get("weight") else None, **kwargs)
        expected = theirs(
            pred,
            labels,
            weight if call.get("weight") else None,
            call.get("avg_factor"),
            call.get("reduction", "mean"),
        )
        assert list(got) == ["loss_cls_objectness", "loss_cls_classes"]
        for key in got:
            torch.testing.assert_close(got[key], expected[key])
    torch.testing.assert_close(ours.cum_samples, theirs.cum_samples.float())


def test_seesaw_without_foreground_gives_a_connected_zero_class_loss():
    pred = torch.randn(5, C + 2, dtype=torch.float64, requires_grad=True)
    out = SeesawLoss(num_classes=C)(pred, torch.full((5,), C))
    assert out["loss_cls_classes"].item() == 0.0
    out["loss_cls_classes"].backward()
    assert pred.grad is not None and torch.all(pred.grad == 0)


def test_seesaw_counts_only_in_training_with_gradients_and_are_checkpointed():
    pred, labels, _ = _rows()
    loss = SeesawLoss(num_classes=C)
    loss.eval()
    loss(pred, labels)
    assert loss.cum_samples.sum() == 0
    loss.train()
    with torch.no_grad():
        loss(pred, labels)
    assert loss.cum_samples.sum() == 0
    loss(pred, labels)
    assert torch.equal(loss.cum_samples, torch.bincount(labels, minlength=C + 1).float())
    buffer = io.BytesIO()
    torch.save(loss.state_dict(), buffer)
    buffer.seek(0)
    restored = SeesawLoss(num_classes=C)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.cum_samples, loss.cum_samples)


def test_seesaw_return_dict_false_sums_the_parts_and_a_term_logs_the_parts():
    pred, labels, _ = _rows()
    parts = SeesawLoss(num_classes=C).eval()(pred, labels)
    total = SeesawLoss(num_classes=C, return_dict=False).eval()(pred, labels)
    torch.testing.assert_close(total, parts["loss_cls_objectness"] + parts["loss_cls_classes"])
    mix = LossMix.from_config(
        {"cls": {"type": "SeesawLoss", "num_classes": C, "inputs": {"pred": "s", "target": "y"}}}
    )
    result = mix({"s": pred}, {"y": labels})
    assert set(result.terms) == {"cls.loss_cls_objectness", "cls.loss_cls_classes"}


def test_seesaw_mmdetection_config_builds_and_needs_num_classes():
    cfg = dict(type="SeesawLoss", p=0.8, q=2.0, num_classes=1203, loss_weight=1.0)
    loss = lossmix.build_loss(cfg)
    assert isinstance(loss, SeesawLoss) and loss.cum_samples.shape == (1204,)
    assert loss.get_cls_channels(1203) == 1205
    with pytest.raises(LossConfigError) as info:
        lossmix.build_loss({"type": "SeesawLoss", "p": 0.8})
    assert "num_classes" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(LossConfigError, match="use_sigmoid"):
        SeesawLoss(num_classes=3, use_sigmoid=True)
    with pytest.raises(LossInputError, match=r"\(N, 6\)"):
        SeesawLoss(num_classes=C)(torch.zeros(3, C + 1), torch.zeros(3, dtype=torch.long))


def test_seesaw_activation_multiplies_class_scores_by_objectness():
    pred, _, _ = _rows()
    scores = SeesawLoss(num_classes=C).get_activation(pred)
    torch.testing.assert_close(scores.sum(-1), torch.ones(pred.shape[0], dtype=torch.float64))
    torch.testing.assert_close(scores[:, -1], pred[:, -2:].softmax(-1)[:, 1])


# -- EQL v2 ----------------------------------------------------------------------------------
class MMDetEQLv2:
    """MMDetection's ``EQLV2Loss`` forward and gradient collection."""

    def __init__(self, mu=0.8, alpha=4.0, gamma=12.0):
        self.mu, self.alpha, self.gamma = mu, alpha, gamma
        self.pos_grad = torch.zeros(C, dtype=torch.float64)
        self.neg_grad = torch.zeros(C, dtype=torch.float64)
        self.pos_neg = torch.ones(C, dtype=torch.float64) * 100

    def __call__(self, pred, label):
        n_i, n_c = pred.size()
        target = pred.new_zeros(n_i, n_c)
        target[torch.arange(n_i), label] = 1
        loss = eqlv2_reference(pred, label, self.pos_neg, self.mu, self.alpha, self.gamma).sum() / n_i
        neg_w = torch.cat([1 / (1 + torch.exp(-self.gamma * (self.pos_neg - self.mu))), pred.new_ones(1)])
        pos_w = 1 + self.alpha * (1 - neg_w)
        weight = pos_w * target + neg_w * (1 - target)
        prob = torch.sigmoid(pred.detach())
        grad = torch.abs(target * (prob - 1) + (1 - target) * prob)
        self.pos_grad += torch.sum(grad * target * weight, dim=0)[:-1]
        self.neg_grad += torch.sum(grad * (1 - target) * weight, dim=0)[:-1]
        self.pos_neg = self.pos_grad / (self.neg_grad + 1e-10)
        return loss


def test_eqlv2_matches_mmdetection_over_training_steps():
    ours, theirs = EQLV2Loss(num_classes=C).double().train(), MMDetEQLv2()
    for step in range(4):
        gen = torch.Generator().manual_seed(step)
        pred = torch.randn(10, C + 1, generator=gen, dtype=torch.float64) * 2
        labels = torch.randint(0, C + 1, (10,), generator=gen)
        torch.testing.assert_close(ours(pred, labels), theirs(pred, labels))
        torch.testing.assert_close(ours.pos_neg, theirs.pos_neg)
    assert not torch.allclose(ours.pos_neg, torch.full((C,), 100.0, dtype=torch.float64))


def test_eqlv2_zero_weight_rows_add_no_statistics_and_eval_changes_nothing():
    gen = torch.Generator().manual_seed(0)
    pred, labels = torch.randn(6, C + 1, generator=gen), torch.randint(0, C + 1, (6,), generator=gen)
    loss = EQLV2Loss(num_classes=C)
    loss(pred, labels, torch.zeros(6))
    assert loss.pos_grad.sum() == 0 and loss.neg_grad.sum() == 0
    loss.eval()
    loss(pred, labels)
    assert loss.neg_grad.sum() == 0
    assert {"pos_grad", "neg_grad", "pos_neg"} <= set(loss.state_dict())


def test_eqlv2_mmdetection_config_builds_and_refuses_what_it_would_ignore():
    cfg = dict(
        type="EQLV2Loss",
        use_sigmoid=True,
        reduction="mean",
        class_weight=None,
        loss_weight=1.0,
        num_classes=1203,
    )
    loss = lossmix.build_loss(cfg)
    assert isinstance(loss, EQLV2Loss) and loss.get_channel_num(1203) == 1204
    with pytest.raises(LossConfigError, match="class_weight"):
        EQLV2Loss(class_weight=[1.0, 2.0])
    with pytest.raises(LossConfigError, match="use_sigmoid"):
        EQLV2Loss(use_sigmoid=False)
    with pytest.raises(LossInputError, match=r"\(N, 1204\)"):
        loss(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))


def test_eqlv2_activation_scales_classes_by_background():
    pred = torch.randn(3, C + 1)
    scores = EQLV2Loss(num_classes=C).get_activation(pred)
    probs = pred.sigmoid()
    torch.testing.assert_close(scores[:, :-1], probs[:, :-1] * (1 - probs[:, -1:]))
    torch.testing.assert_close(EQLV2Loss(num_classes=C, test_with_obj=False).get_activation(pred), probs)
