"""LossSchedule: the new kinds, schedules of any float hyper-parameter (a loss's, a sampler's),
their logging, plateau on a scripted metric, and exact resume mid-cycle."""

from __future__ import annotations

import math
import re
import warnings

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from lossmix import CompositeLoss, LossConfigError, build_loss
from lossmix.lightning import LossSchedule, TermLogger
from lossmix.lightning.callbacks.resume import ResumableSampler
from lossmix.schedules import Schedule
from lossmix.schedules.paths import flatten_schedules
from tests.lightning_models import trainer

STEPS_PER_EPOCH = 3


# -- the new kinds, at chosen points -----------------------------------------------------------
def _logistic(f: float, k: float = 10.0) -> float:
    def s(x: float) -> float:
        return 1 / (1 + math.exp(-k * (x - 0.5)))

    return (s(f) - s(0)) / (s(1) - s(0))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"kind": "sigmoid", "end": 10},
            {0: 0.0, 2: _logistic(0.2), 5: 0.5, 8: _logistic(0.8), 10: 1.0, 99: 1.0},
        ),
        (
            {"kind": "sigmoid", "begin": 10, "end": 20, "initial": 2.0, "final": 0.0, "steepness": 4},
            {0: 2.0, 10: 2.0, 13: 2.0 - 2.0 * _logistic(0.3, 4), 20: 0.0},
        ),
        ({"kind": "exponential", "gamma": 0.5, "initial": 8.0}, {0: 8.0, 1: 4.0, 3: 1.0, 10: 8 / 1024}),
        (
            {"kind": "exponential", "gamma": 2.0, "begin": 2, "max": 5.0},
            {0: 1.0, 2: 1.0, 3: 2.0, 4: 4.0, 5: 5.0},
        ),
        ({"kind": "exponential", "gamma": 0.1, "min": 0.5}, {0: 1.0, 1: 0.5, 50: 0.5}),
        (
            {"kind": "cyclical", "period": 4, "ratio": 0.5},
            {0: 0.0, 1: 0.5, 2: 1.0, 3: 1.0, 4: 0.0, 5: 0.5, 7: 1.0, 8: 0.0},
        ),
        (
            {"kind": "cyclical", "period": 10, "ratio": 1.0, "initial": 1.0, "final": 0.0},
            {0: 1.0, 5: 0.5, 9: 0.1, 10: 1.0},
        ),
        (
            {"kind": "cyclical", "period": 4, "ratio": 0.5, "shape": "cosine", "begin": 2},
            {0: 0.0, 2: 0.0, 3: 0.5, 4: 1.0, 6: 0.0},
        ),
    ],
)
def test_new_kinds_at_chosen_points(spec, expected):
    schedule = Schedule("cls.gamma", spec)
    for t, value in expected.items():
        assert schedule(t) == pytest.approx(value, abs=1e-12), t


def test_cyclical_cycles_resolve_from_the_run_length():
    beta = Schedule("vae.kl", {"kind": "cyclical", "cycles": 4, "ratio": 0.5})
    with pytest.raises(LossConfigError, match=re.escape("'cycles' is resolved when training starts")):
        beta(0)
    with pytest.raises(LossConfigError, match="cycles=4 needs the run's length; set trainer.max_steps"):
        beta.resolve_last(-1)
    beta.resolve_last(40)  # Fu et al.: M = 4 cycles over T = 40 steps
    assert beta.spec["period"] == 10
    assert [beta(t) for t in (0, 2, 5, 9, 10, 15, 39)] == pytest.approx([0.0, 0.4, 1.0, 1.0, 0.0, 1.0, 1.0])


