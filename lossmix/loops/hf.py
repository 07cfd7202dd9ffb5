"""``LossMixTrainer``: a Hugging Face ``transformers.Trainer`` whose loss is a :class:`~lossmix.LossMix`.

``pip install lossmix[hf]``. What it changes in the ``Trainer``:

- **the loss**: ``compute_loss`` calls the model with the batch keys its ``forward``
  names (the label keys left out, so a Hugging Face model does not compute a loss of its
  own) and routes the outputs and the whole batch into the mix; every batch column
  reaches the mix (``remove_unused_columns`` drops none).
- **gradient accumulation**: each micro-batch's total is weighted by its share of the
  optimizer step's items, ``n / num_items_in_batch`` (``n``: this micro-batch's labels
  other than -100, ``num_items_in_batch``: the Trainer's count over the whole step and
  every rank), so a term that averages over those items gives exactly the big batch's
  gradient (the fix of transformers #34191). A term averaged over something else (rows,
  pixels) gets the same share as its weight. Without labels the Trainer divides by the
  number of accumulation steps, as for any loss.
- **learned weights and state**: the mix becomes the model's submodule ``loss_mix``, so
  a ``weighting:``'s parameters are in the optimizer (and synchronised by DDP), and every
  parameter and buffer of the mix is in each checkpoint and restored on resume.
- **logging**: at each of the Trainer's logging steps the terms' step values join
  ``Trainer.log`` under the Lightning app's keys (``train/loss``, ``train/loss/{term}``,
  ``train/weight/{term}``), read from the shared buffer
  (:class:`~lossmix.loops.term_log.TermLog`: one host read and one collective per
  logging step); each epoch's means as ``train/loss/{term}_epoch``; evaluation means as
  ``val/loss/{term}``. At the end of training the per-term summary table is printed and
  ``loss_curves.png`` written to ``output_dir``.
- **weightings**: bound to the model at the start, GradNorm renormalised after each
  optimizer step, DWA's epoch closed at each epoch end.

An ``aggregation:`` node needs its own backward, which the Trainer's ``training_step``
does not run: use the plain loop (``mix.backward(result)``) or Lightning for it.
"""

from __future__ import annotations

import inspect
from collections.abc import Container, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lossmix.errors import LossConfigError
from lossmix.loops.loss_plot import plot_loss_curves
from lossmix.loops.mix_hooks import bind_mix, mix_epoch_end, mix_step_end
from lossmix.loops.term_log import TermBuffer, TermLog, entries
from lossmix.loops.term_summary import print_summary, term_summary
from lossmix.mix.loss_mix import LossMix, LossResult

try:
    import transformers
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("lossmix.loops.hf needs Hugging Face transformers: pip install 'lossmix[hf]'.") from err

__all__ = ["LossMixTrainer"]


