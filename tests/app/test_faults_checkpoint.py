"""Checkpoints a long run can meet: a write that fails half-way, and a damaged file at resume.

A full disk (here: a small file-size limit) must leave the last good ``last.ckpt`` whole and
loadable; every damaged file given as ``ckpt_path=`` (or found by ``ckpt_path=last``) stops
the app with one line naming it, before a step is trained; a checkpoint holding NaN is
refused unless ``lossmix.allow_nonfinite_checkpoint=true``; a pickle that would run code is
never unpickled, even with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``. The app runs in this
process, except the file-size limit, which needs a process of its own.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lossmix.train as train
import lossmix.utilities.files
from lossmix.errors import LossConfigError, LossRunError
from lossmix.lightning import SafeCheckpointIO
from tests.app.test_train import QUIET, SUBPROCESS_TIMEOUT, TINY, compose_train, main_in_process
from tests.lightning_models import Regressor, loader, trainer

ONE_EPOCH = [*TINY, "trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """A finished one-epoch app run: ``checkpoints/last.ckpt`` and ``epoch_000.ckpt``."""
    run = tmp_path_factory.mktemp("good") / "run"
    train.run(compose_train(run, *ONE_EPOCH))
    assert (run / "checkpoints" / "last.ckpt").is_file()
    return run


def _one_error_line(code: int, err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert code == 1 and len(errors) == 1, err[-3000:]
    assert "Traceback" not in err and "Error executing job" not in err
    return errors[0]


def _limit_file_size() -> None:  # in the child, before exec
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # below one checkpoint (~420 kB)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG


def test_a_failed_checkpoint_write_keeps_the_last_good_one_and_the_run_resumes(tmp_path, capsys):
    run = tmp_path / "run"  # its own first run: a copied directory would resume as another one
    train.run(compose_train(run, *ONE_EPOCH))
    last = run / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run(
        [sys.executable, "-m", "lossmix.train", *QUIET, f"hydra.run.dir={run}", *TINY, "ckpt_path=last"],
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        preexec_fn=_limit_file_size,
    )
    line = _one_error_line(result.returncode, result.stderr)
    assert line.startswith(f"Error: could not write checkpoint {run / 'checkpoints'}/"), line
    assert "[Errno 27] File too large" in line and "raise the file-size limit (ulimit -f)" in line
    assert "last.ckpt" in line and "kept whole" in line and "hydra.run.dir=" in line
    assert last.read_bytes() == before  # whole, as it was
    assert not [p.name for p in last.parent.iterdir() if p.name.endswith(".tmp")]  # no temp file left
    # the next run into the same directory (the first one's lock was freed) resumes from it
    train.run(compose_train(run, *TINY, "ckpt_path=last"))
    capsys.readouterr()
    resumed = torch.load(last, weights_only=True)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 4


def test_a_failed_write_removes_its_temporary_file_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = SafeCheckpointIO()
    path = tmp_path / "ckpt" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    before = path.read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lossmix.utilities.files.os, "fsync", full)
    with pytest.raises(LossRunError) as raised:
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    message = str(raised.value)
    assert message == (
        f"could not write checkpoint {path}: [Errno 28] No space left on device; the previous last.ckpt "
        "there is kept whole, as it was; free space on that disk, or write the checkpoints to another "
        "directory (ModelCheckpoint(dirpath=...))."
    )
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_checkpoints_are_replaced_by_a_rename_in_their_own_directory(tmp_path, monkeypatch):
    """The bytes never go through the system's temporary directory (a copy across file systems
    is what truncated ``last.ckpt``), and a new file gets the usual permissions."""
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(
        lossmix.utilities.files.os,
        "replace",
        lambda a, b: (renames.append((Path(a), Path(b))), real_replace(a, b))[1],
    )
    path = tmp_path / "last.ckpt"
    SafeCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    assert [(a.parent, b) for a, b in renames] == [(tmp_path, path)]
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(2))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# -- damaged files at resume ---------------------------------------------------------------------
class _Payload:
    """Unpickling it calls ``open(marker, "w")``: a file that would run code when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _write_damaged(kind: str, good: Path, path: Path) -> None:
    data = good.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) * 2 // 5])  # what a full disk left: 168 kB of 423 kB
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random bytes":
        path.write_bytes(
            bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).tolist())
        )
    elif kind == "text":
        path.write_text("model weights: see the wiki\n")
    else:
        checkpoint = torch.load(good, weights_only=True)
        state = checkpoint["state_dict"]
        if kind == "no state_dict":
            del checkpoint["state_dict"]
        elif kind == "bare state_dict":
            checkpoint = state
        elif kind == "not a dict":
            checkpoint = [1, 2, 3]
        elif kind == "wrong shapes":
            first = next(iter(state))
            state[first] = torch.zeros(3, 3)
            state["head.extra.weight"] = torch.zeros(2)
            del state[list(state)[1]]
        elif kind in ("NaN weights", "exponent bits set"):
            name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
            flat = state[name].view(-1)
            if kind == "NaN weights":
                flat[1] = float("nan")
            else:  # every exponent bit of one float32 set (bit flips): NaN, or inf
                flat.view(torch.int32)[0] |= 0x7F800000
        torch.save(checkpoint, path)


