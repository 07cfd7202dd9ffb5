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
``over: shared``          the gradients of ``module``'s          Gramian methods, one process, no
                          parameters (K×D); every other          accumulation: one batched backward
                          parameter gets its ordinary gradient   to the shared module's activations
                                                                 and the Gramian contractions, K×
                                                                 activations memory (the Gramian
                                                                 engine); otherwise K backward
                                                                 passes through the shared part,
                                                                 K×D memory; DDP: one all-reduce of
                                                                 (K+1)·D + K numbers per step
``over: representation``  the gradients w.r.t. the routed        K backward passes through the
                          ``input`` tensor (MGDA-UB): the        heads only; DDP: one all-reduce
                          encoder below gets one aggregated      of K² numbers per micro-batch
                          gradient in the one backward
========================= ====================================== ================================

**The Gramian engine** (:mod:`lossmix.mtl.gramian_engine`, ``engine: auto`` or ``gramian``):
for a method with a Gramian form, ``over: shared`` computes ``G = J Jᵀ`` module by module
without forming ``J``, the weights from it, and lets the one ordinary backward carry
``Σ_k w_k ∇L_k`` into the shared module. It gives the Jacobian path's update (to rounding);
the Jacobian path is taken instead under gradient accumulation (the window's Gramian needs
the micro-batches' cross terms), under DDP (the Gramian of the ranks' mean Jacobian needs
the cross-rank terms ``J_r J_sᵀ``, which no K×K reduction carries), and, with a warning,
when the graph does not let the engine account for every shared parameter.
``engine: jacobian`` always takes the Jacobian path.

**What the shared parameters get.** Exactly ``update`` (times the AMP scale), written over
the plain gradient the ordinary backward left there (it still runs, for the heads and for
DDP's own reduction), plus whatever else in the loss reaches them (a regulariser added in
``training_step``; found by a walk over the autograd graph and differentiated only then),
plus what was there before the window's first micro-batch. So low-precision rounding of
the plain gradient never leaks into the update.