class LossMixTrainer(transformers.Trainer):
    """A ``transformers.Trainer`` that trains ``loss_mix`` (see the module docstring).

    Args:
        *args: ``transformers.Trainer``'s arguments (``model``, ``args``, datasets...).
        loss_mix: the mix; it becomes ``model.loss_mix``.
        model_input_keys: the batch keys passed to the model (default: those its
            ``forward`` names, without the label keys; all but the labels when it takes
            only ``**kwargs``).
        log_raw: also log each term before its weight (``train/raw/{term}``).
        **kwargs: ``transformers.Trainer``'s keyword arguments.
    """

    def __init__(
        self,
        *args: Any,
        loss_mix: LossMix,
        model_input_keys: list[str] | None = None,
        log_raw: bool = False,
        **kwargs: Any,
    ) -> None:
        if not isinstance(loss_mix, LossMix):
            raise LossConfigError(
                f"LossMixTrainer: loss_mix must be a LossMix (LossMix.from_config(node)); got "
                f"{type(loss_mix).__name__}."
            )
        if loss_mix.aggregation is not None:
            raise LossConfigError(
                "LossMixTrainer: the aggregation: node needs its own backward, which the Trainer's "
                "training_step does not run; use the plain loop (mix.backward(result)) or Lightning."
            )
        _no_post_step(loss_mix)
        model = kwargs.get("model", args[0] if args else None)
        if not isinstance(model, nn.Module):
            raise LossConfigError("LossMixTrainer: pass the model (model=...), an nn.Module.")
        if getattr(model, "loss_mix", None) is not loss_mix:
            model.add_module("loss_mix", loss_mix)
        hooks = _MixHooks()
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), hooks]
        super().__init__(*args, **kwargs)
        hooks.trainer = self
        self.loss_mix = loss_mix
        self.term_log = TermLog(log_raw=log_raw)
        if self.args.label_names is None and not self.label_names:
            # a plain nn.Module names no labels in forward: evaluation still scores the mix
            self.label_names = ["labels"]
        self.model_input_keys: Container[str] = (
            set(model_input_keys) if model_input_keys else _forward_keys(model, set(self.label_names))
        )
        # the Trainer counts num_items_in_batch over the accumulation window only for a model
        # that "accepts loss kwargs"; compute_loss below uses the count itself
        self.model_accepts_loss_kwargs = True

    # -- every batch column reaches the mix -----------------------------------------------------
    def _remove_unused_columns(self, dataset: Any, description: str | None = None) -> Any:
        return dataset

    def _get_collator_with_removed_columns(self, data_collator: Any, description: str | None = None) -> Any:
        return data_collator

    # -- the loss -------------------------------------------------------------------------------
    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        """The mix's total for ``inputs``, scaled by this micro-batch's share of the step's items."""
        keys = self.model_input_keys
        outputs = model(**{k: v for k, v in inputs.items() if k in keys})
        training = model.training
        step = int(self.state.global_step) if training else None
        result: LossResult = self.loss_mix(outputs, inputs, step=step)
        self.term_log.record("train" if training else "val", None, result, _rows(inputs))
        loss = result.total
        if num_items_in_batch is not None:
            local = _items(inputs, shifted=bool(getattr(self, "_loss_shifts_labels", False)))
            if local is not None:
                count = torch.as_tensor(num_items_in_batch, device=loss.device, dtype=loss.dtype)
                loss = loss * local.to(loss.dtype) / count.clamp(min=1)
                if self.args.average_tokens_across_devices and self.args.world_size > 1:
                    loss = loss * self.accelerator.num_processes  # DDP averages the ranks' gradients
        return (loss, outputs) if return_outputs else loss

    # -- logging --------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """The Trainer's ``log``, with the terms' values merged: step values next to ``loss``,
        validation means next to ``eval_loss``."""
        if "loss" in logs:
            logs = {**logs, **self._read(*self.term_log.flush_steps("train"), "")}
        if any(k.endswith("_loss") and k.startswith("eval") for k in logs):
            logs = {**logs, **self._read(*self.term_log.flush_epoch("val"), "")}
        super().log(logs, *args, **kwargs)

    def _read(self, buffers: list[TermBuffer], values: list[float], suffix: str) -> dict[str, float]:
        shown = {k + suffix: v for k, v, hide in entries(buffers, values) if not hide}
        self.term_log.remember(int(self.state.global_step), list(shown), list(shown.values()))
        return shown

    def close_epoch(self) -> None:
        """The training epoch's means, logged as ``train/loss/{term}_epoch``; DWA's epoch."""
        means = self._read(*self.term_log.flush_epoch("train"), "_epoch")
        if means:
            super().log(means)
        mix_epoch_end(self.loss_mix)

    def report(self) -> list[dict[str, Any]]:
        """The per-term summary table (printed) and ``loss_curves.png`` in ``output_dir``."""
        if any(s == "train" and b.sums is not None for (s, _), b in self.term_log.buffers.items()):
            self.close_epoch()
        latest: dict[str, float] = {}
        for entry in self.state.log_history:
            latest.update({k: v for k, v in entry.items() if isinstance(v, (int, float))})
        rows = term_summary(self.loss_mix, self.term_log.epoch_summary.get("train", {}), latest)
        if self.is_world_process_zero():
            out = Path(self.args.output_dir or ".")
            plot_loss_curves(self.term_log.history, out / "loss_curves.png")
            print_summary(rows, out)
        return rows


class _MixHooks(transformers.TrainerCallback):
    """The weighting's calls and the epoch's means at the Trainer's callback points."""

    trainer: LossMixTrainer | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.trainer is not None and isinstance(self.trainer.model, nn.Module):
            bind_mix(self.trainer.loss_mix, self.trainer.model)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer is not None:
            mix_step_end(self.trainer.loss_mix)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer is not None:
            self.trainer.close_epoch()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer is not None:
            self.trainer.report()


def _no_post_step(mix: LossMix) -> None:
    weighting = mix.weighting
    if weighting is not None and weighting.needs_post_step_losses:
        raise LossConfigError(
            f"weighting: {type(weighting).__name__} re-evaluates the batch after each optimizer step, "
            "which LossMixTrainer does not do; use the plain loop (mix_step_end) or Lightning."
        )


def _forward_keys(model: nn.Module, labels: set[str]) -> set[str] | _AllBut:
    parameters = inspect.signature(model.forward).parameters.values()
    named = {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    if not named:
        return _AllBut(labels)
    return named - labels


class _AllBut:
    """Every key but ``excluded`` (a ``forward(**kwargs)`` model)."""

    def __init__(self, excluded: set[str]) -> None:
        self.excluded = excluded

    def __contains__(self, key: object) -> bool:
        return key not in self.excluded


def _items(inputs: Mapping[str, Any], *, shifted: bool) -> Tensor | None:
    """This micro-batch's items as the Trainer counts them: labels other than -100 (a causal
    LM's shifted labels: all but the first position)."""
    labels = inputs.get("shift_labels")
    if labels is None:
        labels = inputs.get("labels")
        if isinstance(labels, Tensor) and shifted:
            labels = labels[..., 1:]
    return labels.ne(-100).sum() if isinstance(labels, Tensor) else None


def _rows(inputs: Mapping[str, Any]) -> int:
    first = next((v for v in inputs.values() if isinstance(v, Tensor) and v.dim()), None)
    return int(first.shape[0]) if first is not None else 1
