"""The Gramian engine of ``over: shared``: the Linear Gramian kernel against formed gradients; the
engine's step equal (float64, 1e-10) to the Jacobian path for every Gramian method, over graphs
with convolutions, batch norm, in-place ops, a module called twice and regularisers; the
Jacobian path where the engine cannot be exact (tied weights, accumulation, engine: jacobian);
the same optimizer steps inside Lightning; bad nodes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lossmix import LossConfigError, LossMix
from lossmix.mtl import functional as F
from lossmix.mtl.aggregators import AGGREGATORS
from lossmix.mtl.gramian_engine import linear_gramian
from tests.aggregation_models import SharedTrunk
from tests.lightning_models import loader, trainer

DT = torch.float64
GRAMIAN_METHODS = [n for n in AGGREGATORS.names() if AGGREGATORS.get(n).has_gramian_form()]


@pytest.mark.parametrize(
    "rows, width_in, width_out", [(6, 40, 40), (50, 3, 4)], ids=["activations", "formed"]
)
@pytest.mark.parametrize("weight, bias", [(True, True), (True, False), (False, True)])
def test_linear_gramian_equals_the_formed_gradients(rows, width_in, width_out, weight, bias):
    a, g = torch.randn(2, rows, width_in, dtype=DT), torch.randn(3, 2, rows, width_out, dtype=DT)
    flat_a, flat_g = a.reshape(-1, width_in), g.reshape(3, -1, width_out)
    parts = [[(gi.T @ flat_a).flatten()] * weight + [gi.sum(0)] * bias for gi in flat_g]
    jacobian = torch.stack([torch.cat(p) for p in parts])
    torch.testing.assert_close(linear_gramian(a, g, weight=weight, bias=bias), jacobian @ jacobian.T)


class Net(nn.Module):
    """Conv + batch norm + in-place ReLU + Linear trunk, applied ``calls`` times; three heads."""

    def __init__(self, calls: int = 1, tied: bool = False) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(inplace=True), nn.Flatten(),
            nn.Linear(48, 8), nn.Tanh(), nn.Linear(8, 8),
        )  # fmt: skip
        self.heads = nn.ModuleList(nn.Linear(8, 1) for _ in range(3))
        self.calls, self.tied = calls, tied
        self.to(DT)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = sum(self.trunk(x + i) for i in range(self.calls))
        out = {f"p{i}": head(h)[:, 0] * (i + 1) for i, head in enumerate(self.heads)}
        if self.tied:  # a head that reads a trunk weight directly
            out["p0"] = out["p0"] + (h @ self.trunk[6].weight).sum(1)
        return out


def mix_for(method: str, engine: str) -> LossMix:
    node: dict = {f"t{i}": {"type": "MSELoss", "inputs": {"pred": f"p{i}", "target": "y"}} for i in range(3)}
    node["aggregation"] = {"type": method, "over": "shared", "module": "trunk", "engine": engine}
    return LossMix.from_config(node)


def grads_after(method: str, engine: str, *, steps: int = 2, regulariser: bool = False, **net_args):
    net, mix = Net(**net_args), mix_for(method, engine)
    mix.aggregation.bind(net)
    torch.manual_seed(2)
    x, y = torch.randn(5, 1, 6, 6, dtype=DT), torch.randn(5, dtype=DT)
    for step in range(steps):  # stateful methods (gradvac, pcgrad's generator) see two steps
        net.zero_grad()
        result = mix(net(x), {"y": y}, step=step)
        if regulariser:  # reaches the trunk's parameters directly, besides the tasks
            total = result.total + 0.1 * net.trunk[4].weight.square().sum()
            mix.aggregation.backward(total, mix.task_terms(result))
        else:
            mix.backward(result)
    return [p.grad.clone() for p in net.parameters()], mix.aggregation.last_route


@pytest.mark.parametrize("method", GRAMIAN_METHODS)
def test_the_engine_equals_the_jacobian_path(method):
    want, route = grads_after(method, "jacobian")
    got, engine_route = grads_after(method, "auto")
    assert (route, engine_route) == ("jacobian", "gramian")
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    "case", [{"calls": 2}, {"regulariser": True}], ids=["module-called-twice", "regulariser-on-the-trunk"]
)
def test_the_engine_is_exact_on_other_graphs(case):
    want, _ = grads_after("upgrad", "jacobian", **case)
    got, route = grads_after("upgrad", "gramian", **case)
    assert route == "gramian"
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-10, rtol=0)


def test_a_weight_tied_outside_its_module_takes_the_jacobian_path_with_a_warning():
    want, _ = grads_after("upgrad", "jacobian", tied=True)
    with pytest.warns(UserWarning, match="aggregation: the Gramian engine cannot account for module 'trunk'"):
        got, route = grads_after("upgrad", "auto", tied=True)
    assert route == "jacobian"
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-10, rtol=0)


def test_the_engine_gramian_is_the_jacobians():
    net, mix = Net(calls=2), mix_for("mgda", "auto")
    mix.aggregation.bind(net)
    result = mix(net(torch.randn(4, 1, 6, 6, dtype=DT)), {"y": torch.randn(4, dtype=DT)}, step=0)
    tasks = [list(mix.task_terms(result)[t]) for t in mix.aggregation.tasks]
    ones = [[torch.ones((), dtype=DT) for _ in group] for group in tasks]
    engine = mix.aggregation._gramian_engine
    gramian = engine.gramian(engine.task_gradients(tasks, ones), 3)
    params = list(net.trunk.parameters())
    jacobian = torch.stack(
        [
            torch.cat([g.flatten() for g in torch.autograd.grad(t[0], params, retain_graph=True)])
            for t in tasks
        ]
    )
    torch.testing.assert_close(gramian, F.gramian(jacobian))


def test_lightning_takes_the_same_steps_with_either_engine():
    params = []
    for engine in ("gramian", "jacobian"):
        node = {"type": "upgrad", "over": "shared", "module": "trunk", "engine": engine}
        model = SharedTrunk(node, dtype=DT)
        trainer(max_steps=4, gradient_clip_val=0.5).fit(model, loader(16, 4))
        params.append([p.detach().clone() for p in model.parameters()])
        assert model.loss_mix.aggregation.last_route == engine
    for g, w in zip(*params, strict=True):
        torch.testing.assert_close(g, w, atol=1e-10, rtol=0)
    assert not torch.equal(params[0][0], SharedTrunk(dtype=DT).trunk[0].weight)


def test_accumulation_takes_the_jacobian_path():
    model = SharedTrunk({"type": "upgrad", "over": "shared", "module": "trunk"}, dtype=DT)
    trainer(max_steps=2, accumulate_grad_batches=2).fit(model, loader(16, 4))
    assert model.loss_mix.aggregation.last_route == "jacobian"


@pytest.mark.parametrize(
    "node, message",
    [
        ({"type": "graddrop", "engine": "gramian"}, "graddrop has no Gramian form, so engine: gramian"),
        ({"type": "upgrad", "engine": "fast"}, "engine"),
        (
            {"type": "upgrad", "over": "representation", "input": "features", "engine": "gramian"},
            "over: representation has one route. Remove engine: gramian.",
        ),
    ],
)
def test_bad_engine_nodes_are_refused(node, message):
    where = {} if "over" in node else {"over": "shared", "module": "trunk"}
    with pytest.raises(LossConfigError, match=message):
        SharedTrunk({**where, **node})
