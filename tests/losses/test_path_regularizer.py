"""StyleGAN2's path-length regulariser against MMagic's ``gen_path_regularizer`` (written out
here), as a lazy term, and its running mean across a checkpoint resume."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from torch import nn

from lossmix import LossMix
from lossmix.errors import LossConfigError, LossInputError
from lossmix.losses import GeneratorPathRegularizer
from lossmix.train import build

F64 = torch.float64


class TinyStyleGenerator(nn.Module):
    """z (4) → w (4) repeated over 3 layers (w+) → a (1, 4, 4) image: MMagic's interface."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.mapping = nn.Linear(4, 4)
        self.synthesis = nn.Linear(12, 16)

    def forward(self, z, num_batches=0, return_latents=False):
        if z is None:
            z = torch.randn(num_batches, 4, dtype=self.mapping.weight.dtype)
        w = torch.tanh(self.mapping(z))[:, None].expand(-1, 3, -1)
        img = torch.tanh(self.synthesis(w.flatten(1))).view(-1, 1, 4, 4)
        return {"fake_img": img, "latent": w} if return_latents else img


def mmagic_path(generator, num_batches, mean_path_length, pl_batch_shrink=1, decay=0.01):
    """MMagic's gen_path_regularizer (weight 1, no AMP, no sync)."""
    if pl_batch_shrink > 1:
        num_batches = max(1, num_batches // pl_batch_shrink)
    out = generator(None, num_batches=num_batches, return_latents=True)
    fake_img, latents = out["fake_img"], out["latent"]
    noise = torch.randn_like(fake_img) / math.sqrt(fake_img.shape[2] * fake_img.shape[3])
    (grad,) = torch.autograd.grad(
        (fake_img * noise).sum(), latents, grad_outputs=torch.ones(()).to(fake_img), create_graph=True
    )
    path_lengths = torch.sqrt(grad.pow(2).sum(2).mean(1))
    path_mean = mean_path_length + decay * (path_lengths.mean() - mean_path_length)
    return (path_lengths - path_mean).pow(2).mean(), path_mean.detach()


def test_matches_mmagic_and_moves_its_running_mean():
    gen = TinyStyleGenerator().double()
    loss = GeneratorPathRegularizer(pl_batch_shrink=2, decay=0.1)
    mean = torch.tensor(0.0, dtype=F64)
    for step in range(3):
        torch.manual_seed(10 + step)
        value = loss(gen, 8)
        torch.manual_seed(10 + step)
        expected, mean = mmagic_path(gen, 8, mean, pl_batch_shrink=2, decay=0.1)
        torch.testing.assert_close(value, expected)
        torch.testing.assert_close(loss.mean_path_length.double(), mean, rtol=1e-6, atol=1e-7)
        grads = torch.autograd.grad(value, list(gen.parameters()))
        expected_grads = torch.autograd.grad(expected, list(gen.parameters()))
        for got, want in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(got, want)
    assert loss.mean_path_length.item() > 0


def test_gradcheck_float64_in_the_generators_weights():
    gen = TinyStyleGenerator().double()
    loss = GeneratorPathRegularizer(decay=0.5)
    loss.eval()  # leave the running mean alone between gradcheck's evaluations
    weight = gen.mapping.weight.detach().clone().requires_grad_()

    def penalty(w):
        torch.manual_seed(0)
        call = lambda z, **kw: torch.func.functional_call(gen, {"mapping.weight": w}, (z,), kw)  # noqa: E731
        return loss(call, 3)

    assert torch.autograd.gradcheck(penalty, (weight,), eps=1e-6, atol=1e-5)


def test_how_many_samples_and_the_empty_batch():
    gen = TinyStyleGenerator()
    assert GeneratorPathRegularizer(pl_batch_shrink=2, reduction="none")(gen, 5).shape == (2,)
    assert GeneratorPathRegularizer(pl_batch_shrink=8, reduction="none")(gen, 5).shape == (1,)
    assert GeneratorPathRegularizer(pl_batch_size=3, reduction="none")(gen, 5).shape == (3,)
    loss = GeneratorPathRegularizer()
    value = loss(gen, 0)
    assert value.item() == 0.0 and loss.mean_path_length.item() == 0.0
    grads = torch.autograd.grad(value, list(gen.parameters()), allow_unused=True)
    assert any(g is not None for g in grads) and all(torch.all(g == 0) for g in grads if g is not None)


def test_finite_at_extreme_weights():
    gen = TinyStyleGenerator()
    with torch.no_grad():
        gen.mapping.weight.mul_(1e4)
        gen.synthesis.weight.mul_(1e4)
    value = GeneratorPathRegularizer()(gen, 4)
    grads = torch.autograd.grad(value, list(gen.parameters()))
    assert torch.isfinite(value) and all(torch.isfinite(g).all() for g in grads)


def test_eval_mode_leaves_the_running_mean():
    loss = GeneratorPathRegularizer()
    loss.eval()
    loss(TinyStyleGenerator(), 4)
    assert loss.mean_path_length.item() == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pl_batch_shrink": 0}, "pl_batch_shrink=0 is not valid; pl_batch_shrink must be an integer >= 1"),
        ({"pl_batch_shrink": 1.5}, "pl_batch_shrink=1.5 is not valid"),
        ({"decay": 2.0}, r"decay=2.0 is not valid; decay must be a number in \[0, 1\]"),
        ({"pl_batch_size": 0}, "pl_batch_size=0 is not valid"),
    ],
)
def test_bad_arguments_are_one_line_errors(kwargs, message):
    with pytest.raises(LossConfigError, match=message):
        GeneratorPathRegularizer(**kwargs)


