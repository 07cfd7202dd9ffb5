"""Register your own loss and use it from config, without touching lossmix.

Run:  python examples/custom_loss.py [--max-steps 100]

``LogCoshDiceLoss`` (Jadon 2020: log(cosh(1 − Dice))) is defined here, in user
code, registered with ``@LOSSES.register()`` and then named in a config node as
``type: LogCoshDiceLoss`` — routing, weights, normalisers, logging and the
``lossmix list`` table all work for it. A plain function registered the same way
(``soft_l1``) becomes a loss with lossmix's ``weight``/``avg_factor``/
``loss_weight`` handling.
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor

from lossmix import LOSSES
from lossmix.losses import WeightedLoss
from lossmix.losses.base import check_positive


@LOSSES.register(force=True)  # force: re-running the script in one process re-registers it
class LogCoshDiceLoss(WeightedLoss):
    """log(cosh(1 − Dice)) per sample: Dice's optimum with a smoother gradient.

    Shapes: ``pred`` (N, C, *) logits, ``target`` (N, C, *) in [0, 1]; one value per sample.
    """

    def __init__(self, *, eps: float = 1.0, reduction: str = "mean", loss_weight: float = 1.0
                 ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.eps = check_positive(self.loss_name, "eps", eps)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        prob, target = pred.sigmoid().flatten(1), target.flatten(1)
        dice = (2 * (prob * target).sum(1) + self.eps) / (prob.sum(1) + target.sum(1) + self.eps)
        return torch.log(torch.cosh(1 - dice))


@LOSSES.register(force=True)
def soft_l1(pred: Tensor, target: Tensor, *, scale: float = 1.0) -> Tensor:
    """Pseudo-Huber: scale² · (sqrt(1 + (d/scale)²) − 1)."""
    return scale**2 * (torch.sqrt(1 + ((pred - target) / scale) ** 2) - 1)


LOSS = {
    "seg": {"type": "LogCoshDiceLoss", "eps": 1.0, "loss_weight": 2.0,
            "inputs": {"pred": "mask_logits", "target": "mask"}},
    "smooth": {"type": "soft_l1", "scale": 0.5, "loss_weight": 0.1,
               "inputs": {"pred": "mask_logits", "target": "mask"}},
}


def main(argv: list[str] | None = None) -> dict[str, float]:
    # the segmentation example's model and data, with this script's loss config
    import lightning as L
    from segmentation import Segmenter, Shapes  # examples/ is the script directory
    from torch.utils.data import DataLoader

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if not args.quiet:
        print(LOSSES.describe("LogCoshDiceLoss"))
        print(LOSSES.describe("soft_l1"))
    L.seed_everything(0, verbose=False)
    model = Segmenter(LOSS)
    trainer = L.Trainer(max_steps=args.max_steps, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=not args.quiet,
                        enable_model_summary=False, log_every_n_steps=10)
    trainer.fit(model, DataLoader(Shapes(256), batch_size=16, shuffle=True),
                DataLoader(Shapes(32, seed=1), batch_size=16))
    metrics = {k: round(v.item(), 4) for k, v in trainer.callback_metrics.items()}
    if not args.quiet:
        print({k: v for k, v in metrics.items() if k.startswith("val/")})
    return metrics


if __name__ == "__main__":
    main()
