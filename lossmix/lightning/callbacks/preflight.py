"""``PreflightBatch``: route one batch through every term before the first step.

A wrong input key, shape or dtype otherwise shows only at the first training step, which
on a large model or a busy machine can be minutes in. Before the first epoch this callback
takes one batch from a fresh copy of the training loader and runs the module's
``training_step`` on it as a dry run: every term is computed (lazy terms included: the
step is 0), nothing is logged, no backward and no optimizer step happen (in manual
optimization ``manual_backward`` and the optimizers' ``step``/``zero_grad`` are inert),
and everything the step changed — the module's buffers (batch-norm statistics, DWA's
sums, GHM's counts), the samplers' generators and the global random streams — is put
back. The run then starts as if the check had not happened.

Installed by :class:`~lossmix.CompositeLoss`; set ``loss_preflight = False`` on the
module (the app: ``lossmix.preflight=false``) to skip it.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import torch

from lossmix.lightning.access import dry_run_of, find_loss_mix

__all__ = ["PreflightBatch", "dry_run"]


@contextlib.contextmanager
def dry_run(pl_module: Any) -> Iterator[None]:
    """Inside: the module's ``compute_loss`` logs nothing, backward and optimizer steps are
    inert, and on exit every buffer, the mix's state and the random streams are restored."""
    buffers = {name: buffer.detach().clone() for name, buffer in pl_module.named_buffers()}
    mix = find_loss_mix(pl_module)
    mix_state = copy.deepcopy(mix.state_dict()) if mix is not None else None
    streams = _streams()
    last_result = getattr(pl_module, "last_loss_result", None)
    try:
        with dry_run_of(pl_module):
            yield
    finally:
        pl_module.last_loss_result = last_result
        with torch.no_grad():
            for name, buffer in pl_module.named_buffers():
                if name in buffers:
                    buffer.copy_(buffers[name])
        if mix is not None and mix_state is not None:
            mix.load_state_dict(mix_state)
        _restore_streams(streams)
        pl_module.zero_grad(set_to_none=True)


def _streams() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.device_count():
        initialized: Any = torch.cuda.is_initialized  # untyped in torch's stubs
        if initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:  # NumPy is optional
        pass
    return state


def _restore_streams(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])


def _first_batch(trainer: pl.Trainer) -> Any:
    """One batch from a fresh loader (the run's own loader and its position stay untouched)."""
    datamodule = getattr(trainer, "datamodule", None)
    loader: Any = datamodule.train_dataloader() if datamodule is not None else trainer.train_dataloader
    if isinstance(loader, dict):
        return {k: next(iter(v)) for k, v in loader.items()}
    if isinstance(loader, (list, tuple)):
        return [next(iter(v)) for v in loader]
    return next(iter(loader))


class PreflightBatch(pl.Callback):
    """Route one training batch through every term before the first step (see the module)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not getattr(pl_module, "loss_preflight", False) or find_loss_mix(pl_module) is None:
            return
        streams = _streams()
        batch = _first_batch(trainer)
        _restore_streams(streams)  # a fresh shuffled loader drew from the global stream
        batch = trainer.strategy.batch_to_device(batch, dataloader_idx=0)
        was_training = pl_module.training
        pl_module.train()
        try:
            with dry_run(pl_module):
                pl_module.training_step(batch, 0)
        finally:
            pl_module.train(was_training)
