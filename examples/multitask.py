"""Multi-task learning with dynamic task weighting: two tasks of very different scales.

Run:  python examples/multitask.py [--weighting uncertainty|dwa|gradnorm|famo|none]
      [--aggregation none|pcgrad|upgrad|aligned_mtl] [--epochs 12]

A shared trunk feeds a regression head whose target is in the hundreds (its MSE
starts near 1.5·10⁵) and a 3-class classification head (its cross-entropy starts near
1). With fixed weights the regression term swamps the gradient; with
``weighting: {type: uncertainty}`` the learned log-variances rescale both terms
(the regression factor ½e^{−s} falls from 0.5 to about 0.026 in 12 epochs), DWA re-balances them by
their epoch-to-epoch rate of decrease, and GradNorm equalises their gradient
norms on the trunk's last layer. ``LossCurves`` writes every term's curve and
the effective weights to ``<run dir>/loss_curves.png``. The model and data are
``lossmix.demo.TwoTasks`` and ``lossmix.demo.SyntheticTasks``; the same run from Hydra
configs is ``python -m lossmix.train experiment=multitask``. ``--aggregation`` balances the
two tasks' gradients instead of (or as well as) their losses: PCGrad and UPGrad on the
trunk's parameters, Aligned-MTL on the trunk's output (``over: representation``).
"""

from __future__ import annotations

import argparse

import lightning as L

from lossmix.demo import SyntheticTasks, TwoTasks
from lossmix.lightning import LossCurves, TermLogger

WEIGHTINGS = {
    "uncertainty": {"type": "uncertainty"},
    "dwa": {"type": "dwa", "temperature": 2.0},
    "gradnorm": {"type": "gradnorm", "shared": "trunk.2", "alpha": 1.5},
    "famo": {"type": "famo"},
    "none": None,
}
AGGREGATIONS = {
    "pcgrad": {"type": "pcgrad", "over": "shared", "module": "trunk"},
    "upgrad": {"type": "upgrad", "over": "shared", "module": "trunk"},
    "aligned_mtl": {"type": "aligned_mtl", "over": "representation", "input": "features"},
    "none": None,
}


def loss_config(weighting: str, aggregation: str = "none") -> dict:
    terms = {
        "depth": {"type": "MSELoss", "inputs": {"pred": "depth", "target": "depth_gt"}},
        "cls": {"type": "CrossEntropyLoss", "inputs": {"pred": "logits", "target": "label"}},
    }
    if WEIGHTINGS[weighting] is not None:
        terms["weighting"] = WEIGHTINGS[weighting]
    if AGGREGATIONS[aggregation] is not None:
        terms["aggregation"] = AGGREGATIONS[aggregation]
    return terms


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weighting", choices=list(WEIGHTINGS), default="uncertainty")
    parser.add_argument("--aggregation", choices=list(AGGREGATIONS), default="none")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--out", default="runs/multitask")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    L.seed_everything(0, verbose=False)
    model = TwoTasks(loss_config(args.weighting, args.aggregation))
    curves = LossCurves()
    # log_raw: each term before its weight too (val/raw/cls is the cross-entropy itself;
    # val/loss/cls is the weighted term, whose scale the weighting changes)
    terms = TermLogger(log_raw=True)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        callbacks=[curves, terms],
        default_root_dir=args.out,
        log_every_n_steps=4,
        logger=L.pytorch.loggers.CSVLogger(args.out, name=args.weighting),
        enable_checkpointing=False,
        enable_progress_bar=not args.quiet,
        enable_model_summary=not args.quiet,
    )
    trainer.fit(model, datamodule=SyntheticTasks(num_train=512, num_val=128, batch_size=64))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    first = terms.history.get("train/raw/depth")
    if first:
        metrics["first_step/raw/depth"] = first[0][1]
    if not args.quiet:
        shown = ("/weight/", "_epoch", "val/raw/", "first_step")
        for key in sorted(k for k in metrics if any(s in k for s in shown)):
            print(f"{key:32s} {metrics[key]:.4g}")
        print(f"curves: {curves.path}")
    metrics["curves"] = str(curves.path) if curves.path else ""
    return metrics


if __name__ == "__main__":
    main()
