"""LossCLI: LightningCLI with per-term overrides that merge, one line per bad term, the summary."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import yaml

pytest.importorskip("jsonargparse", reason="the cli extra (pip install lossmix[cli]) is missing")

from lossmix import CompositeLoss
from lossmix.lightning.loss_cli import LossCLI
from tests.loops.three_terms import MIX, STEP_KEYS, TERMS, Tagger, rows


class CliTagger(CompositeLoss, L.LightningModule):
    def __init__(self, loss: dict, lr: float = 0.5) -> None:
        super().__init__()
        self.tagger = Tagger()
        self.lr = lr
        self.configure_loss(loss)

    def forward(self, features):
        return self.tagger(features)

    def training_step(self, batch, batch_idx):
        features, labels = batch
        return self.compute_loss(self(features), {"labels": labels})

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def train_dataloader(self):
        features, labels = rows(16)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(features, labels), batch_size=4)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": {"loss": MIX}}))
    return str(path)


def trainer_args(tmp_path):
    return [
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_epochs=2",
        "--trainer.log_every_n_steps=2",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.accelerator=cpu",
    ]


def test_a_term_override_merges_and_fit_prints_the_summary(config, tmp_path, capsys):
    before = torch.zeros(3)
    cli = LossCLI(
        CliTagger,
        args=[
            "fit",
            "--config",
            config,
            "--model.loss.smooth.label_smoothing",
            "0.2",
            *trainer_args(tmp_path),
        ],
        save_config_callback=None,
    )
    smooth = cli.model.loss_mix.find_term("smooth")
    assert smooth.loss.label_smoothing == 0.2 and smooth.weight == 0.5  # merged, loss_weight kept
    assert STEP_KEYS <= set(cli.trainer.callback_metrics)
    assert not torch.allclose(cli.model.loss_mix.weighting.log_vars.detach(), before)
    out = capsys.readouterr().out
    assert "per-term summary" in out and all(t in out for t in TERMS)
    assert any(p.name == "loss_curves.png" for p in tmp_path.rglob("*.png"))


def test_every_bad_term_is_one_line_and_exit_code_2(config, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        LossCLI(
            CliTagger,
            args=["fit", "--config", config, "--model.loss.cls.gama=2", "--model.loss.smooth.bogus=1"],
            save_config_callback=None,
        )
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2, lines
    assert "'cls'" in lines[0] and "gama" in lines[0] and "'smooth'" in lines[1] and "bogus" in lines[1]


def test_an_unknown_term_is_named(config, capsys):
    with pytest.raises(SystemExit):
        LossCLI(
            CliTagger, args=["fit", "--config", config, "--model.loss.clz.gamma=2"], save_config_callback=None
        )
    err = capsys.readouterr().err
    assert "term 'clz'" in err and "cls, smooth, weighted" in err
