"""The cheap scalarizers (FAMO, RLW, GLS, IMTL-L, log-loss balancing): each total's gradient
against its published objective, FAMO's post-step update against ``torch.optim.Adam``, and FAMO
driven by the Lightning hook once per optimizer step."""

from __future__ import annotations

import pytest
import torch

from lossmix import LossConfigError, LossMix
from lossmix.mtl.scalarizers import FAMO, IMTLL, RandomLossWeighting
from tests.aggregation_models import SharedTrunk
from tests.lightning_models import loader, trainer


def mix_of(weighting: dict) -> LossMix:
    terms = {
        "a": {"type": "MSELoss", "inputs": {"pred": "p", "target": "y"}},
        "b": {"type": "L1Loss", "loss_weight": 3.0, "inputs": {"pred": "q", "target": "y"}},
    }
    return LossMix.from_config({**terms, "weighting": weighting})


def inputs(seed: int = 0) -> tuple[dict, dict]:
    gen = torch.Generator().manual_seed(seed)
    p = torch.randn(6, generator=gen, dtype=torch.float64, requires_grad=True)
    q = torch.randn(6, generator=gen, dtype=torch.float64, requires_grad=True)
    return {"p": p, "q": q}, {"y": 4 * torch.randn(6, generator=gen, dtype=torch.float64)}


def task_losses(out: dict, batch: dict) -> torch.Tensor:
    return torch.stack([((out["p"] - batch["y"]) ** 2).mean(), 3.0 * (out["q"] - batch["y"]).abs().mean()])


def grads(value: torch.Tensor, out: dict) -> torch.Tensor:
    return torch.cat(torch.autograd.grad(value, [out["p"], out["q"]], retain_graph=True))


@pytest.mark.parametrize(
    "weighting, objective",
    [
        ({"type": "gls"}, lambda x: x.prod() ** 0.5),
        ({"type": "log_loss"}, lambda x: torch.log(x + 1e-8).sum()),
        ({"type": "famo"}, lambda x: (0.5 * torch.log(x + 1e-8)).sum() / (0.5 / (x + 1e-8)).sum().detach()),
    ],
)
def test_the_gradient_is_the_published_objective_s(weighting, objective):
    mix = mix_of(weighting)
    out, batch = inputs()
    result = mix(out, batch, step=0)
    torch.testing.assert_close(grads(result.total, out), grads(objective(task_losses(out, batch)), out))
    if weighting["type"] == "gls":  # its value too
        torch.testing.assert_close(result.total, objective(task_losses(out, batch)))


def test_imtl_l_learns_one_scale_per_task():
    mix = mix_of({"type": "imtl_l"})
    assert isinstance(mix.weighting, IMTLL)
    with torch.no_grad():
        mix.weighting.log_scales.copy_(torch.tensor([0.5, -1.0]))
    out, batch = inputs()
    result = mix(out, batch, step=0)
    s = mix.weighting.log_scales.double()
    losses = task_losses(out, batch)
    torch.testing.assert_close(result.total, (torch.exp(s) * losses - s).sum().float().to(result.total.dtype))
    result.total.backward()
    torch.testing.assert_close(mix.weighting.log_scales.grad.double(), torch.exp(s) * losses.detach() - 1)


def test_rlw_draws_softmax_normal_weights_on_every_rank_alike():
    mix, twin = mix_of({"type": "rlw", "seed": 3}), mix_of({"type": "rlw", "seed": 3})
    out, batch = inputs()
    expected_gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        result, again = mix(out, batch, step=0), twin(out, batch, step=0)
        expected = torch.softmax(torch.randn(2, generator=expected_gen), 0)
        torch.testing.assert_close(result.weights["a"], expected[0].double())
        torch.testing.assert_close(result.weights["b"], 3.0 * expected[1].double())
        assert result.weights["a"] == again.weights["a"]
    assert mix(out, batch).weights["a"] == pytest.approx(0.5)  # evaluation: 1/K
    resumed = mix_of({"type": "rlw", "seed": 3})
    resumed.load_state_dict(mix.state_dict())
    assert resumed(out, batch, step=0).weights["a"] == mix(out, batch, step=0).weights["a"]


