"""Registries: registration, building from ``type:`` / ``_target_:``, the allow-list, errors.

MMDetection's reduction contract (what a built loss computes), Hydra's ``_target_`` and
lossmix's allow-list semantics.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

import lossmix
import lossmix.registry.allowlist as targets
import lossmix.registry.registry as registry
from lossmix import LOSSES, SAMPLERS, allow_targets, allowed_prefixes, build_loss, build_sampler
from lossmix.errors import LossConfigError
from lossmix.losses import FunctionLoss, L1Loss, SmoothL1Loss, TorchLoss
from lossmix.registry.registry import ENV_ALLOWED_TARGETS, Registry, resolve_target

EPS = torch.finfo(torch.float32).eps
THIS_MODULE = __name__  # "tests.registry.test_registry" under pytest
TEST_PKG = THIS_MODULE.partition(".")[0]  # "tests"
REGRESSION = ["L1Loss", "MSELoss", "SmoothL1Loss", "BalancedL1Loss", "CharbonnierLoss"]


@pytest.fixture(autouse=True)
def clean_state(monkeypatch):
    """Leave LOSSES, SAMPLERS, the allow-list and the environment as they were."""
    saved = [(reg, dict(reg._entries), dict(reg._aliases)) for reg in (LOSSES, SAMPLERS)]
    allowed = list(targets._user_allowed)
    monkeypatch.delenv(ENV_ALLOWED_TARGETS, raising=False)
    yield
    for reg, entries, aliases in saved:
        reg._entries.clear()
        reg._entries.update(entries)
        reg._aliases.clear()
        reg._aliases.update(aliases)
    targets._user_allowed[:] = allowed


def data(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# Functions reachable as ``tests.registry.test_registry.<name>`` for the allow-list tests.
def abs_error(pred, target):
    """Absolute error (a test loss)."""
    return (pred - target).abs()


def scaled_power(pred, target, *, scale: float = 1.0, power: int = 2):
    """scale · |pred − target|^power (a test loss with hyper-parameters)."""
    return scale * (pred - target).abs() ** power


# ---------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------


def test_register_class_defaults_to_its_name():
    @LOSSES.register()
    class ZzTestLoss(lossmix.losses.BaseLoss):
        """A test loss."""

        def elementwise(self, pred, target):
            return pred - target

    assert "ZzTestLoss" in LOSSES
    assert LOSSES.get("ZzTestLoss") is ZzTestLoss
    assert "ZzTestLoss" in LOSSES.names()
    built = build_loss({"type": "ZzTestLoss", "reduction": "sum"})
    assert isinstance(built, ZzTestLoss) and built.reduction == "sum"


def test_register_returns_the_object_and_accepts_a_name():
    things = Registry("thing")

    class Apple:
        pass

    assert things.register(Apple) is Apple
    assert things.register(name="Pomme")(Apple) is Apple
    assert things.register("Malus")(Apple) is Apple
    assert things.names() == ["Apple", "Malus", "Pomme"]
    assert len(things) == 3 and list(things) == ["Apple", "Malus", "Pomme"]


def test_aliases_find_the_same_entry():
    things = Registry("thing")

    @things.register(aliases=["pear", "poire"])
    class Pear:
        """A pear."""

        def __init__(self, ripe: bool = True):
            self.ripe = ripe

    assert things.get("pear") is things.get("poire") is Pear
    assert "pear" in things and "Pear" in things
    assert things.names() == ["Pear"]  # aliases are not entries
    assert things.canonical_name("poire") == "Pear"
    assert things.build({"type": "pear", "ripe": False}).ripe is False
    info = things.describe("poire")
    assert info.name == "Pear" and set(info.aliases) == {"pear", "poire"}


def test_duplicate_name_raises_unless_forced():
    things = Registry("thing")

    @things.register(name="Fruit")
    class First:
        pass

    class Second:
        pass

    with pytest.raises(LossConfigError, match=r"'Fruit' is already registered.*force=True"):
        things.register(name="Fruit")(Second)
    assert things.get("Fruit") is First
    things.register(name="Fruit", force=True)(Second)
    assert things.get("Fruit") is Second


def test_alias_clashing_with_a_name_or_alias_raises():
    things = Registry("thing")

    @things.register(aliases=["a"])
    class One:
        pass

    class Two:
        pass

    with pytest.raises(LossConfigError, match="'One' is already registered"):
        things.register(aliases=["One"])(Two)
    with pytest.raises(LossConfigError, match="'a' is already registered"):
        things.register(aliases=["a"])(Two)
    assert "Two" not in things


def test_registering_the_same_object_again_is_allowed():
    things = Registry("thing")

    class Same:
        pass

    things.register(Same)
    things.register(Same)  # e.g. a module imported twice
    assert things.names() == ["Same"]


def test_duplicate_in_losses_is_refused_and_leaves_the_entry():
    class L1Loss(nn.Module):  # a different class with a taken name
        pass

    with pytest.raises(LossConfigError, match="already registered to lossmix"):
        LOSSES.register()(L1Loss)
    assert LOSSES.get("L1Loss") is lossmix.losses.L1Loss


def test_register_a_non_callable_raises():
    with pytest.raises(LossConfigError, match="not a class or function"):
        Registry("thing").register(name="x")(42)


# ---------------------------------------------------------------------------------------------
# plain functions become losses
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reduction,avg_factor", [("mean", None), ("mean", 5.0), ("sum", None), ("none", None)]
)
def test_registered_function_gets_weight_avg_factor_loss_weight(reduction, avg_factor):
    LOSSES.register(abs_error)
    loss = build_loss({"type": "abs_error", "reduction": reduction, "loss_weight": 2.0})
    assert isinstance(loss, FunctionLoss) and isinstance(loss, nn.Module)
    pred, target, weight = data(4, 3, seed=1), data(4, 3, seed=2), data(4, 3, seed=3).abs()
    weight[0] = 0
    elem = (pred - target).abs() * weight
    expected = {"none": elem, "sum": elem.sum()}.get(reduction)
    if reduction == "mean":
        expected = elem.mean() if avg_factor is None else elem.sum() / (avg_factor + EPS)
    out = loss(pred, target, weight=weight, avg_factor=avg_factor)
    torch.testing.assert_close(out, 2.0 * expected)


def test_registered_function_with_hyper_parameters():
    LOSSES.register(scaled_power)
    params = LOSSES.describe("scaled_power").params
    assert params == {"scale": 1.0, "power": 2, "reduction": "mean", "loss_weight": 1.0}
    loss = build_loss({"type": "scaled_power", "scale": 3.0, "power": 1, "loss_weight": 0.5})
    pred, target = data(6, seed=4), data(6, seed=5)
    torch.testing.assert_close(loss(pred, target), 0.5 * (3.0 * (pred - target).abs()).mean())
    default = build_loss({"type": "scaled_power"})
    torch.testing.assert_close(default(pred, target), ((pred - target) ** 2).mean())
    torch.testing.assert_close(default(pred, target, reduction_override="sum"), ((pred - target) ** 2).sum())


def test_registered_function_unknown_argument():
    LOSSES.register(scaled_power)
    with pytest.raises(LossConfigError) as info:
        build_loss({"type": "scaled_power", "scael": 2.0})
    message = str(info.value)
    assert "unknown argument 'scael'" in message
    assert "Did you mean 'scale'" in message
    assert "Valid arguments: scale, power, reduction, loss_weight" in message


def test_registered_function_with_bad_reduction_names_it():
    LOSSES.register(abs_error)
    with pytest.raises(ValueError, match=r"abs_error: reduction='avg'"):
        build_loss({"type": "abs_error", "reduction": "avg"})


# ---------------------------------------------------------------------------------------------
# build_loss: dict, DictConfig, type, _target_
# ---------------------------------------------------------------------------------------------

CONFIGS = [
    {"type": "L1Loss", "loss_weight": 2.0, "reduction": "sum"},
    {"_target_": "lossmix.losses.L1Loss", "loss_weight": 2.0, "reduction": "sum"},
    {"_target_": "lossmix.losses.regression.L1Loss", "loss_weight": 2.0, "reduction": "sum"},
    {"type": "lossmix.losses.L1Loss", "loss_weight": 2.0, "reduction": "sum"},
]


@pytest.mark.parametrize("as_omegaconf", [False, True], ids=["dict", "DictConfig"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.get("type") or c["_target_"])
def test_build_loss_from_dict_and_dictconfig(cfg, as_omegaconf):
    node = OmegaConf.create(cfg) if as_omegaconf else dict(cfg)
    loss = build_loss(node)
    assert type(loss) is L1Loss
    assert loss.loss_weight == 2.0 and loss.reduction == "sum"
    pred, target = data(5, seed=6), data(5, seed=7)
    torch.testing.assert_close(loss(pred, target), 2.0 * (pred - target).abs().sum())
    assert cfg == dict(cfg)  # the caller's config is not consumed


def test_build_loss_resolves_interpolations_and_drops_hydra_keys():
    cfg = OmegaConf.create(
        {"w": 3.0, "loss": {"type": "SmoothL1Loss", "beta": "${w}", "_recursive_": False, "_convert_": "all"}}
    )
    loss = build_loss(cfg.loss)
    assert isinstance(loss, SmoothL1Loss) and loss.beta == 3.0


def test_build_loss_overrides_win():
    loss = build_loss(OmegaConf.create({"type": "SmoothL1Loss", "beta": 0.5}), beta=2.0, loss_weight=4.0)
    assert loss.beta == 2.0 and loss.loss_weight == 4.0


def test_build_loss_returns_a_module_as_is():
    module = L1Loss()
    assert build_loss(module) is module


# ---------------------------------------------------------------------------------------------
# torch.nn losses and functions through _target_
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_torch_smooth_l1_matches_torch(reduction):
    loss = build_loss({"_target_": "torch.nn.SmoothL1Loss", "beta": 0.5, "reduction": reduction})
    assert isinstance(loss, TorchLoss) and loss.loss.beta == 0.5
    pred, target = data(4, 5, seed=8), data(4, 5, seed=9)
    expected = nn.SmoothL1Loss(beta=0.5, reduction=reduction)(pred, target)
    torch.testing.assert_close(loss(pred, target), expected)


def test_torch_smooth_l1_gets_weight_avg_factor_loss_weight():
    loss = build_loss({"_target_": "torch.nn.SmoothL1Loss", "beta": 0.5, "loss_weight": 3.0})
    pred, target, weight = data(4, 5, seed=10), data(4, 5, seed=11), data(4, 5, seed=12).abs()
    elem = F.smooth_l1_loss(pred, target, beta=0.5, reduction="none") * weight
    torch.testing.assert_close(
        loss(pred, target, weight=weight, avg_factor=7.0), 3.0 * elem.sum() / (7.0 + EPS)
    )
    torch.testing.assert_close(loss(pred, target, weight=weight), 3.0 * elem.mean())
    torch.testing.assert_close(loss(pred, target, weight=weight, reduction_override="none"), 3.0 * elem)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_torch_bce_with_logits_pos_weight_matches_torch(reduction):
    pos_weight = torch.tensor([1.0, 2.0, 0.5])
    loss = build_loss(
        {"_target_": "torch.nn.BCEWithLogitsLoss", "pos_weight": pos_weight, "reduction": reduction}
    )
    logits, target = data(6, 3, seed=13) * 3, (data(6, 3, seed=14) > 0).float()
    expected = nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction=reduction)(logits, target)
    torch.testing.assert_close(loss(logits, target), expected)


def test_torch_bce_with_logits_pos_weight_as_override_and_weighted():
    pos_weight = torch.tensor([1.0, 2.0, 0.5])
    cfg = OmegaConf.create({"_target_": "torch.nn.BCEWithLogitsLoss", "loss_weight": 0.5})
    loss = build_loss(cfg, pos_weight=pos_weight)  # tensors cannot live in a DictConfig
    logits, target = data(6, 3, seed=15), (data(6, 3, seed=16) > 0).float()
    weight = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0]).unsqueeze(-1)
    elem = (
        F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none") * weight
    )
    torch.testing.assert_close(
        loss(logits, target, weight=weight, avg_factor=4), 0.5 * elem.sum() / (4 + EPS)
    )


def test_torch_loss_unknown_argument_lists_valid_ones():
    with pytest.raises(LossConfigError) as info:
        build_loss({"_target_": "torch.nn.SmoothL1Loss", "bta": 0.5})
    message = str(info.value)
    assert "torch.nn.SmoothL1Loss: unknown argument 'bta'" in message
    assert "Did you mean 'beta'" in message
    assert "Valid arguments: beta, reduction, loss_weight" in message
    with pytest.raises(LossConfigError, match="unknown argument 'size_average'"):
        build_loss({"_target_": "torch.nn.SmoothL1Loss", "size_average": True})


def test_torch_loss_bad_reduction_names_the_loss():
    with pytest.raises(ValueError, match=r"SmoothL1Loss: reduction='avg'"):
        build_loss({"_target_": "torch.nn.SmoothL1Loss", "reduction": "avg"})


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_torch_functional_l1_loss(reduction):
    loss = build_loss({"_target_": "torch.nn.functional.l1_loss", "reduction": reduction, "loss_weight": 2.0})
    assert isinstance(loss, FunctionLoss)
    pred, target = data(3, 4, seed=17), data(3, 4, seed=18)
    torch.testing.assert_close(loss(pred, target), 2.0 * F.l1_loss(pred, target, reduction=reduction))
    weight = torch.tensor([1.0, 0.0, 2.0]).unsqueeze(-1)
    if reduction != "sum":
        torch.testing.assert_close(
            loss(pred, target, weight=weight, avg_factor=3.0, reduction_override="mean"),
            2.0 * ((pred - target).abs() * weight).sum() / (3.0 + EPS),
        )


# ---------------------------------------------------------------------------------------------
# the allow-list
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "os.system",
        "subprocess.run",
        "builtins.eval",
        "os.popen",
        "subprocess.Popen",
        "importlib.import_module",
    ],
)
def test_dangerous_targets_are_refused(target):
    with pytest.raises(LossConfigError, match=rf"_target_='{re.escape(target)}' is refused"):
        build_loss({"_target_": target})


def test_numpy_sum_is_outside_the_allow_list_and_says_how_to_allow_it():
    with pytest.raises(LossConfigError) as info:
        build_loss({"_target_": "numpy.sum"})
    message = str(info.value)
    assert "_target_='numpy.sum' is refused" in message
    assert "outside the allowed packages" in message
    assert "allow_targets('numpy')" in message
    assert f"{ENV_ALLOWED_TARGETS}=numpy" in message


def test_type_with_a_dotted_path_goes_through_the_allow_list():
    with pytest.raises(LossConfigError, match=r"'numpy\.sum' is refused"):
        build_loss({"type": "numpy.sum"})
    with pytest.raises(LossConfigError, match=r"'os\.system' is refused"):
        build_loss({"type": "os.system"})


@pytest.mark.parametrize("how", ["allow_targets", "env", "argument"])
def test_allowing_a_prefix_makes_a_test_function_buildable(how, monkeypatch):
    cfg = {"_target_": f"{THIS_MODULE}.scaled_power", "scale": 2.0, "power": 1}
    with pytest.raises(LossConfigError, match="is refused"):
        build_loss(cfg)
    extra = []
    if how == "allow_targets":
        allow_targets(TEST_PKG)
        assert TEST_PKG in allowed_prefixes()
    elif how == "env":
        monkeypatch.setenv(ENV_ALLOWED_TARGETS, f" numpy , {TEST_PKG}")
        assert {TEST_PKG, "numpy"} <= set(allowed_prefixes())
    else:
        extra = [TEST_PKG]
    loss = build_loss(cfg, allowed_targets=extra)
    assert isinstance(loss, FunctionLoss)
    pred, target = data(5, seed=19), data(5, seed=20)
    torch.testing.assert_close(loss(pred, target), 2.0 * (pred - target).abs().mean())
    if how == "argument":  # an argument does not stick
        with pytest.raises(LossConfigError, match="is refused"):
            build_loss(cfg)


@pytest.mark.parametrize(
    "prefix", [TEST_PKG, f"{TEST_PKG}.", f"{TEST_PKG}.*", THIS_MODULE, f"{THIS_MODULE}.abs_error"]
)
def test_prefix_forms(prefix):
    allow_targets(prefix)
    assert isinstance(build_loss({"_target_": f"{THIS_MODULE}.abs_error"}), FunctionLoss)


def test_prefix_matches_whole_components_only():
    allow_targets(TEST_PKG[:-1])  # "test" does not cover "tests.…"
    with pytest.raises(LossConfigError, match="is refused"):
        build_loss({"_target_": f"{THIS_MODULE}.abs_error"})
    with pytest.raises(LossConfigError, match="is refused"):  # "lossmix" does not cover it
        resolve_target("lossmixevil.Loss")


@pytest.mark.parametrize("prefix", ["*", "", ".", " ", ".*", " * "])
def test_allow_everything_is_refused(prefix):
    with pytest.raises(LossConfigError, match="would allow everything"):
        allow_targets(prefix)
    assert allowed_prefixes() == tuple(
        dict.fromkeys([*targets.DEFAULT_ALLOWED_TARGETS, *targets._user_allowed])
    )


def test_allow_everything_through_the_environment_is_refused(monkeypatch):
    monkeypatch.setenv(ENV_ALLOWED_TARGETS, "*")
    with pytest.raises(LossConfigError, match="would allow everything"):
        build_loss({"_target_": "numpy.sum"})


def test_allow_targets_needs_strings():
    with pytest.raises(LossConfigError, match="not a string"):
        allow_targets(3)


@pytest.mark.parametrize("how", ["allow_targets", "env", "argument"])
@pytest.mark.parametrize(
    "target,prefix", [("os.system", "os"), ("subprocess.run", "subprocess"), ("builtins.eval", "builtins")]
)
def test_dangerous_targets_stay_refused_when_allowed(target, prefix, how, monkeypatch):
    extra = []
    if how == "allow_targets":  # refused when allowed, not only when used
        with pytest.raises(LossConfigError, match=f"'{prefix}' cannot be allowed"):
            allow_targets(prefix)
        assert prefix not in allowed_prefixes()
    elif how == "env":
        monkeypatch.setenv(ENV_ALLOWED_TARGETS, prefix)
    else:
        extra = [prefix]
    with pytest.raises(LossConfigError, match="is refused: lossmix never builds it"):
        build_loss({"_target_": target}, allowed_targets=extra)


def test_allow_list_check_happens_before_import(monkeypatch):
    def no_import(name, *args, **kwargs):
        raise AssertionError(f"imported {name!r} before the allow-list check")

    monkeypatch.setattr(targets.importlib, "import_module", no_import)
    for target in ("zz_lossmix_no_such_pkg.evil.Loss", "os.system", "numpy.sum"):
        with pytest.raises(LossConfigError) as info:
            build_loss({"_target_": target})
        assert "refused" in str(info.value)
        assert "could not be found" not in str(info.value)


def test_missing_module_refused_versus_not_found():
    with pytest.raises(LossConfigError) as info:
        build_loss({"_target_": "zz_lossmix_no_such_pkg.evil.Loss"})
    assert "refused" in str(info.value) and "could not be found" not in str(info.value)
    assert "zz_lossmix_no_such_pkg" not in sys.modules
    # under an allowed prefix, the same kind of mistake is reported as not found
    with pytest.raises(LossConfigError, match=r"'lossmix\.losses\.NoSuchLoss' could not be found"):
        build_loss({"_target_": "lossmix.losses.NoSuchLoss"})
    with pytest.raises(LossConfigError, match="could not be found"):
        build_loss({"_target_": "lossmix.zz_no_such_module.Loss"})


@pytest.mark.parametrize("target", ["", ".lossmix.losses.L1Loss", 3, None])
def test_target_must_be_a_dotted_path(target):
    with pytest.raises(LossConfigError, match="is not a dotted path"):
        build_loss({"_target_": target})


def test_resolve_target_returns_the_object():
    assert resolve_target("lossmix.losses.L1Loss") is L1Loss
    assert resolve_target("torch.nn.functional.l1_loss") is F.l1_loss
    assert importlib.import_module("lossmix.registry.registry") is registry


# ---------------------------------------------------------------------------------------------
# configuration errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,closest",
    [("L1Los", "L1Loss"), ("SmoothL1", "SmoothL1Loss"), ("l1loss", "L1Loss"), ("MSELos", "MSELoss")],
)
def test_unknown_loss_name_suggests_the_closest(name, closest):
    with pytest.raises(LossConfigError) as info:
        build_loss({"type": name})
    message = str(info.value)
    assert f"Unknown loss '{name}'" in message
    assert f"Did you mean '{closest}'" in message
    registered = message.split("Registered: ")[1]
    for known in REGRESSION:
        assert known in registered
    assert "LOSSES.register()" in message


def test_unknown_argument_lists_the_valid_ones_and_the_closest():
    with pytest.raises(LossConfigError) as info:
        build_loss({"type": "SmoothL1Loss", "betta": 0.5})
    message = str(info.value)
    assert message.startswith("SmoothL1Loss: unknown argument 'betta'.")
    assert "Did you mean 'beta'" in message
    assert "Valid arguments: beta, reduction, loss_weight." in message


def test_unknown_argument_through_an_alias_names_the_canonical_loss():
    LOSSES.register(name="ZzSmooth", aliases=["zz_smooth"])(LOSSES.get("SmoothL1Loss"))
    with pytest.raises(LossConfigError, match=r"^ZzSmooth: unknown argument 'gamma'"):
        build_loss({"type": "zz_smooth", "gamma": 1.0})


@pytest.mark.parametrize("name", ["L1Loss", "SmoothL1Loss", "BalancedL1Loss"])
@pytest.mark.parametrize("bad", ["avg", "Mean", None])
def test_bad_reduction_names_the_loss(name, bad):
    with pytest.raises(ValueError, match=rf"^{name}: reduction={re.escape(repr(bad))} .*'none'"):
        build_loss({"type": name, "reduction": bad})


@pytest.mark.parametrize(
    "cfg",
    [
        {"loss_weight": 1.0},
        {},
        {"type": "L1Loss", "_target_": "lossmix.losses.L1Loss"},
    ],
)
def test_both_or_neither_of_type_and_target(cfg):
    with pytest.raises(LossConfigError) as info:
        build_loss(cfg)
    message = str(info.value)
    assert "exactly one of 'type'" in message and "'_target_'" in message
    assert f"got keys {sorted(cfg)}" in message


@pytest.mark.parametrize("cfg", ["L1Loss", ["L1Loss"], None, 3, OmegaConf.create(["L1Loss"])])
def test_non_mapping_config(cfg):
    with pytest.raises(LossConfigError, match="config must be a mapping with 'type' or '_target_'"):
        build_loss(cfg)


def test_missing_required_argument_and_constructor_type_error():
    things = Registry("thing")

    @things.register()
    class Needs:
        def __init__(self, num: int, *, ratio: float = 0.5):
            self.num, self.ratio = num, ratio

    with pytest.raises(LossConfigError, match="Needs: missing required argument 'num'"):
        things.build({"type": "Needs"})

    @things.register()
    class Picky:
        def __init__(self, **kwargs):
            raise TypeError("no thanks")

    # the constructor's own TypeError is its own, not a config error: it reaches the caller
    with pytest.raises(TypeError, match="no thanks") as info:
        things.build({"type": "Picky", "anything": 1})
    assert not isinstance(info.value, LossConfigError)


# ---------------------------------------------------------------------------------------------
# description
# ---------------------------------------------------------------------------------------------


def test_describe_smooth_l1():
    info = LOSSES.describe("SmoothL1Loss")
    assert info.name == "SmoothL1Loss"
    assert info.params == {"beta": 1.0, "reduction": "mean", "loss_weight": 1.0}
    assert info.summary.startswith("Smooth L1")
    assert "``" not in info.summary and ":func:" not in info.summary
    assert info.aliases == ()
    assert info.target == "lossmix.losses.regression.SmoothL1Loss"
    assert info.format_params() == "beta=1.0, reduction='mean', loss_weight=1.0"
    assert str(info).startswith("SmoothL1Loss: Smooth L1")


def test_describe_shows_aliases_and_required_arguments():
    LOSSES.register(name="ZzSmooth", aliases=["zz_smooth"])(LOSSES.get("SmoothL1Loss"))
    assert LOSSES.describe("zz_smooth").aliases == ("zz_smooth",)
    things = Registry("thing")

    @things.register(aliases=["nd"])
    class Needs:
        """Needs a number.

        More text that is not the summary.
        """

        def __init__(self, num: int, ratio: float = 0.5):
            pass

    info = things.describe("nd")
    assert info.summary == "Needs a number."
    assert info.format_params() == "num=<required>, ratio=0.5"
    assert str(info) == "Needs (aliases: nd): Needs a number.\n  num=<required>, ratio=0.5"


def test_describe_unknown_name_raises():
    with pytest.raises(LossConfigError, match="Did you mean 'SmoothL1Loss'"):
        LOSSES.describe("SmoothL1Los")


def test_repr_lists_every_loss():
    text = repr(LOSSES)
    lines = text.splitlines()
    assert lines[0] == f"Registry('loss', {len(LOSSES)} entries)"
    listed = [line.split()[0] for line in lines[1:]]
    assert listed == LOSSES.names()
    for name in REGRESSION:
        assert name in listed
    assert len(LOSSES.describe_all()) == len(LOSSES)


def test_print_losses_in_a_fresh_interpreter(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import lossmix; print(lossmix.LOSSES)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Registry('loss', ")
    assert re.search(r"^  L1Loss +Absolute error", result.stdout, re.MULTILINE)
    for name in REGRESSION:
        assert re.search(rf"^  {name} ", result.stdout, re.MULTILINE)


# ---------------------------------------------------------------------------------------------
# samplers
# ---------------------------------------------------------------------------------------------


def test_samplers_registry_exists():
    assert lossmix.SAMPLERS is SAMPLERS
    assert isinstance(SAMPLERS, Registry) and SAMPLERS.kind == "sampler"
    assert SAMPLERS is not LOSSES


def test_build_sampler_unknown_name_suggests():
    from lossmix.samplers import PseudoSampler

    @SAMPLERS.register()
    class ZzDummySampler(PseudoSampler):
        """A dummy sampler."""

        def __init__(self, num: int = 8):
            super().__init__()
            self.num = num

    with pytest.raises(LossConfigError) as info:
        build_sampler({"type": "ZzDummySamplr"})
    message = str(info.value)
    assert "Unknown sampler 'ZzDummySamplr'" in message
    assert "Did you mean 'ZzDummySampler'" in message
    assert "ZzDummySampler" in message.split("Registered: ")[1]
    assert "@lossmix.SAMPLERS.register()" in message
    assert build_sampler({"type": "ZzDummySampler"}, num=3).num == 3


def test_sampler_registry_builds_a_dummy():
    samplers = Registry("sampler")

    @samplers.register(aliases=["dummy"])
    class DummySampler:
        """Takes the first ``num``."""

        def __init__(self, num: int, pos_fraction: float = 0.5):
            self.num, self.pos_fraction = num, pos_fraction

    built = samplers.build(OmegaConf.create({"type": "dummy", "num": 4}), pos_fraction=0.25)
    assert isinstance(built, DummySampler)
    assert (built.num, built.pos_fraction) == (4, 0.25)
    with pytest.raises(LossConfigError, match=r"unknown argument 'pos_fractoin'.*'pos_fraction'"):
        samplers.build({"type": "DummySampler", "num": 4, "pos_fractoin": 0.1})
    with pytest.raises(LossConfigError, match="exactly one of 'type'"):
        samplers.build({"num": 4})
    with pytest.raises(LossConfigError, match=r"Unknown sampler 'Dumy'.*Did you mean"):
        samplers.build({"type": "Dumy"})


@pytest.mark.parametrize(
    "cfg",
    [
        {"_target_": "torch.nn.BCEWithLogitsLoss"},
        {"_target_": "torch.nn.SmoothL1Loss"},
        {"type": "L1Loss"},
    ],
)
def test_mismatched_shapes_name_the_loss_and_both_shapes(cfg):
    loss = lossmix.build_loss(cfg)
    with pytest.raises(
        lossmix.LossInputError,
        match=r"\(6, 4\).*\(5, 4\)|\[6, 4\].*\[5, 4\]|"
        r"\[5, 4\].*\[6, 4\]",
    ):
        loss(torch.zeros(6, 4), torch.zeros(5, 4))
