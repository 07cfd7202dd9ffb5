"""A user's own Hydra app with lossmix's front end.

    python examples/own_app/train.py                       # train; CSV, curves, summary
    python examples/own_app/train.py loss.cls.gamma=1.5    # change a term
    python examples/own_app/train.py loss/reg=huber        # this app's own option
    python examples/own_app/train.py -m loss.cls.gamma=1.0,2.0   # a sweep

Errors in the config are one ``Error: ...`` line before anything trains; the run writes
``csv/metrics.csv``, ``loss_curves.png`` and ``checkpoints/last.ckpt`` to its Hydra run
directory and prints the per-term summary.
"""

from __future__ import annotations

import lossmix
from lossmix.app.runner import fit, hydra_app

# The config may build classes of this package (model, data): granted in code, never by a
# config file.
lossmix.allow_targets("my_app")


@hydra_app(config_path="conf", config_name="config")
def main(cfg):  # type: ignore[no-untyped-def]
    return fit(cfg)


if __name__ == "__main__":
    main()
