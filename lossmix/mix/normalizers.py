"""Named ``avg_factor`` sources (step 4's divisor), instead of ad-hoc factors in every head.

================  ==============================================================
``num_pos``       positives (the sampler's, else counted from the target)
``num_sampled``   positives + negatives chosen by the sampler (all, without one)
``weight_sum``    sum of the term's effective element weight (torch's weighted mean)
``numel``         number of elements of ``pred``
``batch``         ``pred.shape[0]``
any other name    an input key holding a count (a number or a 0-dim tensor); a name
                  close to a built-in one is taken for a typo: write
                  ``{type: key, key: <name>}`` for such a key
================  ==============================================================

Counts are clamped to at least ``min`` (1 by default, as every detector does); a
``weight_sum`` or key normaliser is clamped to ``min`` (default ``1e-6``, FCOS's
centerness floor). ``sync: true`` averages the value over distributed ranks
before clamping (anchor-free detectors' ``reduce_mean``); all synced
normalisers of a step share one collective (see :func:`all_reduce_mean`).

``ema: m`` smooths the (synced, clamped) value over training steps, Detectron2's RetinaNet
normaliser: ``n_t = m·n_{t−1} + (1 − m)·value_t`` from ``init`` (default: the first value),
a checkpointed buffer of the term (:class:`MovingAverage`). It moves once per optimizer
step; with gradient accumulation, from the mean value of that step's micro-batches so far.
Evaluation (no training step) divides by the batch's own value.

``scope: accumulation`` makes a run with ``Trainer(accumulate_grad_batches=N)`` take the
update of one step on the N micro-batches together: each term is divided by the value
summed over the window (synced, then clamped) instead of by each micro-batch's own; see
:class:`~lossmix.lightning.callbacks.AccumulationScope` for when that is exact and what it
costs (``scope: step``, the default, is the micro-batch's own value).

Step 4 has this one owner: a :class:`Normalizer` reads its source's value
(:meth:`Normalizer.read`; each built-in source is a function registered with
:func:`normalizer_source`), floors it and smooths it (:meth:`Normalizer.finish`, its moving
average a child module in the term's checkpoint); :class:`~lossmix.mix.LossMix` only batches
the collective of the synced ones into one call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any

import torch
from torch import Tensor, nn

from lossmix.errors import LossConfigError, LossInputError, did_you_mean
from lossmix.mix.routing import lookup
from lossmix.utilities.checks import check_bool, check_float, describe_value
from lossmix.utilities.distributed import all_reduce_mean

__all__ = [
    "BUILTIN_NORMALIZERS",
    "MovingAverage",
    "Normalizer",
    "NormalizerInputs",
    "all_reduce_mean",
    "build_normalizer",
    "normalizer_source",
]

_KEYS = ("type", "sync", "min", "key", "ema", "init", "scope")
SCOPES = ("step", "accumulation")
KEY_TYPE = "key"


@dataclass(frozen=True)
class NormalizerInputs:
    """What a normaliser's source reads in phase one of a term."""

    term: str
    kwargs: Mapping[str, Any]
    sample: Any
    outputs: Any
    batch: Any
    #: the positive and negative masks (a sampler's, routed ones, or from class indices)
    pos_neg: Callable[[], tuple[Tensor, Tensor]]
    #: the loss's first input, whose elements ``numel``/``batch`` count (``pred`` for most
    #: losses; a user's function or module may call it ``output``)
    pred_key: str = "pred"


Source = Callable[[NormalizerInputs], Any]
#: built-in source name → the function that reads its value (filled by :func:`normalizer_source`)
_SOURCES: dict[str, Source] = {}
#: the sources that count elements (their floor defaults to 1; a sum's to 1e-6)
_COUNTS: set[str] = set()


def normalizer_source(name: str, *, count: bool = True) -> Callable[[Source], Source]:
    """Register a built-in normaliser source under ``name`` (a decorator, as ``@LOSSES.register()``
    is for losses); ``count`` says its value counts elements (floored at 1 by default)."""

    def register(fn: Source) -> Source:
        if name in _SOURCES:
            raise LossConfigError(f"normaliser source '{name}' is registered already.")
        _SOURCES[name] = fn
        if count:
            _COUNTS.add(name)
        return fn

    return register


