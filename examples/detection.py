"""Dense detection with a sampled focal term, GIoU and centerness — the loss as plain data.

Run:  python examples/detection.py [--max-steps 300] [--gamma 2.0] [--sampler random|ohem|none]

The same three terms the training app composes from Hydra configs
(``python -m lossmix.train``), written here as a dict: focal classification over
every location (optionally sampled: 64 locations per batch, a quarter positives,
MMDetection's arithmetic), GIoU on the positive locations and a centerness BCE
(any ``torch.nn`` loss through ``_target_``), each normalised by a named count.
The model and data are ``lossmix.demo.DenseDetector`` / ``SyntheticBoxes``.
"""

from __future__ import annotations

import argparse

import lightning as L

from lossmix.demo import DenseDetector, SyntheticBoxes

SAMPLERS = {
    "random": {"type": "RandomSampler", "num": 64, "pos_fraction": 0.25},
    "ohem": {"type": "OHEMSampler", "num": 64, "pos_fraction": 0.25},
    "none": None,
}


def loss_config(gamma: float = 2.0, sampler: str = "none") -> dict:
    sampled = SAMPLERS[sampler] is not None
    return {
        "cls": {
            "type": "FocalLoss",
            "gamma": gamma,
            "alpha": 0.25,
            "inputs": {"pred": "cls_logits", "target": "labels"},
            "sampler": SAMPLERS[sampler],
            "normalizer": "num_sampled" if sampled else "num_pos",
        },
        "reg": {
            "type": "GIoULoss",
            "loss_weight": 1.0,
            "inputs": {"pred": "boxes", "target": "box_targets", "weight": "pos_mask"},
            "normalizer": {"type": "weight_sum", "min": 1.0},
        },
        "ctr": {
            "_target_": "torch.nn.BCEWithLogitsLoss",
            "inputs": {"pred": "centerness", "target": "centerness_targets", "weight": "pos_mask"},
            "normalizer": {"type": "weight_sum", "min": 1.0},
        },
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--gamma", type=float, default=2.0)
    parser.add_argument("--sampler", choices=list(SAMPLERS), default="none")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    L.seed_everything(0, verbose=False)
    model = DenseDetector(loss_config(args.gamma, args.sampler))
    data = SyntheticBoxes(num_train=args.samples, num_val=max(args.samples // 4, 8))
    trainer = L.Trainer(
        max_steps=args.max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=not args.quiet,
        enable_model_summary=False,
        log_every_n_steps=10,
    )
    trainer.fit(model, datamodule=data)
    metrics = {k: round(v.item(), 4) for k, v in trainer.callback_metrics.items()}
    if not args.quiet:
        print({k: v for k, v in metrics.items() if k.startswith("val/")})
    return metrics


if __name__ == "__main__":
    main()
