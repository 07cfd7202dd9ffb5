"""CUDA checks (skipped without a GPU): no host sync from lossmix in a training step."""

from __future__ import annotations

import pytest
import torch

from lossmix import LossMix
from lossmix.lightning import TermLogger

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _step_inputs(device: str, gen: torch.Generator):
    n, c = 256, 4
    logits = torch.randn(n, c, device=device, requires_grad=True)
    labels = torch.randint(0, c + 1, (n,), device=device, generator=gen)
    xy = torch.rand(n, 2, device=device) * 50
    boxes = torch.cat([xy, xy + 1 + torch.rand(n, 2, device=device) * 20], -1)
    pred_boxes = (boxes + torch.randn(n, 4, device=device)).requires_grad_()
    return {"logits": logits, "boxes": pred_boxes}, {
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
        "inputs": {"pred": "logits", "target": "labels"},
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
