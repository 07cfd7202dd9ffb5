"""The four numeric mismatches against MMDetection 3.3 (issue 9), each holding MMDetection's value.

Every expected number is computed twice: by a transcription of MMDetection's own code
(``cross_entropy``, ``binary_cross_entropy``, ``dice_loss``, ``weight_reduce_loss``) on
the same inputs, and as a literal obtained from that transcription once, so a change in
either the reference or lossmix is caught.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

from lossmix.losses import CrossEntropyLoss, DiceLoss
from lossmix.reduction import weight_reduce_loss

EPS32 = torch.finfo(torch.float32).eps


def mmdet_cross_entropy_avg_non_ignore(pred, label, ignore_index=-100):
    """mmdet ``cross_entropy(..., avg_non_ignore=True)``: a Python count, then ``sum / (count + eps)``."""
    loss = TF.cross_entropy(pred, label, reduction="none", ignore_index=ignore_index)
    avg_factor = label.numel() - (label == ignore_index).sum().item()
    return loss.sum() / (avg_factor + EPS32)


def mmdet_binary_cross_entropy(pred, label, ignore_index=-100, avg_non_ignore=False):
    """mmdet ``binary_cross_entropy`` when ``pred.dim() == label.dim()``."""
    valid = ((label >= 0) & (label != ignore_index)).float()
    avg_factor = valid.sum().item() if avg_non_ignore else None
    loss = TF.binary_cross_entropy_with_logits(pred, label.float(), reduction="none")
    if avg_factor is None:
        return (loss * valid).mean()
    return (loss * valid).sum() / (avg_factor + EPS32)


def mmdet_dice_loss(pred, target, eps=1e-3):
    """mmdet ``dice_loss`` (V-Net form): inputs flattened per sample, then the mean."""
    pred, target = pred.flatten(1), target.flatten(1).float()
    a = (pred * target).sum(1)
    b = (pred * pred).sum(1) + eps
    c = (target * target).sum(1) + eps
    return (1 - 2 * a / (b + c)).mean()


def test_softmax_avg_non_ignore_counts_soft_target_elements():
    # Mismatch 1: a dense (soft) target counts N x C elements, not N rows.
    gen = torch.Generator().manual_seed(2024)
    pred = torch.randn(7, 5, generator=gen)
    soft = torch.rand(7, 5, generator=gen).softmax(1)
    value = CrossEntropyLoss(avg_non_ignore=True)(pred, soft)
    torch.testing.assert_close(value, mmdet_cross_entropy_avg_non_ignore(pred, soft))
    assert value.item() == pytest.approx(0.38886777, abs=1e-7)
    rows_only = TF.cross_entropy(pred, soft, reduction="none").mean()  # lossmix's old value
    assert value.item() == pytest.approx(rows_only.item() / 5, rel=1e-5)


def test_count_plus_eps_in_the_prediction_dtype():
    # Mismatch 2: in float64 the count + eps keeps its eps (MMDetection adds a double).
    gen = torch.Generator().manual_seed(7)
    pred = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 5, (7,), generator=gen)
    value = CrossEntropyLoss(avg_non_ignore=True)(pred, labels)
    expected = mmdet_cross_entropy_avg_non_ignore(pred, labels)
    torch.testing.assert_close(value, expected, rtol=1e-14, atol=0.0)
    assert value.item() == pytest.approx(2.191167144972, abs=1e-12)
    without_eps = TF.cross_entropy(pred, labels, reduction="none").sum() / 7
    assert abs(value.item() - without_eps.item()) > 1e-8


def test_a_tensor_avg_factor_adds_eps_in_the_loss_dtype():
    loss = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    for count in (torch.tensor(7), torch.tensor(7.0), torch.tensor(7.0, dtype=torch.float64)):
        value = weight_reduce_loss(loss, avg_factor=count)
        assert value.dtype == torch.float64
        assert value.item() == 7.0 / (7 + EPS32)
    assert weight_reduce_loss(loss.float(), avg_factor=torch.tensor(7)).dtype == torch.float32
    half = weight_reduce_loss(loss.to(torch.bfloat16), avg_factor=torch.tensor(1001))
    assert half.item() == pytest.approx(7.0 / 1001, rel=1e-2)  # the count is not rounded to bf16


def test_dice_without_activation_flattens_per_sample_by_default():
    # Mismatch 3: use_sigmoid=False, activate=False takes probabilities and flattens per
    # sample (MMDetection); the per-class Dice needs per_class=True.
    gen = torch.Generator().manual_seed(3)
    probs = torch.rand(6, 5, 4, generator=gen)
    target = (torch.rand(6, 5, 4, generator=gen) > 0.5).float()
    loss = DiceLoss(use_sigmoid=False, activate=False)
    assert loss.per_class is False
    value = loss(probs, target)
    torch.testing.assert_close(value, mmdet_dice_loss(probs, target))
    assert value.item() == pytest.approx(0.39830747, abs=1e-7)
    per_class = DiceLoss(use_sigmoid=False, activate=False, per_class=True)(probs, target)
    assert per_class.item() == pytest.approx(0.43836501, abs=1e-7)
    # an integer binary mask of pred's shape is a mask, not class indices
    torch.testing.assert_close(loss(probs, target.long()), value)


def test_dice_softmax_still_refuses_pooled_classes():
    with pytest.raises(ValueError, match="per_class=False"):
        DiceLoss(use_sigmoid=False, per_class=False)


@pytest.mark.parametrize("avg_non_ignore", [False, True])
def test_sigmoid_binary_pred_per_row_with_labels(avg_non_ignore):
    # Mismatch 4: pred (N,) and labels (N,) are one binary logit per row.
    gen = torch.Generator().manual_seed(11)
    pred = torch.randn(8, generator=gen)
    labels = torch.randint(0, 2, (8,), generator=gen)
    labels[2] = -100
    loss = CrossEntropyLoss(use_sigmoid=True, avg_non_ignore=avg_non_ignore)
    expected = mmdet_binary_cross_entropy(pred, labels, avg_non_ignore=avg_non_ignore)
    torch.testing.assert_close(loss(pred, labels), expected)
    literal = 0.73504132 if avg_non_ignore else 0.64316118
    assert loss(pred, labels).item() == pytest.approx(literal, abs=1e-7)
    assert loss(pred, labels, reduction_override="none").shape == (8,)
    weighted = CrossEntropyLoss(use_sigmoid=True, class_weight=[2.0], reduction="none")(
        pred, labels.clamp(min=0)
    )
    reference = TF.binary_cross_entropy_with_logits(
        pred, labels.clamp(min=0).float(), pos_weight=torch.tensor([2.0]), reduction="none"
    )
    torch.testing.assert_close(weighted, reference)


def test_softmax_pred_without_classes_still_raises():
    with pytest.raises(ValueError, match="class dimension"):
        CrossEntropyLoss()(torch.zeros(4), torch.zeros(4, dtype=torch.long))
