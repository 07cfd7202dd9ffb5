"""What a run tells at its end: the per-term summary and a sweep's report."""

from __future__ import annotations

import pytest

from lossmix.app.report import print_summary, summary_rows, sweep_rows, write_sweep_report
from lossmix.lightning import TermLogger
from tests.lightning_models import Regressor, loader, trainer

ROUTE = {"pred": "pred", "target": "y"}
MIXES = {
    "fixed": {
        "a": {"type": "L1Loss", "inputs": ROUTE},
        "b": {"type": "MSELoss", "loss_weight": 3.0, "inputs": ROUTE},
    },
    "negative weight": {
        "a": {"type": "L1Loss", "inputs": ROUTE},
        "b": {"type": "MSELoss", "loss_weight": -0.5, "allow_negative": True, "inputs": ROUTE},
    },
    "uncertainty regulariser": {
        "a": {"type": "L1Loss", "inputs": ROUTE},
        "b": {"type": "MSELoss", "inputs": ROUTE},
        "weighting": {"type": "uncertainty"},
    },
    "lazy term": {
        "a": {"type": "L1Loss", "inputs": ROUTE},
        "b": {"type": "MSELoss", "every": 3, "inputs": ROUTE},
    },
    "not in the total": {
        "a": {"type": "L1Loss", "inputs": ROUTE},
        "b": {"type": "MSELoss", "in_total": False, "inputs": ROUTE},
    },
}


def fitted(terms: dict, lr: float = 0.01):
    model = Regressor(terms, lr=lr)
    run = trainer(max_epochs=2, log_every_n_steps=1, limit_val_batches=2)
    run.fit(model, loader(24, 4), loader(8, 4, seed=1))
    return run, model


@pytest.mark.parametrize("mix", list(MIXES))
def test_shares_add_up_to_100_percent_with_a_total_row(mix, capsys):
    run, model = fitted(MIXES[mix])
    rows = summary_rows(run, model)
    terms = [r for r in rows if not r.get("total")]
    total = [r for r in rows if r.get("total")]
    assert len(total) == 1 and total[0]["term"] == "total" and total[0]["share"] == 100.0
    shares = [r["share"] for r in terms if r["share"] is not None]
    assert sum(shares) == pytest.approx(100.0) and all(s >= 0 for s in shares)
    names = [r["term"] for r in terms]
    assert names[:2] == ["a", "b"] and (("weighting" in names) == ("weighting" in MIXES[mix]))
    if mix == "not in the total":
        assert next(r for r in terms if r["term"] == "b")["share"] is None
    print_summary(rows, run.default_root_dir)
    out = capsys.readouterr().out
    assert "share of |total|" in out and "│ total " in out and "raw" in out


def test_the_weighted_mean_is_the_raw_mean_times_the_weight_and_the_total_their_sum():
    run, model = fitted(MIXES["fixed"])
    rows = {r["term"]: r for r in summary_rows(run, model)}
    assert rows["b"]["train"] == pytest.approx(3.0 * rows["b"]["raw"], rel=1e-5)
    assert rows["a"]["train"] == pytest.approx(rows["a"]["raw"], rel=1e-5)
    assert rows["total"]["train"] == pytest.approx(rows["a"]["train"] + rows["b"]["train"], rel=1e-5)
    logged = run.callback_metrics
    assert rows["total"]["val"] == pytest.approx(float(logged["val/loss"]))
    assert rows["b"]["share"] == pytest.approx(100 * rows["b"]["train"] / rows["total"]["train"], rel=1e-4)


def test_a_lazy_terms_mean_is_over_the_steps_it_ran():
    """A term with every=3 ran on 2 of the epoch's 6 steps: its mean is theirs (the logger held
    its last value in between), and its weight is shown with the factor it runs with."""
    run, model = fitted(MIXES["lazy term"], lr=0.0)
    logger = next(c for c in run.callbacks if isinstance(c, TermLogger))
    mean, count = logger.epoch_summary["train"]["train/loss/b"]
    assert count == 2 * 4  # two steps of 4 samples
    rows = {r["term"]: r for r in summary_rows(run, model)}
    assert rows["b"]["train"] == pytest.approx(mean)
    assert rows["b"]["weight"] == "1 ×3"


def test_sweep_report_reads_every_job(tmp_path, capsys):
    for job, gamma, loss in (("0", "1.0", "0.5"), ("1", "2.0", "0.25")):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(
            f"- trainer.max_epochs=2\n- loss.cls.gamma={gamma}\n"
        )
        (tmp_path / job / "csv").mkdir()
        (tmp_path / job / "csv" / "metrics.csv").write_text(
            f"epoch,step,train/loss_epoch,val/loss\n0,3,{loss},\n0,3,,{loss}\n"
        )
    rows = sweep_rows(tmp_path)
    assert [r["overrides"] for r in rows] == ["loss.cls.gamma=1.0", "loss.cls.gamma=2.0"]  # what differs
    assert rows[0]["all_overrides"] == "trainer.max_epochs=2 loss.cls.gamma=1.0"
    assert rows[1]["val/loss"] == "0.25" and rows[0]["train/loss_epoch"] == "0.5"
    path = write_sweep_report(tmp_path)
    assert path.read_text().splitlines()[0] == "job,overrides,train/loss_epoch,val/loss,all_overrides"
    out = capsys.readouterr().out
    assert "sweep of 2 jobs" in out and "Every job also had: trainer.max_epochs=2" in out
