"""Family checks for the classification losses: identity limits, MMDetection's quirks,
GHM-C against a loop of MMDetection's algorithm, and bad arguments."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
import torch.nn.functional as TF

from lossmix import LossConfigError, LossInputError
from lossmix import functional as F
from lossmix.losses import (
    GHMC,
    CrossEntropyLoss,
    DistributionFocalLoss,
    FocalLoss,
    QualityFocalLoss,
    VarifocalLoss,
)
from lossmix.reduction import EPS32
from tests.losses.battery import assert_close, make_generator
from tests.losses.cases_classification import (
    CLASS_WEIGHT,
    C,
    N,
    labels_with_background,
    onehot,
    quiet_ce,
    torchvision_focal,
)

F64 = torch.float64


def _logits(seed=0, rows=N, cols=C, scale=1.0, dtype=F64):
    return torch.randn(rows, cols, generator=make_generator(seed), dtype=dtype) * scale


def _close(actual, expected):
    assert_close(actual, expected, F64)


# -- sigmoid focal -----------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [None, -1, -0.5])
def test_focal_gamma0_no_alpha_is_bce_in_value_and_gradient(alpha):
    target = onehot(labels_with_background(make_generator(1)))
    pred = _logits().requires_grad_()
    ours = FocalLoss(gamma=0.0, alpha=alpha)(pred, target)
    (grad,) = torch.autograd.grad(ours, pred)
    ref_pred = pred.detach().requires_grad_()
    bce = TF.binary_cross_entropy_with_logits(ref_pred, target)
    (ref_grad,) = torch.autograd.grad(bce, ref_pred)
    _close(ours, bce)
    _close(grad, ref_grad)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("alpha", [0.25, 0.5, 1.0, -1.0])
def test_sigmoid_focal_matches_torchvision_formula(gamma, alpha):
    pred = _logits(2)
    target = torch.rand(N, C, generator=make_generator(3), dtype=F64)
    _close(
        F.sigmoid_focal_loss(pred, target, gamma=gamma, alpha=alpha),
        torchvision_focal(pred, target, alpha=alpha, gamma=gamma),
    )


def test_index_targets_equal_onehot_targets_and_background_rows_are_negative():
    labels = labels_with_background(make_generator(4))
    pred, weight = _logits(5), torch.rand(N, generator=make_generator(6), dtype=F64)
    loss = FocalLoss(reduction="none")
    by_index = loss(pred, labels, weight)
    _close(by_index, loss(pred, onehot(labels), weight))
    background = labels == C
    assert background.any()
    negative = torchvision_focal(pred, torch.zeros_like(pred)) * weight[:, None]
    _close(by_index[background], negative[background])
    assert_close(
        FocalLoss()(pred, labels, avg_factor=2.0),
        (torchvision_focal(pred, onehot(labels))).sum() / (2.0 + EPS32),
        F64,
    )


def test_focal_activated_equals_logits_path_away_from_saturation():
    pred, target = _logits(7), onehot(labels_with_background(make_generator(8)))
    _close(FocalLoss(activated=True)(torch.sigmoid(pred), target), FocalLoss()(pred, target))


@pytest.mark.parametrize("gamma", [0.1, 0.5])
def test_focal_gamma_below_one_has_finite_gradient_at_saturation(gamma):
    labels = labels_with_background(make_generator(9))
    pred = _logits(10, dtype=torch.float32, scale=1e4).requires_grad_()
    for module in (FocalLoss(gamma=gamma), FocalLoss(gamma=gamma, use_sigmoid=False)):
        target = labels if module.use_sigmoid else labels.clamp(max=C - 1)
        loss = module(pred, target)
        (grad,) = torch.autograd.grad(loss, pred)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
    saturated = torch.tensor([30.0, -30.0, 1e4], dtype=torch.float32, requires_grad=True)
    loss = F.sigmoid_focal_loss(saturated, torch.tensor([1.0, 0.0, 1.0]), gamma=gamma).sum()
    (grad,) = torch.autograd.grad(loss, saturated)
    assert torch.isfinite(grad).all()


# -- softmax focal -----------------------------------------------------------------------------
def test_softmax_focal_gamma0_is_cross_entropy_in_value_and_gradient():
    labels = torch.randint(0, C, (N,), generator=make_generator(11))
    pred = _logits(12).requires_grad_()
    ours = FocalLoss(use_sigmoid=False, gamma=0.0, alpha=None)(pred, labels)
    ref = TF.cross_entropy(pred, labels)
    _close(ours, ref)
    _close(torch.autograd.grad(ours, pred)[0], torch.autograd.grad(ref, pred)[0])


def test_softmax_focal_alpha_and_ignore_index():
    labels = torch.randint(0, C, (N,), generator=make_generator(13))
    labels[2] = 255
    pred = _logits(14)
    plain = F.softmax_focal_loss(pred, labels, gamma=1.5, ignore_index=255)
    assert plain[2] == 0
    loss = FocalLoss(use_sigmoid=False, gamma=1.5, alpha=0.3, ignore_index=255, reduction="none")
    _close(loss(pred, labels), 0.3 * plain)
    per_class = FocalLoss(
        use_sigmoid=False, gamma=1.5, alpha=CLASS_WEIGHT, ignore_index=255, reduction="none"
    )(pred, labels)
    weights = torch.tensor(CLASS_WEIGHT, dtype=F64)[labels.clamp(max=C - 1)]
    _close(per_class, weights * plain)
    ce = TF.cross_entropy(pred, labels, ignore_index=255, reduction="none")
    _close(F.softmax_focal_loss(pred, labels, gamma=0.0, ignore_index=255), ce)


# -- cross-entropy -----------------------------------------------------------------------------
def test_class_weight_mean_is_mmdetection_not_torch():
    labels = torch.randint(0, C, (N,), generator=make_generator(15))
    pred, weights = _logits(16), torch.tensor(CLASS_WEIGHT, dtype=F64)
    ours = CrossEntropyLoss(class_weight=CLASS_WEIGHT)
    torch_mean = TF.cross_entropy(pred, labels, weight=weights)
    elems = TF.cross_entropy(pred, labels, weight=weights, reduction="none")
    _close(ours(pred, labels), elems.sum() / N)
    assert not torch.allclose(ours(pred, labels), torch_mean)
    _close(ours(pred, labels, avg_factor=weights[labels].sum()), torch_mean)
    _close(CrossEntropyLoss(class_weight=torch.tensor(CLASS_WEIGHT))(pred, labels), ours(pred, labels))


def test_ignore_index_counts_in_mean_unless_avg_non_ignore():
    labels = torch.randint(0, C, (N,), generator=make_generator(17))
    labels[[0, 4]] = -1
    pred = _logits(18)
    with pytest.warns(UserWarning, match="avg_non_ignore"):
        quirky = CrossEntropyLoss(ignore_index=-1)
    _close(quirky(pred, labels), TF.cross_entropy(pred, labels, ignore_index=-1, reduction="sum") / N)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exact = CrossEntropyLoss(ignore_index=-1, avg_non_ignore=True)
    _close(exact(pred, labels), TF.cross_entropy(pred, labels, ignore_index=-1))
    per_call = CrossEntropyLoss(avg_non_ignore=True)(pred, labels.masked_fill(labels < 0, 7), ignore_index=7)
    _close(per_call, TF.cross_entropy(pred, labels, ignore_index=-1))


def test_label_smoothing_matches_torch():
    labels = torch.randint(0, C, (N,), generator=make_generator(19))
    pred = _logits(20)
    _close(
        CrossEntropyLoss(label_smoothing=0.2)(pred, labels),
        TF.cross_entropy(pred, labels, label_smoothing=0.2),
    )
    target = onehot(labels)
    _close(
        CrossEntropyLoss(use_sigmoid=True, label_smoothing=0.2)(pred, labels),
        TF.binary_cross_entropy_with_logits(pred, target * 0.8 + 0.1),
    )


def test_softmax_probability_targets_match_torch():
    pred = _logits(21)
    probs = torch.softmax(_logits(22), dim=1)
    _close(CrossEntropyLoss()(pred, probs), TF.cross_entropy(pred, probs))


def test_sigmoid_class_weight_is_pos_weight_and_ignored_labels_mask_elements():
    labels = labels_with_background(make_generator(23))
    labels[3] = 255
    pred, weights = _logits(24), torch.tensor(CLASS_WEIGHT, dtype=F64)
    loss = quiet_ce(use_sigmoid=True, class_weight=CLASS_WEIGHT, ignore_index=255, reduction="none")(
        pred, labels
    )
    ref = TF.binary_cross_entropy_with_logits(
        pred, onehot(labels.clamp(max=C)), pos_weight=weights, reduction="none"
    )
    ref[3] = 0
    _close(loss, ref)
    mean = CrossEntropyLoss(
        use_sigmoid=True, class_weight=CLASS_WEIGHT, ignore_index=255, avg_non_ignore=True
    )(pred, labels)
    _close(mean, ref.sum() / ((N - 1) * C + EPS32))


def test_mask_path_picks_each_roi_class():
    gen = make_generator(25)
    pred = torch.randn(3, C, 2, 2, generator=gen, dtype=F64)
    target = (torch.rand(3, 2, 2, generator=gen) > 0.5).to(F64)
    labels = torch.tensor([2, 0, 3])
    expected = TF.binary_cross_entropy_with_logits(pred[torch.arange(3), labels], target)
    _close(CrossEntropyLoss(use_mask=True, loss_weight=2.0)(pred, target, labels), 2 * expected)
    with pytest.raises(LossInputError, match="labels"):
        CrossEntropyLoss(use_mask=True)(pred, target)


# -- varifocal, QFL, DFL -----------------------------------------------------------------------
def test_varifocal_iou_weighted_false_weights_positives_by_one():
    pred = _logits(26)
    q = torch.rand(N, C, generator=make_generator(27), dtype=F64)
    q = torch.where(q > 0.6, q, torch.zeros_like(q))
    bce = TF.binary_cross_entropy_with_logits(pred, q, reduction="none")
    neg = 0.5 * (torch.sigmoid(pred) - q).abs() ** 1.5
    expected = bce * torch.where(q > 0, torch.ones_like(q), neg)
    _close(VarifocalLoss(alpha=0.5, gamma=1.5, iou_weighted=False, reduction="none")(pred, q), expected)


def test_qfl_tuple_target_equals_dense_and_activated():
    labels = labels_with_background(make_generator(28))
    score = torch.rand(N, generator=make_generator(29), dtype=F64)
    pred = _logits(30)
    loss = QualityFocalLoss(beta=1.5, reduction="none")
    by_tuple = loss(pred, (labels, score))
    _close(by_tuple, loss(pred, onehot(labels) * score[:, None]))
    activated = QualityFocalLoss(beta=1.5, activated=True, reduction="none")
    _close(activated(torch.sigmoid(pred), (labels, score)), by_tuple)
    assert by_tuple.shape == (N,)


def test_dfl_exact_bins_are_cross_entropy_and_n_does_not_overflow():
    pred = _logits(31, cols=5)
    target = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 4.0], dtype=F64)
    expected = TF.cross_entropy(pred, target.long(), reduction="none")
    _close(DistributionFocalLoss(reduction="none")(pred, target), expected)
    mid = torch.full((N,), 2.25, dtype=F64)
    ce = [TF.cross_entropy(pred, torch.full((N,), k), reduction="none") for k in (2, 3)]
    _close(F.distribution_focal_loss(pred, mid), 0.75 * ce[0] + 0.25 * ce[1])


# -- GHM-C -------------------------------------------------------------------------------------
def ghmc_mmdet(pred, target, label_weight, bins, momentum, acc_sum):
    """MMDetection's GHMC.forward, loop and all; returns (mean loss, updated acc_sum)."""
    if pred.dim() != target.dim():
        target = onehot(target, pred.size(1), pred.dtype)
        label_weight = label_weight.view(-1, 1).expand_as(pred)
    acc_sum = acc_sum.clone()
    edges = torch.arange(bins + 1).float() / bins
    edges[-1] += 1e-6
    weights = torch.zeros_like(pred)
    g = torch.abs(pred.sigmoid().detach() - target)
    valid = label_weight > 0
    tot = max(valid.float().sum().item(), 1.0)
    n = 0
    for i in range(bins):
        inds = (g >= edges[i]) & (g < edges[i + 1]) & valid
        num_in_bin = inds.sum().item()
        if num_in_bin > 0:
            if momentum > 0:
                acc_sum[i] = momentum * acc_sum[i] + (1 - momentum) * num_in_bin
                weights[inds] = tot / acc_sum[i]
            else:
                weights[inds] = tot / num_in_bin
            n += 1
    if n > 0:
        weights = weights / n
    loss = TF.binary_cross_entropy_with_logits(pred, target, reduction="none")
    return (loss * weights).sum() / (tot + EPS32), acc_sum


