"""Per-class vectors computed from class counts: the counts a user gives or a datamodule's histogram.

A loss argument that takes one number per class (``CrossEntropyLoss.class_weight``, the
softmax ``FocalLoss.alpha``) also takes a **class-weight spec**::

    class_weight: {method: effective_number, beta: 0.999, counts: [5000, 120, 8]}
    class_weight: {method: inverse_frequency, power: 0.5, counts: datamodule}

``method`` is ``inverse_frequency`` (:math:`w_c \\propto n_c^{-p}`, ``power`` p, default 1)
or ``effective_number`` (Cui et al. 2019, ``beta``, default 0.999), both scaled to sum to
the number of classes (:mod:`lossmix.functional.class_balance`). ``counts: datamodule``
defers the counts to training: the Lightning layer's ``ClassCountsFromData`` callback
(installed by :class:`~lossmix.CompositeLoss`) calls the datamodule's
``label_histogram()`` at ``setup`` and hands the counts to every loss waiting for them
(:meth:`ClassCountsMixin.set_class_counts`). LDAM and logit adjustment take the counts
themselves (``class_counts``), in the same two ways.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lossmix.errors import LossConfigError, LossInputError, did_you_mean
from lossmix.functional import class_balance as F
from lossmix.utilities.checks import check_choice, check_float, class_vector

__all__ = [
    "DATAMODULE",
    "ClassCountsMixin",
    "ClassWeightSpec",
    "check_class_count",
    "check_class_counts",
    "class_weight_argument",
]

DATAMODULE = "datamodule"
_SPEC_KEYS = ("method", "counts", "beta", "power")

Counts = Sequence[float] | Tensor | str | None


def check_class_counts(owner: str, name: str, counts: Any) -> Tensor:
    """Per-class counts as a flat float tensor; every count finite and > 0, else one line
    saying which class would divide by zero."""
    if isinstance(counts, Tensor):
        counts = counts.detach().cpu()
    try:
        vector = torch.as_tensor(counts, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError) as err:
        raise LossConfigError(
            f"{owner}: {name}={counts!r} is not valid; give one sample count per class."
        ) from err
    if vector.numel() == 0 or not bool(torch.isfinite(vector).all()) or bool((vector < 0).any()):
        raise LossConfigError(f"{owner}: {name} must be one finite count >= 0 per class; got {counts!r}.")
    zeros = torch.nonzero(vector == 0).flatten().tolist()
    if zeros:
        raise LossConfigError(
            f"{owner}: {name} has count 0 for class(es) {zeros[:5]}, so their weight would divide by "
            "zero; drop those classes, or count at least 1 for each (e.g. add 1 to every count)."
        )
    return vector.to(torch.float32)


def check_class_count(owner: str, name: str, vector: Tensor, num_classes: int) -> None:
    """Raise unless a per-class vector has one entry per class of ``pred``."""
    if vector.numel() != num_classes:
        raise LossInputError(
            f"{owner}: {name} has {vector.numel()} entries but pred has {num_classes} classes "
            f"(pred.size(1)); give one {name} entry per class."
        )


@dataclass(frozen=True)
class ClassWeightSpec:
    """How to turn class counts into class weights (see the module docs)."""

    method: str
    beta: float = 0.999
    power: float = 1.0

    def weights(self, counts: Tensor) -> Tensor:
        """The class weights of ``counts`` (already checked)."""
        return F.class_weights_from_counts(counts, method=self.method, beta=self.beta, power=self.power)


def _parse_spec(owner: str, name: str, node: Mapping[str, Any]) -> tuple[ClassWeightSpec, Counts]:
    unknown = [k for k in node if k not in _SPEC_KEYS]
    if unknown:
        raise LossConfigError(
            f"{owner}: {name} has an unknown key '{unknown[0]}'.{did_you_mean(str(unknown[0]), _SPEC_KEYS)} "
            f"A class-weight spec takes {', '.join(_SPEC_KEYS)}."
        )
    if "counts" not in node:
        raise LossConfigError(
            f"{owner}: {name} needs counts: a list of one count per class, or 'datamodule' for the "
            "datamodule's label_histogram()."
        )
    method = check_choice(
        owner, f"{name}.method", node.get("method", "effective_number"), F.CLASS_WEIGHT_METHODS
    )
    beta = check_float(owner, f"{name}.beta", node.get("beta", 0.999), low=0.0, high=1.0, high_open=True)
    power = check_float(owner, f"{name}.power", node.get("power", 1.0), low=0.0, low_open=True)
    return ClassWeightSpec(method, beta, power), node["counts"]


def class_weight_argument(
    owner: str, name: str, value: Mapping[str, Any] | Sequence[float] | Tensor | None
) -> tuple[Tensor | None, ClassWeightSpec | None]:
    """``(vector, pending)``: a per-class vector now, or a spec waiting for the datamodule's counts."""
    if not isinstance(value, Mapping):
        vector = class_vector(owner, name, value)
        # the config's own numbers, exact: register_class_buffer keeps them beside the buffer
        exact = torch.as_tensor(value, dtype=torch.float64).detach().clone() if vector is not None else None
        return exact, None
    spec, counts = _parse_spec(owner, name, value)
    if isinstance(counts, str):
        if counts != DATAMODULE:
            raise LossConfigError(
                f"{owner}: {name}.counts={counts!r} is not valid; give a list of counts or 'datamodule'."
            )
        return None, spec
    return spec.weights(check_class_counts(owner, f"{name}.counts", counts)), None


