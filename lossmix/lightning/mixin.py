"""``CompositeLoss``: the LightningModule mixin that builds, computes and logs the terms."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from lossmix.errors import LossConfigError
from lossmix.lightning.callbacks.accumulation import AccumulationScope, window_scoped_terms
from lossmix.lightning.callbacks.class_counts import ClassCountsFromData, waiting_for_counts
from lossmix.lightning.callbacks.compiled import CompiledStep, check_compile_option
from lossmix.lightning.callbacks.preflight import PreflightBatch
from lossmix.lightning.callbacks.resume import DataPosition, RandomState
from lossmix.lightning.callbacks.task_weighting import TaskWeightingUpdates
from lossmix.lightning.term_logger import TermLogger
from lossmix.loops.loop_logger import LoopLogger
from lossmix.loops.mix_hooks import bind_mix, mix_epoch_end
from lossmix.mix.loss_mix import LossMix, LossResult
from lossmix.utilities.compat import amp_loss_scale, batches_stepped, should_accumulate, trainer_callbacks

__all__ = ["CompositeLoss", "LossState"]


def _batch_size(batch: Any, outputs: Any) -> int:
    """Rows in the first tensor found (a Python int from a shape: no host sync)."""
    for source in (batch, outputs):
        stack = [source]
        while stack:
            item = stack.pop(0)
            if isinstance(item, Tensor):
                return int(item.shape[0]) if item.dim() else 1
            if isinstance(item, Mapping):
                stack.extend(item.values())
            elif isinstance(item, (list, tuple)):
                stack.extend(item)
    return 1


class _InertOptimizer:
    """An optimizer whose ``step`` and ``zero_grad`` do nothing (a dry run's)."""

    def __init__(self, optimizer: Any) -> None:
        self._optimizer = optimizer

    def step(self, *args: Any, **kwargs: Any) -> None:
        return None

    def zero_grad(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._optimizer, name)


@dataclass
class LossState:
    """What a :class:`CompositeLoss` module is doing now: one object instead of private flags.

    Changed only by the module's context managers (:meth:`CompositeLoss.loss_dry_run`,
    :meth:`CompositeLoss.loss_probe`) and its own step; callbacks reach it through
    :mod:`lossmix.lightning.access`.
    """

    #: a dry run (:class:`~lossmix.lightning.callbacks.PreflightBatch`): the step is computed
    #: and checked, nothing is logged, backward and the optimizers are inert
    dry_run: bool = False
    #: a probe (:meth:`CompositeLoss.reevaluate_tasks`): the step runs for its result only,
    #: ``self.log`` and ``self.log_dict`` do nothing
    probing: bool = False
    #: what the probe computed
    probe: LossResult | None = None
    #: the training step's result, which an ``aggregation:`` node's backward needs
    train_result: LossResult | None = None


class CompositeLoss:
    """LightningModule mixin: ``configure_loss(node)`` once, ``compute_loss(...)`` each step.

    Put it first among the bases so its ``configure_callbacks`` is found::

        class Detector(CompositeLoss, L.LightningModule):
            def __init__(self, loss_cfg):
                super().__init__()
                self.net = ...
                self.configure_loss(loss_cfg)

            def training_step(self, batch, batch_idx):
                return self.compute_loss(self.net(batch["image"]), batch)

    ``compute_loss`` logs ``{stage}/loss`` and ``{stage}/loss/{term}`` (for groups
    ``{stage}/loss/{group}`` and ``{stage}/loss/{group}/{term}``) through
    :class:`~lossmix.lightning.TermLogger`: one device write per step, one host
    read per logging interval.

    Before the first step, one batch is routed through every term as a dry run
    (:class:`~lossmix.lightning.callbacks.PreflightBatch`), so a wrong key, shape or dtype
    fails in seconds; set ``loss_preflight = False`` to skip it. Set ``loss_compile = True``
    (or a mapping of ``torch.compile`` options) to run the whole ``training_step`` as one
    compiled graph (:class:`~lossmix.lightning.callbacks.CompiledStep`).

    With an ``aggregation:`` node, :meth:`backward` (Lightning's hook) backpropagates
    the training step's loss through :meth:`LossMix.backward`, inside automatic
    optimization: accumulation, clipping, AMP scaling and DDP work as for a plain sum.

    Under Lightning Fabric (``fabric.setup(module)``, no Trainer) ``compute_loss`` logs the
    same keys through ``fabric.log_dict`` with a :class:`~lossmix.loops.LoopLogger`
    (:attr:`loss_logger`, every :attr:`loss_log_every` steps); ``fabric.call("on_train_epoch_end")``
    and ``fabric.call("on_validation_epoch_end")`` close its epochs, and
    ``module.loss_logger.finish(module.loss_mix)`` prints the summary and writes the curves.
    """

    loss_mix: LossMix
    last_loss_result: LossResult | None = None
    loss_preflight: bool = True
    #: ``True`` (or ``torch.compile`` options): compile ``training_step`` as one graph
    loss_compile: bool | Mapping[str, Any] = False
    #: under Fabric: send the step values to ``fabric.log_dict`` every this many steps
    loss_log_every: int = 50

    def configure_loss(self, node: Any, *, allowed_targets: tuple[str, ...] | list[str] = ()) -> LossMix:
        """Build ``self.loss_mix`` from a term mapping (dict/DictConfig) or take a ``LossMix``.

        As a submodule, its parameters and buffers (learned weights, running statistics,
        sampler generators) are part of the module, its optimizer and its checkpoint.
        """
        mix = (
            node if isinstance(node, LossMix) else LossMix.from_config(node, allowed_targets=allowed_targets)
        )
        self.loss_mix = mix
        return mix

    # -- stage and step from the trainer -----------------------------------------------------
    def _lossmix_trainer(self) -> pl.Trainer | None:
        return getattr(self, "_trainer", None)

    def loss_stage(self) -> str:
        """``train``, ``val``, ``test`` or ``predict`` from the attached trainer."""
        trainer = self._lossmix_trainer()
        if trainer is None or trainer.training:
            return "train"
        if trainer.sanity_checking or trainer.validating:
            return "val"
        if trainer.testing:
            return "test"
        return "predict"

    def loss_step(self) -> int:
        """Batches stepped so far (drives lazy terms; counts a batch once in manual optimization)."""
        trainer = self._lossmix_trainer()
        return 0 if trainer is None else batches_stepped(trainer)

    def term_logger(self) -> TermLogger | None:
        """The trainer's :class:`TermLogger`, installed on first use if it is missing."""
        trainer = self._lossmix_trainer()
        if trainer is None:
            return None
        callbacks = trainer_callbacks(trainer)
        for callback in callbacks:
            if isinstance(callback, TermLogger):
                return callback
        logger = TermLogger()
        callbacks.append(logger)
        return logger

    # -- Lightning Fabric -----------------------------------------------------------------------
    def _lossmix_fabric(self) -> Any:
        """The Fabric this module was set up with when no Trainer drives it, else ``None``."""
        if self._lossmix_trainer() is not None:
            return None
        return getattr(self, "_fabric", None)

    @property
    def loss_logger(self) -> LoopLogger | None:
        """Under Fabric: the :class:`~lossmix.loops.LoopLogger` sending to ``fabric.log_dict``
        (made on first use); ``None`` otherwise."""
        fabric = self._lossmix_fabric()
        if fabric is None:
            return None
        logger = self.__dict__.get("_loss_loop_logger")
        if not isinstance(logger, LoopLogger):
            logger = LoopLogger(fabric.log_dict, every=self.loss_log_every)
            self.__dict__["_loss_loop_logger"] = logger
        return logger

    def on_after_setup(self, *args: Any, **kwargs: Any) -> None:
        """Fabric's hook after ``fabric.setup``: bind the weighting and aggregation to the model."""
        mix = getattr(self, "loss_mix", None)
        if isinstance(mix, LossMix) and self._lossmix_fabric() is not None:
            bind_mix(mix, self)  # type: ignore[arg-type]  # a LightningModule

    def on_train_epoch_end(self) -> None:
        """Under Fabric (``fabric.call("on_train_epoch_end")``): log the training epoch's means
        and close the weighting's epoch. Under a Trainer, its callbacks do that."""
        parent = getattr(super(), "on_train_epoch_end", None)
        if callable(parent):
            parent()
        logger = self.loss_logger
        if logger is not None:
            logger.end_epoch("train")
            mix_epoch_end(self.loss_mix)

    def on_validation_epoch_end(self) -> None:
        """Under Fabric (``fabric.call("on_validation_epoch_end")``): log the validation means."""
        parent = getattr(super(), "on_validation_epoch_end", None)
        if callable(parent):
            parent()
        logger = self.loss_logger
        if logger is not None:
            logger.end_epoch("val")

    def configure_callbacks(self) -> list[pl.Callback]:
        parent = getattr(super(), "configure_callbacks", None)  # LightningModule's, after us
        found = parent() if callable(parent) else []
        found = list(found) if isinstance(found, (list, tuple)) else [found]
        trainer = self._lossmix_trainer()
        callbacks = list(trainer_callbacks(trainer)) if trainer is not None else []

        def present(kind: type) -> bool:
            return any(isinstance(c, kind) for c in callbacks + found)

        if not present(TermLogger):
            found.append(TermLogger())
        options = check_compile_option(self.loss_compile, f"{type(self).__name__}.loss_compile")
        if options is not None and not present(CompiledStep):
            found.append(CompiledStep(options))
        for kind in (PreflightBatch, DataPosition, RandomState):  # a check, then resume
            if not present(kind):
                found.append(kind())
        mix = getattr(self, "loss_mix", None)
        drives = getattr(mix, "weighting", None) is not None or getattr(mix, "aggregation", None) is not None
        if drives and not present(TaskWeightingUpdates):
            found.append(TaskWeightingUpdates())
        if waiting_for_counts(self) and not present(ClassCountsFromData):
            found.append(ClassCountsFromData())
        if mix is not None and window_scoped_terms(mix) and not present(AccumulationScope):
            found.append(AccumulationScope())
        return found

    # -- the module's state: a dry run, a probe ------------------------------------------------
    @property
    def loss_state(self) -> LossState:
        """What the module is doing now (:class:`LossState`)."""
        state = self.__dict__.get("_loss_state")
        if not isinstance(state, LossState):
            state = LossState()
            self.__dict__["_loss_state"] = state
        return state

    @contextlib.contextmanager
    def loss_dry_run(self) -> Iterator[None]:
        """Inside: ``compute_loss`` checks and returns the total but logs nothing, and backward
        and the optimizers' steps do nothing (the pre-flight batch)."""
        state = self.loss_state
        previous, state.dry_run = state.dry_run, True
        try:
            yield
        finally:
            state.dry_run = previous

    @contextlib.contextmanager
    def loss_probe(self) -> Iterator[LossState]:
        """Inside: ``compute_loss`` only computes (its result lands in ``state.probe``), and
        ``self.log``/``self.log_dict`` are silent."""
        state = self.loss_state
        state.probing, state.probe = True, None
        try:
            yield state
        finally:
            state.probing = False

    def log(self, *args: Any, **kwargs: Any) -> None:
        """Lightning's ``self.log``, silent during :meth:`loss_probe`."""
        if self.loss_state.probing:
            return
        parent: Any = super()
        parent.log(*args, **kwargs)

    def log_dict(self, *args: Any, **kwargs: Any) -> None:
        """Lightning's ``self.log_dict``, silent during :meth:`loss_probe`."""
        if self.loss_state.probing:
            return
        parent: Any = super()
        parent.log_dict(*args, **kwargs)

    # -- a dry run (PreflightBatch): no backward, no optimizer step --------------------------
    def manual_backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        if self.loss_state.dry_run:
            return
        parent: Any = super()
        parent.manual_backward(loss, *args, **kwargs)

    def optimizers(self, use_pl_optimizer: bool = True) -> Any:
        parent: Any = super()
        found = parent.optimizers(use_pl_optimizer)
        if not self.loss_state.dry_run:
            return found
        if isinstance(found, list):
            return [_InertOptimizer(o) for o in found]
        return _InertOptimizer(found)

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """Lightning's backward hook: the plain backward, or, with an ``aggregation:`` node, the
        aggregated one for the training step's result (AMP scale and accumulation from the
        trainer)."""
        parent = getattr(super(), "backward", None)  # LightningModule's, after us
        if not callable(parent):
            raise TypeError(f"{type(self).__name__}: CompositeLoss must come before a LightningModule.")

        def ordinary() -> None:
            parent(loss, *args, **kwargs)

        mix = getattr(self, "loss_mix", None)
        if not isinstance(mix, LossMix) or mix.aggregation is None:
            ordinary()
            return
        state = self.loss_state
        result, state.train_result = state.train_result, None
        if result is None:
            raise RuntimeError(
                f"{type(self).__name__}: the loss mix has an aggregation node, so the training step's "
                "loss must come from self.compute_loss(...) in training_step, once per backward."
            )
        trainer = self._lossmix_trainer()
        mix.backward(
            result,
            loss,
            ordinary=ordinary,
            loss_scale=1.0 if trainer is None else amp_loss_scale(trainer),
            accumulating=False if trainer is None else should_accumulate(trainer),
        )

    def reevaluate_tasks(self, batch: Any, batch_idx: int) -> Tensor | None:
        """The task losses of ``training_step(batch)`` with the current parameters, without
        gradients, logging or a stored result (FAMO's post-step losses); ``None`` when the step
        computed no loss through :meth:`compute_loss`."""
        step = getattr(self, "training_step", None)
        if not callable(step):
            return None
        with self.loss_probe() as state, torch.no_grad():
            step(batch, batch_idx)
        probe, state.probe = state.probe, None
        return probe.task_losses if probe is not None else None

    # -- the step ----------------------------------------------------------------------------
    def compute_loss(
        self,
        outputs: Mapping[str, Any],
        batch: Any = None,
        stage: str | None = None,
        group: str | None = None,
        batch_size: int | None = None,
    ) -> Tensor:
        """Compute the terms (of ``group``), log them, and return the total.

        Args:
            outputs: the model's outputs (a mapping).
            batch: the batch.
            stage: log prefix; default from the trainer (``train``/``val``/``test``).
            group: which group of terms (a GAN's ``gen`` or ``disc``).
            batch_size: weight of this step in epoch means; default: rows of the
                first tensor in the batch.
        """
        if not hasattr(self, "loss_mix"):
            raise RuntimeError(
                f"{type(self).__name__}: call self.configure_loss(cfg) in __init__ before compute_loss()."
            )
        fabric_logger = self.loss_logger
        if fabric_logger is not None:
            return self._fabric_step(fabric_logger, outputs, batch, stage, group, batch_size)
        stage = stage or self.loss_stage()
        state = self.loss_state
        if state.probing:  # reevaluate_tasks: the result only
            probe: LossResult = self.loss_mix(outputs, batch, group=group)
            state.probe = probe
            return probe.total
        step = self.loss_step() if stage == "train" and self._lossmix_trainer() else None
        result: LossResult = self.loss_mix(outputs, batch, step=step, group=group)
        self.last_loss_result = result  # the dry run restores the previous one on exit
        if state.dry_run:  # PreflightBatch: checked, not logged
            return result.total
        if step is not None:
            state.train_result = result
        logger = self.term_logger()
        if logger is not None:
            size = batch_size if batch_size is not None else _batch_size(batch, outputs)
            logger.record(stage, group, result, size)
        if result.unnormalized_total is not None:
            # scope: accumulation: backward on N × the sums (Lightning divides by N); the
            # window's summed count divides the gradients before the step (AccumulationScope)
            trainer = self._lossmix_trainer()
            windows = trainer.accumulate_grad_batches if trainer is not None else 1
            return result.unnormalized_total * windows
        return result.total

    def _fabric_step(
        self,
        logger: LoopLogger,
        outputs: Mapping[str, Any],
        batch: Any,
        stage: str | None,
        group: str | None,
        batch_size: int | None,
    ) -> Tensor:
        """``compute_loss`` under Fabric: the step from the logger, the values to ``fabric.log_dict``."""
        mix = self.loss_mix
        training = bool(getattr(self, "training", True))
        stage = stage or ("train" if training else "val")
        if mix.aggregation is not None and stage == "train":
            raise LossConfigError(
                f"{type(self).__name__}: the aggregation: node needs its own backward, which "
                "fabric.backward does not run; use the plain-loop adapter (lossmix.loops): "
                "result = module.loss_mix(outputs, batch, step=step); module.loss_mix.backward(result)."
            )
        step = logger.step + 1 if stage == "train" else None
        result: LossResult = mix(outputs, batch, step=step, group=group)
        self.last_loss_result = result
        size = batch_size if batch_size is not None else _batch_size(batch, outputs)
        logger.update(result, step=step, batch_size=size, stage=stage, group=group)
        return result.total
