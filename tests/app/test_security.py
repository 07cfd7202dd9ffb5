"""No config can make lossmix call a function outside the allowed packages.

Every hostile ``_target_`` below carries a payload that would leave a trace (a marker
file, an imported module, an environment variable) if anything were called. Each is
tried for every kind of node lossmix builds, from Python and from the command line,
and must be refused with one line before anything runs. Legitimate targets keep
working.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

import lossmix
import lossmix.registry.allowlist as targets
from lossmix import LOSSES, SAMPLERS, LossConfigError, LossMix, build_loss, build_sampler
from lossmix.app.checks import check_loss_config, import_modules
from lossmix.app.nodes import (
    AppTrust,
    app_node_bases,
    check_app_nodes,
    instantiate_children,
    instantiate_node,
)
from lossmix.demo import DenseDetector
from lossmix.losses import GIoULoss, TorchLoss
from lossmix.registry.allowlist import ENV_ALLOWED_TARGETS, allow_targets, resolve_target, trusting
from lossmix.samplers import PseudoSampler
from lossmix.train import build

MARK = "{marker}"
COMMAND = f"touch {MARK}"
# (target, keyword arguments of its payload). {marker} becomes a path that must stay absent.
HOSTILE: list[tuple[str, dict]] = [
    # walks through module objects that lossmix's own modules import
    ("lossmix.registry.registry.os.system", {"command": COMMAND}),
    ("lossmix.registry.registry.inspect.os.system", {"command": COMMAND}),
    ("lossmix.losses.base.inspect.os.mkdir", {"path": MARK}),
    ("lossmix.losses.base.inspect.os.system", {"command": COMMAND}),
    ("lossmix.registry.registry.importlib.import_module", {"name": "antigravity"}),
    ("lossmix.registry.registry.os.mkdir", {"path": MARK}),
    ("lossmix.registry.registry.inspect.builtins.eval", {"source": f"open('{MARK}', 'w')"}),
    (
        "lossmix.lightning.mixin.pl.strategies.launchers.subprocess_script.subprocess.Popen",
        {"args": ["touch", MARK]},
    ),
    ("lossmix.train.logging.FileHandler", {"filename": MARK}),
    ("lossmix.registry.registry.os.environ.setdefault", {"key": ENV_ALLOWED_TARGETS, "value": "numpy"}),
    ("lossmix.lightning.callbacks.curves.Path.write_text", {"self": MARK, "data": "x"}),
    ("lossmix.mix.loss_mix.torch.load", {"f": MARK}),
    ("torch.nn.functional.torch.load", {"f": MARK, "weights_only": False}),
    ("torch.nn.modules.module.torch.save", {"obj": 1, "f": MARK}),
    ("lossmix.demo.detector.pl.Trainer", {"default_root_dir": MARK}),
    # the standard library, whatever the allow-list says
    ("os.system", {"command": COMMAND}),
    ("posix.system", {"command": COMMAND}),
    ("os.execv", {"path": "/bin/touch", "argv": ["touch", MARK]}),
    ("os.spawnv", {"mode": 0, "file": "/bin/touch", "args": ["touch", MARK]}),
    ("sys.modules.os.system", {"command": COMMAND}),
    ("subprocess.run", {"args": ["touch", MARK]}),
    ("importlib.import_module", {"name": "antigravity"}),
    ("builtins.open", {"file": MARK, "mode": "w"}),
    ("builtins.eval", {"source": f"open('{MARK}', 'w')"}),
    ("builtins.__import__", {"name": "antigravity"}),
    ("inspect.os.system", {"command": COMMAND}),
    ("pickle.loads", {"data": "x"}),
    ("shutil.copy", {"src": __file__, "dst": MARK}),
    ("pathlib.Path.write_text", {"self": MARK, "data": "x"}),
    ("operator.attrgetter", {"attr": "system"}),
    ("functools.partial", {"func": "os.system"}),
    # torch's and Lightning's loaders, Hydra's own instantiate, lossmix's trust functions
    ("torch.load", {"f": MARK, "weights_only": False}),
    ("torch.hub.load", {"repo_or_dir": MARK, "model": "x"}),
    ("lightning.pytorch.cli.LightningCLI", {"args": []}),
    ("hydra.utils.instantiate", {"config": {"_target_": "os.mkdir", "path": MARK}}),
    ("lossmix.train.instantiate", {"config": {"_target_": "os.mkdir", "path": MARK}}),
    ("lossmix.registry.allowlist.allow_targets", {"prefixes": "numpy"}),
    ("lossmix.app.checks.import_modules", {"names": ["antigravity"]}),
    # attribute chains through classes, functions and dictionaries
    ("lossmix.losses.FocalLoss.__subclasses__", {}),
    ("lossmix.losses.FocalLoss.__init__.__globals__", {}),
    ("torch.nn.Module.__init__.__globals__.os.system", {"command": COMMAND}),
    ("lossmix.losses.focal.__dict__.math", {}),
    ("lossmix.losses.FocalLoss.forward", {}),
    ("lossmix.losses.FocalLoss.mro", {}),
    ("lossmix.LOSSES.build", {"cfg": {"_target_": "os.mkdir", "path": MARK}}),
    ("lossmix.LOSSES", {}),
    # modules as results, look-alike and malformed names
    ("lossmix.losses", {}),
    ("torch.nn.functional", {}),
    ("lossmix.losses.Foca\u217cLoss", {}),  # a Roman numeral fifty for the l
    ("lossmix.l\u043esses.FocalLoss", {}),  # a Cyrillic o
    ("lossmix.losses.FocalLoss.", {}),
    ("lossmix..losses.FocalLoss", {}),
    (".lossmix.losses.FocalLoss", {}),
    ("numpy.load", {"file": MARK, "allow_pickle": True}),
]
HOSTILE_IDS = [t for t, _ in HOSTILE]


@pytest.fixture(autouse=True)
def clean_trust(monkeypatch):
    saved = list(targets._user_allowed)
    monkeypatch.delenv(ENV_ALLOWED_TARGETS, raising=False)
    yield
    targets._user_allowed[:] = saved


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "marker"
    yield path
    assert not path.exists(), "a hostile payload ran"
    assert "antigravity" not in sys.modules, "a hostile import ran"
    assert ENV_ALLOWED_TARGETS not in os.environ, "a hostile config widened the allow-list"


def payload(kwargs: dict, marker: Path) -> dict:
    text = json.dumps(kwargs).replace(MARK, str(marker))
    return json.loads(text)


def refused(call, *args, **kwargs) -> str:
    """The one-line message of the LossConfigError that ``call`` raises."""
    with pytest.raises(LossConfigError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    # "could not be found": a walk whose module no longer imports that name; nothing ran
    assert any(word in message for word in ("refused", "not a dotted path", "could not be found")), message
    return message


# -- the rule, for every kind of node, from Python ----------------------------------------------
@pytest.mark.parametrize(("target", "kwargs"), HOSTILE, ids=HOSTILE_IDS)
def test_hostile_loss_targets_are_refused(target, kwargs, marker):
    node = {"_target_": target, **payload(kwargs, marker)}
    refused(build_loss, node)
    refused(build_loss, {"type": target, **payload(kwargs, marker)})  # a dotted type: the same
    refused(LossMix.from_config, {"cls": {**node, "inputs": {"pred": "x", "target": "y"}}})
    refused(check_loss_config, {"cls": node})


def test_a_normalizer_is_a_name_never_a_target(marker):
    node = {"type": "L1Loss", "normalizer": {"_target_": "os.mkdir", "path": str(marker)}}
    with pytest.raises(LossConfigError, match="normalizer .* is not valid"):
        LossMix.from_config({"reg": node})


@pytest.mark.parametrize(("target", "kwargs"), HOSTILE, ids=HOSTILE_IDS)
def test_hostile_sampler_targets_are_refused(target, kwargs, marker):
    node = {"_target_": target, **payload(kwargs, marker)}
    refused(build_sampler, node)
    term = {"type": "FocalLoss", "sampler": node}
    message = refused(LossMix.from_config, {"cls": term})
    assert message.startswith("term 'cls'")
    assert refused(check_loss_config, {"cls": term}).startswith("term 'cls'")


@pytest.mark.parametrize(("target", "kwargs"), HOSTILE, ids=HOSTILE_IDS)
def test_hostile_weighting_targets_are_refused(target, kwargs, marker):
    terms = {"a": {"type": "L1Loss"}, "b": {"type": "MSELoss"}}
    for node in (
        {"_target_": target, **payload(kwargs, marker)},
        {"type": target, **payload(kwargs, marker)},
    ):
        message = refused(LossMix.from_config, {**terms, "weighting": node})
        assert message.startswith("weighting:")


NODES = [
    ("model", "model"),
    ("data", "data"),
    ("trainer", "trainer"),
    ("callbacks.x", "callbacks"),
    ("logger.x", "logger"),
    ("hydra.callbacks.x", "hydra.callbacks"),
]


@pytest.mark.parametrize(("target", "kwargs"), HOSTILE, ids=HOSTILE_IDS)
def test_hostile_app_node_targets_are_refused(target, kwargs, marker):
    bases = app_node_bases()
    for path, kind in NODES:
        node = {"_target_": target, **payload(kwargs, marker)}
        message = refused(instantiate_node, node, path, base=bases[kind])
        assert message.startswith(f"{path}: ")
    # nested in an otherwise legitimate node (Hydra would build it recursively)
    nested = {
        "_target_": "lightning.pytorch.Trainer",
        "strategy": {"_target_": target, **payload(kwargs, marker)},
    }
    assert refused(instantiate_node, nested, "trainer", base=bases["trainer"]).startswith(
        "trainer.strategy: "
    )


@pytest.mark.parametrize(
    "target",
    [
        "lossmix.losses.base.inspect.os.system",
        "lossmix.mix.loss_mix.torch.load",
        "torch.nn.functional.torch.load",
        "lossmix.demo.detector.pl.Trainer",
        "torch.nn.modules.module.torch.save",
    ],
)
def test_a_walk_through_a_module_names_the_module(target):
    assert "a target cannot walk through a module" in refused(resolve_target, target)


def test_app_nodes_must_be_of_their_kind(marker):
    bases = app_node_bases()
    cases = {
        "model": "lightning.pytorch.callbacks.ModelCheckpoint",
        "trainer": "lossmix.demo.DenseDetector",
        "callbacks": "lightning.pytorch.Trainer",
        "logger": "lightning.pytorch.callbacks.ModelCheckpoint",
        "data": "lossmix.demo.DenseDetector",
    }
    for kind, target in cases.items():
        message = refused(instantiate_node, {"_target_": target}, kind, base=bases[kind])
        assert "must be a subclass of" in message


def test_app_nodes_build_no_function(marker):
    # a function, even a harmless one of an allowed package, is never called to build a node
    message = refused(instantiate_node, {"_target_": "lossmix.functional.l1_loss"}, "model", base=None)
    assert "is a function; this node builds a class" in message


def test_samplers_and_weightings_build_classes_of_their_kind(marker):
    assert "is a function" in refused(
        build_sampler, {"_target_": "lossmix.functional.l1_loss", "pred": 1, "target": 2}
    )
    assert "must be a subclass of lossmix.samplers.base.BaseSampler" in refused(
        build_sampler, {"_target_": "lossmix.losses.L1Loss"}
    )
    message = refused(
        LossMix.from_config, {"a": {"type": "L1Loss"}, "weighting": {"type": "lossmix.losses.L1Loss"}}
    )
    assert "must be a subclass of lossmix.mtl.weighting.BaseWeighting" in message


def test_loss_functions_only_from_function_packages(marker):
    # torch.nn.utils is under torch.nn, but its functions change parameters: not a loss
    message = refused(build_loss, {"_target_": "torch.nn.utils.clip_grad_norm_"})
    assert "outside the allowed packages" in message


@pytest.mark.parametrize(
    "prefix",
    [
        "os",
        "posix",
        "builtins",
        "subprocess",
        "importlib",
        "sys",
        "pathlib",
        "functools",
        "hydra",
        "omegaconf",
        "torch.hub",
        "torch.load",
        "lightning.pytorch.cli",
    ],
)
def test_dangerous_packages_cannot_be_allowed(prefix, monkeypatch):
    with pytest.raises(LossConfigError, match="cannot be allowed"):
        allow_targets(prefix)
    monkeypatch.setenv(ENV_ALLOWED_TARGETS, prefix)
    with pytest.raises(LossConfigError, match="cannot be allowed|is refused"):
        build_loss({"_target_": "numpy.sum"})


def test_the_environment_trick_is_closed(marker):
    # os.environ.setdefault was reachable as lossmix.registry.registry.os.environ.setdefault: a config
    # widened its own allow-list for the next term
    nodes = {
        "a": {
            "_target_": "lossmix.losses.base.inspect.os.environ.setdefault",
            "key": ENV_ALLOWED_TARGETS,
            "value": "numpy",
        },
        "b": {"_target_": "numpy.sum"},
    }
    refused(LossMix.from_config, nodes)


# -- legitimate targets still work -----------------------------------------------------------
class UserLoss(torch.nn.Module):
    """A user's loss class in an allowed package (this test module)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.scale * (pred - target).abs().mean()


