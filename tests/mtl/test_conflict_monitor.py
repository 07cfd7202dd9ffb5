"""GradientConflictMonitor: cosines, magnitude similarities, the Gramian's condition number and the
shares of the summed gradient equal what torch.autograd.grad gives by hand, on the logged steps
only; and they reach the loggers at the logging points."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lossmix import LossConfigError
from lossmix.lightning import GradientConflictMonitor
from tests.aggregation_models import SharedTrunk
from tests.lightning_models import Pairs, loader, trainer

KINDS = ("grad_cosine", "grad_magnitude", "grad_condition", "grad_share")


class Steps(L.Callback):
    """What the monitor recorded at each step (``None``: nothing new)."""

    def __init__(self) -> None:
        self.steps: list[dict | None] = []
        self._last: dict = {}

    def on_train_batch_end(self, trainer, pl_module, *args):
        buffers = pl_module.term_logger().buffers
        now = {k: buffers[("train", f"#{k}")].last for k in KINDS if ("train", f"#{k}") in buffers}
        fresh = bool(now) and all(now[k] is not self._last.get(k) for k in now)
        self.steps.append(
            {k: (v.clone(), buffers[("train", f"#{k}")].keys) for k, v in now.items()} if fresh else None
        )
        self._last = now


def flat_grad(value, params):
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return torch.cat(
        [(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, params, strict=True)]
    )


@pytest.mark.parametrize("module", [None, "trunk"])
def test_conflict_statistics_equal_autograd_by_hand(module):
    model, steps = SharedTrunk(lr=0.0), Steps()
    run = trainer(max_steps=4, log_every_n_steps=50, callbacks=[GradientConflictMonitor(2, module), steps])
    run.fit(model, loader(16, 4))
    data = Pairs(16)
    params = list((model.trunk if module else model).parameters())
    for step, logged in enumerate(steps.steps):
        if step % 2:
            assert logged is None  # nothing computed between monitored steps
            continue
        rows = slice(4 * step, 4 * step + 4)
        batch = {"x": data.x[rows], "y": data.y[rows]}
        result = model.loss_mix(model(batch["x"]), model.targets(batch), step=step)
        g = [flat_grad(result.terms[t], params) for t in "ab"]
        cos = g[0] @ g[1] / (g[0].norm() * g[1].norm())
        magnitude = 2 * g[0].norm() * g[1].norm() / (g[0].norm() ** 2 + g[1].norm() ** 2)
        eig = torch.linalg.eigvalsh(torch.stack(g) @ torch.stack(g).T)
        total = g[0] + g[1]
        shares = torch.stack([g[0] @ total, g[1] @ total]) / (total @ total)
        values, keys = logged["grad_cosine"]
        assert keys == ["train/grad_cosine/a_vs_b"]
        torch.testing.assert_close(values, cos.reshape(1))
        torch.testing.assert_close(logged["grad_magnitude"][0], magnitude.reshape(1))
        torch.testing.assert_close(
            logged["grad_condition"][0], (eig[-1] / eig[0]).reshape(1), rtol=1e-3, atol=0
        )
        torch.testing.assert_close(logged["grad_share"][0], shares)
        assert logged["grad_share"][1] == ["train/grad_share/a", "train/grad_share/b"]
        assert logged["grad_share"][0].sum().item() == pytest.approx(1.0)


def test_conflicts_reach_the_loggers_at_logging_points():
    run = trainer(max_steps=4, log_every_n_steps=2, callbacks=[GradientConflictMonitor(every_n_steps=2)])
    run.fit(SharedTrunk(), loader(16, 4))
    keys = {"train/grad_cosine/a_vs_b", "train/grad_magnitude/a_vs_b", "train/grad_condition/gramian"}
    assert keys | {"train/grad_share/a", "train/grad_share/b"} <= set(run.callback_metrics)
    assert -1.0 <= float(run.callback_metrics["train/grad_cosine/a_vs_b"]) <= 1.0


@pytest.mark.parametrize(
    "kwargs, match", [({"every_n_steps": 0}, ">= 1"), ({"module": "trnk"}, "Did you mean 'trunk'")]
)
def test_bad_monitor_arguments(kwargs, match):
    with pytest.raises(LossConfigError, match=match):
        trainer(max_steps=1, callbacks=[GradientConflictMonitor(**kwargs)]).fit(SharedTrunk(), loader(8, 4))
