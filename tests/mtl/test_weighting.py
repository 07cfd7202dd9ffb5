"""Dynamic task weighting: each update against its published formula, bad input."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lossmix import LossConfigError, LossMix
from lossmix.lightning import TaskWeightingUpdates
from lossmix.mtl.weighting import DynamicWeightAverage, GradNorm, UncertaintyWeighting
from tests.lightning_models import Regressor, loader, regression_terms, trainer


def two_tasks(weighting: dict | None = None) -> dict:
    terms = {
        "a": {"type": "L1Loss", "loss_weight": 2.0, "inputs": {"pred": "p", "target": "y"}},
        "b": {"type": "MSELoss", "inputs": {"pred": "q", "target": "y"}},
        "aux": {"type": "L1Loss", "in_total": False, "inputs": {"pred": "q", "target": "y"}},
    }
    return {**terms, "weighting": weighting} if weighting else terms


def outputs(seed: int = 0) -> tuple[dict, dict]:
    gen = torch.Generator().manual_seed(seed)
    p = torch.randn(6, generator=gen, requires_grad=True)
    q = torch.randn(6, generator=gen, requires_grad=True)
    return {"p": p, "q": q}, {"y": torch.randn(6, generator=gen)}


def test_uncertainty_total_and_gradients_follow_kendall():
    mix = LossMix.from_config(two_tasks({"type": "uncertainty", "init": 0.3}))
    assert isinstance(mix.weighting, UncertaintyWeighting)
    assert mix.weighting.tasks == ["a", "b"]  # aux is not in the total
    assert "weighting.log_vars" in dict(mix.named_parameters())
    with torch.no_grad():
        mix.weighting.log_vars.copy_(torch.tensor([0.3, -0.7]))
    out, batch = outputs()
    result = mix(out, batch, step=0)
    s = mix.weighting.log_vars.detach()
    la = 2.0 * (out["p"] - batch["y"]).abs().mean()
    lb = ((out["q"] - batch["y"]) ** 2).mean()
    expected = 0.5 * torch.exp(-s[0]) * la + 0.5 * torch.exp(-s[1]) * lb + 0.5 * s.sum()
    torch.testing.assert_close(result.total, expected)
    torch.testing.assert_close(result.terms["weighting"], 0.5 * s.sum())
    torch.testing.assert_close(result.weights["a"], 2.0 * 0.5 * torch.exp(-s[0]))
    assert result.dynamic == ("a", "b")
    result.total.backward()
    # d/ds_i [½e^{-s_i} L_i + ½ s_i] = −½e^{-s_i} L_i + ½
    torch.testing.assert_close(
        mix.weighting.log_vars.grad,
        torch.stack(
            [-0.5 * torch.exp(-s[0]) * la.detach() + 0.5, -0.5 * torch.exp(-s[1]) * lb.detach() + 0.5]
        ),
    )


def test_dwa_lambdas_follow_the_epoch_history():
    mix = LossMix.from_config(two_tasks({"type": "dwa", "temperature": 2.0}))
    dwa = mix.weighting
    assert isinstance(dwa, DynamicWeightAverage)
    epochs = [[(4.0, 1.0), (2.0, 3.0)], [(2.0, 1.0), (2.0, 1.0)], [(1.0, 1.5), (1.0, 0.5)]]
    means = []
    for epoch in epochs:
        for la, lb in epoch:
            _, regulariser = dwa(torch.tensor([la, lb]), training=True)
            assert regulariser is None
        dwa(torch.tensor([100.0, 100.0]), training=False)  # validation does not count
        means.append(torch.tensor(epoch, dtype=torch.float64).mean(0))
        dwa.epoch_end()
        seen = len(means)
        if seen < 2:
            expected = torch.ones(2)
        else:
            w = means[-1] / means[-2]
            expected = (2 * torch.softmax(w / 2.0, dim=0)).float()
        torch.testing.assert_close(dwa.lambdas, expected)
    assert int(dwa.epochs_seen) == 3
    # the factors multiply the weighted task losses
    out, batch = outputs()
    result = mix(out, batch, step=0)
    la = 2.0 * (out["p"] - batch["y"]).abs().mean()
    torch.testing.assert_close(result.terms["a"], la * dwa.lambdas[0])
    assert "weighting" not in result.terms


def test_gradnorm_loss_targets_and_renormalisation():
    shared = torch.nn.Linear(3, 3)
    heads = torch.nn.Linear(3, 2)
    model = torch.nn.ModuleDict({"shared": shared, "heads": heads})
    mix = LossMix.from_config(two_tasks({"type": "gradnorm", "shared": "shared", "alpha": 1.5}))
    gradnorm = mix.weighting
    assert isinstance(gradnorm, GradNorm)
    gradnorm.bind(model)
    x, y = torch.randn(6, 3, generator=torch.Generator().manual_seed(1)), torch.zeros(6)

    def run(scale: float):
        h = heads(shared(x))
        return mix({"p": h[:, 0] * scale, "q": h[:, 1]}, {"y": y}, step=0)

    with torch.no_grad():
        gradnorm.weights.copy_(torch.tensor([0.5, 1.5]))
    first = run(1.0)  # sets L(0)
    l0 = torch.stack([first.terms["a"] / 0.5, first.terms["b"] / 1.5]).detach()
    result = run(3.0)
    w = gradnorm.weights.detach()
    losses = torch.stack([result.terms["a"] / w[0], result.terms["b"] / w[1]])
    norms = torch.stack(
        [
            torch.cat(
                [g.flatten() for g in torch.autograd.grad(loss, list(shared.parameters()), retain_graph=True)]
            ).norm()
            for loss in losses
        ]
    )
    big_g = w * norms
    rate = (losses.detach() / l0) / (losses.detach() / l0).mean()
    target = big_g.mean() * rate**1.5
    torch.testing.assert_close(result.terms["weighting"], (big_g - target).abs().sum())
    # the task terms use w detached; L_grad reaches w only
    gradnorm.weights.grad = None
    result.terms["weighting"].backward(retain_graph=True)
    torch.testing.assert_close(gradnorm.weights.grad, torch.sign(big_g - target) * norms)
    gradnorm.weights.grad = None
    (result.terms["a"] + result.terms["b"]).backward()
    assert gradnorm.weights.grad is None
    with torch.no_grad():
        gradnorm.weights.copy_(torch.tensor([0.2, 0.6]))
    gradnorm.step_end()
    torch.testing.assert_close(gradnorm.weights.detach(), torch.tensor([0.5, 1.5]))


class Heads(Regressor):
    """A shared layer and two heads of different scales; Adam so weights move."""

    def __init__(self, weighting: dict, lr: float = 0.05) -> None:
        terms = {
            "small": {"type": "MSELoss", "inputs": {"pred": "small", "target": "y"}},
            "large": {"type": "MSELoss", "inputs": {"pred": "large", "target": "big"}},
            "weighting": weighting,
        }
        super().__init__(terms=terms, lr=lr)
        self.net = torch.nn.Linear(4, 2)

    def forward(self, x):
        h = self.net(x)
        return {"small": h, "large": h * 10}

    def training_step(self, batch, batch_idx):
        return self.compute_loss(self(batch["x"]), {**batch, "big": batch["y"] * 10})


@pytest.mark.parametrize(
    "weighting", [{"type": "uncertainty"}, {"type": "dwa"}, {"type": "gradnorm", "shared": "net"}]
)
def test_weightings_train_in_lightning_and_log_effective_weights(weighting):
    model = Heads(weighting)
    before = {k: v.clone() for k, v in model.loss_mix.weighting.state_dict().items()}
    run = trainer(max_epochs=3, log_every_n_steps=1)
    run.fit(model, loader(8, 4))
    assert sum(isinstance(c, TaskWeightingUpdates) for c in run.callbacks) == 1
    after = model.loss_mix.weighting.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "the optimizer or the epoch hook must move the weighting's state"
    metrics = run.callback_metrics
    assert {"train/weight/small", "train/weight/large"} <= set(metrics)
    if weighting["type"] == "gradnorm":
        assert model.loss_mix.weighting.weights.sum().item() == pytest.approx(2.0, rel=1e-6)


@pytest.mark.parametrize(
    "node, match",
    [
        ({"type": "dwa", "temperature": 0}, "temperature=0 is not valid; temperature must be a number > 0"),
        ({"type": "dwa", "temperature": -1.0}, "must be a number > 0"),
        ({"type": "dwa", "temperature": "abc"}, "temperature='abc' is not valid"),
        ({"type": "uncertainty", "innit": 0.5}, "unknown argument 'innit'.*'init'"),
        ({"type": "gradnorm", "shared": "trunk", "alpha": -1}, "alpha=-1 is not valid"),
        ({"type": "gradnorm"}, "needs 'shared'"),
        ({"type": "uncertainy"}, "weighting: Unknown weighting 'uncertainy'.*uncertainty"),
        ({"type": "L1Loss", "inputs": {"pred": "p", "target": "y"}}, "reserved"),
        ({"type": "dwa", "tau": 2}, "dwa: .*tau"),
    ],
)
def test_bad_weighting_configs(node, match):
    with pytest.raises(LossConfigError, match=match):
        LossMix.from_config(two_tasks(node))


def test_a_term_named_weighting_is_rejected():
    from lossmix import Term
    from lossmix.losses import L1Loss

    with pytest.raises(LossConfigError, match="'weighting' is reserved"):
        LossMix({"weighting": Term("weighting", L1Loss())})


def test_weighting_needs_a_flat_mix():
    node = {"g": regression_terms(2), "weighting": {"type": "uncertainty"}}
    with pytest.raises(LossConfigError, match="flat mix"):
        LossMix.from_config(node)


def test_gradnorm_with_a_missing_shared_layer_fails_before_training():
    model = Heads({"type": "gradnorm", "shared": "nte"})
    with pytest.raises(LossConfigError, match="'nte' is not in Heads. Did you mean 'net'"):
        trainer(max_steps=1).fit(model, loader(8, 4))


def test_learned_weights_reach_the_optimizer_through_the_module():
    model = Heads({"type": "uncertainty"})
    params = {id(p) for p in model.parameters()}
    assert id(model.loss_mix.weighting.log_vars) in params
    assert isinstance(model, L.LightningModule)