@pytest.mark.parametrize(
    ("spec", "metrics", "values"),
    [
        # patience 1: the second epoch without improvement multiplies by factor
        ({"patience": 1, "factor": 0.5}, [1.0, 0.9, 0.95, 0.97, 0.99, 0.98], [1, 1, 1, 0.5, 0.5, 0.25]),
        # mode max, a relative threshold: 1.001 is not better than 1.0 by 1 %
        (
            {"mode": "max", "patience": 0, "threshold": 0.01, "factor": 0.1},
            [1.0, 1.001, 2.0, 1.9],
            [1, 0.1, 0.1, 0.01],
        ),
        # absolute threshold, a cooldown of one epoch and a floor
        (
            {
                "patience": 0,
                "threshold": 0.5,
                "threshold_mode": "abs",
                "cooldown": 1,
                "min": 0.3,
                "factor": 0.5,
            },
            [10.0, 9.8, 9.7, 9.6, 9.5, 9.4],
            [1, 0.5, 0.5, 0.3, 0.3, 0.3],
        ),
        # factor above 1 grows the value, up to max
        ({"patience": 0, "factor": 2.0, "max": 3.0}, [1.0, 1.0, 1.0, 1.0], [1, 2, 3, 3]),
    ],
)
def test_plateau_follows_a_scripted_metric(spec, metrics, values):
    schedule = Schedule("reg", {"kind": "plateau", "monitor": "val/loss", **spec})
    seen = []
    for metric in metrics:
        schedule.fn.observe(metric)
        seen.append(schedule(123))
    assert seen == pytest.approx(values)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"kind": "sigmoid", "end": 5, "steepness": 0}, "steepness=0 is a straight line; use kind: linear."),
        (
            {"kind": "sigmoid", "end": 5, "slope": 2},
            "sigmoid takes begin, end, final, initial, steepness, not 'slope'",
        ),
        ({"kind": "exponential"}, "exponential needs 'gamma'."),
        ({"kind": "exponential", "gamma": 0.5, "min": 2, "max": 1}, "max=1 must not be below min=2."),
        ({"kind": "cyclical"}, "cyclical needs exactly one of 'period'"),
        ({"kind": "cyclical", "period": 4, "cycles": 2}, "cyclical needs exactly one of 'period'"),
        ({"kind": "cyclical", "period": 4, "ratio": 0}, "ratio=0 must be in (0, 1]"),
        ({"kind": "cyclical", "period": 4, "shape": "square"}, "shape='square'; use 'linear' or 'cosine'."),
        ({"kind": "cyclical", "period": 0}, "period=0 must be a number >= 1."),
        ({"kind": "plateau"}, "plateau needs monitor: <a logged metric, e.g. val/loss>."),
        ({"kind": "plateau", "monitor": "val/loss", "mode": "down"}, "mode='down'; use 'min' or 'max'."),
        ({"kind": "plateau", "monitor": "val/loss", "factor": 1}, "factor=1 would never change the value"),
        ({"kind": "plateau", "monitor": "val/loss", "patience": -1}, "patience=-1 must be a number >= 0."),
    ],
)
def test_new_kinds_bad_arguments_are_one_line(spec, match):
    with pytest.raises(LossConfigError, match=re.escape(f"schedule for 'cls.gamma': {match}")):
        Schedule("cls.gamma", spec)


def test_nested_and_dotted_schedules_are_the_same():
    ramp = {"kind": "linear", "end": 4}
    nested = flatten_schedules({"cls": {"gamma": ramp, "sampler": {"pos_fraction": ramp}}, "reg": ramp})
    assert nested == {"cls.gamma": ramp, "cls.sampler.pos_fraction": ramp, "reg": ramp}
    with pytest.raises(LossConfigError, match=r"schedule for 'cls.gamma': 2.0 is not a schedule"):
        flatten_schedules({"cls": {"gamma": 2.0}})


# -- in training ---------------------------------------------------------------------------------
class Batches(Dataset):
    """Fixed rows: features (4,), a class label in [0, 3] (3: background), a regression target."""

    def __init__(self, n: int = 4 * STEPS_PER_EPOCH) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=gen)
        self.label = torch.randint(0, 4, (n,), generator=gen)
        self.y = torch.randn(n, 2, generator=gen)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "label": self.label[i], "y": self.y[i]}


TERMS = {
    "cls": {
        "type": "FocalLoss",
        "inputs": {"pred": "logits", "target": "label"},
        "sampler": {"type": "RandomSampler", "num": 4, "pos_fraction": 0.5, "seed": 0},
    },
    "reg": {"type": "SmoothL1Loss", "inputs": {"pred": "pred", "target": "y"}},
}


class Model(CompositeLoss, L.LightningModule):
    def __init__(self, lr: float = 0.05, metrics: list[float] | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(4, 5)
        self.lr, self.metrics = lr, metrics or []
        self.configure_loss(TERMS)
        self.seen: list[tuple[dict, dict]] = []

    def forward(self, x):
        out = self.net(x)
        return {"logits": out[:, :3], "pred": out[:, 3:]}

    def training_step(self, batch, batch_idx):
        outputs = self(batch["x"])
        self.seen.append(({k: v.detach().clone() for k, v in outputs.items()}, batch))
        return self.compute_loss(outputs, batch)

    def validation_step(self, batch, batch_idx):
        self.compute_loss(self(batch["x"]), batch)
        if self.metrics:  # a scripted validation metric, one value per epoch
            self.log("val/metric", self.metrics[min(self.current_epoch, len(self.metrics) - 1)])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def loader() -> DataLoader:
    """In order, resumable mid-epoch (a resumed run continues with the next batch)."""
    data = Batches()
    return DataLoader(data, batch_size=4, sampler=ResumableSampler(len(data), shuffle=False))


class Record(L.Callback):
    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, *args):
        term = pl_module.loss_mix.find_term("cls")
        result = pl_module.last_loss_result
        self.steps.append(
            {
                "gamma": term.loss.gamma,
                "pos_fraction": term.sampler.pos_fraction,
                "cls": float(result.raw["cls"]),
                "reg_weight": float(result.weights["reg"]),
                "num_pos": float(result.stats["cls.num_pos"]),
            }
        )


