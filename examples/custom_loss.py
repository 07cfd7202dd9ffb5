"""Register your own loss and use it from config, without touching lossmix.

Run:  python examples/custom_loss.py [--max-steps 100]

The losses live in a module of "user code", ``lossmix/demo/custom_losses.py``
(any importable module of yours works the same way)::

    from lossmix import LOSSES
    from lossmix.losses import BaseLoss

    @LOSSES.register()
    class LogCoshDiceLoss(BaseLoss):          # log(cosh(1 − Dice)), Jadon 2020
        def __init__(self, *, eps=1.0, reduction="mean", loss_weight=1.0): ...
        def elementwise(self, pred, target): ...  # one value per sample

    @LOSSES.register()
    def soft_l1(pred, target, *, scale=1.0): ...  # a plain element-wise function

Importing that module registers them; a config node then says
``type: LogCoshDiceLoss`` and routing, weights, normalisers, logging and the
``lossmix list`` table all work for it. A registered function becomes a loss with
lossmix's ``weight``/``avg_factor``/``loss_weight`` handling. The Hydra app imports
such modules from the config's ``lossmix.imports`` list:
``python -m lossmix.train experiment=custom``.
"""

from __future__ import annotations

import argparse

import lightning as L

from lossmix import LOSSES
from lossmix.demo import Segmenter, SyntheticShapes
from lossmix.demo.custom_losses import LogCoshDiceLoss, soft_l1  # registers both

__all__ = ["LOSS", "LogCoshDiceLoss", "main", "soft_l1"]

LOSS = {
    "seg": {
        "type": "LogCoshDiceLoss",
        "eps": 1.0,
        "loss_weight": 2.0,
        "inputs": {"pred": "mask_logits", "target": "masks"},
    },
    "smooth": {
        "type": "soft_l1",
        "scale": 0.5,
        "loss_weight": 0.1,
        "inputs": {"pred": "mask_logits", "target": "masks"},
    },
}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if not args.quiet:
        print(LOSSES.describe("LogCoshDiceLoss"))
        print(LOSSES.describe("soft_l1"))
    L.seed_everything(0, verbose=False)
    # the segmentation example's model and data, with this script's loss config
    model = Segmenter(LOSS)
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
    trainer.fit(model, datamodule=SyntheticShapes(num_train=256, num_val=32, batch_size=16))
    metrics = {k: round(v.item(), 4) for k, v in trainer.callback_metrics.items()}
    if not args.quiet:
        print({k: v for k, v in metrics.items() if k.startswith("val/")})
    return metrics


if __name__ == "__main__":
    main()