DAMAGED = {  # kind → what the one line says
    "truncated": "is truncated or corrupt (RuntimeError: PytorchStreamReader failed reading zip archive",
    "empty": "is empty (0 bytes): it was never written completely",
    "random bytes": "is not a PyTorch checkpoint",
    "text": "is not a PyTorch checkpoint",
    "no state_dict": "has no 'state_dict' (its keys: epoch, global_step, pytorch-lightning_version and",
    "bare state_dict": "is a bare state_dict (tensors only), not a Lightning checkpoint with the training "
    "state to resume",
    "not a dict": "holds a list, not a checkpoint's dict",
    "wrong shapes": "does not fit the model DenseDetector: missing keys: trunk.0.0.bias; unexpected keys: "
    "head.extra.weight; wrong shapes: trunk.0.0.weight (checkpoint [3, 3], model [32, 3, 3, 3])",
    "NaN weights": "has non-finite values (NaN or inf) in trunk.0.0.weight (1 of 864)",
    "exponent bits set": "has non-finite values (NaN or inf) in trunk.0.0.weight (1 of 864)",
}


@pytest.mark.parametrize("kind", list(DAMAGED))
def test_a_damaged_checkpoint_is_one_line_and_nothing_is_trained(
    kind, good_run, tmp_path, capsys, monkeypatch
):
    damaged = tmp_path / "given.ckpt"
    _write_damaged(kind, good_run / "checkpoints" / "last.ckpt", damaged)
    run = tmp_path / "run"
    code, _, err = main_in_process(
        [f"hydra.run.dir={run}", *ONE_EPOCH, f"ckpt_path={damaged}"], capsys, monkeypatch
    )
    line = _one_error_line(code, err)
    assert line.startswith(f"Error: checkpoint {damaged} "), line
    assert DAMAGED[kind] in line, line
    if "non-finite" in DAMAGED[kind]:
        assert "set lossmix.allow_nonfinite_checkpoint=true to load it anyway" in line
    assert not (run / "checkpoints").exists() and not (run / "loss_curves.png").exists()  # nothing trained