def test_a_scheduled_gamma_gives_what_a_rebuilt_focal_loss_gives():
    """Each step's term value equals FocalLoss(gamma=<that step's value>) on the same outputs."""
    values: list[tuple[float, float, float]] = []

    class Values(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            gamma = pl_module.loss_mix.find_term("cls").loss.gamma
            outputs, batch = pl_module.seen[-1]
            expected = build_loss({"type": "FocalLoss", "gamma": gamma})(outputs["logits"], batch["label"])
            values.append((gamma, float(pl_module.last_loss_result.raw["cls"]), float(expected)))

    model = Model()
    model.configure_loss({"cls": {"type": "FocalLoss", "inputs": {"pred": "logits", "target": "label"}}})
    schedule = LossSchedule({"cls.gamma": {"kind": "linear", "end": 4, "initial": 0.0, "final": 2.0}})
    trainer(max_steps=6, callbacks=[schedule, Values()]).fit(model, loader())
    assert [g for g, _, _ in values] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    assert all(got == expected for _, got, expected in values)
    assert len({got for _, got, _ in values}) == 6  # the value did change with gamma


def test_scheduled_parameters_are_logged_and_weights_still_multiply():
    record = Record()
    schedule = LossSchedule(
        {
            "cls.gamma": {"kind": "exponential", "initial": 2.0, "gamma": 0.5},
            "cls.sampler.pos_fraction": {"kind": "piecewise", "points": [[0, 0.25], [3, 1.0]]},
            "reg": {"kind": "step", "milestones": [2], "gamma": 0.5, "initial": 2.0},
        }
    )
    run = trainer(max_steps=4, log_every_n_steps=1, callbacks=[schedule, record])
    run.fit(Model(), loader())
    assert [s["gamma"] for s in record.steps] == [2.0, 1.0, 0.5, 0.25]
    assert [s["pos_fraction"] for s in record.steps] == [0.25, 0.5, 0.75, 1.0]
    assert [s["reg_weight"] for s in record.steps] == [2.0, 2.0, 1.0, 1.0]  # 1 × the multiplier
    logger = next(c for c in run.callbacks if isinstance(c, TermLogger))
    assert [p[1] for p in logger.history["train/param/cls.gamma"]] == [2.0, 1.0, 0.5, 0.25]
    assert [p[1] for p in logger.history["train/param/cls.sampler.pos_fraction"]] == [0.25, 0.5, 0.75, 1.0]
    assert "train/weight/reg" in logger.history
    assert run.callback_metrics["train/param/cls.gamma"].item() == 0.25


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("cls.gama", r"schedule for 'cls.gama': nothing to schedule there .* Did you mean 'cls.gamma' or"),
        (
            "cls.use_sigmoid",
            r"Schedulable: cls, cls.gamma, cls.alpha, cls.sampler.pos_fraction, cls.sampler.neg_pos_ub, "
            r"reg, reg.beta\.",
        ),
        ("cls.ignore_index", r"nothing to schedule there"),  # an int, not a float
        ("cls.sampler.num", r"nothing to schedule there"),
        ("box.gamma", r"nothing to schedule there"),
        ("reg.reduction", r"nothing to schedule there"),
    ],
)
def test_what_cannot_be_scheduled_is_refused_at_setup_listing_what_can(path, match):
    run = trainer(max_steps=1, callbacks=[LossSchedule({path: {"kind": "constant"}})])
    with pytest.raises(LossConfigError, match=match):
        run.fit(Model(), loader())


