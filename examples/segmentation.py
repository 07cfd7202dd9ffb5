"""Segmentation with Dice + BCE on synthetic shapes, every term logged on its own.

Run:  python examples/segmentation.py [--max-steps 200] [--dice-weight 1.0]

The loss is plain data: a Dice term (lossmix's ``DiceLoss``) and a BCE term (any
``torch.nn`` loss through ``_target_``), composed by ``CompositeLoss``. The model
and data are ``lossmix.demo.Segmenter`` and ``lossmix.demo.SyntheticShapes``; the
same run from Hydra configs is ``python -m lossmix.train experiment=segmentation``.
"""

from __future__ import annotations

import argparse

import lightning as L

from lossmix.demo import Segmenter, SyntheticShapes


def loss_config(dice_weight: float = 1.0) -> dict:
    return {
        "dice": {
            "type": "DiceLoss",
            "loss_weight": dice_weight,
            "empty_target": "zero",
            "inputs": {"pred": "mask_logits", "target": "masks"},
        },
        "bce": {
            "_target_": "torch.nn.BCEWithLogitsLoss",
            "loss_weight": 1.0,
            "inputs": {"pred": "mask_logits", "target": "masks"},
        },
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--dice-weight", type=float, default=1.0)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    L.seed_everything(0, verbose=False)
    model = Segmenter(loss_config(args.dice_weight))
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
    trainer.fit(model, datamodule=SyntheticShapes(num_train=args.samples, num_val=64, batch_size=16))
    metrics = {k: round(v.item(), 4) for k, v in trainer.callback_metrics.items()}
    if not args.quiet:
        print({k: v for k, v in metrics.items() if k.startswith("val/")})
    return metrics


if __name__ == "__main__":
    main()