def _ghm_inputs(seed):
    gen = make_generator(seed)
    pred = torch.randn(40, C, generator=gen, dtype=F64) * 3
    labels = torch.randint(0, C + 1, (40,), generator=gen)
    label_weight = (torch.rand(40, generator=gen) > 0.2).to(F64)
    return pred, labels, label_weight


@pytest.mark.parametrize("bins", [1, 4, 10])
@pytest.mark.parametrize("momentum", [0.0, 0.75])
def test_ghmc_matches_mmdetection_loop_over_two_calls(bins, momentum):
    loss = GHMC(bins=bins, momentum=momentum, loss_weight=2.0).train()
    acc = torch.zeros(bins)
    for seed in (40, 41):
        pred, labels, label_weight = _ghm_inputs(seed)
        expected, acc = ghmc_mmdet(pred, labels, label_weight, bins, momentum, acc)
        _close(loss(pred, labels, label_weight), 2.0 * expected)
        if momentum > 0:
            _close(loss.acc_sum.to(F64), acc.to(F64))
    assert (loss.acc_sum != 0).any() == (momentum > 0)


def test_ghmc_state_round_trip_and_eval_does_not_update():
    pred, labels, label_weight = _ghm_inputs(42)
    trained = GHMC(momentum=0.5).train()
    trained(pred, labels, label_weight)
    state = trained.state_dict()
    assert set(state) == {"acc_sum"} and state["acc_sum"].sum() > 0
    restored = GHMC(momentum=0.5)
    restored.load_state_dict(state)
    pred2, labels2, weight2 = _ghm_inputs(43)
    _close(restored(pred2, labels2, weight2), trained(pred2, labels2, weight2))
    restored.eval()
    before = restored.acc_sum.clone()
    restored(pred2, labels2, weight2)
    assert torch.equal(restored.acc_sum, before)


