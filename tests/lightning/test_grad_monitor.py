"""TermGradientMonitor: per-term gradient norms equal torch.autograd.grad by hand."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lossmix import LossConfigError
from lossmix.lightning import TermGradientMonitor
from tests.lightning_models import Pairs, Regressor, loader, trainer


class Deep(Regressor):
    def __init__(self) -> None:
        super().__init__(lr=0.0)
        self.backbone = torch.nn.Linear(4, 4)
        self.net = torch.nn.Linear(4, 2)

    def forward(self, x):
        return {"pred": self.net(torch.tanh(self.backbone(x)))}


class Steps(L.Callback):
    """The norms recorded at each step (``None``: nothing new recorded)."""

    def __init__(self):
        self.buffers, self._last = [], None

    def on_train_batch_end(self, trainer, pl_module, *args):
        buffer = pl_module.term_logger().buffers.get(("train", "#grad_norm"))
        last = None if buffer is None else buffer.last
        self.buffers.append(None if last is None or last is self._last else last.clone())
        self._last = last


@pytest.mark.parametrize("module", [None, "backbone"])
def test_gradient_norms_equal_autograd_by_hand(module):
    model = Deep()
    steps = Steps()
    monitor = TermGradientMonitor(every_n_steps=2, module=module)
    run = trainer(max_steps=4, log_every_n_steps=50, callbacks=[monitor, steps])
    run.fit(model, loader(16, 4))
    # lr=0: the parameters never move, so the norms can be recomputed for any step
    data = Pairs(16)
    params = list((model.backbone if module else model).parameters())
    for step, logged in enumerate(steps.buffers):
        if step % 2:
            assert logged is None  # nothing computed on the other steps
            continue
        rows = slice(4 * step, 4 * step + 4)
        pred = model(data.x[rows])["pred"]
        y = data.y[rows]
        terms = [0.5 * (pred - y).abs().mean(), 1.5 * ((pred - y) ** 2).mean()]
        expected = torch.stack(
            [
                torch.cat([g.flatten() for g in torch.autograd.grad(t, params, retain_graph=True)]).norm()
                for t in terms
            ]
        )
        torch.testing.assert_close(logged, expected)


def test_norms_are_logged_at_logging_points():
    run = trainer(max_steps=4, log_every_n_steps=2, callbacks=[TermGradientMonitor(every_n_steps=2)])
    run.fit(Deep(), loader(16, 4))
    assert {"train/grad_norm/t0", "train/grad_norm/t1"} <= set(run.callback_metrics)


@pytest.mark.parametrize(
    "kwargs, match", [({"every_n_steps": 0}, ">= 1"), ({"module": "backbon"}, "Did you mean 'backbone'")]
)
def test_bad_monitor_arguments(kwargs, match):
    with pytest.raises(LossConfigError, match=match):
        trainer(max_steps=1, callbacks=[TermGradientMonitor(**kwargs)]).fit(Deep(), loader(8, 4))
