"""The ``aggregation:`` node inside Lightning's automatic optimization: the same parameters as an
independent manual loop, with gradient accumulation, clipping and AMP (bf16 autocast, and fp16
with a loss scaler whose first steps overflow); the plain-sum identity; checkpoints; bad input."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins import MixedPrecision

from lossmix import LossConfigError, LossInputError
from lossmix.lightning import TaskWeightingUpdates
from lossmix.mtl import functional as F
from tests.aggregation_models import SharedTrunk, reference_step
from tests.lightning_models import loader, trainer

STEPS, WINDOW, BATCH = 3, 2, 4


def node(method: str, mode: str, **kwargs) -> dict:
    where = {"module": "trunk"} if mode == "shared" else {"input": "features"}
    return {"type": method, "over": mode, **where, **kwargs}


def fit(model: SharedTrunk, precision: str | None, **kwargs) -> L.Trainer:
    extra: dict = {}
    if precision == "16-mixed":  # CPU fp16 autocast needs an explicit CPU GradScaler
        extra["plugins"] = [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))]
    elif precision is not None:
        extra["precision"] = precision
    run = trainer(max_steps=STEPS, accumulate_grad_batches=WINDOW, **extra, **kwargs)
    run.fit(model, loader(STEPS * WINDOW * BATCH, BATCH))
    return run


@pytest.mark.parametrize(
    "method, mode, aggregate",
    [
        ("upgrad", "shared", F.upgrad),
        ("pcgrad", "shared", lambda j: F.pcgrad(j, generator=torch.Generator().manual_seed(0))),
        ("mgda", "representation", F.mgda_weights),
    ],
)
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_automatic_optimization_equals_a_manual_loop(method, mode, aggregate, precision):
    model = fit(SharedTrunk(node(method, mode)), precision, gradient_clip_val=0.5).lightning_module
    reference = SharedTrunk(node(method, mode))
    optimizer = torch.optim.SGD(reference.parameters(), lr=reference.lr)
    scaler = torch.amp.GradScaler("cpu") if precision == "16-mixed" else None
    dtype = torch.float16 if precision == "16-mixed" else torch.bfloat16
    batches = list(loader(STEPS * WINDOW * BATCH, BATCH))
    for step in range(STEPS):
        window = batches[step * WINDOW : (step + 1) * WINDOW]
        reference_step(
            reference,
            reference.loss_mix,
            window,
            mode=mode,
            aggregate=aggregate,
            optimizer=optimizer,
            scaler=scaler,
            autocast=dtype,
            clip=0.5,
        )
    for (name, got), want in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.isfinite(got).all(), name
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5, msg=name)
    assert not torch.equal(model.trunk[0].weight, SharedTrunk().trunk[0].weight)  # it trained
    if scaler is not None:  # the first steps overflowed at 2**16 and were skipped by both
        assert scaler.get_scale() < 2.0**16


@pytest.mark.parametrize("mode", ["shared", "representation"])
def test_the_sum_aggregator_is_the_plain_backward(mode):
    plain = fit(SharedTrunk(), None).lightning_module
    summed = fit(SharedTrunk(node("sum", mode)), None).lightning_module
    for a, b in zip(plain.parameters(), summed.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-6)


def test_aggregation_installs_the_callback_and_resumes_from_a_checkpoint(tmp_path):
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    run = fit(SharedTrunk(node("gradvac", "shared")), None, enable_checkpointing=True, callbacks=[ckpt])
    assert sum(isinstance(c, TaskWeightingUpdates) for c in run.callbacks) == 1
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)
    targets = state["state_dict"]["loss_mix.aggregation.aggregator.targets"]
    assert targets.abs().sum() > 0  # the running cosine targets moved and were saved
    resumed = SharedTrunk(node("gradvac", "shared"))
    resumed.load_state_dict(state["state_dict"])
    torch.testing.assert_close(resumed.loss_mix.aggregation.aggregator.targets, targets)


def test_a_wrong_module_name_fails_before_training_and_lists_the_submodules():
    with pytest.raises(
        LossConfigError,
        match=r"module 'trnk' is not in SharedTrunk\. Did you mean 'trunk'.*"
        r"Submodules with trainable parameters: trunk, trunk\.0, (trunk\.\d, )?head_a, head_b\.",
    ):
        fit(SharedTrunk(node("upgrad", "shared", module="trnk")), None)


class Detached(SharedTrunk):
    def forward(self, x):
        out = super().forward(x)
        return {**out, "features": out["features"].detach()}


def test_a_representation_that_does_not_require_grad_is_refused():
    with pytest.raises(LossInputError, match="input 'features' must be the shared representation"):
        fit(Detached(node("mgda", "representation")), None)


class NoFeatures(SharedTrunk):
    def forward(self, x):
        out = super().forward(x)
        return {k: v for k, v in out.items() if k != "features"}


def test_a_missing_representation_names_the_keys():
    with pytest.raises(LossInputError, match="input 'features' is not in the outputs or the batch.*a, b"):
        fit(NoFeatures(node("mgda", "representation")), None)


class Regularised(SharedTrunk):
    """Adds a weight penalty on the trunk (and the heads) outside the loss mix."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        penalty = self.trunk[0].weight.pow(2).sum() + self.head_a.weight.pow(2).sum()
        return loss + 0.1 * penalty


class Grads(L.Callback):
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads = {n: p.grad.clone() for n, p in pl_module.named_parameters()}


@pytest.mark.parametrize("mode", ["shared", "representation"])
def test_what_else_the_loss_holds_keeps_its_own_gradient(mode):
    grads = Grads()
    model = Regularised(node("upgrad", mode), lr=0.0)
    trainer(max_steps=1, callbacks=[grads]).fit(model, loader(BATCH, BATCH))
    batch = next(iter(loader(BATCH, BATCH)))
    out = model(batch["x"])
    result = model.loss_mix(out, model.targets(batch), step=0)
    trunk = list(model.trunk.parameters())
    if mode == "shared":
        rows = [
            torch.cat([g.flatten() for g in torch.autograd.grad(result.terms[t], trunk, retain_graph=True)])
            for t in "ab"
        ]
        update = F.upgrad(torch.stack(rows))[: trunk[0].numel()].view_as(trunk[0])
    else:
        z = out["features"]
        rows = torch.stack([torch.autograd.grad(result.terms[t], z, retain_graph=True)[0] for t in "ab"])
        weights = F.upgrad_weights(rows.flatten(1) @ rows.flatten(1).T)
        grad_z = torch.einsum("k,k...->...", weights, rows)
        update = torch.autograd.grad(z, trunk[0], grad_outputs=grad_z, retain_graph=True)[0]
    torch.testing.assert_close(grads.grads["trunk.0.weight"], update + 0.2 * trunk[0].detach())
    head = torch.autograd.grad(result.total, model.head_a.weight)[0] + 0.2 * model.head_a.weight.detach()
    torch.testing.assert_close(grads.grads["head_a.weight"], head)


def test_a_weighting_and_an_aggregation_work_together():
    model = SharedTrunk(node("mgda", "representation"), weighting={"type": "uncertainty"})
    before = model.loss_mix.weighting.log_vars.detach().clone()
    run = fit(model, None)
    assert not torch.equal(model.loss_mix.weighting.log_vars.detach(), before)  # learned by the optimizer
    assert {"train/weight/a", "train/weight/b", "train/loss/weighting"} <= set(run.callback_metrics)