def test_ghmc_dense_targets_reductions_and_gradient():
    pred, labels, label_weight = _ghm_inputs(44)
    dense, full_weight = onehot(labels), label_weight[:, None].expand(-1, C)
    loss = GHMC(bins=5)
    _close(loss(pred, dense, full_weight), loss(pred, labels, label_weight=label_weight))
    weights, tot, _ = F.ghmc_weights(pred, dense, full_weight > 0, bins=5)
    bce = TF.binary_cross_entropy_with_logits(pred, dense, reduction="none")
    _close(loss(pred, labels, label_weight, reduction_override="sum"), (bce * weights).sum())
    _close(loss(pred, labels, label_weight, reduction_override="none"), bce * weights)
    ignored_avg_factor = loss(pred, labels, label_weight, avg_factor=123.0)
    _close(ignored_avg_factor, (bce * weights).sum() / (tot + EPS32))
    leaf = pred.clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss(leaf, labels, label_weight), leaf)
    _close(grad, (torch.sigmoid(pred) - dense) * weights / (tot + EPS32))


def test_ghmc_requires_label_weight_and_compiles():
    pred, labels, label_weight = _ghm_inputs(45)
    with pytest.raises(LossInputError, match="label_weight is required"):
        GHMC()(pred, labels)
    with pytest.raises(LossInputError, match="reduction_override"):
        GHMC()(pred, labels, label_weight, "sum")
    torch._dynamo.reset()
    valid = label_weight[:, None].expand(-1, C) > 0
    args = (pred.float(), onehot(labels, dtype=torch.float32), valid)
    kernel = lambda p, t, v: F.ghmc_weights(p, t, v, momentum=0.5, acc_sum=torch.ones(10))[0]  # noqa: E731
    compiled = torch.compile(kernel, fullgraph=True, backend="aot_eager")
    assert_close(compiled(*args), kernel(*args))