def test_a_plateau_follows_a_validation_metric_and_resumes(tmp_path):
    record = Record()
    schedule = LossSchedule(
        {"reg": {"kind": "plateau", "monitor": "val/metric", "patience": 0, "factor": 0.5}}
    )
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=-1)
    metrics = [1.0, 0.9, 0.95, 0.97, 0.8, 0.85]
    run = trainer(max_epochs=4, enable_checkpointing=True, callbacks=[schedule, record, checkpoint])
    run.fit(Model(metrics=metrics), loader(), loader())
    per_epoch = [record.steps[e * STEPS_PER_EPOCH]["reg_weight"] for e in range(4)]
    assert per_epoch == [1.0, 1.0, 1.0, 0.5]  # epoch 2 (0.95) did not improve, nor epoch 3's 0.97 -> 0.25
    assert schedule.schedules["reg"].fn.value == 0.25
    assert schedule.state_dict()["states"]["reg"]["best"] == pytest.approx(0.9)
    # resumed from the end of epoch 2: the plateau's state comes back with the checkpoint
    resumed = LossSchedule(
        {"reg": {"kind": "plateau", "monitor": "val/metric", "patience": 0, "factor": 0.5}}
    )
    record = Record()
    ckpt = next(p for p in tmp_path.glob("*.ckpt") if "epoch=2" in p.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer(max_epochs=4, callbacks=[resumed, record]).fit(
            Model(metrics=metrics), loader(), loader(), ckpt_path=ckpt
        )
    assert [s["reg_weight"] for s in record.steps[:1]] == [0.5]
    assert resumed.schedules["reg"].fn.value == 0.25


def test_a_plateau_follows_a_training_epoch_mean():
    record = Record()
    schedule = LossSchedule(
        {
            "cls.gamma": {
                "kind": "plateau",
                "monitor": "train/loss_epoch",
                "patience": 0,
                "factor": 0.5,
                "initial": 2.0,
            }
        }
    )
    trainer(max_epochs=3, callbacks=[schedule, record]).fit(Model(lr=0.0), loader())  # lr 0: no improvement
    per_epoch = [record.steps[e * STEPS_PER_EPOCH]["gamma"] for e in range(3)]
    assert per_epoch[0] == 2.0 and per_epoch[2] < per_epoch[0]
    bad = LossSchedule({"reg": {"kind": "plateau", "monitor": "train/acc_epoch"}})
    with pytest.raises(
        LossConfigError, match=r"plateau monitors 'train/acc_epoch', which is not one of lossmix"
    ):
        trainer(max_epochs=1, callbacks=[bad]).fit(Model(), loader())
    missing = LossSchedule({"reg": {"kind": "plateau", "monitor": "val/acc"}})
    with pytest.raises(
        LossConfigError, match=r"plateau monitors 'val/acc', which is not logged\. Logged metrics: .*val/loss"
    ):
        trainer(max_epochs=1, callbacks=[missing]).fit(Model(), loader(), loader())


def test_resume_mid_cycle_reproduces_every_value(tmp_path):
    """Stopped at step 4 (inside the second of the cycles), resumed: the same γ, pos_fraction
    and term values at every later step as the uninterrupted run, bit for bit on CPU."""

    def schedules():
        return LossSchedule(
            {
                "cls": {
                    "gamma": {"kind": "cyclical", "period": 3, "ratio": 0.5, "initial": 0.5, "final": 2.5},
                    "sampler": {
                        "pos_fraction": {"kind": "sigmoid", "end": 8, "initial": 0.25, "final": 0.75}
                    },
                },
                "reg": {"kind": "cosine", "by": "epoch", "end": 3},
            }
        )

    full = Record()
    trainer(max_steps=9, deterministic=True, callbacks=[schedules(), full]).fit(Model(), loader())
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1)
    trainer(
        max_steps=4, deterministic=True, enable_checkpointing=True, callbacks=[schedules(), checkpoint]
    ).fit(Model(), loader())
    resumed = Record()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer(max_steps=9, deterministic=True, callbacks=[schedules(), resumed]).fit(
            Model(), loader(), ckpt_path=next(tmp_path.glob("*.ckpt"))
        )
    assert resumed.steps == full.steps[4:]


def test_a_checkpoint_of_the_first_name_resumes_into_loss_schedule():
    """lossmix 0.1 keyed this callback's state by ``LossWeightSchedule{...}``; Lightning
    finds it through the legacy key and the values come back."""
    from types import SimpleNamespace

    from lightning.pytorch.trainer.call import _call_callbacks_load_state_dict

    schedule = LossSchedule({"reg": {"kind": "linear", "end": 10}})
    assert schedule._legacy_state_key == "LossWeightSchedule{'terms': ['reg']}"
    old = {"callbacks": {"LossWeightSchedule{'terms': ['reg']}": {"values": {"reg": 0.7}}}}
    _call_callbacks_load_state_dict(SimpleNamespace(callbacks=[schedule]), old)
    assert schedule.values == {"reg": 0.7}


def test_an_empty_schedule_schedules_nothing():
    assert LossSchedule({}).schedules == {} and LossSchedule(None).schedules == {}
    record = Record()
    trainer(max_steps=2, callbacks=[LossSchedule({}), record]).fit(Model(), loader())  # nothing scheduled
    assert [s["gamma"] for s in record.steps] == [2.0, 2.0]
