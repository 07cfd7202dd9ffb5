"""``normalizer: {type: num_pos, ema: 0.9, init: 100}``: Detectron2's moving average of the
foreground count, against a hand-computed sequence, across a resume, under the pre-flight
batch and with 2 DDP processes (gloo) averaging the count first."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from lossmix import CompositeLoss, LossConfigError, LossMix, build_loss
from lossmix.lightning.callbacks.resume import ResumableSampler
from tests.lightning_models import ddp_trainer, trainer

C = 3  # classes; label C is background


def batch_with(num_pos: int, rows: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.full((rows,), C)
    labels[:num_pos] = torch.arange(num_pos) % C
    return {"scores": torch.randn(rows, C, generator=gen), "labels": labels}


def mix(**normalizer) -> LossMix:
    node = {"type": "num_pos", **normalizer}
    return LossMix.from_config(
        {"cls": {"type": "FocalLoss", "inputs": {"pred": "scores", "target": "labels"}, "normalizer": node}}
    )


def detectron2(counts, momentum=0.9, init=100.0):
    """``_ema_update`` of Detectron2's RetinaNet: ``old·m + max(n, 1)·(1 − m)`` from ``init``."""
    out, old = [], init
    for n in counts:
        old = old * momentum + max(n, 1) * (1 - momentum)
        out.append(old)
    return out


COUNTS = [4, 0, 7, 2, 8, 1]


def test_the_average_follows_detectron2s_sequence_and_divides_the_loss():
    losses = mix(ema=0.9, init=100)
    plain = build_loss({"type": "FocalLoss"})
    expected = detectron2(COUNTS)
    for step, (count, value) in enumerate(zip(COUNTS, expected, strict=True)):
        batch = batch_with(count, seed=step)
        result = losses({}, batch, step=step)
        assert float(result.stats["cls.avg_factor"]) == pytest.approx(value, rel=1e-6)
        by_hand = plain(batch["scores"], batch["labels"], avg_factor=torch.tensor(value))
        torch.testing.assert_close(result.terms["cls"], by_hand)
    term = losses.find_term("cls")
    assert float(term.normalizer.moving.pending) == pytest.approx(expected[-1], rel=1e-6)


def test_without_init_the_first_value_starts_it_and_evaluation_uses_the_batchs_own_count():
    losses = mix(ema=0.5)
    values = [
        float(losses({}, b, step=s).stats["cls.avg_factor"])
        for s, b in enumerate(batch_with(n) for n in (4, 8, 2))
    ]
    assert values == pytest.approx([4.0, 6.0, 4.0])
    before = {k: v.clone() for k, v in losses.state_dict().items()}
    evaluation = losses({}, batch_with(7))  # step=None
    assert float(evaluation.stats["cls.avg_factor"]) == 7.0
    assert all(torch.equal(before[k], v) for k, v in losses.state_dict().items())


def test_with_gradient_accumulation_it_moves_once_per_optimizer_step():
    """Micro-batches of one optimizer step (the same step) share the base, averaging their
    counts so far; the next step starts from the step's final average."""
    losses = mix(ema=0.9, init=100)
    seen = [
        float(losses({}, b, step=step).stats["cls.avg_factor"])
        for step, b in ((0, batch_with(4)), (0, batch_with(8)), (1, batch_with(2)), (1, batch_with(2)))
    ]
    first = 100 * 0.9 + 6 * 0.1  # mean of 4 and 8
    assert seen == pytest.approx([100 * 0.9 + 0.4, first, first * 0.9 + 0.2, first * 0.9 + 0.2])


@pytest.mark.parametrize(
    ("node", "match"),
    [
        ({"ema": 1.0}, "ema=1.0 is not valid; the momentum is in [0, 1)"),
        ({"ema": -0.1}, "ema"),
        ({"ema": "fast"}, "ema"),
        ({"init": 100}, "init=100 starts a moving average; add ema: 0.9"),
        ({"ema": 0.9, "init": -1}, "init"),
        ({"ema": 0.9, "emma": 1}, "its keys are ['type', 'sync', 'min', 'key', 'ema', 'init', 'scope']"),
    ],
)
def test_bad_moving_averages_are_one_line_errors(node, match):
    with pytest.raises(LossConfigError, match=re.escape("term 'cls': normalizer") + ".*" + re.escape(match)):
        mix(**node)


