"""CompositeLoss under Lightning Fabric: the same keys through fabric.log_dict, epoch means from
fabric.call, learned weights trained, the summary; an aggregation node refused in one line."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.fabric.loggers import Logger

from lossmix import CompositeLoss, LossConfigError
from tests.loops.three_terms import MIX, STEP_KEYS, TERMS, WEIGHT_KEYS, Tagger, rows


class Collect(Logger):
    def __init__(self) -> None:
        self.metrics: list[tuple[dict[str, float], int | None]] = []

    @property
    def name(self) -> str:
        return "collect"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.append((dict(metrics), step))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


class TaggerModule(CompositeLoss, L.LightningModule):
    loss_log_every = 2

    def __init__(self, node) -> None:
        super().__init__()
        self.tagger = Tagger()
        self.configure_loss(node)

    def forward(self, features):
        return self.tagger(features)


def fabric_run(node, collect: Collect, epochs: int = 2):
    torch.manual_seed(0)
    fabric = L.Fabric(accelerator="cpu", devices=1, loggers=[collect])
    model = TaggerModule(node)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)  # the mix's learned weights included
    module, optimizer = fabric.setup(model, optimizer)
    features, labels = rows(16)
    for _ in range(epochs):
        for i in range(0, 16, 4):
            loss = model.compute_loss(module(features[i : i + 4]), {"labels": labels[i : i + 4]})
            fabric.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        fabric.call("on_train_epoch_end")
    return model


def test_fabric_logs_every_term_through_log_dict_and_trains_the_weights(capsys, tmp_path):
    collect = Collect()
    model = fabric_run(MIX, collect)
    steps = [m for m, _ in collect.metrics if "train/loss" in m]
    epochs = [m for m, _ in collect.metrics if "train/loss_epoch" in m]
    assert len(steps) == 4 and all(set(m) == STEP_KEYS | WEIGHT_KEYS for m in steps)
    assert len(epochs) == 2 and "train/loss/cls_epoch" in epochs[0]
    assert [s for m, s in collect.metrics if "train/loss" in m] == [1, 3, 5, 7]
    assert model.loss_mix.weighting.log_vars.abs().min() > 1e-4  # their gradient was applied
    model.loss_logger.finish(model.loss_mix, curves=tmp_path / "curves.png")
    out = capsys.readouterr().out
    assert "per-term summary" in out and all(t in out for t in TERMS)


def test_fabric_with_an_aggregation_node_is_refused_naming_the_adapter():
    node = {**{k: v for k, v in MIX.items() if k != "weighting"}, "aggregation": {"type": "upgrad"}}
    node["aggregation"]["module"] = "tagger"
    with pytest.raises(LossConfigError, match="plain-loop adapter") as info:
        fabric_run(node, Collect(), epochs=1)
    assert "\n" not in str(info.value)


def test_without_a_trainer_or_fabric_nothing_is_logged():
    model = TaggerModule(MIX)
    features, labels = rows(4)
    assert model.loss_logger is None
    assert model.compute_loss(model(features), {"labels": labels}).requires_grad