**Exactness.** The Gramian, the aggregator's solve and the combination ``wᵀJ`` run in
float64 whatever the model's dtype (K×K is tiny); the task gradients themselves are in the
model's dtype (``over: representation``: the features' dtype) and the update is cast back
to each parameter's dtype. Under DDP every rank takes the same step, equal to one process on the
concatenated batch: ``over: shared`` all-reduces the per-task gradients (the mean over
ranks, as DDP averages) before aggregating; ``over: representation`` sums the ranks'
Gramians (the Gramian of the concatenated batch is ``Σ_r G_r / W²``), so every rank
computes the same weights. With gradient accumulation, ``over: shared`` accumulates the
per-task gradients and aggregates once per optimizer step (the large-batch update);
``over: representation`` aggregates each micro-batch (its weights are needed before that
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
    ...     "aggregation": {"type": "upgrad", "over": "shared", "module": "trunk"},
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

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lossmix.errors import LossConfigError, LossInputError
from lossmix.mix.routing import describe_keys, lookup
from lossmix.mtl.aggregators import AGGREGATION_KEY, BaseAggregator, build_aggregator, representation_methods
from lossmix.mtl.functional import exact_dtype
from lossmix.mtl.gramian_engine import GramianEngine
from lossmix.mtl.task_gradients import (
    flat_gradients,
    loss_coefficients,
    other_gradient,
    task_jacobian,
    weighted_sum,
)
from lossmix.registry.foreign_nodes import check_bool_keys
from lossmix.registry.nodes import is_term_node
from lossmix.utilities.checks import check_choice, describe
from lossmix.utilities.distributed import all_reduce_sum, world_size
from lossmix.utilities.modules import trainable_parameters

__all__ = ["AGGREGATION_KEY", "ENGINES", "MODES", "GradientAggregation"]

MODES: tuple[str, ...] = ("shared", "representation")
ENGINES: tuple[str, ...] = ("auto", "gramian", "jacobian")


class GradientAggregation(nn.Module):
    """Which gradients are aggregated, how, and the backward that does it.

    Args:
        aggregator: the method (:class:`~lossmix.mtl.aggregators.BaseAggregator`).
        over: ``shared`` (the parameters of ``module``) or ``representation`` (the tensor
            ``input``). The key is ``over``, not ``on``: YAML 1.1 reads a bare ``on`` as ``True``.
        module: the shared submodule's name in the model (``model.get_submodule``), a list of
            names (their parameters together), or ``""`` for every trainable parameter of
            the model (TorchJD's ``mtl_backward`` over any set; the loss mix's own
            parameters, learned task weights, are left out).
        input: the key of the shared representation in the outputs or the batch.
        engine: ``over: shared``'s route: ``auto`` (the Gramian engine for a method with a
            Gramian form), ``gramian`` (the same, and an error for a method without one) or
            ``jacobian`` (always the K×D task Jacobian).
    """

    def __init__(
        self,
        aggregator: BaseAggregator,
        *,
        over: str = "shared",
        module: str | Sequence[str] | None = None,
        input: str | None = None,
        engine: str = "auto",
    ) -> None:
        super().__init__()
        self.aggregator = aggregator
        self.over = check_choice(AGGREGATION_KEY, "over", over, MODES)
        self.engine = check_choice(AGGREGATION_KEY, "engine", engine, ENGINES)
        self.module = module if module is None or isinstance(module, str) else list(module)
        self.input = input
        self._check_mode()
        self._gramian_engine: GramianEngine | None = None
        self._warned: set[str] = set()
        #: the route the last ``over: shared`` backward took: ``gramian`` or ``jacobian``
        self.last_route: str | None = None
        self._params: list[nn.Parameter] = []
        self._jacobian: Tensor | None = None
        self._losses: Tensor | None = None
        self._other: Tensor | None = None

    def _check_mode(self) -> None:
        method = self.aggregator.method
        if self.over == "shared":
            names = self.module if isinstance(self.module, list) else [self.module]
            if not names or not all(isinstance(n, str) for n in names) or self.input is not None:
                raise LossConfigError(
                    f"{AGGREGATION_KEY}: over: shared needs 'module', the shared submodule of your model "
                    f"(e.g. {{type: {method}, over: shared, module: trunk}}; a list of submodules, or "
                    "'' for every trainable parameter), and no 'input'."
                )
            if self.engine == "gramian" and not self.aggregator.has_gramian_form():
                raise LossConfigError(
                    f"{AGGREGATION_KEY}: {method} has no Gramian form, so engine: gramian cannot "
                    f"compute it; use engine: jacobian (or auto), or one of "
                    f"{', '.join(representation_methods())}."
                )
        else:
            if not isinstance(self.input, str) or not self.input or self.module is not None:
                raise LossConfigError(
                    f"{AGGREGATION_KEY}: over: representation needs 'input', the key of the shared "
                    f"features the heads consume (e.g. {{type: {method}, over: representation, input: "
                    "features}), and no 'module'."
                )
            if self.engine != "auto":
                raise LossConfigError(
                    f"{AGGREGATION_KEY}: 'engine' chooses how over: shared computes the task "
                    f"gradients; over: representation has one route. Remove engine: {self.engine}."
                )
            if not self.aggregator.runs_on_gramian():
                options = "" if not self.aggregator.has_gramian_form() else " with these options"
                raise LossConfigError(
                    f"{AGGREGATION_KEY}: {method}{options} does not run over: representation (it needs the "
                    f"parameters' own gradients or the losses); use over: shared, or one of "
                    f"{', '.join(representation_methods())}."
                )

    @classmethod
    def from_config(
        cls, node: Any, tasks: Sequence[str], *, allowed_targets: Sequence[str] = ()
    ) -> GradientAggregation:
        """Build from ``{type: upgrad, over: shared, module: trunk, **method args}``."""
        if isinstance(node, GradientAggregation):
            return node
        check_bool_keys(node, AGGREGATION_KEY)
        if isinstance(node, Mapping) and "on" in node:
            raise LossConfigError(
                f"{AGGREGATION_KEY}: the key 'on' is named 'over' (YAML 1.1 reads a bare on as True); "
                f"write over: {node['on']}."
            )
        if not is_term_node(node):
            raise LossConfigError(
                f"{AGGREGATION_KEY}: expected e.g. {{type: upgrad, over: shared, module: trunk}}; got "
                f"{node!r}. '{AGGREGATION_KEY}' is reserved for gradient aggregation and cannot "
                "name a term."
            )
        node = dict(node)
        if "tasks" in node:
            raise LossConfigError(
                f"{AGGREGATION_KEY}: 'tasks' is not a key of the aggregation node; the tasks are "
                "the terms added to the total."
            )
        over, module, key = node.pop("over", "shared"), node.pop("module", None), node.pop("input", None)
        engine = node.pop("engine", "auto")
        return cls(
            build_aggregator(node, tasks, allowed_targets=allowed_targets),
            over=over,
            module=module,
            input=key,
            engine=engine,
        )

    @property
    def tasks(self) -> list[str]:
        """The aggregated terms, in the Jacobian's row order."""
        return self.aggregator.tasks

    # -- finding what the step needs ----------------------------------------------------------
    def bind(self, model: nn.Module) -> None:
        """Find ``module``'s trainable parameters in ``model`` (``over: shared``), tell the
        aggregator their layout (each one's size and owning module), and hook the Gramian engine
        on a single shared module (``engine: auto`` or ``gramian`` with a Gramian-form method)."""
        if self.over != "shared":
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
        if self._gramian_engine is not None:
            self._gramian_engine.remove()
            self._gramian_engine = None
        single = isinstance(self.module, str) and self.module != ""
        if single and self.engine != "jacobian" and self.aggregator.has_gramian_form():
            assert isinstance(self.module, str)
            self._gramian_engine = GramianEngine(model.get_submodule(self.module), self._params)

    def route(self, outputs: Any, batch: Any) -> Tensor:
        """The representation tensor named by ``input`` (``over: representation``)."""
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
            features: the routed representation (``over: representation``).
            ordinary: runs the plain backward of ``loss`` (default ``loss.backward()``).
            loss_scale: the AMP loss scale inside ``loss`` (a device tensor: no host sync).
            accumulating: more micro-batches follow before the optimizer step.
        """
        tasks = [list(terms[name]) for name in self.tasks]
        coefficients = loss_coefficients(loss, tasks)
        run = ordinary if ordinary is not None else loss.backward
        if self.over == "shared":
            self._shared(loss, tasks, coefficients, run, loss_scale, accumulating)
            return
        if features is None:
            raise LossInputError(
                f"{AGGREGATION_KEY}: over: representation needs the routed '{self.input}' tensor of "
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
        engine = self._gramian_engine
        if engine is not None:
            try:
                if self._jacobian is None and not accumulating and world_size() == 1:
                    why = engine.unaccounted([t for group in tasks for t in group])
                    if why is None:
                        self._gramian(engine, tasks, coefficients, run, scale)
                        return
                    self._warn(why)
            finally:
                engine.clear()
        self.last_route = "jacobian"
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

    def _gramian(
        self,
        engine: GramianEngine,
        tasks: list[list[Tensor]],
        coefficients: list[list[Tensor]],
        run: Callable[[], None],
        scale: Tensor | float,
    ) -> None:
        """The Gramian engine's step: ``w = weights(G)``, and the one ordinary backward with
        ``Σ_k (w_k − 1) g_k`` added to the gradient entering the shared module at each root
        (the tasks' part ``Σ_k g_k`` of that gradient becomes ``Σ_k w_k g_k``; the rest stays)."""
        engine.recording = False  # modules re-run inside a backward (checkpointing) are not calls
        try:
            grads = engine.task_gradients(tasks, coefficients)
            gramian = engine.gramian(grads, len(tasks))
            weights = self.aggregator.weights(gramian / torch.as_tensor(scale, dtype=torch.float64) ** 2)
            extra: dict[Any, dict[int, Tensor]] = {}
            for edge in engine.roots:
                if edge in grads:
                    g = grads[edge]
                    shift = (weights.to(g.device, g.dtype) - 1.0) @ g.flatten(1)
                    extra.setdefault(edge.node, {})[edge.output_nr] = shift.view(g.shape[1:])
            handles = [node.register_prehook(_adding(shifts)) for node, shifts in extra.items()]
            try:
                run()
            finally:
                for handle in handles:
                    handle.remove()
        finally:
            engine.recording = True
        self.last_route = "gramian"

    def _warn(self, why: str) -> None:
        if why not in self._warned:
            self._warned.add(why)
            warnings.warn(
                f"{AGGREGATION_KEY}: the Gramian engine cannot account for module "
                f"'{self.module}' ({why}); this step and such steps take the Jacobian path "
                "(exact, K backward passes). Set engine: jacobian to silence this.",
                stacklevel=4,
            )

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
        where = f"module={self.module!r}" if self.over == "shared" else f"input={self.input!r}"
        engine = f", engine={self.engine!r}" if self.engine != "auto" else ""
        return f"over={self.over!r}, {where}{engine}"


def _adding(shifts: dict[int, Tensor]) -> Callable[[tuple[Tensor | None, ...]], tuple[Tensor | None, ...]]:
    """A node pre-hook adding ``shifts[i]`` to the gradient of the node's output ``i``."""

    def hook(grad_outputs: tuple[Tensor | None, ...]) -> tuple[Tensor | None, ...]:
        return tuple(
            g if g is None or i not in shifts else g + shifts[i].to(g.dtype)
            for i, g in enumerate(grad_outputs)
        )

    return hook