def _pred(inputs: NormalizerInputs, source: str) -> Tensor:
    key = inputs.pred_key
    pred = inputs.kwargs.get(key)
    if not isinstance(pred, Tensor):
        raise LossInputError(
            f"term '{inputs.term}': normalizer '{source}' counts the elements of {key}, which is "
            f"{describe_value(pred)}; route a tensor to {key} or use another normalizer."
        )
    return pred


@normalizer_source("num_pos")
def _num_pos(inputs: NormalizerInputs) -> Any:
    return inputs.sample.num_pos if inputs.sample is not None else inputs.pos_neg()[0].sum()


@normalizer_source("num_sampled")
def _num_sampled(inputs: NormalizerInputs) -> Any:
    if inputs.sample is not None:
        return inputs.sample.num_sampled
    pos, neg = inputs.pos_neg()
    return pos.sum() + neg.sum()


@normalizer_source("weight_sum", count=False)
def _weight_sum(inputs: NormalizerInputs) -> Any:
    weight = inputs.kwargs.get("weight")
    if isinstance(weight, Tensor):
        return weight.sum()
    pred = _pred(inputs, "weight_sum")
    return torch.tensor(float(pred.numel()), device=pred.device)


@normalizer_source("numel")
def _numel(inputs: NormalizerInputs) -> Any:
    pred = _pred(inputs, "numel")
    return torch.tensor(float(pred.numel()), device=pred.device)


@normalizer_source("batch")
def _batch(inputs: NormalizerInputs) -> Any:
    pred = _pred(inputs, "batch")
    return torch.tensor(float(pred.shape[0]), device=pred.device)


BUILTIN_NORMALIZERS: tuple[str, ...] = tuple(_SOURCES)


def _is_count(value: Any) -> bool:
    if isinstance(value, Tensor):
        return value.dim() == 0
    return isinstance(value, Real) and not isinstance(value, bool)


