"""Imbalanced data: class weights from counts (given, or a datamodule's histogram), LDAM,
logit adjustment, asymmetric and Lovász losses: formulas, identity limits, bad input."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as TF
from torch.utils.data import DataLoader

import lossmix
from lossmix import functional as F
from lossmix.errors import LossConfigError, LossInputError
from lossmix.lightning import ClassCountsFromData
from lossmix.losses import (
    AsymmetricLoss,
    CrossEntropyLoss,
    FocalLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    LovaszHingeLoss,
    LovaszSoftmaxLoss,
)
from tests.lightning_models import Pairs, Regressor
from tests.losses.cases_imbalanced import COUNTS, class_balanced_weights, inverse_frequency

F64 = torch.float64


# -- class weights from counts ---------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.0, 0.9, 0.999, 0.9999])
def test_effective_number_weights_follow_cui_et_al(beta):
    weights = F.effective_number_weights(torch.tensor(COUNTS), beta=beta)
    torch.testing.assert_close(weights, class_balanced_weights(COUNTS, beta))
    assert weights.sum().item() == pytest.approx(len(COUNTS))


def test_effective_number_tends_to_inverse_frequency_and_label_histogram_counts():
    counts = torch.tensor([100.0, 10.0, 1.0])
    near_one = F.effective_number_weights(counts, beta=1 - 1e-9)
    torch.testing.assert_close(near_one, F.inverse_frequency_weights(counts), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(F.inverse_frequency_weights(counts, power=0.5), inverse_frequency(counts, 0.5))
    labels = torch.tensor([[0, 1, 1], [2, 255, 1]])
    torch.testing.assert_close(F.label_histogram(labels, 3, ignore_index=255), torch.tensor([1.0, 3.0, 1.0]))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"method": "effective_number", "counts": [10, 0, 3]}, r"count 0 for class\(es\) \[1\]"),
        ({"method": "inverse_frequency", "counts": [10, -1]}, "finite count >= 0"),
        ({"method": "effective", "counts": [1, 2]}, "Did you mean 'effective_number'"),
        ({"method": "effective_number"}, "needs counts"),
        ({"counts": [1, 2], "betta": 0.9}, "unknown key 'betta'"),
        ({"counts": [1, 2], "beta": 1.0}, "beta"),
        ({"counts": "datamodul"}, "'datamodule'"),
    ],
)
def test_bad_class_weight_specs_are_one_line_errors(spec, message):
    with pytest.raises(LossConfigError, match=message) as info:
        lossmix.build_loss({"type": "CrossEntropyLoss", "class_weight": spec})
    assert "CrossEntropyLoss" in str(info.value) and "\n" not in str(info.value)


def test_counts_of_the_wrong_length_fail_at_the_call():
    loss = CrossEntropyLoss(class_weight={"counts": [5, 3, 1]})
    with pytest.raises(LossInputError, match="class_weight has 3 entries but pred has 4 classes"):
        loss(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(LossInputError, match="class_counts has 3 entries but pred has 4 classes"):
        LDAMLoss(class_counts=[5, 3, 1])(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(LossConfigError, match=r"LogitAdjustedLoss: class_counts has count 0"):
        LogitAdjustedLoss(class_counts=[5, 0, 1])


def test_counts_from_the_datamodule_wait_then_apply():
    loss = CrossEntropyLoss(class_weight={"method": "inverse_frequency", "counts": "datamodule"})
    assert loss.needs_class_counts
    pred, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 3])
    with pytest.raises(LossInputError, match="never set"):
        loss(pred, labels)
    loss.set_class_counts(COUNTS)
    assert not loss.needs_class_counts
    expected = TF.cross_entropy(pred, labels, weight=inverse_frequency(COUNTS), reduction="none").mean()
    torch.testing.assert_close(loss(pred, labels), expected)
    with pytest.raises(LossConfigError, match="count 0"):
        LDAMLoss(class_counts="datamodule").set_class_counts([3, 0])


class Classifier(Regressor):
    def __init__(self, terms):
        super().__init__(terms=terms)
        self.net = torch.nn.Linear(4, 3)


class Labelled(L.LightningDataModule):
    def __init__(self, histogram=True):
        super().__init__()
        self.has_histogram = histogram

    def train_dataloader(self):
        pairs = Pairs(8)
        data = [{"x": pairs.x[i], "y": torch.tensor(i % 3)} for i in range(8)]
        return DataLoader(data, batch_size=4)

    def label_histogram(self):
        return [50, 20, 2]


def _fit(module, datamodule):
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)
    return trainer


def test_composite_loss_gives_the_datamodule_histogram_to_waiting_losses():
    terms = {
        "cls": {
            "type": "LDAMLoss",
            "class_counts": "datamodule",
            "s": 1.0,
            "inputs": {"pred": "pred", "target": "y"},
        },
        "bal": {
            "type": "CrossEntropyLoss",
            "class_weight": {"method": "effective_number", "beta": 0.9, "counts": "datamodule"},
            "inputs": {"pred": "pred", "target": "y"},
        },
    }
    module = Classifier(terms)
    trainer = _fit(module, Labelled())
    assert sum(isinstance(c, ClassCountsFromData) for c in trainer.callbacks) == 1
    ldam = module.loss_mix.terms["cls"].loss
    torch.testing.assert_close(ldam.margins, F.ldam_margins(torch.tensor([50.0, 20.0, 2.0])))
    torch.testing.assert_close(
        module.loss_mix.terms["bal"].loss.class_weight, class_balanced_weights([50, 20, 2], 0.9)
    )


def test_a_datamodule_without_a_histogram_is_a_clear_error():
    class NoHistogram(Labelled):
        label_histogram = None

    module = Classifier(
        {
            "cls": {
                "type": "LogitAdjustedLoss",
                "class_counts": "datamodule",
                "inputs": {"pred": "pred", "target": "y"},
            }
        }
    )
    with pytest.raises(LossConfigError, match=r"term\(s\) 'cls' take class counts from the datamodule"):
        _fit(module, NoHistogram())


# -- LDAM and logit adjustment ---------------------------------------------------------------
def test_ldam_margins_follow_the_paper():
    margins = F.ldam_margins(torch.tensor(COUNTS), max_m=0.5)
    expected = torch.tensor(COUNTS) ** -0.25
    torch.testing.assert_close(margins, expected * 0.5 / expected.max())
    pred, labels = torch.randn(6, 4, dtype=F64), torch.tensor([0, 1, 2, 3, 2, 1])
    # no margin and scale 1: plain cross-entropy
    plain = LDAMLoss(class_counts=[1, 1, 1, 1], max_m=1e-12, s=1.0, reduction="none")(pred, labels)
    torch.testing.assert_close(plain, TF.cross_entropy(pred, labels, reduction="none"))


def test_logit_adjustment_with_tau_zero_is_cross_entropy_and_balances_the_argmax():
    pred, labels = torch.randn(6, 4, dtype=F64), torch.tensor([0, 1, 2, 3, 2, 1])
    loss = LogitAdjustedLoss(class_counts=COUNTS, tau=0.0, reduction="none")
    torch.testing.assert_close(loss(pred, labels), TF.cross_entropy(pred, labels, reduction="none"))
    # equal logits: the adjusted loss is larger for the frequent class than for the rare one
    values = LogitAdjustedLoss(class_counts=COUNTS, reduction="none")(torch.zeros(2, 4), torch.tensor([0, 3]))
    assert values[0] < values[1]


def test_counts_losses_refuse_bad_targets():
    with pytest.raises(LossInputError, match="class indices"):
        LDAMLoss(class_counts=COUNTS)(torch.randn(3, 4), torch.rand(3, 4))
    with pytest.raises(LossConfigError, match="'datamodule'"):
        LDAMLoss(class_counts="data")


# -- asymmetric loss -------------------------------------------------------------------------
def test_asymmetric_loss_without_focusing_or_clip_is_bce():
    pred = torch.randn(5, 3, dtype=F64, requires_grad=True)
    target = (torch.rand(5, 3) < 0.5).to(F64)
    loss = AsymmetricLoss(gamma_pos=0.0, gamma_neg=0.0, clip=0.0, reduction="sum")(pred, target)
    bce = TF.binary_cross_entropy_with_logits(pred, target, reduction="sum")
    torch.testing.assert_close(loss, bce)
    (grad,) = torch.autograd.grad(loss, pred)
    (bce_grad,) = torch.autograd.grad(
        TF.binary_cross_entropy_with_logits(pred, target, reduction="sum"), pred
    )
    torch.testing.assert_close(grad, bce_grad)


def test_asymmetric_loss_discards_easy_negatives_and_has_finite_gradients_at_saturation():
    easy = AsymmetricLoss(reduction="none")(torch.tensor([[-10.0]]), torch.tensor([[0.0]]))
    assert easy.item() == 0.0  # p < clip: shifted to 0
    pred = torch.tensor([[40.0, -40.0]], requires_grad=True)
    value = AsymmetricLoss(gamma_pos=0.5, gamma_neg=0.5)(pred, torch.tensor([[1.0, 0.0]]))
    (grad,) = torch.autograd.grad(value, pred)
    assert torch.isfinite(grad).all()
    with pytest.raises(LossConfigError, match="clip"):
        AsymmetricLoss(clip=1.0)


# -- Lovász ----------------------------------------------------------------------------------
def test_lovasz_losses_vanish_on_perfect_predictions():
    labels = torch.tensor([[[0, 1], [2, 1]]])
    logits = TF.one_hot(labels, 3).movedim(-1, 1).to(F64) * 50
    assert LovaszSoftmaxLoss()(logits, labels).item() == pytest.approx(0.0, abs=1e-12)
    binary = torch.tensor([[1.0, 0.0, 1.0]])
    assert LovaszHingeLoss()(torch.tensor([[3.0, -3.0, 2.0]]), binary).item() == 0.0


def test_lovasz_present_classes_ignore_absent_ones_and_ignored_pixels_count_nowhere():
    probs = torch.tensor([[[0.7, 0.6], [0.2, 0.3], [0.1, 0.1]]], dtype=F64)
    labels = torch.tensor([[0, 1]])
    present = LovaszSoftmaxLoss(activate=False)(probs, labels)
    every = LovaszSoftmaxLoss(activate=False, classes="all")(probs, labels)
    assert present > every  # the absent class 2 has a small error and only dilutes 'all'
    with_ignored = torch.tensor([[0, 255]])
    alone = LovaszSoftmaxLoss(activate=False, ignore_index=255)(probs, with_ignored)
    torch.testing.assert_close(alone, LovaszSoftmaxLoss(activate=False)(probs[..., :1], labels[:, :1]))


def test_lovasz_bad_arguments_and_shapes():
    with pytest.raises(LossConfigError, match="classes"):
        LovaszSoftmaxLoss(classes="some")
    with pytest.raises(LossInputError, match="class indices"):
        LovaszSoftmaxLoss()(torch.randn(2, 3, 4), torch.rand(2, 4))
    with pytest.raises(LossInputError, match="same shape"):
        LovaszHingeLoss()(torch.randn(2, 4), torch.zeros(2, 5))


def test_focal_alpha_spec_is_refused_for_the_sigmoid_focal_loss():
    with pytest.raises(LossConfigError, match="alpha"):
        FocalLoss(alpha={"counts": COUNTS})
