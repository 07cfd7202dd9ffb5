"""``lossmix calibrate``: the weights that balance the terms, measured on the demo detector."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from omegaconf import OmegaConf

from lossmix.app import cli
from lossmix.app.calibrate import CalibrationResult, calibrate, calibrated_weights, parse_shares
from lossmix.app.compose import compose_config
from lossmix.app.term_statistics import TermStatistics, reduce_statistics, term_statistics
from lossmix.errors import LossConfigError

SMALL = ["data.num_train=64", "data.num_val=16", "data.batch_size=16"]
STATS = [
    TermStatistics("a", 1.0, 2.0, 4.0),
    TermStatistics("b", 2.0, 1.0, 1.0),
    TermStatistics("c", 1.0, 8.0, 2.0),
]


@pytest.mark.parametrize("by", ["grad_norm", "loss"])
@pytest.mark.parametrize("shares", [None, {"a": 2.0, "b": 1.0, "c": 1.0}])
def test_the_weights_give_each_term_its_share_and_keep_the_weighted_sum(by, shares):
    weights = calibrated_weights(STATS, by, shares)
    target = {"a": 0.5, "b": 0.25, "c": 0.25} if shares else dict.fromkeys("abc", 1 / 3)
    parts = {t.name: weights[t.name] * t.value(by) for t in STATS}
    assert sum(parts.values()) == pytest.approx(sum(t.weight * t.value(by) for t in STATS))
    for name, part in parts.items():
        assert part / sum(parts.values()) == pytest.approx(target[name])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: calibrated_weights(STATS, "gradient"),
            r"--by 'gradient' is not valid; use one of: grad_norm, loss",
        ),
        (lambda: calibrated_weights(STATS, shares={"a": 1, "x": 1}), r"--share names term 'x', which is not"),
        (lambda: calibrated_weights(STATS, shares={"a": 1}), r"no share for term\(s\) b, c"),
        (
            lambda: calibrated_weights(STATS, shares={"a": 1, "b": 0, "c": 1}),
            r"term 'b' is 0; a share must be > 0",
        ),
        (lambda: calibrated_weights([TermStatistics("z", 1.0, 1.0, 0.0)]), r"term 'z': its grad_norm is 0.0"),
        (lambda: parse_shares("cls=0.5,reg"), r"--share entry 'reg' is not term=number"),
        (lambda: parse_shares("cls=half"), r"--share entry 'cls=half' is not term=number"),
    ],
)
def test_bad_options_are_one_line_errors(call, match):
    with pytest.raises(LossConfigError, match=match):
        call()


def test_parse_shares():
    assert parse_shares("cls=0.5, reg=0.25,ctr=0.25") == {"cls": 0.5, "reg": 0.25, "ctr": 0.25}
    assert parse_shares(None) is None


@pytest.fixture(scope="module")
def demo() -> CalibrationResult:
    return calibrate(compose_config(SMALL), batches=3)


def test_the_demo_detectors_shares_and_weights(demo, tmp_path):
    assert [t.name for t in demo.terms] == ["cls", "reg", "ctr"]
    assert all(name.startswith("trunk.") for name in demo.shared)  # the heads are not shared
    before = demo.shares(weights={})
    assert max(before.values()) - min(before.values()) > 0.05  # unequal with the default weights
    assert demo.shares(weights=demo.weights) == pytest.approx(dict.fromkeys(before, 1 / 3))
    line = demo.override_line()
    assert line.startswith("loss.cls.loss_weight=") and "loss.ctr.loss_weight=" in line
    written = OmegaConf.load(demo.write(tmp_path / "cal.yaml"))
    assert written.overrides == line
    assert written.loss.reg.loss_weight == pytest.approx(demo.weights["reg"], rel=1e-3)
    # the same config (and seed) gives the same weights
    assert calibrate(compose_config(SMALL), batches=3).weights == demo.weights


@pytest.fixture(scope="module")
def detector():
    """The demo detector as the app builds it, and its first training batch."""
    from lossmix.app.runner import build

    cfg = compose_config(SMALL)
    cfg.paths.output_dir = os.devnull
    datamodule, model, _ = build(cfg, [])
    datamodule.setup("fit")
    return model, [next(iter(datamodule.train_dataloader()))]


def test_a_named_shared_module_and_a_bad_one(detector):
    model, batches = detector
    _, shared = term_statistics(model, batches, shared="trunk.3")
    assert shared and all(n.startswith("trunk.3.") for n in shared)
    with pytest.raises(LossConfigError, match=r"shared module 'trunks' is not in DenseDetector"):
        term_statistics(model, batches, shared="trunks")
    with pytest.raises(LossConfigError, match=r"term 'reg': its gradient reaches none of the --shared"):
        term_statistics(model, batches, shared="cls_head")
    assert all(p.grad is None for p in model.parameters())  # measured, nothing accumulated


def test_the_command_prints_the_shares_and_writes_the_weights(tmp_path, capsys):
    out = tmp_path / "weights.yaml"
    assert cli.main(["calibrate", "--batches", "1", "--by", "loss", "--out", str(out), *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "Dominant term today: " in printed and "grad share" in printed
    line = OmegaConf.load(out).overrides
    assert line.startswith("loss.cls.loss_weight=") and line in printed.replace("\n", " ")
    assert cli.main(["calibrate", "--share", "cls=1", *SMALL]) == 1
    assert capsys.readouterr().err.startswith("Error: --share gives no share for term(s) reg, ctr; give")


def _shares_while_training(weights: dict[str, float] | None, steps: int = 6) -> dict[str, float]:
    """The mean gradient share of each term (under ``weights``) over the first ``steps``
    optimizer steps of a run trained with ``weights``, each measured before its step."""
    from lossmix.app.runner import build

    cfg = compose_config([*SMALL, *(f"loss.{k}.loss_weight={v}" for k, v in (weights or {}).items())])
    cfg.paths.output_dir = os.devnull
    datamodule, model, _ = build(cfg, [])
    datamodule.setup("fit")
    optimizer = model.configure_optimizers()
    batches = list(datamodule.train_dataloader())
    mean: dict[str, float] = {}
    for index in range(steps):
        batch = batches[index % len(batches)]
        terms, _ = term_statistics(model, [batch])
        parts = {t.name: t.weight * t.grad_norm for t in terms}
        for name, part in parts.items():
            mean[name] = mean.get(name, 0.0) + part / sum(parts.values()) / steps
        optimizer.zero_grad()
        model.training_step(batch, index).backward()
        optimizer.step()
    return mean


def test_training_with_the_calibrated_weights_gives_more_equal_gradient_shares(demo):
    def distance(shares: dict[str, float]) -> float:  # from equal shares
        return sum(abs(s - 1 / len(shares)) for s in shares.values())

    default, calibrated = _shares_while_training(None), _shares_while_training(demo.weights)
    assert distance(calibrated) < 0.7 * distance(default), (default, calibrated)


_RANK = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    from lossmix.app.term_statistics import reduce_statistics
    rank, init = int(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    # rank 0 measured 2 batches, rank 1 measured 1: the mean is over the 3 batches
    sums = torch.tensor([[2.0, 4.0]]) if rank == 0 else torch.tensor([[4.0, 8.0]])
    print(reduce_statistics(sums, 2 if rank == 0 else 1).tolist())
    dist.destroy_process_group()
    """
)


def test_under_ddp_the_statistics_are_means_over_every_rank(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    ranks = [
        subprocess.Popen([sys.executable, "-c", _RANK, str(r), init], stdout=subprocess.PIPE, text=True)
        for r in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0]
    assert [o.strip() for o in outputs] == ["[[2.0, 4.0]]"] * 2
    assert reduce_statistics(torch.tensor([3.0, 6.0]), 3).tolist() == [1.0, 2.0]  # one process