# -- compile -----------------------------------------------------------------------------------
def test_sigmoid_focal_compiles_with_inductor():
    pred = _logits(46, dtype=torch.float32)
    target = onehot(labels_with_background(make_generator(47)), dtype=torch.float32)
    torch._dynamo.reset()
    compiled = torch.compile(F.sigmoid_focal_loss, fullgraph=True)
    assert_close(
        compiled(pred, target, gamma=1.5, alpha=0.25),
        F.sigmoid_focal_loss(pred, target, gamma=1.5, alpha=0.25),
    )


# -- bad arguments and inputs ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: FocalLoss(gamma=-1.0), "gamma"),
        (lambda: FocalLoss(gamma=float("nan")), "gamma"),
        (lambda: FocalLoss(gamma="2"), "gamma"),
        (lambda: FocalLoss(alpha=1.5), "alpha"),
        (lambda: FocalLoss(alpha=[0.1, 0.2]), "alpha"),
        (lambda: FocalLoss(use_sigmoid=False, alpha=[0.1, -0.2]), "alpha"),
        (lambda: FocalLoss(use_sigmoid=False, activated=True), "activated"),
        (lambda: FocalLoss(ignore_index=-1), "ignore_index"),
        (lambda: CrossEntropyLoss(use_sigmoid=True, use_mask=True), "use_sigmoid"),
        (lambda: CrossEntropyLoss(label_smoothing=1.5), "label_smoothing"),
        (lambda: CrossEntropyLoss(class_weight=[[1.0, 2.0]]), "class_weight"),
        (lambda: CrossEntropyLoss(class_weight="heavy"), "class_weight"),
        (lambda: VarifocalLoss(use_sigmoid=False), "use_sigmoid"),
        (lambda: VarifocalLoss(alpha=-0.1), "alpha"),
        (lambda: VarifocalLoss(gamma=-2.0), "gamma"),
        (lambda: QualityFocalLoss(beta=-1.0), "beta"),
        (lambda: QualityFocalLoss(use_sigmoid=False), "use_sigmoid"),
        (lambda: GHMC(bins=0), "bins"),
        (lambda: GHMC(bins=2.5), "bins"),
        (lambda: GHMC(momentum=1.0), "momentum"),
        (lambda: GHMC(momentum=-0.1), "momentum"),
        (lambda: GHMC(use_sigmoid=False), "use_sigmoid"),
    ],
)
def test_bad_arguments_raise(make, match):
    with pytest.raises(LossConfigError, match=match):
        make()


