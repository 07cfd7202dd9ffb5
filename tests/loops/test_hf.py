"""The Hugging Face Trainer adapter: the 3-term mix trains (learned weights included), per-term
logs at the Trainer's logging steps, the summary table, exact gradient accumulation."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the hf extra (pip install lossmix[hf]) is missing")

from lossmix import LossConfigError, LossMix  # noqa: E402
from lossmix.loops.hf import LossMixTrainer  # noqa: E402
from tests.loops.three_terms import MIX, STEP_KEYS, TERMS, WEIGHT_KEYS, Tagger, rows  # noqa: E402


class Rows(torch.utils.data.Dataset):
    def __init__(self, n: int = 16) -> None:
        self.features, self.labels = rows(n)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"features": self.features[i], "labels": self.labels[i]}


def arguments(tmp_path, **kwargs):
    base = {
        "output_dir": str(tmp_path),
        "use_cpu": True,
        "report_to": [],
        "save_strategy": "no",
        "disable_tqdm": True,
        "seed": 0,
        "learning_rate": 0.05,
    }
    return transformers.TrainingArguments(**{**base, **kwargs})


def test_trainer_trains_the_mix_logs_every_term_and_prints_the_summary(tmp_path, capsys):
    torch.manual_seed(0)
    model, mix = Tagger(), LossMix.from_config(MIX)
    before = mix.weighting.log_vars.detach().clone()
    trainer = LossMixTrainer(
        model=model,
        args=arguments(tmp_path, per_device_train_batch_size=4, num_train_epochs=2, logging_steps=2),
        train_dataset=Rows(),
        eval_dataset=Rows(8),
        loss_mix=mix,
    )
    trainer.train()
    assert not torch.allclose(mix.weighting.log_vars.detach(), before)  # the learned weights trained
    assert model.loss_mix is mix and "loss_mix.weighting.log_vars" in model.state_dict()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all(STEP_KEYS | WEIGHT_KEYS <= set(entry) for entry in logged)
    epochs = [entry for entry in trainer.state.log_history if "train/loss/cls_epoch" in entry]
    assert len(epochs) == 2
    out = capsys.readouterr().out
    assert "per-term summary" in out and all(t in out for t in TERMS)
    assert (tmp_path / "loss_curves.png").is_file()
    trainer.evaluate()
    assert {"val/loss", *(f"val/loss/{t}" for t in TERMS)} <= set(trainer.state.log_history[-1])


def gradients(tmp_path, batch: int, accumulation: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model, mix = Tagger(), LossMix.from_config(MIX)
    seen: dict[str, torch.Tensor] = {}

    class Capture(transformers.TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            seen.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

    trainer = LossMixTrainer(
        model=model,
        args=arguments(
            tmp_path,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            max_steps=1,
            max_grad_norm=0.0,
        ),
        train_dataset=Rows(16),
        loss_mix=mix,
        callbacks=[Capture()],
    )
    trainer.train()
    return seen


def test_accumulation_equals_the_big_batch(tmp_path):
    # micro-batches of 4 with different numbers of unlabelled rows: a mean of means would differ
    big = gradients(tmp_path / "big", 16, 1)
    small = gradients(tmp_path / "small", 4, 4)
    assert set(big) == set(small) and "loss_mix.weighting.log_vars" in big
    for name, grad in big.items():
        assert torch.allclose(small[name], grad, atol=1e-6, rtol=1e-6), name


def test_an_aggregation_node_is_refused_naming_the_plain_loop(tmp_path):
    node = {
        **{k: v for k, v in MIX.items() if k != "weighting"},
        "aggregation": {"type": "upgrad", "module": "net"},
    }
    with pytest.raises(LossConfigError, match=r"plain loop \(mix.backward\(result\)\)"):
        LossMixTrainer(model=Tagger(), args=arguments(tmp_path), loss_mix=LossMix.from_config(node))
