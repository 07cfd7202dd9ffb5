"""``NonFiniteLossGuard``: find the term that went NaN/Inf, and raise, skip the step, or drop it.

=========== ============================================================= =====================
policy      what happens                                                  host syncs
=========== ============================================================= =====================
``raise``   stop with one line: the term(s), the step, and the ranges of  1 per optimizer step
            the term's inputs (computed only when raising); the app's     (+1 all-reduce in DDP)
            default
``skip``    the optimizer step does not happen: every gradient is set to  1 per optimizer step
            ``None`` before ``optimizer.step``, which then leaves the     (+1 all-reduce in DDP)
            parameters and its state (Adam's moments, step) untouched
``zero``    the term's contribution (and the gradient it sends to its     none per step; 1 per
            inputs) is zeroed on the device with ``torch.where``; the      epoch to report the
            terms dropped and the first step are reported at epoch end    dropped terms
=========== ============================================================= =====================

``raise`` and ``skip`` take one decision per optimizer step on the host, reduced
over ranks with ``trainer.strategy.reduce_boolean_decision`` so every rank
raises or skips together. Flags are gathered on the device at each backward, so
gradient accumulation and manual optimization are covered. Under ``skip`` the
learning-rate schedulers still step, and an optimizer that re-evaluates its
closure (LBFGS) is not supported.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lossmix.errors import LossConfigError, NonFiniteLoss
from lossmix.lightning.access import last_result_of, loss_mix_of, loss_step_of
from lossmix.mix.loss_mix import GUARD_POLICIES
from lossmix.utilities.distributed import all_reduce_min, all_reduce_sum, world_size

__all__ = ["NonFiniteLoss", "NonFiniteLossGuard"]

POLICIES = GUARD_POLICIES


class NonFiniteLossGuard(pl.Callback):
    """Watch every term for NaN/Inf and apply ``policy`` (raise | skip | zero).

    Attributes:
        skipped: the optimizer steps skipped (``skip``), as ``(step, terms)`` pairs.
        dropped: the last epoch's report of dropped terms (``zero``).
    """

    def __init__(self, policy: str = "raise") -> None:
        if policy not in POLICIES:
            raise LossConfigError(f"NonFiniteLossGuard: policy={policy!r}; use one of {', '.join(POLICIES)}.")
        self.policy = policy
        self.skipped: list[tuple[int, list[str]]] = []
        self.dropped: list[str] = []
        self._flags: dict[str, Tensor] = {}
        self._first: dict[str, Tensor] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        loss_mix_of(pl_module, needed_by="NonFiniteLossGuard").set_guard(self.policy)

    # -- device-side flags, gathered at every backward --------------------------------------------
    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        result = last_result_of(pl_module)
        if result is None:
            return
        prefix = f"{result.group}/" if result.group else ""
        values = {**{k: v for k, v in result.raw.items()}, "total": result.total}
        step = torch.as_tensor(_step(trainer, pl_module), device=result.total.device)
        for key, value in values.items():
            name = prefix + key
            bad = ~torch.isfinite(value.detach()).all()
            weight = result.weights.get(key, 1.0)
            # the weighted value too: a NaN weight makes a finite term non-finite
            bad = bad | ~torch.isfinite(value.detach() * weight).all()
            if self.policy != "zero":
                bad = bad | ~torch.isfinite(result.terms.get(key, value).detach()).all()
            seen = self._flags.get(name)
            if self.policy == "zero":
                # a count of dropped steps, and the first one: device ops only
                self._first[name] = torch.where(
                    bad & ((seen if seen is not None else step.new_zeros(())) == 0),
                    step,
                    self._first.get(name, step.new_full((), -1)),
                )
                self._flags[name] = (seen if seen is not None else 0) + bad.long()
            else:
                self._flags[name] = bad if seen is None else seen | bad
        self._result = result

    # -- the one decision per optimizer step (raise / skip) ---------------------------------------
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        if self.policy == "zero" or not self._flags:
            return
        names = list(self._flags)
        flags = torch.stack(list(self._flags.values()))
        self._flags = {}
        local = bool(flags.any())  # the documented host sync
        if not trainer.strategy.reduce_boolean_decision(local, all=False):
            return
        bad = [n for n, f in zip(names, flags.tolist(), strict=True) if f]
        step = _step(trainer, pl_module)
        if self.policy == "raise":
            terms = tuple(n for n in bad if n.rsplit("/", 1)[-1] != "total") or tuple(bad)
            raise NonFiniteLoss(self._message(list(terms), step, trainer), step=step, terms=terms)
        for group in optimizer.param_groups:
            for param in group["params"]:
                param.grad = None
        self.skipped.append((step, bad))
        rank_zero_warn(
            f"NonFiniteLossGuard: skipped the optimizer step at step {step}: "
            f"non-finite {', '.join(bad) or 'loss on another rank'}."
        )

    def _message(self, terms: list[str], step: int, trainer: pl.Trainer) -> str:
        """One line: where, which terms, each term's input ranges, how to train past it."""
        head = (
            f"non-finite loss at step {step} (epoch {trainer.current_epoch}): "
            f"term(s) {', '.join(terms) or '(on another rank)'}."
        )
        result = getattr(self, "_result", None)
        ranges = []
        for name in terms:
            term = name.rsplit("/", 1)[-1].split(".", 1)[0]
            for arg, value in (result.inputs.get(term, {}) if result is not None else {}).items():
                if isinstance(value, Tensor) and value.is_floating_point() and value.numel():
                    ranges.append(f"{term}.{arg}: {_value_range(value.detach())}")
        inputs = f" Inputs: {'; '.join(ranges)}." if ranges else ""
        return (
            f"{head}{inputs} Find the input or weight that went non-finite (a learning rate too high, "
            "a log of 0, a division by 0); policy 'skip' or 'zero' trains past it."
        )

    # -- zero: report once per epoch ----------------------------------------------------------------
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.policy != "zero" or not self._flags:
            return
        names = list(self._flags)
        # every rank's drops, in one collective each for the counts and the first steps; the
        # first step of a rank with no drop is pushed past any real step so it cannot win the min
        counts = all_reduce_sum(torch.stack([self._flags[n] for n in names]))
        firsts = torch.stack([self._first[n] for n in names])
        never = torch.iinfo(firsts.dtype).max
        firsts = all_reduce_min(torch.where(firsts < 0, torch.full_like(firsts, never), firsts))
        self._flags, self._first = {}, {}
        where = " over all ranks" if world_size() > 1 else ""
        count_list, first_list = torch.stack([counts, firsts.to(counts.dtype)]).tolist()  # one read
        dropped = [
            f"{n} on {c} step(s){where} from step {f}"
            for n, c, f in zip(names, count_list, first_list, strict=True)
            if c
        ]
        if dropped:
            rank_zero_warn(f"NonFiniteLossGuard: dropped non-finite terms: {'; '.join(dropped)}.")
        self.dropped = dropped

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "skipped": [[s, list(t)] for s, t in self.skipped]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = [(int(s), list(t)) for s, t in state_dict.get("skipped", [])]


def _value_range(value: Tensor) -> str:
    """``shape (4, 2), min -1.2, max 3.4, non-finite 1``: min and max over the finite values
    (read when raising only)."""
    finite = torch.isfinite(value)
    count = int((~finite).sum())
    kept = value[finite]
    span = f"min {kept.min().item():.4g}, max {kept.max().item():.4g}" if kept.numel() else "no finite value"
    return f"shape {tuple(value.shape)}, {span}, non-finite {count}"


def _step(trainer: pl.Trainer, pl_module: pl.LightningModule) -> int:
    return loss_step_of(trainer, pl_module)
