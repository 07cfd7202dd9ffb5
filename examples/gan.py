"""A GAN with manual optimization: ``gen`` and ``disc`` groups, lazy R1 and DiscShift.

Run:  python examples/gan.py [--max-steps 400]

The generator maps noise to 2-D points; the data is a ring of 8 Gaussians. The
discriminator's group holds StyleGAN2's recipe: the non-saturating logistic loss,
an R1 penalty computed every 16 steps with its weight multiplied by 16
automatically (``every: 16``), and PGGAN's drift penalty (``DiscShiftLoss``,
default weight 0.1). Each player's terms are logged under
``train/loss/gen/...`` and ``train/loss/disc/...``. The model and data are
``lossmix.demo.ToyGAN`` and ``lossmix.demo.SyntheticRing``; the same run from Hydra
configs is ``python -m lossmix.train experiment=gan``.
"""

from __future__ import annotations

import argparse

import lightning as L

from lossmix.demo import SyntheticRing, ToyGAN

LOSS = {
    "gen": {
        "adv": {
            "type": "GANLoss",
            "gan_type": "wgan-logistic-ns",
            "inputs": {"pred": "fake_score", "target_is_real": True, "is_disc": False},
        },
    },
    "disc": {
        "real": {
            "type": "GANLoss",
            "gan_type": "wgan-logistic-ns",
            "inputs": {"pred": "real_score", "target_is_real": True, "is_disc": True},
        },
        "fake": {
            "type": "GANLoss",
            "gan_type": "wgan-logistic-ns",
            "inputs": {"pred": "fake_score", "target_is_real": False, "is_disc": True},
        },
        "r1": {
            "type": "R1GradientPenalty",
            "norm_mode": "HWC",
            "loss_weight": 5.0,
            "every": 16,
            "inputs": {"discriminator": "disc", "real_data": "real"},
        },
        "shift": {"type": "DiscShiftLoss", "inputs": {"pred": "real_score"}},
    },
}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    L.seed_everything(0, verbose=False)
    model = ToyGAN(LOSS, reg_interval=LOSS["disc"]["r1"]["every"])
    # manual optimization: max_steps counts optimizer steps, two (gen, disc) per batch
    trainer = L.Trainer(
        max_steps=2 * args.max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=not args.quiet,
        log_every_n_steps=16,
    )
    trainer.fit(model, datamodule=SyntheticRing(num_train=64 * args.max_steps, batch_size=64))
    metrics = {k: round(v.item(), 4) for k, v in trainer.callback_metrics.items()}
    if not args.quiet:
        print(metrics)
    return metrics


if __name__ == "__main__":
    main()