def test_legitimate_targets_still_build():
    smooth = build_loss({"_target_": "torch.nn.SmoothL1Loss", "beta": 0.5})
    assert isinstance(smooth, TorchLoss)
    assert isinstance(build_loss({"_target_": "lossmix.losses.GIoULoss"}), GIoULoss)
    assert (
        build_loss({"_target_": "torch.nn.functional.l1_loss"})(torch.zeros(3), torch.ones(3)).item() == 1.0
    )
    user = f"{__name__}.UserLoss"
    refused(build_loss, {"_target_": user})
    loss = build_loss({"_target_": user, "scale": 2.0}, allowed_targets=[__name__.split(".")[0]])
    assert isinstance(loss, UserLoss) and loss.scale == 2.0
    with trusting([__name__]):
        assert isinstance(build_loss({"_target_": user}), UserLoss)
    refused(build_loss, {"_target_": user})  # the grant ended with the block
    sampler = build_sampler({"_target_": "lossmix.samplers.RandomSampler", "num": 8, "pos_fraction": 0.25})
    assert type(sampler).__name__ == "RandomSampler"
    mix = LossMix.from_config(
        {
            "a": {"type": "L1Loss"},
            "b": {"type": "MSELoss"},
            "weighting": {"_target_": "lossmix.mtl.weighting.UncertaintyWeighting"},
        }
    )
    assert type(mix.weighting).__name__ == "UncertaintyWeighting"
    bases = app_node_bases()
    trainer = instantiate_node(
        {
            "_target_": "lightning.pytorch.Trainer",
            "logger": False,
            "enable_checkpointing": False,
            "accelerator": "cpu",
        },
        "trainer",
        base=bases["trainer"],
    )
    assert isinstance(trainer, bases["trainer"])
    callbacks = instantiate_children(
        {"a": {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint"}, "b": None},
        "callbacks",
        base=bases["callbacks"],
    )
    assert [type(c).__name__ for c in callbacks] == ["ModelCheckpoint"]


def test_registries_refuse_entries_of_another_kind():
    with pytest.raises(LossConfigError, match="not a subclass of lossmix.samplers.base.BaseSampler"):
        SAMPLERS.register(name="ZzNotASampler")(dict)
    with pytest.raises(LossConfigError, match="is not a class"):
        SAMPLERS.register(name="zz_fn")(lambda pos, neg: None)
    assert "ZzNotASampler" not in SAMPLERS and "zz_fn" not in SAMPLERS
    assert "FocalLoss" in LOSSES


# -- lossmix.imports -----------------------------------------------------------------------------
def test_imports_only_from_allowed_packages(tmp_path, monkeypatch):
    (tmp_path / "zz_lossmix_payload.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    message = refused(import_modules, ["zz_lossmix_payload"])
    assert "config file cannot make lossmix import it" in message
    assert not (tmp_path / "imported").exists()
    with pytest.raises(LossConfigError, match="cannot be allowed"):
        import_modules(["antigravity"], granted=["antigravity"])  # never, even when named
    import_modules(["lossmix.demo.custom_losses"])  # under lossmix: fine
    import_modules(["zz_lossmix_payload"], granted=["zz_lossmix_payload"])  # the user named it
    assert (tmp_path / "imported").exists()


# -- the app: the allow-list comes from the command line only ---------------------------------
@pytest.fixture
def compose_train(tmp_path):
    def make(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_module(config_module="lossmix.conf", version_base="1.3"):
            return compose(
                "train",
                overrides=[
                    f"paths.output_dir={tmp_path}",
                    "data.num_train=8",
                    "data.batch_size=4",
                    *overrides,
                ],
            )

    yield make
    GlobalHydra.instance().clear()


def test_a_config_file_cannot_widen_the_allow_list(compose_train):
    overrides = ["lossmix.allowed_targets=[tests]"]
    cfg = compose_train(*overrides)
    assert AppTrust(cfg, overrides).allowed == ["tests"]
    with pytest.raises(LossConfigError, match="comes from a config file") as info:
        AppTrust(cfg, [])  # the same value, as if a file had set it
    assert "lossmix.allowed_targets=[tests]" in str(info.value)
    with pytest.raises(LossConfigError, match="comes from a config file"):
        build(cfg, overrides=[])


class UserSampler(PseudoSampler):
    """A user's sampler in an allowed package (this test module)."""


def test_command_line_grants_reach_sampler_targets(compose_train):
    sampler = f"{__name__}.UserSampler"
    hostile = [f"+loss.cls.sampler={{_target_: {sampler}}}"]
    cfg = compose_train(*hostile)
    with pytest.raises(LossConfigError, match="sampler: _target_=.* is refused"):
        build(cfg, overrides=hostile)
    granted = ["lossmix.allowed_targets=[tests]", *hostile]
    _, model, _ = build(compose_train(*granted), overrides=granted)
    assert isinstance(model.loss_mix.terms["cls"].sampler, UserSampler)


def test_command_line_grants_hold_while_building_only(compose_train):
    user = f"{__name__}.UserLoss"
    overrides = [
        "lossmix.allowed_targets=[tests]",
        f"+loss.cls2={{_target_: {user}}}",
        "+loss.cls2.inputs={pred: cls_logits, target: cls_logits}",
    ]
    cfg = compose_train(*overrides)
    _, model, _ = build(cfg, overrides=overrides)
    assert isinstance(model.loss_mix.terms["cls2"].loss, UserLoss)
    assert "tests" not in lossmix.allowed_prefixes()


def test_app_nodes_are_checked_before_anything_is_built(compose_train, marker):
    hostile = f"{{_target_: lossmix.losses.base.inspect.os.mkdir, path: {marker}}}"
    for override in (
        f"+callbacks.x={hostile}",
        f"+logger.x={hostile}",
        f"+trainer.strategy={hostile}",
        "model._target_=lossmix.losses.base.inspect.os.mkdir",
        "data._target_=lossmix.losses.base.inspect.os.mkdir",
    ):
        cfg = compose_train(override)
        with pytest.raises(LossConfigError, match="is refused"):
            check_app_nodes(cfg)
        with pytest.raises(LossConfigError, match="is refused"):
            build(cfg, overrides=[override])


def test_environment_values_never_appear_in_errors(compose_train, monkeypatch):
    monkeypatch.setenv("LOSSMIX_TEST_SECRET", "hunter2-the-secret")
    cfg = compose_train("loss.cls.gamma=${oc.env:LOSSMIX_TEST_SECRET}")
    for call in (
        lambda: check_loss_config(cfg.loss),
        lambda: LossMix.from_config(cfg.loss),
        lambda: build(cfg, overrides=[]),
    ):
        with pytest.raises(LossConfigError) as info:
            call()
        assert "hunter2" not in str(info.value)
        assert "${oc.env:LOSSMIX_TEST_SECRET}" in str(info.value)
        shown = "".join(traceback.format_exception(info.value))  # what HYDRA_FULL_ERROR=1 prints
        assert "hunter2" not in shown


# -- checkpoints -------------------------------------------------------------------------------
def test_a_hostile_checkpoint_cannot_build_or_widen(tmp_path, marker):
    model = DenseDetector(
        {
            "cls": {"type": "FocalLoss"},
            "reg": {"type": "GIoULoss"},
            "ctr": {"type": "CrossEntropyLoss", "use_sigmoid": True},
        }
    )
    hparams = dict(model.hparams)
    hparams["loss"] = {
        **hparams["loss"],
        "evil": {"_target_": "lossmix.losses.base.inspect.os.mkdir", "path": str(marker)},
    }
    path = tmp_path / "hostile.ckpt"
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": hparams, "pytorch-lightning_version": "2.6.6"},
        path,
    )
    torch.load(path, weights_only=True)  # it passes the unpickler's check ...
    with pytest.raises(LossConfigError, match="term 'evil'.*is refused"):
        DenseDetector.load_from_checkpoint(path)  # ... and is refused when the terms rebuild
    # a checkpoint cannot carry an allow-list: the demo models take none
    hparams["loss"] = {**model.hparams["loss"], "evil": {"_target_": "numpy.sum"}}
    hparams["allowed_targets"] = ["numpy"]
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": hparams, "pytorch-lightning_version": "2.6.6"},
        path,
    )
    with pytest.raises((LossConfigError, TypeError)):
        DenseDetector.load_from_checkpoint(path)


# -- from the command line: one subprocess drives every case in-process -------------------------
DRIVER = """
import contextlib, io, json, sys
import lossmix.train, lossmix.app.cli
out = []
for kind, argv in json.loads(sys.argv[1]):
    err, code = io.StringIO(), 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            if kind == "train":
                sys.argv = ["lossmix.train", *argv]
                lossmix.train.main()
            else:
                code = lossmix.app.cli.main(["show", *argv])
        except SystemExit as exit:
            code = exit.code
    out.append({"argv": argv, "code": code, "stderr": err.getvalue()})
print(json.dumps(out))
"""
# one target per route (every target, for every kind of node, is refused from Python above):
# a walk through an allowed module's imports, a plain callable, a method of an allowed class,
# a malformed path
CLI_TARGETS = [
    "lossmix.registry.registry.inspect.os.mkdir",
    "builtins.open",
    "lossmix.losses.FocalLoss.__init__",
    "lossmix..losses.FocalLoss",
]


def _cli_cases(run_dir: Path, marker: Path) -> list[tuple[str, list[str]]]:
    node = "{{_target_: {t}, path: " + str(marker) + ", file: " + str(marker) + "}}"
    cases: list[tuple[str, list[str]]] = []
    for target in CLI_TARGETS:
        value = node.format(t=target)
        for kind in ("train", "show"):
            cases += [
                (kind, [f"hydra.run.dir={run_dir}", f"+loss.cls.sampler={value}"]),
                (kind, [f"hydra.run.dir={run_dir}", f"+loss.reg._target_={target}", "~loss.reg.type"]),
                (kind, [f"hydra.run.dir={run_dir}", f"+callbacks.x={value}"]),
                (kind, [f"hydra.run.dir={run_dir}", f"model._target_={target}"]),
            ]
        cases += [
            ("train", [f"hydra.run.dir={run_dir}", f"+hydra.callbacks.x={value}"]),
            ("train", [f"hydra.run.dir={run_dir}", f"+trainer.plugins=[{value}]"]),
            ("train", [f"hydra.run.dir={run_dir}", f"+loss.weighting={value}"]),
        ]
    return cases


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    marker = root / "marker"
    cases = _cli_cases(root / "run", marker)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop(ENV_ALLOWED_TARGETS, None)
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(cases)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return marker, json.loads(done.stdout.strip().splitlines()[-1])


def test_hostile_targets_from_the_command_line_are_refused_in_one_line(cli_results):
    marker, results = cli_results
    assert len(results) >= 40
    for result in results:
        lines = result["stderr"].strip().splitlines()
        assert result["code"] == 1, result
        assert len(lines) == 1 and lines[0].startswith("Error: "), result
        assert any(word in lines[0] for word in ("refused", "not a dotted path", "could not be found")), (
            result
        )
        assert "Traceback" not in result["stderr"]
    assert not marker.exists()


def test_command_line_errors_name_the_node(cli_results):
    _, results = cli_results
    for result in results:
        where = result["argv"][1].lstrip("+").split("=")[0]
        line = result["stderr"].strip()
        if where == "loss.weighting":
            assert line.startswith("Error: weighting:"), result
        elif where.startswith("loss."):
            assert line.startswith("Error: term '"), result
        else:
            assert line.startswith(f"Error: {where.removesuffix('._target_')}"), result


def test_stdout_of_refused_runs_has_no_payload_effect(cli_results, tmp_path):
    marker, _ = cli_results
    assert not marker.exists()
    assert not any(marker.parent.glob("marker*"))