class ClassCountsMixin(nn.Module):
    """Per-class buffers that may wait for class counts (``counts: datamodule``).

    A loss declares each such buffer with :meth:`register_class_buffer`, giving either
    the vector or how to compute it from counts; :meth:`set_class_counts` fills every
    waiting buffer, and :meth:`class_buffer` refuses a call while one still waits.
    """

    def register_class_buffer(
        self, name: str, value: Tensor | None, from_counts: Callable[[Tensor], Tensor] | None = None
    ) -> None:
        """Register buffer ``name`` (not persistent: it derives from the config or the data).

        The exact values are kept beside it (float64, on the CPU), so a module converted to
        another dtype (``.double()``, Lightning's ``precision="64-true"``) gets them in that
        dtype instead of the float32 buffer's rounding of them."""
        self._keep_exact(name, value)
        if value is not None and value.is_floating_point():
            value = value.to(torch.get_default_dtype())
        self.register_buffer(name, value, persistent=False)
        pending: dict[str, Callable[[Tensor], Tensor]] = self.__dict__.setdefault("_waiting_for_counts", {})
        if from_counts is not None:
            pending[name] = from_counts

    @property
    def needs_class_counts(self) -> bool:
        """Whether a buffer still waits for :meth:`set_class_counts`."""
        return bool(self.__dict__.get("_waiting_for_counts"))

    def set_class_counts(self, counts: Sequence[float] | Tensor) -> None:
        """Fill every waiting per-class buffer from ``counts`` (one count per class, > 0)."""
        owner = type(self).__name__
        checked = check_class_counts(owner, "class counts", counts)
        pending: dict[str, Callable[[Tensor], Tensor]] = self.__dict__.get("_waiting_for_counts", {})
        device = next((b.device for b in self.buffers() if b is not None), torch.device("cpu"))
        for name, compute in list(pending.items()):
            vector = compute(checked)
            self._keep_exact(name, vector)
            dtype = next(
                (b.dtype for b in self.buffers() if b.is_floating_point()), torch.get_default_dtype()
            )
            setattr(self, name, vector.to(dtype).to(device))
            del pending[name]

    def _keep_exact(self, name: str, value: Tensor | None) -> None:
        exact: dict[str, Tensor] = self.__dict__.setdefault("_exact_class_values", {})
        if value is not None and value.is_floating_point():
            exact[name] = value.detach().to("cpu", torch.float64)

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        # after .to()/.double()/.half(): each per-class buffer from its exact values, in its new dtype
        module = super()._apply(fn, recurse)  # type: ignore[no-untyped-call]  # torch's is untyped
        for name, exact in self.__dict__.get("_exact_class_values", {}).items():
            buffer = getattr(self, name, None)
            if isinstance(buffer, Tensor) and buffer.is_floating_point():
                setattr(self, name, exact.to(buffer.dtype).to(buffer.device))
        return module

    def class_buffer(self, name: str, num_classes: int, *, label: str | None = None) -> Tensor | None:
        """Buffer ``name`` (the argument ``label``) checked against ``num_classes``; an error
        while it waits for counts."""
        label = label or name
        if name in self.__dict__.get("_waiting_for_counts", {}):
            raise LossInputError(
                f"{type(self).__name__}: {label} comes from the datamodule's class counts, which were never "
                "set; train with a Trainer whose datamodule defines label_histogram() (CompositeLoss "
                "installs ClassCountsFromData), or call set_class_counts(counts) first."
            )
        vector: Tensor | None = getattr(self, name)
        if vector is not None:
            check_class_count(type(self).__name__, label, vector, num_classes)
        return vector


def prior_log(counts: Tensor) -> Tensor:
    """:math:`\\log \\pi_c = \\log n_c - \\log \\sum_k n_k`."""
    return (counts.double().log() - math.log(float(counts.double().sum()))).to(torch.float32)
