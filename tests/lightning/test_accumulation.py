"""Gradient accumulation: logged values are the micro-batches' own, and with ``scope:
accumulation`` on the normaliser the update is the big batch's (Lightning #20350)."""

from __future__ import annotations

import re

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from lossmix import CompositeLoss, LossConfigError, LossMix
from lossmix.lightning import TermLogger
from tests.lightning_models import ddp_trainer, trainer

C, ROWS = 3, 4  # classes (label C: background), rows per micro-batch
FOCAL = {"type": "FocalLoss", "inputs": {"pred": "logits", "target": "labels"}}


class Rows(Dataset):
    """Micro-batches of 4 rows with 0, 1, 3 and 4 positives: very different counts."""

    def __init__(self, windows: int = 1, extra: int = 0) -> None:
        gen = torch.Generator().manual_seed(3)
        n = ROWS * (4 * windows + extra)
        self.x = torch.randn(n, 5, generator=gen)
        positives = [0, 1, 3, 4] * (n // (4 * ROWS) + 1)
        labels = []
        for b in range(n // ROWS):
            row = torch.full((ROWS,), C)
            row[: positives[b]] = torch.randint(0, C, (positives[b],), generator=gen)
            labels.append(row)
        self.labels = torch.cat(labels)
        self.boxes = torch.randn(n, 4, generator=gen)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.labels[i], "boxes": self.boxes[i]}


class Model(CompositeLoss, L.LightningModule):
    def __init__(self, terms: dict) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(5, C + 4)
        self.configure_loss(terms)

    def forward(self, x):
        out = self.net(x)
        return {"logits": out[:, :C], "pred_boxes": out[:, C:]}

    def training_step(self, batch, batch_idx):
        return self.compute_loss(self(batch["x"]), batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)


def focal(scope: str | None = None, **extra) -> dict:
    normalizer = {"type": "num_pos"} if scope is None else {"type": "num_pos", "scope": scope}
    return {"cls": {**FOCAL, "normalizer": normalizer, **extra}}


def fit(
    terms: dict, batch_size: int, accumulate: int = 1, data: Dataset | None = None, collate=None
) -> Model:
    model = Model(terms)
    loader = DataLoader(data or Rows(), batch_size=batch_size, collate_fn=collate)
    trainer(max_epochs=1, accumulate_grad_batches=accumulate).fit(model, loader)
    return model


def parameters(model: Model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.net.parameters()])


def test_with_scope_accumulation_four_micro_batches_make_the_big_batchs_update():
    big = fit(focal(), batch_size=4 * ROWS)
    scoped = fit(focal("accumulation"), batch_size=ROWS, accumulate=4)
    torch.testing.assert_close(parameters(scoped), parameters(big), rtol=0, atol=1e-6)


def test_without_it_the_update_is_the_mean_of_the_micro_batches_own_normalised_gradients():
    """The documented difference: (1/N)·Σ ∇(S_i / max(c_i, 1)) instead of ∇(Σ S_i) / Σ c_i."""
    plain = fit(focal(), batch_size=ROWS, accumulate=4)
    big = fit(focal(), batch_size=4 * ROWS)
    model, data = Model(focal()), Rows()
    start = parameters(model)
    grads = [torch.zeros_like(p) for p in model.net.parameters()]
    for b in range(4):
        rows = slice(b * ROWS, (b + 1) * ROWS)
        batch = {"labels": data.labels[rows]}
        loss = model.loss_mix(model(data.x[rows]), batch, step=0).total / 4
        for g, p in zip(grads, torch.autograd.grad(loss, list(model.net.parameters())), strict=True):
            g += p
    by_hand = start - torch.cat([g.flatten() for g in grads])
    torch.testing.assert_close(parameters(plain), by_hand, rtol=0, atol=1e-6)
    assert (parameters(plain) - parameters(big)).abs().max() > 1e-3  # not the big batch's


def test_a_partial_last_window_is_exact_too():
    data = Rows(windows=1, extra=1)  # 5 micro-batches: a window of 4, then one of 1
    scoped = fit(focal("accumulation"), batch_size=ROWS, accumulate=4, data=data)
    model = Model(focal())
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    for rows in (slice(0, 4 * ROWS), slice(4 * ROWS, 5 * ROWS)):
        optimizer.zero_grad()
        model.loss_mix(model(data.x[rows]), {"labels": data.labels[rows]}, step=0).total.backward()
        optimizer.step()
    torch.testing.assert_close(parameters(scoped), parameters(model), rtol=0, atol=1e-6)


def with_count(rows):
    """The batch with its positive count under the key ``n_pos`` (for a key normaliser)."""
    batch = torch.utils.data.default_collate(rows)
    return {**batch, "n_pos": (batch["labels"] < C).float().sum()}


def test_terms_dividing_by_one_count_share_the_window():
    count = {"type": "key", "key": "n_pos", "scope": "accumulation"}
    reg = {"type": "SmoothL1Loss", "inputs": {"pred": "pred_boxes", "target": "boxes"}, "loss_weight": 0.5}
    shared = {"cls": {**FOCAL, "normalizer": count}, "reg": {**reg, "normalizer": count}}
    scoped = fit(shared, batch_size=ROWS, accumulate=4, collate=with_count)
    data = Rows()
    model = Model({k: {**v, "normalizer": {"type": "key", "key": "n_pos"}} for k, v in shared.items()})
    big = {"labels": data.labels, "boxes": data.boxes, "n_pos": (data.labels < C).float().sum()}
    model.loss_mix(model(data.x), big, step=0).total.backward()
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    torch.testing.assert_close(parameters(scoped), parameters(model), rtol=0, atol=1e-6)