class Normalizer(nn.Module):
    """Step 4's divisor of one term: its source, its floor, its moving average.

    Args:
        source: a built-in name (:data:`BUILTIN_NORMALIZERS`) or an input key holding a count.
        sync: average the value over distributed ranks (one collective per step for all
            synced normalisers, batched by :class:`~lossmix.mix.LossMix`).
        min: the floor.
        ema: the moving average's momentum (``None``: the step's own value).
        init: the moving average's start (``None``: the first value).
        scope: ``step`` (each micro-batch's value) or ``accumulation`` (the window's summed
            value, see :class:`~lossmix.lightning.callbacks.AccumulationScope`).

    The moving average is the child module ``moving`` (checkpointed with the term).
    """

    def __init__(
        self,
        source: str,
        *,
        sync: bool = False,
        min: float = 1.0,
        ema: float | None = None,
        init: float | None = None,
        scope: str = "step",
        refuse_zero: bool = False,
    ) -> None:
        super().__init__()
        self.source, self.sync, self.min = source, sync, min
        #: a value <= 0 makes the term NaN instead of dividing by the floor (a key normaliser
        #: without its own ``min``: a count of 0 divided by 1e-6 would scale the term by 1e6)
        self.refuse_zero = refuse_zero
        self.ema, self.init, self.scope = ema, init, scope
        self.moving = MovingAverage(ema, init) if ema is not None else None

    def _spec(self) -> tuple[Any, ...]:
        return (self.source, self.sync, self.min, self.ema, self.init, self.scope)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Normalizer) and self._spec() == other._spec()

    __hash__ = nn.Module.__hash__

    @property
    def is_key(self) -> bool:
        """True when the value is read from an input key rather than computed."""
        return self.source not in _SOURCES

    @property
    def counts_positives(self) -> bool:
        """True when the value needs positives and negatives (``num_pos``, ``num_sampled``)."""
        return self.source in ("num_pos", "num_sampled")

    def read(self, inputs: NormalizerInputs) -> Tensor:
        """The step's raw value (not yet synced, floored or smoothed), as a float tensor."""
        pred = inputs.kwargs.get(inputs.pred_key)
        device = pred.device if isinstance(pred, Tensor) else None
        fn = _SOURCES.get(self.source)
        value = fn(inputs) if fn is not None else self._read_key(inputs)
        return torch.as_tensor(value, device=device).float()

    def _read_key(self, inputs: NormalizerInputs) -> Any:
        value = lookup(inputs.outputs, inputs.batch, self.source, term=inputs.term, arg="normalizer")
        if not _is_count(value):
            raise LossInputError(
                f"term '{inputs.term}': normalizer key '{self.source}' holds {describe_value(value)}, not "
                "a count; it must be a number or a 0-dim tensor."
            )
        return value

    def invalid(self, value: Tensor) -> Tensor | None:
        """A device flag: the (synced) value can not divide the term, or ``None`` when any value
        is floored (no host sync). A key normaliser without its own ``min`` refuses a value
        <= 0, which the floor of ``1e-6`` would turn into a ×1e6 scale."""
        return (value <= 0).any() if self.refuse_zero else None

    def clamp(self, value: Tensor) -> Tensor:
        """Apply the floor (no host sync)."""
        return value.clamp(min=self.min)

    def finish(self, value: Tensor, step: int | None) -> Tensor:
        """The divisor from the (synced) value: floored, then smoothed on training steps."""
        value = self.clamp(value)
        if self.moving is not None and step is not None:
            value = self.moving(value, step)
        return value

    def extra_repr(self) -> str:
        shown = [f"source={self.source!r}"]
        shown += [f"sync={self.sync}"] if self.sync else []
        shown += [f"min={self.min}", f"scope={self.scope!r}"]
        shown += [f"ema={self.ema}, init={self.init}"] if self.ema is not None else []
        return ", ".join(shown)


def _source(node: Mapping[str, Any], term: str) -> str:
    """The built-in name or input key; a name close to a built-in is a typo, not a key."""
    kind = node["type"]
    if kind == KEY_TYPE:
        key = node.get("key")
        if not isinstance(key, str) or not key:
            raise LossConfigError(
                f"term '{term}': normalizer type: key needs key: <the input key holding a count>, "
                "e.g. {type: key, key: num_total_pos}."
            )
        return key
    if "key" in node:
        raise LossConfigError(
            f"term '{term}': normalizer key: {node['key']!r} goes with type: key, not type: {kind}."
        )
    hint = did_you_mean(kind, tuple(_SOURCES))
    if kind not in _SOURCES and hint:
        raise LossConfigError(
            f"term '{term}': normalizer '{kind}' is not a built-in normaliser.{hint} Built-in: "
            f"{', '.join(tuple(_SOURCES))}; for an input key of that name write "
            f"{{type: key, key: {kind}}}."
        )
    return str(kind)


