"""The private Lightning and Hydra APIs behind ``lossmix.utilities.compat``, against the installed versions.

Each test fails loudly when an upgrade moves or changes what lossmix relies on.
"""

from __future__ import annotations

import pytest

from lossmix.utilities import compat


def compose(*argv: str):
    return compat.compose_like_hydra_main(
        list(argv), calling_module="lossmix.train", config_path="conf", config_name="train"
    )


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


def test_lightning_private_apis_lossmix_reads():
    import lightning.pytorch as pl
    from lightning.pytorch.demos.boring_classes import BoringModel

    seen: list[tuple[int, bool, bool, int]] = []

    class Probe(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            loop = trainer.fit_loop.epoch_loop
            assert hasattr(loop, "_batches_that_stepped"), "Lightning moved _batches_that_stepped"
            assert hasattr(trainer, "_logger_connector"), "Lightning moved _logger_connector"
            seen.append(
                (
                    compat.batches_stepped(trainer),
                    compat.logging_due(trainer),
                    compat.fast_dev_run(trainer),
                    len(compat.trainer_callbacks(trainer)),
                )
            )

    trainer = pl.Trainer(
        max_steps=4,
        log_every_n_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Probe()],
    )
    trainer.fit(BoringModel())
    assert [s[0] for s in seen] == [0, 1, 2, 3]  # counted after on_train_batch_end
    assert [s[1] for s in seen] == [False, True, False, True]  # every 2nd optimizer step
    assert not any(s[2] for s in seen) and all(s[3] >= 1 for s in seen)


def test_in_a_multirun_job_lightnings_ddp_relaunch_runs_the_job_not_the_sweep(tmp_path, monkeypatch):
    from hydra.core.hydra_config import HydraConfig
    from lightning.pytorch.strategies.launchers.subprocess_script import _hydra_subprocess_cmd
    from omegaconf import open_dict

    cfg, _ = compose("-m", "loss.cls.loss_weight=0.1,10")
    with open_dict(cfg):
        cfg.hydra.overrides.task = ["loss.cls.loss_weight=0.1", "trainer=ddp"]
        cfg.hydra.runtime.output_dir = str(tmp_path / "3")
        cfg.hydra.runtime.cwd = str(tmp_path)
        cfg.hydra.run.dir = "outputs/now"
    HydraConfig.instance().set_config(cfg)
    monkeypatch.setattr("sys.argv", ["train.py", "-m", "loss.cls.loss_weight=0.1,10"])
    try:
        before, _ = _hydra_subprocess_cmd(local_rank=1)
        with compat.multirun_job_relaunch():
            command, _ = _hydra_subprocess_cmd(local_rank=1)
        after, _ = _hydra_subprocess_cmd(local_rank=1)
    finally:
        HydraConfig.instance().cfg = None
    start = before.index("-m", 2)  # after `python -m <main module>`: the command line it re-runs
    assert before[start:][:2] == ["-m", "loss.cls.loss_weight=0.1,10"]  # Lightning alone: the sweep again
    assert 'hydra.run.dir="outputs/now"' in before
    assert command[start:][:2] == ["loss.cls.loss_weight=0.1", "trainer=ddp"]  # this job's overrides
    assert "-m" not in command[start:] and "loss.cls.loss_weight=0.1,10" not in command
    assert f'hydra.run.dir="{tmp_path / "3"}"' in command  # into the job's own directory
    assert after == before  # restored
