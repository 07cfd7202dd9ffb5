"""The private Lightning and Hydra APIs behind ``lossmix.compat``, against the installed versions.

Each test fails loudly when an upgrade moves or changes what lossmix relies on.
"""

from __future__ import annotations

import pytest

from lossmix import compat


def compose(*argv: str):
    return compat.compose_like_hydra_main(list(argv), calling_module="lossmix.train",
                                          config_path="conf", config_name="train")


def test_compose_like_hydra_main_sees_the_hydra_node_and_the_overrides():
    cfg, overrides = compose("loss.cls.gamma=1.5", "+hydra.callbacks.x={_target_: a.B}")
    assert cfg.loss.cls.gamma == 1.5
    assert cfg.hydra.callbacks.x._target_ == "a.B"
    assert overrides == ["loss.cls.gamma=1.5", "+hydra.callbacks.x={_target_: a.B}"]


def test_compose_like_hydra_main_multirun_leaves_sweeps_to_the_sweeper():
    cfg, _ = compose("-m", "loss.cls.gamma=1.0,2.0")
    assert cfg.loss.cls.gamma == 2.0  # the file's value: the sweep is the sweeper's
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"


@pytest.mark.parametrize("flag", [["--cfg", "job"], ["--help"], ["--info"], ["--hydra-help"]])
def test_commands_that_build_nothing_compose_nothing(flag):
    assert compose(*flag) is None


def test_config_dir_is_searched_first(tmp_path):
    (tmp_path / "loss").mkdir()
    (tmp_path / "loss" / "cls").mkdir()
    (tmp_path / "loss" / "cls" / "mine.yaml").write_text("type: L1Loss\n")
    cfg, _ = compose("--config-dir", str(tmp_path), "loss/cls=mine")
    assert cfg.loss.cls.type == "L1Loss"
