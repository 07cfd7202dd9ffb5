"""The Hydra configs: every documented override form, every option, and the term checks.

Compose API only (no subprocess): ``initialize_config_module("lossmix.conf")``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, MissingConfigException

from lossmix import CompositeLoss, LossConfigError
from lossmix.app.checks import (
    build_loss_mix,
    check_loss_config,
    import_modules,
    one_line_error,
    term_rows,
)
from lossmix.app.nodes import app_node_bases, instantiate_children, instantiate_node
from lossmix.demo import DenseDetector, SyntheticBoxes
from lossmix.registry.nodes import to_plain
from lossmix.train import build

TINY = ["data.num_train=8", "data.batch_size=4"]  # every data option has these two


@pytest.fixture
def compose_train(tmp_path):
    def make(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_module(config_module="lossmix.conf", version_base="1.3"):
            return compose("train", overrides=[f"paths.output_dir={tmp_path}", *TINY, *overrides])

    yield make
    GlobalHydra.instance().clear()


def options(group: str) -> list[str]:
    folder = resources.files("lossmix.conf").joinpath(*group.split("/"))
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


@pytest.fixture(scope="module")
def detector_batch():
    data = SyntheticBoxes(num_train=4, num_val=2, batch_size=4)
    data.setup()
    return next(iter(data.train_dataloader()))


def run_mix(cfg, batch):
    """Build the model from the composed config and compute its loss on one batch."""
    model = DenseDetector(to_plain(cfg.loss), num_classes=cfg.data.num_classes, stride=cfg.data.stride)
    outputs, targets = model.outputs_and_targets(batch)
    result = model.loss_mix(outputs, targets)
    assert torch.isfinite(result.total)
    result.total.backward()
    return model.loss_mix, result


# -- the documented command-line forms --------------------------------------------------------
def test_default_config_has_three_terms(compose_train, detector_batch):
    mix, result = run_mix(compose_train(), detector_batch)
    assert list(result.terms) == ["cls", "reg", "ctr"]
    assert type(mix.terms["cls"].loss).__name__ == "FocalLoss"
    assert mix.terms["cls"].normalizer.source == "num_pos"


def test_hyper_parameter_override(compose_train, detector_batch):
    mix, _ = run_mix(compose_train("loss.cls.gamma=1.5"), detector_batch)
    assert mix.terms["cls"].loss.gamma == 1.5


def test_fused_kernels_are_switched_per_term(compose_train, detector_batch):
    mix, _ = run_mix(compose_train("loss.cls.fused=true", "loss.reg.fused=false"), detector_batch)
    assert mix.terms["cls"].loss.fused is True and mix.terms["reg"].loss.fused is False


def test_weight_override(compose_train, detector_batch):
    mix, result = run_mix(compose_train("loss.cls.loss_weight=0.5"), detector_batch)
    assert mix.terms["cls"].weight == 0.5
    assert torch.allclose(result.terms["cls"], result.raw["cls"] * 0.5)


def test_reduction_sum_needs_the_normalizer_dropped(compose_train, detector_batch):
    with pytest.raises(LossConfigError, match=r"term 'cls'.*loss\.cls\.normalizer=null"):
        build_loss_mix(compose_train("loss.cls.reduction=sum").loss)
    mix, _ = run_mix(compose_train("loss.cls.reduction=sum", "loss.cls.normalizer=null"), detector_batch)
    assert mix.terms["cls"].loss.reduction == "sum"
    assert mix.terms["cls"].normalizer is None


def test_select_another_option(compose_train, detector_batch):
    mix, _ = run_mix(compose_train("loss/cls=ce"), detector_batch)
    assert type(mix.terms["cls"].loss).__name__ == "CrossEntropyLoss"


def test_drop_a_term(compose_train, detector_batch):
    _, result = run_mix(compose_train("~loss/ctr"), detector_batch)
    assert list(result.terms) == ["cls", "reg"]


def test_add_a_term_under_a_new_name(compose_train, detector_batch):
    mix, result = run_mix(compose_train("+loss/reg@loss.reg2=l1"), detector_batch)
    assert list(result.terms) == ["cls", "reg", "ctr", "reg2"]
    assert type(mix.terms["reg2"].loss).__name__ == "L1Loss"


def test_sampler_on_a_term_with_its_num(compose_train, detector_batch):
    cfg = compose_train("+sampler@loss.cls.sampler=random", "loss.cls.sampler.num=16")
    mix, result = run_mix(cfg, detector_batch)
    sampler = mix.terms["cls"].sampler
    assert type(sampler).__name__ == "RandomSampler" and sampler.num == 16
    assert float(result.stats["cls.num_sampled"]) <= 16


# -- errors --------------------------------------------------------------------------------------
def test_plain_typo_is_refused_by_struct_mode(compose_train):
    with pytest.raises(ConfigCompositionException, match="gama"):
        compose_train("loss.cls.gama=1.5")


def test_appended_typo_names_term_key_valid_keys_and_closest(compose_train):
    cfg = compose_train("+loss.cls.gama=1.5")
    with pytest.raises(LossConfigError) as info:
        check_loss_config(cfg.loss)
    message = str(info.value)
    assert "term 'cls'" in message and "'gama'" in message
    assert "Did you mean 'gamma'?" in message and "Valid keys: use_sigmoid, gamma, alpha" in message


def test_wrong_type_names_the_expected_type(compose_train):
    with pytest.raises(LossConfigError, match=r"term 'cls'.*gamma='abc'.*expects float"):
        check_loss_config(compose_train("loss.cls.gamma=abc").loss)
    with pytest.raises(LossConfigError, match=r"term 'cls'.*every=1.5.*expects int"):
        check_loss_config(compose_train("loss.cls.every=1.5").loss)
    # the example is written as on the command line: null, not Python's None
    with pytest.raises(LossConfigError, match=r"fused='maybe'.*\(default null\): e.g. loss.cls.fused=null\."):
        check_loss_config(compose_train("loss.cls.fused=maybe").loss)


def test_sampler_typo_is_named(compose_train):
    cfg = compose_train("+sampler@loss.cls.sampler=random", "+loss.cls.sampler.nmu=3")
    with pytest.raises(LossConfigError, match=r"sampler \(RandomSampler\).*'nmu'.*'num'"):
        check_loss_config(cfg.loss)


def test_unknown_option_lists_the_available_ones(compose_train):
    with pytest.raises(MissingConfigException) as info:
        compose_train("loss/cls=nope")
    line = one_line_error(info.value)
    assert (
        line == "Could not find 'loss/cls/nope'. Available options in 'loss/cls': "
        f"{', '.join(options('loss/cls'))}."
    )


def test_term_rows_for_show(compose_train):
    rows = term_rows(compose_train("+sampler@loss.cls.sampler=pseudo").loss)
    assert [r["term"] for r in rows] == ["cls", "reg", "ctr"]
    assert rows[0]["sampler"] == "type=PseudoSampler" and rows[0]["normalizer"] == "num_pos"


# -- every option composes and builds (the lightning-hydra-template pattern) ------------------------
@pytest.mark.parametrize("term", ["cls", "reg", "ctr"])
def test_every_detection_loss_option(compose_train, detector_batch, term):
    for option in options(f"loss/{term}"):
        _, result = run_mix(compose_train(f"loss/{term}={option}"), detector_batch)
        assert term in result.terms, option


@pytest.mark.parametrize("option", options("sampler"))
def test_every_sampler_option(compose_train, detector_batch, option):
    mix, _ = run_mix(compose_train(f"+sampler@loss.cls.sampler={option}"), detector_batch)
    assert mix.terms["cls"].sampler is not None


@pytest.mark.parametrize("option", options("loss/seg"))
def test_every_segmentation_loss_option(compose_train, option):
    cfg = compose_train(f"+loss/seg@loss.seg={option}")
    mix = build_loss_mix({"seg": to_plain(cfg.loss.seg)})
    logits = torch.randn(2, 8, 8, requires_grad=True)
    masks = (torch.rand(2, 8, 8) > 0.5).float()
    result = mix({"mask_logits": logits}, {"masks": masks})
    assert torch.isfinite(result.total)
    result.total.backward()


INSTANTIABLE = [
    (group, option)
    for group in ("model", "data", "trainer", "callbacks", "logger", "experiment")
    for option in options(group)
    if option != "default"
]


@pytest.mark.parametrize(("group", "option"), INSTANTIABLE)
def test_every_option_instantiates(compose_train, group, option):
    if group == "trainer" and option == "gpu" and not torch.cuda.is_available():
        pytest.skip("no GPU")
    if group == "logger" and option == "tensorboard":
        pytest.importorskip("tensorboard")
    cfg = compose_train(f"{group}={option}")
    bases = app_node_bases()
    if group == "model":
        model = instantiate_node(
            cfg.model,
            "model",
            base=bases["model"],
            loss=to_plain(cfg.loss),
            _recursive_=False,
            _convert_="all",
        )
        assert isinstance(model, CompositeLoss)
    elif group in ("callbacks", "logger"):
        built = instantiate_children(cfg.get(group), group, base=bases[group])
        assert all(isinstance(b, bases[group]) for b in built)
    elif group == "trainer":
        instantiate_node(cfg.trainer, "trainer", base=bases["trainer"], logger=False)
    elif group == "experiment":
        data, model, trainer = build(cfg, overrides=[])
        assert isinstance(model, CompositeLoss) and trainer.max_epochs is not None
        assert data is not None
    else:
        instantiate_node(cfg[group], group, base=bases[group])


def test_a_user_app_outside_the_repository_uses_the_shipped_groups(tmp_path):
    (tmp_path / "app.yaml").write_text(
        "defaults:\n  - loss/cls: focal\n  - loss/reg: l1\n  - _self_\n"
        "hydra:\n  searchpath:\n    - pkg://lossmix.conf\n"
    )
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
            cfg = compose("app", overrides=["loss.cls.gamma=3.0"])
    finally:
        GlobalHydra.instance().clear()
    mix = build_loss_mix(cfg.loss)
    assert list(mix.terms) == ["cls", "reg"] and mix.terms["cls"].loss.gamma == 3.0


# -- the experiments: composed, built as the app builds them, one training step ------------------
EXPERIMENT_TERMS = {
    "detection": ["cls", "reg", "ctr"],
    "segmentation": ["dice", "bce"],
    "custom": ["seg", "smooth"],
    "gan": ["gen/adv", "disc/real", "disc/fake", "disc/r1", "disc/shift"],
    "multitask": ["depth", "cls"],
    "stylegan2": ["gen/adv", "gen/pl", "disc/real", "disc/fake", "disc/r1"],
    "inpainting": [
        "gen/l1_hole",
        "gen/l1_valid",
        "gen/percep.percep",
        "gen/percep.style",
        "gen/tv",
        "gen/adv",
        "disc/real",
        "disc/fake",
    ],
}


def build_experiment(cfg):
    """The datamodule and model, as ``lossmix.train.run`` builds them."""
    data, model, _ = build(cfg, overrides=[])
    return data, model


def test_every_experiment_has_its_terms():
    assert sorted(EXPERIMENT_TERMS) == options("experiment")


@pytest.mark.parametrize("experiment", sorted(EXPERIMENT_TERMS))
def test_experiment_trains_a_step(compose_train, experiment):
    import lightning.pytorch as pl

    cfg = compose_train(f"experiment={experiment}")
    data, model = build_experiment(cfg)
    trainer = pl.Trainer(
        fast_dev_run=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    logged = set(trainer.callback_metrics)
    assert {f"train/loss/{term}_epoch" for term in EXPERIMENT_TERMS[experiment]} <= logged


def test_segmentation_experiment_reuses_the_seg_group(compose_train):
    cfg = compose_train("experiment=segmentation", "loss/seg@loss.dice=tversky", "~loss/seg@loss.bce")
    mix = build_loss_mix(cfg.loss)
    assert list(mix.terms) == ["dice"] and type(mix.terms["dice"].loss).__name__ == "TverskyLoss"


def test_gan_experiment_lazy_r1_weight(compose_train):
    cfg = compose_train("experiment=gan")
    _, model = build_experiment(cfg)
    real = torch.randn(4, 2)
    outputs = {
        "real_score": model.disc(real),
        "fake_score": model.disc(real + 1),
        "disc": model.disc,
        "real": real,
    }
    on = model.loss_mix(outputs, group="disc", step=16)
    off = model.loss_mix(outputs, group="disc", step=17)
    assert on.weights["r1"] == 5.0 * 16 and off.weights["r1"] == 0.0
    assert list(model.loss_mix.groups) == ["gen", "disc"]
    assert cfg.model.reg_interval == cfg.loss.disc.r1.every


def test_stylegan2_experiment_is_the_seeds_loss_config(compose_train):
    cfg = compose_train("experiment=stylegan2")
    _, model = build_experiment(cfg)
    assert cfg.model.reg_interval == cfg.loss.disc.r1.every == 16
    assert cfg.model.g_reg_interval == cfg.loss.gen.pl.every == 4
    real = torch.randn(4, 2)
    disc = {
        "real_score": model.disc(real),
        "fake_score": model.disc(real + 1),
        "disc": model.disc,
        "real": real,
    }
    gen = {"fake_score": model.disc(real + 1), "gen": model.gen, "batch_size": 4}
    assert model.loss_mix(disc, group="disc", step=16).weights["r1"] == 80.0  # r1_loss_weight = 10/2 × 16
    assert model.loss_mix(gen, group="gen", step=4).weights["pl"] == 8.0  # g_reg_weight = 2 × 4
    assert model.loss_mix(gen, group="gen", step=5).weights["pl"] == 0.0
    pl_loss = model.loss_mix.find_term("gen/pl").loss
    assert pl_loss.pl_batch_shrink == 2 and pl_loss.samples(4) == 2
    assert model.loss_mix.find_term("disc/r1").loss.norm_mode == "HWC"


def test_inpainting_experiment_gets_mmagics_masked_means(compose_train):
    cfg = compose_train("experiment=inpainting")
    _, model = build_experiment(cfg)
    assert cfg.loss.default_scope == "mmagic"
    assert type(model.loss_mix.find_term("gen/l1_hole").loss).__name__ == "MaskedL1Loss"
    assert model.loss_mix.find_term("gen/l1_hole").weight == 6.0
    gt, mask = torch.zeros(1, 3, 16, 16), torch.zeros(1, 1, 16, 16)
    mask[..., :8, :8] = 1
    fake_res = gt + mask  # wrong by 1 in the hole only
    hole = model.loss_mix.find_term("gen/l1_hole").loss(fake_res, gt, weight=mask)
    assert hole.item() == 1.0  # MMagic's number; MMDetection's mean would give 0.25


def test_multitask_experiment_learns_its_weights(compose_train):
    _, model = build_experiment(compose_train("experiment=multitask"))
    assert type(model.loss_mix.weighting).__name__ == "UncertaintyWeighting"
    _, fixed = build_experiment(compose_train("experiment=multitask", "loss.weighting=null"))
    assert fixed.loss_mix.weighting is None


def test_custom_experiment_imports_the_users_module(compose_train):
    cfg = compose_train("experiment=custom")
    assert list(cfg.lossmix.imports) == ["lossmix.demo.custom_losses"]
    _, model = build_experiment(cfg)
    assert type(model.loss_mix.terms["seg"].loss).__name__ == "LogCoshDiceLoss"


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["my-losses"], r"lossmix.imports: 'my-losses' is not a dotted module name"),
        (["lossmix..losses"], r"'lossmix..losses' is not a dotted module name"),
        ([3], r"3 is not a dotted module name"),
        ("lossmix.demo.custom_losses", r"must be a list of module names"),
        (
            ["lossmix_no_such_module"],
            r"could not import module 'lossmix_no_such_module': "
            r"ModuleNotFoundError",
        ),
    ],
)
def test_imports_refuse_bad_names_and_failing_modules(names, message):
    with pytest.raises(LossConfigError, match=message):  # named by the user, so trusted
        import_modules(names, granted=["lossmix_no_such_module"])


def test_imports_report_an_error_raised_inside_the_module(tmp_path, monkeypatch):
    (tmp_path / "lossmix_test_broken_losses.py").write_text("raise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(LossConfigError) as info:
        import_modules(["lossmix_test_broken_losses"], granted=["lossmix_test_broken_losses"])
    assert str(info.value) == (
        "lossmix.imports: could not import module 'lossmix_test_broken_losses': RuntimeError: no GPU here"
    )


def test_the_docs_list_every_shipped_term_option_with_the_keys_it_reads():
    """The docs' table (docs/hydra-app.md) "The shipped term configs and the keys they read" is what the files
    route: every option of every loss/<term> group, every `argument ← key` of its inputs."""
    import re

    from omegaconf import OmegaConf

    readme = (Path(__file__).resolve().parents[2] / "docs" / "hydra-app.md").read_text()
    listed: dict[tuple[str, str], dict[str, str]] = {}
    for row in readme.splitlines():
        if not row.startswith("| `loss/"):
            continue
        options, _, reads = (cell.strip() for cell in row.strip("|").split("|"))
        tokens = re.findall(r"`([^`]+)`", options)
        group = tokens[0].split("=")[0]
        routes = dict(re.findall(r"`(\w+) ← (\w+)`", reads))
        for token in tokens:
            listed[(group, token.split("=")[-1])] = routes
    shipped = resources.files("lossmix.conf").joinpath("loss")
    found = {}
    for folder in shipped.iterdir():
        if folder.is_dir():
            for option in folder.iterdir():
                if option.name.endswith(".yaml"):
                    node = OmegaConf.create(option.read_text())
                    found[(f"loss/{folder.name}", option.name[: -len(".yaml")])] = dict(node.inputs)
    assert set(listed) == set(found)
    for key, routes in found.items():
        assert listed[key] == routes, key