def test_logged_values_are_each_micro_batchs_own():
    """Accumulation changes the update, not what is logged: each micro-batch's value divided
    by its own count, and epoch means over every micro-batch by its size."""
    seen: list[float] = []

    class Seen(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            seen.append(float(pl_module.last_loss_result.terms["cls"]))

    model = Model(focal("accumulation"))
    run = trainer(max_epochs=1, accumulate_grad_batches=4, log_every_n_steps=1, callbacks=[Seen()])
    run.fit(model, DataLoader(Rows(), batch_size=ROWS))
    data = Rows()
    fresh = LossMix.from_config(focal())
    torch.manual_seed(0)
    net = torch.nn.Linear(5, C + 4)
    first = fresh({"logits": net(data.x[:ROWS])[:, :C]}, {"labels": data.labels[:ROWS]}).terms["cls"]
    assert seen[0] == pytest.approx(float(first))  # before any update: the micro-batch's own value
    logger = next(c for c in run.callbacks if isinstance(c, TermLogger))
    mean, count = logger.epoch_summary["train"]["train/loss/cls"]
    assert count == 4 * ROWS and mean == pytest.approx(sum(seen) / 4)


@pytest.mark.parametrize(
    ("terms", "match"),
    [
        (
            {
                **focal("accumulation"),
                "reg": {"type": "L1Loss", "inputs": {"pred": "pred_boxes", "target": "boxes"}},
            },
            "is exact only when every term of the total divides by one count .* here: cls (num_pos, scope: "
            "accumulation), reg (no normaliser)",
        ),
        (
            {
                **focal("accumulation"),
                "reg": {
                    "type": "L1Loss",
                    "inputs": {"pred": "pred_boxes", "target": "boxes"},
                    "normalizer": {"type": "numel", "scope": "accumulation"},
                },
            },
            "reg (numel, scope: accumulation)",
        ),
        (
            {**focal("accumulation"), "weighting": {"type": "uncertainty"}},
            "cannot be exact with dynamic task weighting",
        ),
        (
            focal("accumulation", sampler={"type": "RandomSampler", "num": 4, "pos_fraction": 0.5})
            | {"reg": {**FOCAL, "normalizer": {"type": "num_pos", "scope": "accumulation"}}},
            "divides by one count",
        ),
    ],
)
def test_what_cannot_be_exact_is_refused_at_setup(terms, match):
    with pytest.raises(
        LossConfigError,
        match=re.escape("scope: accumulation (terms ") + ".*" + re.escape(match.split(" .* ")[-1]),
    ):
        fit(terms, batch_size=ROWS, accumulate=4)


def test_an_unscoped_term_outside_the_total_is_fine():
    terms = {
        **focal("accumulation"),
        "monitor": {"type": "L1Loss", "inputs": {"pred": "pred_boxes", "target": "boxes"}, "in_total": False},
    }
    big = fit({**focal(), "monitor": terms["monitor"]}, batch_size=4 * ROWS)
    scoped = fit(terms, batch_size=ROWS, accumulate=4)
    torch.testing.assert_close(parameters(scoped), parameters(big), rtol=0, atol=1e-6)


def test_bad_scopes_are_one_line_errors():
    with pytest.raises(LossConfigError, match=r"normalizer scope='window' is not valid; use 'step'"):
        LossMix.from_config({"cls": {**FOCAL, "normalizer": {"type": "num_pos", "scope": "window"}}})
    with pytest.raises(LossConfigError, match=r"has ema and scope: accumulation"):
        LossMix.from_config(
            {"cls": {**FOCAL, "normalizer": {"type": "num_pos", "scope": "accumulation", "ema": 0.9}}}
        )


# -- DDP: the window's count is averaged over ranks, as the gradients are ------------------------
class RankRows(Dataset):
    """Rank r reads micro-batches 2r and 2r + 1 of :class:`Rows` (different counts per rank)."""

    def __init__(self) -> None:
        self.rows = Rows()

    def __len__(self) -> int:
        return 2 * ROWS

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        return self.rows[2 * ROWS * rank + i]


class SaveParameters(L.Callback):
    def __init__(self, out: str) -> None:
        self.out = out

    def on_fit_end(self, trainer, pl_module):
        torch.save(parameters(pl_module), f"{self.out}/rank{trainer.global_rank}.pt")


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
@pytest.mark.parametrize("sync", [False, True])
def test_ddp_accumulation_is_the_big_batch_over_every_rank(tmp_path, sync):
    normalizer = {"type": "num_pos", "scope": "accumulation", "sync": sync}
    run = ddp_trainer(
        max_epochs=1,
        accumulate_grad_batches=2,
        use_distributed_sampler=False,
        callbacks=[SaveParameters(str(tmp_path))],
    )
    run.fit(Model({"cls": {**FOCAL, "normalizer": normalizer}}), DataLoader(RankRows(), batch_size=ROWS))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    big = fit(focal(), batch_size=4 * ROWS)
    torch.testing.assert_close(ranks[0], ranks[1], rtol=0, atol=0)
    torch.testing.assert_close(ranks[0], parameters(big), rtol=0, atol=1e-6)


def test_an_aggregation_node_with_a_window_scoped_normaliser_is_refused():
    terms = {
        "cls": {**FOCAL, "normalizer": {"type": "numel", "scope": "accumulation"}},
        "reg": {"type": "L1Loss", "inputs": {"pred": "pred_boxes", "target": "boxes"}},
        "aggregation": {"type": "upgrad", "over": "shared", "module": "trunk"},
    }
    with pytest.raises(LossConfigError, match=r"term 'cls': normalizer scope 'accumulation' .* aggregation"):
        LossMix.from_config(terms)