def test_famo_post_step_is_an_adam_step_on_the_logits():
    famo = FAMO(["a", "b", "c"], lr=0.1, weight_decay=0.01)
    logits = torch.nn.Parameter(torch.zeros(3))
    adam = torch.optim.Adam([logits], lr=0.1, weight_decay=0.01)
    for before, after in [([4.0, 1.0, 2.0], [3.0, 0.9, 2.1]), ([3.0, 0.9, 2.1], [2.0, 0.85, 1.5])]:
        famo(torch.tensor(before), training=True)
        famo.post_step(torch.tensor(after))
        delta = torch.log(torch.tensor(before) + 1e-8) - torch.log(torch.tensor(after) + 1e-8)
        (logits.grad,) = torch.autograd.grad(torch.softmax(logits, 0), logits, grad_outputs=delta)
        adam.step()
        torch.testing.assert_close(famo.logits, logits.detach())
    factors, _ = famo(torch.tensor([1.0, 2.0, 3.0]), training=False)
    z = torch.softmax(logits.detach(), 0)
    expected = z / torch.tensor([1.0, 2.0, 3.0]) / (z / torch.tensor([1.0, 2.0, 3.0])).sum()
    torch.testing.assert_close(factors, expected, rtol=1e-5, atol=1e-7)
    assert factors.sum().item() == pytest.approx(1.0)


class CountPostSteps(SharedTrunk):
    """Records each post-step re-evaluation and the step's own task losses."""

    def __init__(self) -> None:
        super().__init__(weighting={"type": "famo", "lr": 0.05})
        self.loss_preflight = False  # count the real steps only
        self.step_losses: list[torch.Tensor] = []
        self.after: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if torch.is_grad_enabled():  # not the re-evaluation, which runs without gradients
            self.step_losses.append(self.last_loss_result.task_losses.clone())
        return loss

    def reevaluate_tasks(self, batch, batch_idx):
        kept = self.last_loss_result
        losses = super().reevaluate_tasks(batch, batch_idx)
        assert self.last_loss_result is kept  # the re-evaluation stores no result
        self.after.append(losses)
        return losses


def test_famo_learns_after_each_optimizer_step_in_lightning():
    model = CountPostSteps()
    run = trainer(max_steps=4, accumulate_grad_batches=2, log_every_n_steps=1)
    run.fit(model, loader(32, 4))
    assert len(model.after) == 4 and len(model.step_losses) == 8  # once per optimizer step
    for before, after in zip(model.step_losses[1::2], model.after, strict=True):
        assert not torch.equal(before, after)  # the same batch, after the step
    famo = model.loss_mix.weighting
    assert famo.logits.abs().sum() > 0 and int(famo.adam_steps) == 4
    assert {"train/weight/a", "train/weight/b"} <= set(run.callback_metrics)


@pytest.mark.parametrize(
    "node, match",
    [
        ({"type": "famo", "lr": -1.0}, "famo: lr=-1.0 is not valid"),
        ({"type": "famo", "min_losses": [0.0]}, "min_losses needs one value per task"),
        ({"type": "log_loss", "eps": 0.0}, "log_loss: eps=0.0 is not valid"),
        ({"type": "rlw", "seed": -1}, "seed=-1 is not valid"),
        ({"type": "famos"}, "weighting: Unknown weighting 'famos'.*'famo'"),
    ],
)
def test_bad_scalarizer_nodes(node, match):
    with pytest.raises(LossConfigError, match=match):
        mix_of(node)


def test_rlw_is_a_weighting_of_its_own_kind():
    assert isinstance(mix_of({"type": "rlw"}).weighting, RandomLossWeighting)