@pytest.mark.parametrize(
    ("loss", "target"),
    [
        (FocalLoss(), torch.tensor([0, 1, 5, 2, 0, 1])),
        (FocalLoss(), torch.tensor([0, 1, -1, 2, 0, 1])),
        (FocalLoss(use_sigmoid=False), torch.tensor([0, 1, 4, 2, 0, 1])),
        (CrossEntropyLoss(), torch.tensor([0, 1, 4, 2, 0, 1])),
        (CrossEntropyLoss(use_sigmoid=True), torch.tensor([0, 1, 5, 2, 0, 1])),
        (QualityFocalLoss(), (torch.tensor([0, 1, 5, 2, 0, 1]), torch.ones(N, dtype=F64))),
        (GHMC(), torch.tensor([0, 1, 5, 2, 0, 1])),
    ],
    ids=["focal-high", "focal-negative", "softmax-focal", "ce", "ce-sigmoid", "qfl", "ghmc"],
)
def test_out_of_range_labels_raise(loss, target):
    with pytest.raises(LossInputError, match="class indices must lie in"):
        loss(_logits(48), target, torch.ones(N, dtype=F64))


def test_wrong_class_weight_length_names_both_counts():
    with pytest.raises(LossInputError, match="class_weight has 3 entries but pred has 4 classes"):
        CrossEntropyLoss(class_weight=[1.0, 2.0, 3.0])(_logits(), torch.zeros(N, dtype=torch.long))
    with pytest.raises(LossInputError, match="alpha has 5 entries but pred has 4 classes"):
        FocalLoss(use_sigmoid=False, alpha=[0.2] * 5)(_logits(), torch.zeros(N, dtype=torch.long))


@pytest.mark.parametrize(
    ("loss", "target"),
    [
        (FocalLoss(), torch.zeros(N, C + 1, dtype=F64)),
        (FocalLoss(), torch.zeros(N + 1, dtype=torch.long)),
        (FocalLoss(use_sigmoid=False), torch.zeros(N, C, dtype=torch.long)),
        (CrossEntropyLoss(), torch.zeros(N + 1, dtype=torch.long)),
        (VarifocalLoss(), torch.zeros(N, C + 1, dtype=F64)),
        (QualityFocalLoss(), (torch.zeros(N + 1, dtype=torch.long), torch.ones(N + 1))),
        (DistributionFocalLoss(), torch.zeros(N + 1, dtype=F64)),
        (GHMC(), torch.zeros(N, C + 1, dtype=F64)),
    ],
    ids=["focal", "focal-index", "softmax-focal", "ce", "vfl", "qfl", "dfl", "ghmc"],
)
def test_shape_mismatch_names_both_shapes(loss, target):
    first = target[0] if isinstance(target, tuple) else target
    shapes = rf"\({N}, {C}\).*{re.escape(str(tuple(first.shape)))}"
    with pytest.raises(LossInputError, match=shapes):
        loss(_logits(), target, torch.ones(N, dtype=F64))
