"""The whole training step as one compiled graph: model, terms, the random sampler,
normalisers (a moving average too), a lazy term and the term-buffer write."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch._dynamo.utils import counters

from lossmix import LossConfigError
from lossmix.lightning.callbacks.compiled import check_compile_option
from tests.lightning_models import Regressor, loader, trainer

TERMS = {
    "reg": {"type": "L1Loss", "inputs": {"pred": "pred", "target": "y"}},
    "cls": {
        "type": "FocalLoss",
        "inputs": {"pred": "pred", "target": "label"},
        "sampler": {"type": "RandomSampler", "num": 3, "pos_fraction": 0.5},  # no seed: the global one
        "normalizer": "num_pos",
    },
    "smooth": {
        "type": "FocalLoss",
        "inputs": {"pred": "pred", "target": "label"},
        "normalizer": {"type": "num_pos", "ema": 0.9},
    },
    "lazy": {"type": "MSELoss", "every": 2, "inputs": {"pred": "pred", "target": "y"}},
}


class Labelled(Regressor):
    def training_step(self, batch, batch_idx):
        label = (batch["y"][:, 0] > 0).long()
        return self.compute_loss(self(batch["x"]), {**batch, "label": label})


def fit(compile_option, epochs: int = 3, callbacks=()) -> tuple[Labelled, dict, int]:
    """The model, its logged metrics, and how many graphs Dynamo compiled."""
    torch.manual_seed(0)
    model = Labelled(terms=TERMS, lr=0.05)
    model.loss_compile = compile_option
    run = trainer(max_epochs=epochs, log_every_n_steps=2, callbacks=list(callbacks))
    torch._dynamo.reset()
    counters.clear()
    run.fit(model, loader(48, 8))
    return model, {k: v.clone() for k, v in run.callback_metrics.items()}, counters["stats"]["unique_graphs"]


def test_the_whole_step_is_one_graph_and_matches_eager():
    eager_model, eager, _ = fit(False)
    model, compiled, graphs = fit({"backend": "aot_eager"})
    assert not counters["graph_break"]  # fullgraph=True would have raised; none recorded either
    assert 1 <= graphs <= 8  # a few variants (first step, lazy on/off, epoch start), not one per step
    assert set(compiled) == set(eager)
    for key, value in eager.items():
        torch.testing.assert_close(compiled[key], value, rtol=1e-5, atol=1e-6, msg=key)
    for a, b in zip(model.parameters(), eager_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert "training_step" not in vars(model)  # fit restored the plain method


class GraphsPerEpoch(L.Callback):
    def __init__(self) -> None:
        self.graphs: list[int] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.graphs.append(counters["stats"]["unique_graphs"])


def test_more_epochs_compile_nothing_new():
    seen = GraphsPerEpoch()
    fit({"backend": "eager"}, epochs=3, callbacks=[seen])
    assert len(seen.graphs) == 3 and seen.graphs[0] >= 1
    assert seen.graphs[1] == seen.graphs[2]  # the second epoch compiled what every later one runs


def test_a_step_that_cannot_be_one_graph_says_why():
    class Breaks(Labelled):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            print(float(loss))  # host work inside the step
            return loss

    model = Breaks(terms=TERMS, lr=0.05)
    model.loss_compile = {"backend": "eager"}
    with pytest.raises(RuntimeError, match=r"Breaks.training_step cannot be compiled as one graph"):
        trainer(max_steps=2).fit(model, loader(16, 8))
    assert "training_step" not in vars(model)


@pytest.mark.parametrize(
    "value, match",
    [
        ("yes", "loss_compile='yes' is not valid; use true, false or a mapping"),
        ({"backnd": "eager"}, "unknown torch.compile option 'backnd'. Did you mean 'backend'"),
        ({"backend": "my.module.fn"}, "backend='my.module.fn' is not a registered torch.compile backend"),
        ({"mode": "fast"}, "mode='fast' is not valid"),
        ({"fullgraph": "no"}, "fullgraph='no' is not valid"),
        (
            {"options": {"cpp.cxx": ["my-compiler"]}},
            r"'options' \(Inductor's settings\) cannot come from a config",
        ),
    ],
)
def test_bad_compile_options_are_refused(value, match):
    with pytest.raises(LossConfigError, match=match):
        check_compile_option(value)
    model = Labelled(terms=TERMS)
    model.loss_compile = value
    with pytest.raises(LossConfigError, match=match.split("loss_compile")[-1][:20]):
        trainer(max_steps=1).fit(model, loader(16, 8))


def test_off_by_default():
    assert check_compile_option(False) is None and check_compile_option(None) is None
    assert Labelled.loss_compile is False


def test_the_app_key_sets_the_module_flag_and_is_checked(tmp_path):
    from lossmix.app.runner import build
    from tests.app.test_train import TINY, compose_train

    _, model, _ = build(compose_train(tmp_path, *TINY, "lossmix.compile={backend: eager}"), overrides=[])
    assert model.loss_compile == {"backend": "eager"}
    with pytest.raises(LossConfigError, match="lossmix.compile='maybe' is not valid"):
        build(compose_train(tmp_path, *TINY, "lossmix.compile=maybe"), overrides=[])