def test_bad_calls_say_what_to_route():
    loss = GeneratorPathRegularizer()
    with pytest.raises(LossInputError, match="num_batches=tensor"):
        loss(TinyStyleGenerator(), torch.tensor(4))
    with pytest.raises(LossInputError, match="generator is a str"):
        loss("gen", 4)
    with pytest.raises(LossInputError, match=r"must return \{'fake_img': images, 'latent': latents\}"):
        loss(lambda z, num_batches, return_latents: torch.zeros(num_batches, 2), 4)


def test_a_lazy_term_every_four_steps():
    gen = TinyStyleGenerator()
    mix = LossMix.from_config(
        {
            "pl": {
                "type": "mmagic.GeneratorPathRegularizerComps",
                "loss_weight": 2.0,
                "every": 4,
                "data_info": {"generator": "gen", "num_batches": "batch_size"},
            }
        }
    )
    outputs = {"gen": gen, "batch_size": 4}
    on = mix(outputs, step=4)
    moved = mix.terms["pl"].loss.mean_path_length.clone()
    off = mix(outputs, step=5)
    assert on.weights["pl"] == 8.0 and off.weights["pl"] == 0.0  # StyleGAN2's g_reg_weight
    assert on.terms["pl"].item() > 0 and off.terms["pl"].item() == 0.0
    assert torch.equal(mix.terms["pl"].loss.mean_path_length, moved) and moved.item() > 0
    # the skipped step's zero reaches the generator (DDP sees its parameters; the zero is on its device)
    grads = torch.autograd.grad(off.total, list(gen.parameters()))
    assert all(torch.all(g == 0) for g in grads)


# -- the running mean across a checkpoint resume (experiment=stylegan2, in process) -------------
@pytest.fixture
def stylegan2_cfg(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="lossmix.conf", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=stylegan2",
                f"paths.output_dir={tmp_path}",
                "data.num_train=64",
                "data.batch_size=8",
            ],
        )
    yield cfg
    GlobalHydra.instance().clear()


class RecordPathMean(pl.Callback):
    def __init__(self) -> None:
        self.at_start: float | None = None

    def on_train_start(self, trainer, pl_module):
        self.at_start = buffer_of(pl_module).item()


def buffer_of(model) -> torch.Tensor:
    return model.loss_mix.find_term("gen/pl").loss.mean_path_length


def _trainer(tmp_path, max_steps, callbacks):
    return pl.Trainer(
        max_steps=max_steps,
        enable_checkpointing=any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks),
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=str(tmp_path),
    )


@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
def test_the_running_mean_survives_a_checkpoint_resume(stylegan2_cfg, tmp_path):
    data, model, _ = build(stylegan2_cfg, overrides=[])
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _trainer(tmp_path, 10, [checkpoint]).fit(model, datamodule=data)  # 5 batches: pl at batches 0 and 4
    saved = buffer_of(model).item()
    assert saved > 0
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert state["state_dict"]["loss_mix.groups.gen.pl.loss.mean_path_length"].item() == saved

    data, fresh, _ = build(stylegan2_cfg, overrides=[])
    assert buffer_of(fresh).item() == 0.0
    record = RecordPathMean()
    _trainer(tmp_path, 18, [record]).fit(
        fresh, datamodule=data, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt")
    )
    assert record.at_start == saved  # restored before training went on
    assert buffer_of(fresh).item() != saved  # and it kept moving (pl ran again at batch 8)
