"""The engine: totals, weights, lazy and log-only terms, sub-terms, groups, routing, samplers,
normalisers, and its errors."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

import lossmix
import lossmix.utilities.distributed
from lossmix import LOSSES, LossConfigError, LossInputError, LossMix, Term
from lossmix.reduction import EPS32


@pytest.fixture
def registry_snapshot():
    entries, aliases = dict(LOSSES._entries), dict(LOSSES._aliases)
    yield LOSSES
    LOSSES._entries.clear()
    LOSSES._entries.update(entries)
    LOSSES._aliases.clear()
    LOSSES._aliases.update(aliases)


def _reg_batch(n: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    pred = torch.randn(n, 4, generator=gen, requires_grad=True)
    target = torch.randn(n, 4, generator=gen)
    return {"box": pred}, {"box_target": target}


ROUTE = {"pred": "box", "target": "box_target"}


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0), (2.0, 0.5, 0.0), (0.1, 3.0, 1.5)])
def test_total_is_weighted_sum_of_terms(weights):
    w1, w2, w3 = weights
    mix = LossMix.from_config(
        {
            "l1": {"type": "L1Loss", "loss_weight": w1, "inputs": ROUTE},
            "mse": {"type": "MSELoss", "loss_weight": w2, "inputs": ROUTE},
            "smooth": {"type": "SmoothL1Loss", "beta": 0.5, "loss_weight": w3, "inputs": ROUTE},
        }
    )
    outputs, batch = _reg_batch()
    p, t = outputs["box"], batch["box_target"]
    result = mix(outputs, batch)
    raw = {
        "l1": (p - t).abs().mean(),
        "mse": ((p - t) ** 2).mean(),
        "smooth": torch.nn.functional.smooth_l1_loss(p, t, beta=0.5),
    }
    for name, w in zip(raw, weights, strict=True):
        torch.testing.assert_close(result.raw[name], raw[name])
        torch.testing.assert_close(result.terms[name], w * raw[name])
        assert result.weights[name] == w
    torch.testing.assert_close(result.total, sum(w * raw[n] for n, w in zip(raw, weights, strict=True)))


def test_loss_weight_is_moved_to_the_term_and_loss_default_is_kept():
    mix = LossMix.from_config({"reg": {"type": "L1Loss", "loss_weight": 3.0, "inputs": ROUTE}})
    term = mix.find_term("reg")
    assert term.weight == 3.0 and term.loss.loss_weight == 1.0


@pytest.mark.parametrize("scale_by_every", [True, False])
def test_lazy_term_runs_every_k_steps_with_weight_times_k(scale_by_every):
    mix = LossMix.from_config(
        {
            "base": {"type": "L1Loss", "inputs": ROUTE},
            "lazy": {
                "type": "MSELoss",
                "loss_weight": 0.5,
                "every": 3,
                "scale_by_every": scale_by_every,
                "inputs": ROUTE,
            },
        }
    )
    outputs, batch = _reg_batch()
    mse = ((outputs["box"] - batch["box_target"]) ** 2).mean()
    factor = 3 if scale_by_every else 1
    for step in range(7):
        result = mix(outputs, batch, step=step)
        assert set(result.terms) == {"base", "lazy"}
        if step % 3 == 0:
            assert result.weights["lazy"] == 0.5 * factor
            torch.testing.assert_close(result.terms["lazy"], 0.5 * factor * mse)
        else:
            assert result.weights["lazy"] == 0.0
            assert result.terms["lazy"].item() == 0.0
            (grad,) = torch.autograd.grad(result.terms["lazy"], outputs["box"])
            assert torch.all(grad == 0)  # a connected zero
        torch.testing.assert_close(result.total, result.terms["base"] + result.terms["lazy"])


def test_lazy_term_without_step_runs_with_plain_weight():
    mix = LossMix.from_config({"lazy": {"type": "MSELoss", "loss_weight": 0.5, "every": 4, "inputs": ROUTE}})
    outputs, batch = _reg_batch()
    result = mix(outputs, batch)
    assert result.weights["lazy"] == 0.5
    assert result.terms["lazy"].item() > 0


def test_log_only_term_is_reported_but_not_summed():
    mix = LossMix.from_config(
        {
            "l1": {"type": "L1Loss", "inputs": ROUTE},
            "metric": {"type": "MSELoss", "in_total": False, "inputs": ROUTE},
        }
    )
    outputs, batch = _reg_batch()
    result = mix(outputs, batch)
    torch.testing.assert_close(result.total, result.terms["l1"])
    assert result.terms["metric"].item() > 0


def test_multi_output_losses_become_sub_terms(registry_snapshot):
    @LOSSES.register(name="TwoParts")
    def two_parts(pred, target):
        return {"abs": (pred - target).abs().mean(), "sq": ((pred - target) ** 2).mean()}

    @LOSSES.register(name="TupleParts")
    def tuple_parts(pred, target):
        return (pred - target).abs().sum(), (pred - target).pow(2).sum()

    mix = LossMix.from_config(
        {
            "pair": {"type": "TwoParts", "loss_weight": 2.0, "inputs": ROUTE},
            "tup": {"type": "TupleParts", "inputs": ROUTE},
        }
    )
    outputs, batch = _reg_batch()
    result = mix(outputs, batch)
    assert set(result.terms) == {"pair.abs", "pair.sq", "tup.0", "tup.1"}
    torch.testing.assert_close(result.terms["pair.abs"], 2.0 * result.raw["pair.abs"])
    torch.testing.assert_close(result.total, sum(result.terms.values()))


def test_groups_are_computed_separately():
    mix = LossMix.from_config(
        {
            "gen": {"rec": {"type": "L1Loss", "inputs": ROUTE}},
            "disc": {"sq": {"type": "MSELoss", "loss_weight": 0.5, "inputs": ROUTE}},
        }
    )
    outputs, batch = _reg_batch()
    gen, disc = mix(outputs, batch, group="gen"), mix(outputs, batch, group="disc")
    assert set(gen.terms) == {"rec"} and set(disc.terms) == {"sq"}
    assert gen.group == "gen"
    with pytest.raises(LossConfigError, match="groups gen, disc"):
        mix(outputs, batch)
    with pytest.raises(LossConfigError, match="unknown loss group 'dis'"):
        mix(outputs, batch, group="dis")
    assert mix.find_term("disc/sq").weight == 0.5


def test_dictconfig_and_null_terms_are_accepted():
    cfg = OmegaConf.create({"l1": {"type": "L1Loss", "inputs": ROUTE}, "dropped": None})
    mix = LossMix.from_config(cfg)
    assert list(mix.terms) == ["l1"]


# -- routing -----------------------------------------------------------------------------------
def test_routing_nested_prefixed_indexed_and_constant(registry_snapshot):
    @LOSSES.register(name="Scaled")
    class Scaled(torch.nn.Module):
        def forward(self, pred, target, factor=1.0):
            return (pred - target).abs().mean() * factor

    mix = LossMix.from_config(
        {"t": {"type": "Scaled", "inputs": {"pred": "outputs.head.box", "target": "batch.1", "factor": 2.0}}}
    )
    pred, target = torch.ones(3), torch.zeros(3)
    result = mix({"head": {"box": pred}}, ("image", target))
    torch.testing.assert_close(result.raw["t"], torch.tensor(2.0))


def test_missing_key_names_term_key_and_available_keys():
    mix = LossMix.from_config({"reg": {"type": "L1Loss", "inputs": ROUTE}})
    with pytest.raises(LossInputError, match=r"term 'reg'.*'box_target'.*Output keys: box"):
        mix({"box": torch.zeros(2)}, {"labels": torch.zeros(2)})


def test_ambiguous_key_must_be_prefixed():
    mix = LossMix.from_config({"reg": {"type": "L1Loss", "inputs": {"pred": "x", "target": "y"}}})
    with pytest.raises(LossInputError, match="outputs.x"):
        mix({"x": torch.zeros(2)}, {"x": torch.zeros(2), "y": torch.zeros(2)})


def test_outputs_must_be_a_mapping():
    mix = LossMix.from_config({"reg": {"type": "L1Loss", "inputs": ROUTE}})
    with pytest.raises(LossInputError, match="terms reg: outputs must be a mapping"):
        mix(torch.zeros(2), {})


def test_default_inputs_route_by_argument_name():
    mix = LossMix.from_config({"reg": {"type": "L1Loss"}})
    result = mix({"pred": torch.ones(2)}, {"target": torch.zeros(2)})
    assert result.raw["reg"].item() == 1.0


# -- samplers ----------------------------------------------------------------------------------
def _cls_batch(n=40, c=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=gen, requires_grad=True)
    labels = torch.randint(0, c + 1, (n,), generator=gen)  # c = background
    labels[:3] = -1  # ignored
    return {"logits": logits}, {"labels": labels}


CLS_ROUTE = {"pred": "logits", "target": "labels"}


def test_pseudo_sampler_mask_matches_hand_computation(registry_snapshot):
    @LOSSES.register(name="RowLoss")
    def row_loss(pred, target):
        return pred.logsumexp(-1) * 0 + pred.pow(2).sum(-1)  # one value per row

    mix = LossMix.from_config(
        {
            "cls": {
                "type": "RowLoss",
                "inputs": CLS_ROUTE,
                "sampler": {"type": "PseudoSampler"},
                "normalizer": "num_pos",
            }
        }
    )
    outputs, batch = _cls_batch()
    labels = batch["labels"]
    result = mix(outputs, batch)
    valid = labels >= 0
    pos = valid & (labels != 3)
    rows = outputs["logits"].pow(2).sum(-1)
    expected = (rows * valid).sum() / (pos.sum().clamp(min=1) + EPS32)
    torch.testing.assert_close(result.raw["cls"], expected)
    assert result.stats["cls.num_pos"].item() == pos.sum().item()
    assert result.stats["cls.num_sampled"].item() == valid.sum().item()


def test_random_sampler_on_term_respects_quota_and_seed(registry_snapshot):
    @LOSSES.register(name="RowLoss2")
    def row_loss(pred, target):
        return pred.pow(2).sum(-1)

    def build():
        return LossMix.from_config(
            {
                "cls": {
                    "type": "RowLoss2",
                    "inputs": CLS_ROUTE,
                    "sampler": {"type": "RandomSampler", "num": 8, "pos_fraction": 0.25, "seed": 3},
                }
            }
        )

    outputs, batch = _cls_batch()
    first, second = build()(outputs, batch), build()(outputs, batch)
    assert first.stats["cls.num_pos"].item() == 2
    assert first.stats["cls.num_sampled"].item() == 8
    torch.testing.assert_close(first.raw["cls"], second.raw["cls"])


def test_ohem_on_term_picks_largest_loss_negatives(registry_snapshot):
    @LOSSES.register(name="RowLoss3")
    def row_loss(pred, target):
        return pred.pow(2).sum(-1)

    mix = LossMix.from_config(
        {
            "cls": {
                "type": "RowLoss3",
                "reduction": "sum",
                "inputs": CLS_ROUTE,
                "sampler": {"type": "OHEMSampler", "num": 6, "pos_fraction": 0.0},
            }
        }
    )
    outputs, batch = _cls_batch()
    labels = batch["labels"]
    rows = outputs["logits"].detach().pow(2).sum(-1)
    neg_scores = torch.where(labels == 3, rows, torch.full_like(rows, -1.0))
    expected = neg_scores.topk(6).values.sum()
    torch.testing.assert_close(mix(outputs, batch).raw["cls"], expected)


def test_sampler_on_float_target_is_an_error_naming_the_term():
    mix = LossMix.from_config(
        {"reg": {"type": "L1Loss", "inputs": ROUTE, "sampler": {"type": "PseudoSampler"}}}
    )
    with pytest.raises(LossInputError, match="term 'reg'.*pos_mask"):
        mix(*_reg_batch())


def test_explicit_masks_feed_the_sampler():
    mix = LossMix.from_config(
        {
            "reg": {
                "type": "L1Loss",
                "sampler": {"type": "PseudoSampler"},
                "inputs": {**ROUTE, "pos_mask": "pos"},
                "normalizer": "num_pos",
            }
        }
    )
    outputs, batch = _reg_batch()
    pos = torch.tensor([True, False, True, False, False, False])
    result = mix(outputs, {**batch, "pos": pos})
    assert result.stats["reg.num_pos"].item() == 2
    assert result.stats["reg.num_sampled"].item() == 6


def test_sampler_generator_state_is_in_the_state_dict():
    mix = LossMix.from_config(
        {"cls": {"type": "L1Loss", "sampler": {"type": "RandomSampler", "num": 4, "pos_fraction": 0.5}}}
    )
    outputs, batch = _cls_batch()
    batch["labels"] = batch["labels"].clamp(min=0)  # FocalLoss takes labels in [0, C]
    mix = LossMix.from_config(
        {
            "cls": {
                "type": "FocalLoss",
                "inputs": CLS_ROUTE,
                "sampler": {"type": "RandomSampler", "num": 4, "pos_fraction": 0.5},
            }
        }
    )
    mix(outputs, batch)
    assert any(k.endswith("_extra_state") for k in mix.state_dict())


# -- normalisers -------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["weight_sum", "numel", "batch", "n_items"])
def test_normalizers(source):
    mix = LossMix.from_config(
        {"reg": {"type": "L1Loss", "normalizer": source, "inputs": {**ROUTE, "weight": "w"}}}
    )
    outputs, batch = _reg_batch()
    weight = torch.rand(6, 4, generator=torch.Generator().manual_seed(1))
    batch = {**batch, "w": weight, "n_items": torch.tensor(5.0)}
    p, t = outputs["box"], batch["box_target"]
    summed = ((p - t).abs() * weight).sum()
    divisor = {"weight_sum": weight.sum(), "numel": 24.0, "batch": 6.0, "n_items": 5.0}[source]
    torch.testing.assert_close(mix(outputs, batch).raw["reg"], summed / (torch.as_tensor(divisor) + EPS32))


def test_count_normalizer_is_clamped_to_one():
    mix = LossMix.from_config(
        {
            "reg": {
                "type": "L1Loss",
                "normalizer": "num_pos",
                "sampler": {"type": "PseudoSampler"},
                "inputs": {**ROUTE, "pos_mask": "pos"},
            }
        }
    )
    outputs, batch = _reg_batch()
    result = mix(outputs, {**batch, "pos": torch.zeros(6, dtype=torch.bool)})
    assert result.stats["reg.avg_factor"].item() == 1.0


def test_synced_normalizers_share_one_collective(monkeypatch):
    calls = []

    def fake_all_reduce(tensor, *args, **kwargs):
        calls.append(tensor.shape)
        tensor.mul_(2)  # as if the other rank had the same values

    monkeypatch.setattr(lossmix.utilities.distributed, "world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_reduce", fake_all_reduce)
    mix = LossMix.from_config(
        {
            name: {"type": "L1Loss", "inputs": ROUTE, "normalizer": {"type": "numel", "sync": True}}
            for name in ("a", "b", "c")
        }
    )
    outputs, batch = _reg_batch()
    result = mix(outputs, batch)
    assert calls == [torch.Size([3])]
    assert result.stats["a.avg_factor"].item() == 24.0


@pytest.mark.parametrize(
    "bad",
    [
        ({"normalizer": "missing_key"}, LossInputError, "normalizer key 'missing_key'|wants key"),
        ({"normalizer": "box_target"}, LossInputError, "not a count"),
    ],
)
def test_bad_normalizer_inputs(bad):
    extra, error, match = bad
    mix = LossMix.from_config({"reg": {"type": "L1Loss", "inputs": ROUTE, **extra}})
    with pytest.raises(error, match=match):
        mix(*_reg_batch())


# -- configuration errors -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "node, match",
    [
        ({"type": "L1Loss", "every": 0}, r"term 'reg': every=0"),
        ({"type": "L1Loss", "every": 1.5}, r"every=1.5"),
        ({"type": "L1Loss", "evry": 2}, r"term 'reg' \(L1Loss\): unknown key 'evry'.*Did you mean 'every'\?"),
        ({"type": "L1Loss", "inputs": {"pred": "a", "targt": "b"}}, r"Did you mean 'target'"),
        ({"type": "L1Loss", "inputs": {"pred": "a"}}, r"does not say where 'target'"),
        ({"type": "L1Loss", "reduction": "sum", "normalizer": "num_pos"}, r"needs reduction='mean'"),
        ({"type": "L1Loss", "normalizer": {"type": "num_pos", "bogus": 1}}, r"normalizer"),
        ({"type": "L1Loss", "loss_weight": "high"}, r"loss_weight='high'"),
        (
            {"type": "L1Loss", "sampler": {"type": "RandomSampler", "num": 0, "pos_fraction": 0.5}},
            r"term 'reg': sampler",
        ),
        ({"type": "L1Loss", "sampler": {"type": "RandmSampler"}}, r"Did you mean 'RandomSampler'"),
        ({"type": "L1Loss", "schedule": {"kind": "linear"}}, r"LossSchedule"),
        ({"gamma": 2.0}, r"term 'reg'.*'type'"),
    ],
)
def test_config_errors_name_the_term(node, match):
    with pytest.raises(LossConfigError, match=match):
        LossMix.from_config({"reg": node})


@pytest.mark.parametrize("name", ["a.b", "a/b", "", "1x"])
def test_bad_term_names(name):
    with pytest.raises(LossConfigError, match="name"):
        LossMix.from_config({name: {"type": "L1Loss"}})


def test_non_scalar_term_is_an_error():
    mix = LossMix.from_config({"reg": {"type": "L1Loss", "reduction": "none", "inputs": ROUTE}})
    with pytest.raises(LossInputError, match="term 'reg'.*not a scalar"):
        mix(*_reg_batch())


def test_term_can_be_built_directly():
    term = Term("reg", lossmix.losses.L1Loss(), weight=2.0, inputs=ROUTE)
    result = LossMix({"reg": term})(*_reg_batch())
    torch.testing.assert_close(result.terms["reg"], 2.0 * result.raw["reg"])


def test_engine_compiles_fullgraph():
    mix = LossMix.from_config(
        {
            "cls": {"type": "FocalLoss", "inputs": CLS_ROUTE, "normalizer": "num_pos"},
            "reg": {
                "type": "GIoULoss",
                "loss_weight": 2.0,
                "normalizer": "weight_sum",
                "inputs": {"pred": "boxes", "target": "box_target", "weight": "pos"},
            },
            "lazy": {"type": "L1Loss", "every": 2, "inputs": {"pred": "boxes", "target": "box_target"}},
        }
    )
    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(32, 3, generator=gen), torch.randint(0, 4, (32,), generator=gen)
    xy = torch.rand(32, 2, generator=gen) * 10
    target = torch.cat([xy, xy + 1 + torch.rand(32, 2, generator=gen) * 5], -1)
    boxes = target + 0.1 * torch.randn(32, 4, generator=gen)
    batch = {"labels": labels, "box_target": target, "pos": (labels < 3).float()}

    def step(logits, boxes, step):
        result = mix({"logits": logits, "boxes": boxes}, batch, step=step)
        return result.total, result.terms

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    for s in (0, 1):
        (total, terms), (ref_total, ref_terms) = compiled(logits, boxes, s), step(logits, boxes, s)
        torch.testing.assert_close(total, ref_total)
        for name in ref_terms:
            torch.testing.assert_close(terms[name], ref_terms[name])


@pytest.mark.parametrize(
    "sampler", [{"type": "PseudoSampler"}, {"type": "OHEMSampler", "num": 64, "pos_fraction": 0.5}]
)
def test_ignored_labels_reach_the_loss_as_background_with_zero_weight(sampler):
    outputs, batch = _cls_batch()  # labels -1 on the first rows: ignored
    labels = batch["labels"]
    mix = LossMix.from_config(
        {"cls": {"type": "FocalLoss", "inputs": CLS_ROUTE, "sampler": sampler, "normalizer": "num_sampled"}}
    )
    result = mix(outputs, batch)
    valid = labels >= 0
    by_hand = lossmix.losses.FocalLoss(reduction="sum")(outputs["logits"][valid], labels[valid])
    torch.testing.assert_close(result.raw["cls"], by_hand / (valid.sum() + EPS32))