def test_a_damaged_last_checkpoint_is_named_at_ckpt_path_last(good_run, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    last = run / "checkpoints" / "last.ckpt"
    _write_damaged("truncated", good_run / "checkpoints" / "last.ckpt", last)
    code, _, err = main_in_process([f"hydra.run.dir={run}", *TINY, "ckpt_path=last"], capsys, monkeypatch)
    line = _one_error_line(code, err)
    assert line.startswith(f"Error: checkpoint {last} ") and "is truncated or corrupt" in line
    assert "resume from an earlier checkpoint (in its directory: epoch_000.ckpt)" in line


def test_nan_weights_load_with_the_flag(good_run, tmp_path, capsys, monkeypatch):
    damaged = tmp_path / "nan.ckpt"
    _write_damaged("NaN weights", good_run / "checkpoints" / "last.ckpt", damaged)
    run = tmp_path / "run"
    # the checkpoint ends epoch 0 of 1: it is loaded and the finished fit trains nothing more
    code, _, err = main_in_process(
        [
            f"hydra.run.dir={run}",
            *ONE_EPOCH,
            f"ckpt_path={damaged}",
            "lossmix.allow_nonfinite_checkpoint=true",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 0 and "Error" not in err, err[-3000:]
    code, _, err = main_in_process(
        [f"hydra.run.dir={tmp_path / 'bad'}", *ONE_EPOCH, "lossmix.allow_nonfinite_checkpoint=maybe"],
        capsys,
        monkeypatch,
    )
    assert _one_error_line(code, err) == (
        "Error: lossmix.allow_nonfinite_checkpoint='maybe' is not valid; use false (refuse a checkpoint "
        "whose weights hold NaN or inf) or true (load it anyway)."
    )


def test_a_pickle_that_runs_code_is_never_unpickled(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "payload": _Payload(marker)}, evil)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # would turn a default load unsafe
    code, _, err = main_in_process(
        [f"hydra.run.dir={tmp_path / 'run'}", *ONE_EPOCH, f"ckpt_path={evil}"], capsys, monkeypatch
    )
    line = _one_error_line(code, err)
    assert f"checkpoint {evil} holds objects other than tensors and plain containers" in line
    assert "loaded with weights_only=True, so a file cannot run code" in line
    assert not marker.exists()
    with pytest.warns(UserWarning, match="TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
        torch.load(evil)  # the file is a real payload: a load that is not weights-only runs it
    assert marker.exists()


def test_a_plain_trainer_with_safe_io_refuses_a_nan_checkpoint_and_accepts_it_when_allowed(tmp_path):
    model = Regressor()
    first = trainer(max_steps=1, plugins=[SafeCheckpointIO()])
    first.fit(model, loader(8, 4))
    path = tmp_path / "nan.ckpt"
    first.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"]["net.bias"][0] = float("inf")
    torch.save(checkpoint, path)
    with pytest.raises(
        LossConfigError, match=r"net\.bias \(1 of 2\).*SafeCheckpointIO\(allow_nonfinite=True\)"
    ):
        trainer(max_steps=2, plugins=[SafeCheckpointIO()]).fit(Regressor(), loader(8, 4), ckpt_path=path)
    loaded = SafeCheckpointIO(allow_nonfinite=True).load_checkpoint(path)
    assert torch.isinf(loaded["state_dict"]["net.bias"][0])


def test_the_app_keeps_a_checkpoint_io_the_trainer_node_names(tmp_path):
    plugin = [
        "lossmix.allowed_targets=[lightning.fabric.plugins.io]",  # a grant: from the command line
        "+trainer.plugins=[{_target_: lightning.fabric.plugins.io.torch_io.TorchCheckpointIO}]",
    ]
    _, _, given = train.build(compose_train(tmp_path / "given", *ONE_EPOCH, *plugin), plugin)
    _, _, default = train.build(compose_train(tmp_path / "default", *ONE_EPOCH), [])
    assert type(given.strategy.checkpoint_io).__name__ == "TorchCheckpointIO"
    assert isinstance(default.strategy.checkpoint_io, SafeCheckpointIO)
    assert default.strategy.checkpoint_io.allow_hint == "lossmix.allow_nonfinite_checkpoint=true"


def test_default_checkpoint_io_tells_lightnings_default_from_a_given_plugin():
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
    from lightning.pytorch.strategies import SingleDeviceStrategy

    from lossmix.utilities.compat import default_checkpoint_io

    plain = trainer()
    assert default_checkpoint_io(plain)
    assert type(plain.strategy.checkpoint_io) is TorchCheckpointIO and default_checkpoint_io(plain)  # read
    assert not default_checkpoint_io(trainer(plugins=[TorchCheckpointIO()]))
    strategy = SingleDeviceStrategy("cpu", checkpoint_io=TorchCheckpointIO())
    assert not default_checkpoint_io(trainer(strategy=strategy))
