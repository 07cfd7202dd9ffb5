"""CUDA checks (skipped without a GPU): no host sync from lossmix in a training step; the fused
kernels equal the plain path on the device."""

from __future__ import annotations

import pytest
import torch

from lossmix import LossMix
from lossmix.lightning import TermLogger
from tests.losses.test_fused import CASES, TOL

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _step_inputs(device: str, gen: torch.Generator):
    n, c = 256, 4
    logits = torch.randn(n, c, device=device, requires_grad=True)
    scores = torch.randn(n, c + 1, device=device, requires_grad=True)  # softmax: background last
    labels = torch.randint(0, c + 1, (n,), device=device, generator=gen)
    xy = torch.rand(n, 2, device=device) * 50
    boxes = torch.cat([xy, xy + 1 + torch.rand(n, 2, device=device) * 20], -1)
    pred_boxes = (boxes + torch.randn(n, 4, device=device)).requires_grad_()
    return {"logits": logits, "scores": scores, "boxes": pred_boxes}, {
        "labels": labels,
        "box_targets": boxes,
        "pos": labels < c,
    }


TERMS = {
    "cls": {
        "type": "FocalLoss",
        "inputs": {"pred": "logits", "target": "labels"},
        "sampler": {"type": "RandomSampler", "num": 64, "pos_fraction": 0.25},
        "normalizer": {"type": "num_pos", "sync": True},
    },
    "ohem": {
        "type": "CrossEntropyLoss",
        "in_total": False,
        "inputs": {"pred": "scores", "target": "labels"},
        "sampler": {"type": "OHEMSampler", "num": 64, "pos_fraction": 0.25, "background": 4},
    },
    "reg": {
        "type": "GIoULoss",
        "inputs": {"pred": "boxes", "target": "box_targets", "weight": "pos"},
        "normalizer": "weight_sum",
    },
    "lazy": {"type": "L1Loss", "every": 2, "inputs": {"pred": "boxes", "target": "box_targets"}},
}


def test_mix_and_term_buffer_do_not_sync_the_host():
    mix = LossMix.from_config(TERMS).cuda()
    logger = TermLogger()
    gen = torch.Generator(device="cuda").manual_seed(0)
    outputs, batch = _step_inputs("cuda", gen)
    mix(outputs, batch, step=0)  # warm-up: lazy generator creation, kernels loaded
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(4):
            outputs, batch = _step_inputs("cuda", gen)
            result = mix(outputs, batch, step=step)
            logger.record("train", None, result, 256)
            result.total.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(result.total).item()


def _new_family_inputs(gen: torch.Generator):
    n, c = 192, 4
    labels = torch.randint(0, c + 1, (n,), device="cuda", generator=gen)
    xy = torch.rand(n, 2, device="cuda", generator=gen) * 50
    boxes = torch.cat([xy, xy + 1 + torch.rand(n, 2, device="cuda", generator=gen) * 20], -1)
    outputs = {
        "scores": torch.randn(n, c + 1, device="cuda", generator=gen, requires_grad=True),
        "seesaw": torch.randn(n, c + 2, device="cuda", generator=gen, requires_grad=True),
        "heat": torch.rand(2, c, 8, 8, device="cuda", generator=gen).clamp(0.01, 0.99).requires_grad_(),
        "seg": torch.randn(2, c, 8, 8, device="cuda", generator=gen, requires_grad=True),
    }
    batch = {
        "labels": labels,
        "gt_inds": torch.randint(1, 6, (n,), device="cuda", generator=gen),
        "ious": torch.rand(n, device="cuda", generator=gen) * 0.6,
        "boxes": boxes,
        "heatmap": torch.rand(2, c, 8, 8, device="cuda", generator=gen) ** 4,
        "seg_labels": torch.randint(0, c, (2, 8, 8), device="cuda", generator=gen),
    }
    return outputs, batch