def build_normalizer(node: Any, *, term: str) -> Normalizer | None:
    """Build from ``"num_pos"`` or ``{type: num_pos, sync: true, min: 1}``; ``None`` passes through.

    >>> build_normalizer({"type": "num_pos", "sync": True}, term="cls")
    Normalizer(source='num_pos', sync=True, min=1.0, scope='step')
    >>> build_normalizer({"type": "num_pos", "ema": 0.9, "init": 100}, term="cls").ema
    0.9
    """
    if node is None:
        return None
    if isinstance(node, str):
        node = {"type": node}
    if not isinstance(node, Mapping):
        raise LossConfigError(
            f"term '{term}': normalizer={node!r} is not valid; give a name such as 'num_pos' or "
            f"{{type: num_pos, sync: true}}. Built-in names: {', '.join(tuple(_SOURCES))}, "
            "or an input key holding a count."
        )
    unknown = [k for k in node if k not in _KEYS]
    if unknown or "type" not in node or not isinstance(node["type"], str) or not node["type"]:
        raise LossConfigError(
            f"term '{term}': normalizer {dict(node)!r} is not valid; its keys are {list(_KEYS)} "
            f"with type one of {', '.join(tuple(_SOURCES))}, or type: key with key: <input key>."
        )
    source = _source(node, term)
    floor = node.get("min", 1.0 if source in _COUNTS else 1e-6)
    label = f"term '{term}': normalizer"
    floor = check_float(label, "min", floor, low=0.0)
    sync = check_bool(label, "sync", node.get("sync", False))
    ema, init = node.get("ema"), node.get("init")
    if ema is not None:
        ema = check_float(label, "ema", ema, low=0.0)
        if ema >= 1.0:
            raise LossConfigError(
                f"{label} ema={ema!r} is not valid; the momentum is in [0, 1) (Detectron2 uses 0.9)."
            )
    if init is not None:
        if ema is None:
            raise LossConfigError(
                f"{label} init={init!r} starts a moving average; add ema: 0.9 (its momentum)."
            )
        init = check_float(label, "init", init, low=0.0)
    scope = node.get("scope", "step")
    if scope not in SCOPES:
        raise LossConfigError(
            f"{label} scope={scope!r} is not valid; use 'step' (each micro-batch's own value) or "
            "'accumulation' (the value summed over a gradient-accumulation window)."
        )
    if scope == "accumulation" and ema is not None:
        raise LossConfigError(
            f"{label} has ema and scope: accumulation; the window's summed count already steadies "
            "the divisor: keep one of them."
        )
    # a micro-batch of an accumulation window may count 0 (the window's sum divides): allowed
    refuse_zero = source not in _SOURCES and "min" not in node and scope != "accumulation"
    return Normalizer(source, sync=sync, min=floor, ema=ema, init=init, scope=scope, refuse_zero=refuse_zero)


class MovingAverage(nn.Module):
    """A normaliser's exponential moving average over training steps (no host sync).

    ``forward(value, step)`` returns ``m·n + (1 − m)·mean(values of this step so far)``,
    where ``n`` is the average after the previous step; the first step starts from ``init``
    (or takes its value as it is, without one). Buffers (in checkpoints): ``value`` and
    ``ready`` (the average after the previous step, and whether there is one), ``pending``
    and ``pending_ready`` (after this step, committed when the next step starts), so a run
    resumed at a step boundary continues the sequence exactly.

    >>> ema = MovingAverage(momentum=0.9, init=100.0)
    >>> [round(float(ema(torch.tensor(float(v)), step)), 4) for step, v in enumerate([10, 20, 30])]
    [91.0, 83.9, 78.51]
    """

    value: Tensor
    ready: Tensor
    pending: Tensor
    pending_ready: Tensor

    def __init__(self, momentum: float, init: float | None = None) -> None:
        super().__init__()
        self.momentum = momentum
        start = torch.tensor(0.0 if init is None else float(init))
        self.register_buffer("value", start.clone())
        self.register_buffer("ready", torch.tensor(init is not None))
        self.register_buffer("pending", start.clone())
        self.register_buffer("pending_ready", torch.tensor(init is not None))
        self._step: int | None = None
        self._window: Tensor | None = None
        self._count = 0

    def forward(self, value: Tensor, step: int) -> Tensor:
        if step != self._step:  # a new optimizer step: the last one's average becomes the base
            self.value.copy_(self.pending)
            self.ready.copy_(self.pending_ready)
            self._step, self._window, self._count = step, None, 0
        value = value.detach().to(self.value.dtype)
        self._window = value if self._window is None else self._window + value
        self._count += 1
        mean = self._window / self._count
        smoothed = torch.where(self.ready, self.momentum * self.value + (1.0 - self.momentum) * mean, mean)
        self.pending.copy_(smoothed)
        self.pending_ready.fill_(True)
        return smoothed.to(value.dtype) if value.is_floating_point() else smoothed

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        # restored buffers (a checkpoint, or the pre-flight dry run putting them back): the
        # next call starts a new step from them
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._step, self._window, self._count = None, None, 0

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}"