# -- in Lightning: resume, and the pre-flight batch ----------------------------------------------
class Rows(Dataset):
    def __init__(self, n: int = 24) -> None:
        gen = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 4, generator=gen)
        self.labels = torch.randint(0, C + 1, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.labels[i]}


class Model(CompositeLoss, L.LightningModule):
    def __init__(self, sync: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(4, C)
        node = {"type": "num_pos", "ema": 0.9, "init": 100, "sync": sync}
        self.configure_loss(
            {
                "cls": {
                    "type": "FocalLoss",
                    "inputs": {"pred": "logits", "target": "labels"},
                    "normalizer": node,
                }
            }
        )
        self.factors: list[float] = []

    def training_step(self, batch, batch_idx):
        loss = self.compute_loss({"logits": self.net(batch["x"])}, batch)
        if not self.loss_state.dry_run:
            self.factors.append(float(self.last_loss_result.stats["cls.avg_factor"]))
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader() -> DataLoader:
    data = Rows()
    return DataLoader(data, batch_size=4, sampler=ResumableSampler(len(data), shuffle=False))


def counts_of(batch_size: int = 4) -> list[int]:
    labels = Rows().labels
    return [int((labels[i : i + batch_size] < C).sum()) for i in range(0, len(labels), batch_size)]


def test_in_training_the_sequence_is_detectron2s_and_the_preflight_leaves_no_trace():
    model = Model()
    assert model.loss_preflight  # the dry run routed a batch through the term first
    trainer(max_steps=6).fit(model, loader())
    assert model.factors == pytest.approx(detectron2(counts_of()), rel=1e-6)


def test_a_resumed_run_continues_the_average(tmp_path):
    full = Model()
    trainer(max_steps=6).fit(full, loader())
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1)
    trainer(max_steps=3, enable_checkpointing=True, callbacks=[checkpoint]).fit(Model(), loader())
    resumed = Model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer(max_steps=6).fit(resumed, loader(), ckpt_path=next(tmp_path.glob("*.ckpt")))
    assert resumed.factors == full.factors[3:]
    saved = torch.load(next(tmp_path.glob("*.ckpt")), weights_only=True)["state_dict"]
    assert {
        "loss_mix.terms.cls.normalizer.moving.value",
        "loss_mix.terms.cls.normalizer.moving.pending",
    } <= set(saved)


# -- DDP: the count averaged over ranks first, so every rank keeps the same average -------------
class RankRows(Dataset):
    """Rank r's rows have r + 1 positives in each batch of 4, so the ranks' counts differ."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        label = torch.tensor(i % C) if i % 4 <= rank else torch.tensor(C)
        return {"x": torch.full((4,), float(i)), "labels": label}


class WriteFactors(L.Callback):
    def __init__(self, out: str) -> None:
        self.out = out

    def on_fit_end(self, trainer, pl_module):
        path = Path(self.out) / f"rank{trainer.global_rank}.json"
        ema = pl_module.loss_mix.find_term("cls").normalizer.moving
        path.write_text(json.dumps({"factors": pl_module.factors, "pending": float(ema.pending)}))


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_ddp_ranks_average_the_count_then_share_one_moving_average(tmp_path):
    run = ddp_trainer(
        max_steps=3,
        use_distributed_sampler=False,
        callbacks=[WriteFactors(str(tmp_path))],
    )
    run.fit(Model(sync=True), DataLoader(RankRows(), batch_size=4))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]  # one average on every rank
    expected = detectron2([1.5, 1.5, 1.5])  # rank 0 has 1 positive per batch, rank 1 has 2
    assert ranks[0]["factors"] == pytest.approx(expected, rel=1e-6)


def test_a_dry_run_leaves_the_average_as_it_was():
    """The pre-flight batch computes the term at step 0; afterwards the first real step starts
    from the untouched average, whatever the dry run's batch counted."""
    from lossmix.lightning.callbacks.preflight import dry_run

    model = Model()
    term = model.loss_mix.find_term("cls")
    with dry_run(model):
        model.loss_mix({"logits": torch.randn(8, C)}, {"labels": torch.zeros(8, dtype=torch.long)}, step=0)
    first = batch_with(2)
    result = model.loss_mix({"logits": first["scores"]}, {"labels": first["labels"]}, step=0)
    assert float(result.stats["cls.avg_factor"]) == pytest.approx(100 * 0.9 + 2 * 0.1)
    assert float(term.normalizer.moving.value) == 100.0