NEW_FAMILY_TERMS = {
    "libra": {
        "type": "CrossEntropyLoss",
        "inputs": {"pred": "scores", "target": "labels", "gt_inds": "gt_inds", "ious": "ious"},
        "sampler": {
            "type": "CombinedSampler",
            "num": 64,
            "pos_fraction": 0.25,
            "background": 4,
            "pos_sampler": {"type": "InstanceBalancedPosSampler"},
            "neg_sampler": {"type": "IoUBalancedNegSampler", "floor_thr": 0.1, "floor_fraction": 0.5},
        },
    },
    "pisa": {
        "type": "CrossEntropyLoss",
        "inputs": {"pred": "scores", "target": "labels", "boxes": "boxes"},
        "sampler": {"type": "ScoreHLRSampler", "num": 64, "pos_fraction": 0.25, "background": 4},
    },
    "seesaw": {"type": "SeesawLoss", "num_classes": 4, "inputs": {"pred": "seesaw", "target": "labels"}},
    "eqlv2": {"type": "EQLV2Loss", "num_classes": 4, "inputs": {"pred": "scores", "target": "labels"}},
    "heat": {"type": "GaussianFocalLoss", "inputs": {"pred": "heat", "target": "heatmap"}},
    "lovasz": {
        "type": "LovaszSoftmaxLoss",
        "per_image": True,
        "inputs": {"pred": "seg", "target": "seg_labels"},
    },
    "ldam": {
        "type": "LDAMLoss",
        "class_counts": [50, 20, 9, 4, 100],
        "inputs": {"pred": "scores", "target": "labels"},
    },
}


def test_new_samplers_and_losses_do_not_sync_the_host():
    mix = LossMix.from_config(NEW_FAMILY_TERMS).cuda().train()
    gen = torch.Generator(device="cuda").manual_seed(0)
    outputs, batch = _new_family_inputs(gen)
    mix(outputs, batch, step=0)  # warm-up: generators created, kernels loaded
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(3):
            outputs, batch = _new_family_inputs(gen)
            result = mix(outputs, batch, step=step)
            result.total.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(result.total).item()


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_fused_equals_plain_on_cuda(case, reduction):
    pred, target = case.inputs(torch.float32, torch.Generator().manual_seed(0), 1.0)
    pred, target = pred.cuda(), target.cuda()
    results = []
    for fused in (False, True):
        x = pred.detach().requires_grad_()
        out = case.make(fused=fused, reduction=reduction).cuda()(x, target)
        cotangent = torch.linspace(-1, 2, out.numel(), device="cuda").view(out.shape)
        results.append((out.detach(), *torch.autograd.grad(out, x, cotangent)))
    for fused, plain in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(fused, plain, **TOL[torch.float32])


FUSED_TERMS = {
    **TERMS,
    "cls": {**TERMS["cls"], "fused": True},
    "reg": {**TERMS["reg"], "fused": True},
    "ce": {
        "type": "CrossEntropyLoss",
        "fused": True,
        "label_smoothing": 0.1,
        "class_weight": [1, 2, 1, 1, 0.5],
        "inputs": {"pred": "scores", "target": "labels"},
    },
}


def test_a_training_step_with_fused_terms_samplers_and_normalisers_does_not_sync_the_host():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 13).cuda()
    mix = LossMix.from_config(FUSED_TERMS).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    logger = TermLogger()
    features = torch.randn(256, 8, device="cuda")

    def step(number: int):
        _, batch = _step_inputs("cuda", gen)
        out = model(features)
        outputs = {"logits": out[:, :4], "scores": out[:, 4:9], "boxes": batch["box_targets"] + out[:, 9:]}
        result = mix(outputs, batch, step=number)
        logger.record("train", None, result, 256)
        optimizer.zero_grad(set_to_none=True)
        result.total.backward()
        optimizer.step()
        return result

    gen = torch.Generator(device="cuda").manual_seed(0)
    step(0)  # warm-up: kernels loaded, optimizer state created
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for number in range(1, 5):
            result = step(number)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(result.total).item()
