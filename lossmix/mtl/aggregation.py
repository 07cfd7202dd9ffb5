"""The ``aggregation:`` node: per-task gradients combined by an aggregator, inside one backward.

``LossMix`` holds it beside its terms; :meth:`GradientAggregation.backward` replaces the
plain ``loss.backward()`` (the Lightning mixin calls it from ``LightningModule.backward``,
so automatic optimization, gradient clipping, AMP loss scaling and checkpoints work as
usual). The tasks are the terms added to the total; each task's gradient is that of its
contributions weighted by ``∂loss/∂term`` (Lightning's ``1/accumulate_grad_batches``, the
AMP scale, any factor the user applied), with the AMP scale divided out again so the
aggregator sees the gradients in the loss's own units.

========================= ====================================== ================================
mode                      what is aggregated                     extra cost per step
========================= ====================================== ================================
``on: shared``            the gradients of ``module``'s          K backward passes through the
                          parameters (K×D); every other          shared part, K×D memory; DDP:
                          parameter gets its ordinary gradient   one all-reduce of (K+1)·D + K
                                                                 numbers per optimizer step
``on: representation``    the gradients w.r.t. the routed        K backward passes through the
                          ``input`` tensor (MGDA-UB): the        heads only; DDP: one all-reduce
                          encoder below gets one aggregated      of K² numbers per micro-batch
                          gradient in the one backward
========================= ====================================== ================================

**What the shared parameters get.** Exactly ``update`` (times the AMP scale), written over
the plain gradient the ordinary backward left there (it still runs, for the heads and for
DDP's own reduction), plus whatever else in the loss reaches them (a regulariser added in
``training_step``; found by a walk over the autograd graph and differentiated only then),
plus what was there before the window's first micro-batch. So low-precision rounding of
the plain gradient never leaks into the update.

**Exactness.** The Gramian, the aggregator's solve and the combination ``wᵀJ`` run in
float64 whatever the model's dtype (K×K is tiny); the task gradients themselves are in the
model's dtype (``on: representation``: the features' dtype) and the update is cast back
to each parameter's dtype. Under DDP every rank takes the same step, equal to one process on the
concatenated batch: ``on: shared`` all-reduces the per-task gradients (the mean over
ranks, as DDP averages) before aggregating; ``on: representation`` sums the ranks'
Gramians (the Gramian of the concatenated batch is ``Σ_r G_r / W²``), so every rank
computes the same weights. With gradient accumulation, ``on: shared`` accumulates the
per-task gradients and aggregates once per optimizer step (the large-batch update);
``on: representation`` aggregates each micro-batch (its weights are needed before that
micro-batch's encoder backward). A step whose gradients overflow under fp16 stays
non-finite, so the AMP scaler skips it; stateful aggregators keep their state then.
Host syncs: none (the random orders of PCGrad and GradVac are drawn on the host from a
CPU generator, which reads no device value).

Example (plain PyTorch):
    >>> import torch
    >>> from lossmix import LossMix
    >>> mix = LossMix.from_config({
    ...     "a": {"type": "MSELoss", "inputs": {"pred": "a", "target": "y"}},
    ...     "b": {"type": "L1Loss", "inputs": {"pred": "b", "target": "y"}},
    ...     "aggregation": {"type": "upgrad", "on": "shared", "module": "trunk"},
    ... })
    >>> model = torch.nn.ModuleDict({"trunk": torch.nn.Linear(3, 4), "a": torch.nn.Linear(4, 1),
    ...                              "b": torch.nn.Linear(4, 1)})
    >>> mix.aggregation.bind(model)
    >>> h = model["trunk"](torch.randn(8, 3))
    >>> result = mix({"a": model["a"](h)[:, 0], "b": model["b"](h)[:, 0]}, {"y": torch.zeros(8)}, step=0)
    >>> mix.backward(result)  # instead of result.total.backward()
    >>> model["trunk"].weight.grad.shape
    torch.Size([4, 3])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lossmix.errors import LossConfigError, LossInputError
from lossmix.mix.routing import describe_keys, lookup
from lossmix.mtl.aggregators import AGGREGATION_KEY, BaseAggregator, build_aggregator, representation_methods
from lossmix.mtl.functional import exact_dtype
from lossmix.mtl.task_gradients import (
    flat_gradients,
    loss_coefficients,
    other_gradient,
    task_jacobian,
    weighted_sum,
)
from lossmix.registry.nodes import is_term_node
from lossmix.utilities.checks import check_choice, describe
from lossmix.utilities.distributed import all_reduce_sum, world_size
from lossmix.utilities.modules import trainable_parameters

__all__ = ["AGGREGATION_KEY", "MODES", "GradientAggregation"]

MODES: tuple[str, ...] = ("shared", "representation")


class GradientAggregation(nn.Module):
    """Which gradients are aggregated, how, and the backward that does it.

    Args:
        aggregator: the method (:class:`~lossmix.mtl.aggregators.BaseAggregator`).
        on: ``shared`` (the parameters of ``module``) or ``representation`` (the tensor
            ``input``).
        module: the shared submodule's name in the model (``model.get_submodule``), a list of
            names (their parameters together), or ``""`` for every trainable parameter of
            the model (TorchJD's ``mtl_backward`` over any set; the loss mix's own
            parameters, learned task weights, are left out).
        input: the key of the shared representation in the outputs or the batch.
    """

    def __init__(
        self,
        aggregator: BaseAggregator,
        *,
        on: str = "shared",
        module: str | Sequence[str] | None = None,
        input: str | None = None,
    ) -> None:
        super().__init__()
        self.aggregator = aggregator
        self.on = check_choice(AGGREGATION_KEY, "on", on, MODES)
        self.module = module if module is None or isinstance(module, str) else list(module)
        self.input = input
        self._check_mode()
        self._params: list[nn.Parameter] = []
        self._jacobian: Tensor | None = None
        self._losses: Tensor | None = None
        self._other: Tensor | None = None

    def _check_mode(self) -> None:
        method = self.aggregator.method
        if self.on == "shared":
            names = self.module if isinstance(self.module, list) else [self.module]
            if not names or not all(isinstance(n, str) for n in names) or self.input is not None:
                raise LossConfigError(
                    f"{AGGREGATION_KEY}: on: shared needs 'module', the shared submodule of your model "
                    f"(e.g. {{type: {method}, on: shared, module: trunk}}; a list of submodules, or "
                    "'' for every trainable parameter), and no 'input'."
                )
        else:
            if not isinstance(self.input, str) or not self.input or self.module is not None:
                raise LossConfigError(
                    f"{AGGREGATION_KEY}: on: representation needs 'input', the key of the shared "
                    f"features the heads consume (e.g. {{type: {method}, on: representation, input: "
                    "features}), and no 'module'."
                )
            if not self.aggregator.runs_on_gramian():
                options = "" if not self.aggregator.has_gramian_form() else " with these options"
                raise LossConfigError(
                    f"{AGGREGATION_KEY}: {method}{options} does not run on: representation (it needs the "
                    f"parameters' own gradients or the losses); use on: shared, or one of "
                    f"{', '.join(representation_methods())}."
                )

    @classmethod
    def from_config(
        cls, node: Any, tasks: Sequence[str], *, allowed_targets: Sequence[str] = ()
    ) -> GradientAggregation:
        """Build from ``{type: upgrad, on: shared, module: trunk, **method args}``."""
        if isinstance(node, GradientAggregation):
            return node
        if not is_term_node(node):
            raise LossConfigError(
                f"{AGGREGATION_KEY}: expected e.g. {{type: upgrad, on: shared, module: trunk}}; got "
                f"{node!r}. '{AGGREGATION_KEY}' is reserved for gradient aggregation and cannot "
                "name a term."
            )
        node = dict(node)
        if "tasks" in node:
            raise LossConfigError(
                f"{AGGREGATION_KEY}: 'tasks' is not a key of the aggregation node; the tasks are "
                "the terms added to the total."
            )
        on, module, key = node.pop("on", "shared"), node.pop("module", None), node.pop("input", None)
        return cls(
            build_aggregator(node, tasks, allowed_targets=allowed_targets), on=on, module=module, input=key
        )

    @property
    def tasks(self) -> list[str]:
        """The aggregated terms, in the Jacobian's row order."""
        return self.aggregator.tasks

    # -- finding what the step needs ----------------------------------------------------------
    def bind(self, model: nn.Module) -> None:
        """Find ``module``'s trainable parameters in ``model`` (``on: shared``) and tell the
        aggregator their layout (each one's size and owning module)."""
        if self.on != "shared":
            return
        assert self.module is not None  # _check_mode
        names = self.module if isinstance(self.module, list) else [self.module]
        own = {
            id(p) for m in model.modules() if getattr(m, "aggregation", None) is self for p in m.parameters()
        }
        found: dict[int, nn.Parameter] = {}
        for name in names:
            params = (
                [p for p in model.parameters() if p.requires_grad and id(p) not in own]
                if name == ""
                else trainable_parameters(model, name, owner=AGGREGATION_KEY)
            )
            found.update((id(p), p) for p in params)
        if not found:
            raise LossConfigError(f"{AGGREGATION_KEY}: module '' found no trainable parameters in the model.")
        self._params = list(found.values())
        owners = {
            id(p): index for index, m in enumerate(model.modules()) for p in m.parameters(recurse=False)
        }
        self.aggregator.bind_layout([p.numel() for p in self._params], [owners[id(p)] for p in self._params])

    def route(self, outputs: Any, batch: Any) -> Tensor:
        """The representation tensor named by ``input`` (``on: representation``)."""
        assert self.input is not None
        try:
            value = lookup(outputs, batch, self.input, term=AGGREGATION_KEY, arg="input")
        except LossInputError as err:
            if "in both" in str(err):
                raise LossInputError(
                    f"{AGGREGATION_KEY}: input '{self.input}' is in both the outputs and the batch; "
                    f"write 'outputs.{self.input}' or 'batch.{self.input}'."
                ) from None
            raise LossInputError(
                f"{AGGREGATION_KEY}: input '{self.input}' is not in the outputs or the batch. Output "
                f"keys: {describe_keys(outputs)}; batch keys: {describe_keys(batch)}. Return the "
                "shared features from your model, e.g. {'features': h, ...}."
            ) from None
        if not (isinstance(value, Tensor) and value.is_floating_point() and value.requires_grad):
            state = "" if not isinstance(value, Tensor) else " that does not require grad"
            raise LossInputError(
                f"{AGGREGATION_KEY}: input '{self.input}' must be the shared representation the "
                f"heads consume, a floating tensor that requires grad; got {describe(value)}{state}."
            )
        return value

    # -- the backward ---------------------------------------------------------------------------
    def backward(
        self,
        loss: Tensor,
        terms: Mapping[str, Sequence[Tensor]],
        features: Tensor | None = None,
        *,
        ordinary: Callable[[], None] | None = None,
        loss_scale: Tensor | float = 1.0,
        accumulating: bool = False,
    ) -> None:
        """Backpropagate ``loss`` with the tasks' gradients aggregated.

        Args:
            loss: what would have been backpropagated (a function of the terms).
            terms: each task's contributions (``LossMix.task_terms``).
            features: the routed representation (``on: representation``).
            ordinary: runs the plain backward of ``loss`` (default ``loss.backward()``).
            loss_scale: the AMP loss scale inside ``loss`` (a device tensor: no host sync).
            accumulating: more micro-batches follow before the optimizer step.
        """
        tasks = [list(terms[name]) for name in self.tasks]
        coefficients = loss_coefficients(loss, tasks)
        run = ordinary if ordinary is not None else loss.backward
        if self.on == "shared":
            self._shared(loss, tasks, coefficients, run, loss_scale, accumulating)
            return
        if features is None:
            raise LossInputError(
                f"{AGGREGATION_KEY}: on: representation needs the routed '{self.input}' tensor of "
                "this step (the LossResult's aggregation_input)."
            )
        self._representation(loss, tasks, coefficients, features, run, loss_scale)

    def _shared(
        self,
        loss: Tensor,
        tasks: list[list[Tensor]],
        coefficients: list[list[Tensor]],
        run: Callable[[], None],
        scale: Tensor | float,
        accumulating: bool,
    ) -> None:
        params = self._params
        if not params:
            raise LossConfigError(
                f"{AGGREGATION_KEY}: not bound to a model; call mix.aggregation.bind(model) (the "
                "Lightning callback does it in setup)."
            )
        if self._jacobian is None:  # the window's first micro-batch: keep what is already there
            held = [p.grad for p in params]
            self._other = None if all(g is None for g in held) else flat_gradients(held, params).clone()
        rows = task_jacobian(tasks, coefficients, params) / scale
        detached = [[t.detach() for t in group] for group in tasks]
        losses = (
            torch.stack([weighted_sum(g, cs) for g, cs in zip(detached, coefficients, strict=True)]) / scale
        )
        self._jacobian = rows if self._jacobian is None else self._jacobian + rows
        self._losses = losses if self._losses is None else self._losses + losses
        rest = other_gradient(loss, tasks, coefficients, params)
        if rest is not None:
            flat = flat_gradients(rest, params)
            self._other = flat if self._other is None else self._other + flat
        run()
        if accumulating:
            return
        jacobian, losses, other = self._jacobian, self._losses, self._other
        self._jacobian = self._losses = self._other = None
        world = world_size()
        if world > 1:  # one collective: the tasks' gradients and losses and the rest, averaged as DDP does
            k, d = jacobian.shape
            other = torch.zeros_like(jacobian[0]) if other is None else other
            packed = all_reduce_sum(torch.cat([jacobian.flatten(), other, losses.to(jacobian.dtype)])) / world
            jacobian, other, losses = packed[: k * d].view(k, d), packed[k * d : -k], packed[-k:]
        update = self.aggregator(jacobian, losses if self.aggregator.needs_losses else None) * scale
        if other is not None:
            update = update + other
        offset = 0
        for param in params:  # the plain gradient the backward left here is replaced
            piece = update[offset : offset + param.numel()].view_as(param).to(param.dtype)
            offset += param.numel()
            if param.grad is None:
                param.grad = piece.clone()
            else:
                param.grad.copy_(piece)

    def _representation(
        self,
        loss: Tensor,
        tasks: list[list[Tensor]],
        coefficients: list[list[Tensor]],
        features: Tensor,
        run: Callable[[], None],
        scale: Tensor | float,
    ) -> None:
        rows = task_jacobian(tasks, coefficients, [features])  # in the features' dtype
        exact = rows.to(exact_dtype(rows.device))
        unscaled = exact / scale
        gramian = unscaled @ unscaled.T
        world = world_size()
        if world > 1:  # the concatenated batch's Gramian: one collective of K² numbers
            gramian = all_reduce_sum(gramian) / world**2
        weights = self.aggregator.weights(gramian)
        grad = (weights.to(exact.dtype) @ exact).view_as(features).to(features.dtype)
        rest = other_gradient(loss, tasks, coefficients, [features])
        if rest is not None:
            grad = grad + rest[0]
        handle = features.register_hook(lambda _: grad)  # type: ignore[no-untyped-call]
        try:
            run()
        finally:
            handle.remove()

    def extra_repr(self) -> str:
        where = f"module={self.module!r}" if self.on == "shared" else f"input={self.input!r}"
        return f"on={self.on!r}, {where}"
