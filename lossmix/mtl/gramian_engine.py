"""The Gramian engine of ``over: shared``: ``G = J Jᵀ`` (K×K) of the shared parameters' task
Jacobian, summed module by module, without materialising the K×D Jacobian.

Forward hooks on the shared module record, for every submodule that owns trainable
parameters, each call's output (as an autograd edge, so a later in-place op does not move
it) and, for ``nn.Linear``, its input; and the shared module's own outputs (the *roots*,
where the tasks' gradients enter it). At the backward:

1. one batched backward (``vmap`` over the K tasks) gives every task's gradient at every
   recorded output: ``g_k`` of shape ``(K, *output.shape)``; no parameter gradient is formed;
2. each module adds its block's Gramian ``J_m J_mᵀ``: for ``nn.Linear`` from its inputs
   ``a`` (R×in) and output gradients ``g`` (K×R×out), without the weight gradients:
   ``G_ij = ⟨g_i, (a aᵀ) g_j⟩ + (Σ_r g_i,r)·(Σ_r g_j,r)`` (or ``J_m`` formed and squared
   when that costs less); for any other module, ``J_m`` (K×D_m) by one batched
   vector-Jacobian product of its own parameters, then squared and dropped;
3. the aggregator's weights ``w = weights(G)``; the one ordinary backward then runs with the
   gradient entering each root replaced by ``Σ_k w_k g_k`` plus whatever else reaches it, so
   the shared parameters get ``Σ_k w_k ∇L_k = weights(G) @ J`` (the Jacobian path's update)
   and everything else its ordinary gradient.

Before using the result, host-side walks of the autograd graph (no device sync) check that
every path from a task term to a shared parameter enters through a root and reaches the
parameter only inside its own module's recorded call; a graph that does not (weights tied
to a head, a parameter used outside its module, a compiled trunk whose hooks did not run)
is reported, and the caller takes the Jacobian path.

Memory: K × the recorded outputs (the activations, not the parameters) and the largest
non-linear module's K×D_m block. Time: the K tasks' backward through the shared module
without parameter gradients, plus the Gramian contractions.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge, get_gradient_edge
from torch.utils.hooks import RemovableHandle

__all__ = ["MAX_RECORDED", "GramianEngine", "linear_gramian"]

#: Outputs of the shared module kept between two backwards (forwards with grad enabled that no
#: ``mix.backward`` consumes are dropped beyond this; that step then takes the Jacobian path).
MAX_RECORDED = 64


def linear_gramian(inputs: Tensor, grads: Tensor, *, weight: bool = True, bias: bool = True) -> Tensor:
    """The Gramian ``(K, K)`` of the task gradients of an ``nn.Linear``'s weight and bias.

    With ``a`` the inputs' rows ``(R, in)`` and ``g`` the tasks' output gradients
    ``(K, R, out)``, task ``i``'s weight gradient is ``g_iᵀ a`` and its bias gradient
    ``Σ_r g_i,r``, so
    ``G_ij = ⟨g_i, (a aᵀ) g_j⟩ + (Σ_r g_i,r)·(Σ_r g_j,r)``, at ``R²(in + K·out)`` multiply-adds;
    when ``K·R·in·out`` is less, the K weight gradients are formed and multiplied instead.

    Args:
        inputs: ``(..., in)``, the layer's inputs (leading dimensions are rows).
        grads: ``(K, ..., out)``, each task's gradient at the layer's output.
        weight: include the weight's block.
        bias: include the bias's block.

    >>> a, g = torch.randn(5, 3), torch.randn(2, 5, 4)
    >>> rows = torch.stack([torch.cat([(gi.T @ a).flatten(), gi.sum(0)]) for gi in g])
    >>> torch.allclose(linear_gramian(a, g), rows @ rows.T, atol=1e-5)
    True
    """
    k = grads.shape[0]
    a = inputs.reshape(-1, inputs.shape[-1])
    g = grads.reshape(k, a.shape[0], grads.shape[-1])
    gramian = g.new_zeros(k, k)
    if weight:
        rows, width_in, width_out = a.shape[0], a.shape[1], g.shape[2]
        if rows * (width_in + k * width_out) <= k * width_in * width_out:
            mixed = torch.matmul(a @ a.T, g)  # (K, R, out): (a aᵀ) g_j
            gramian = gramian + g.flatten(1) @ mixed.flatten(1).T
        else:
            blocks = torch.matmul(g.transpose(1, 2), a).flatten(1)  # (K, out·in): the weight gradients
            gramian = gramian + blocks @ blocks.T
    if bias:
        sums = g.sum(1)
        gramian = gramian + sums @ sums.T
    return gramian


def _tensors(value: Any) -> Iterator[Tensor]:
    """The tensors in a module's output (nested tuples, lists and dicts)."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


@dataclass
class _Call:
    """One recorded forward call of a module that owns shared parameters."""

    module: nn.Module
    outputs: list[GradientEdge]
    inputs: Tensor | None = None  # nn.Linear's input, for the activation form
    version: int = 0


@dataclass
class _Record:
    calls: list[_Call] = field(default_factory=list)
    roots: list[GradientEdge] = field(default_factory=list)
    overflowed: bool = False


class _Hook:
    """A forward hook that reaches its engine through a weak reference, so a model outliving its
    loss mix does not keep an engine recording (pickled and copied with the engine itself)."""

    def __init__(self, engine: GramianEngine | None, kind: str) -> None:
        self.engine = None if engine is None else weakref.ref(engine)
        self.kind = kind

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        engine = None if self.engine is None else self.engine()
        if engine is not None:
            (engine._on_call if self.kind == "call" else engine._on_root)(module, args, output)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Hook, (None if self.engine is None else self.engine(), self.kind))


class GramianEngine:
    """Records the shared module's forward calls and turns one step's task terms into the
    Gramian of the shared parameters' task Jacobian (see the module docstring).

    Args:
        shared: the shared module (``module:`` of the aggregation node).
        params: its trainable parameters (the ones aggregated).
    """

    def __init__(self, shared: nn.Module, params: Sequence[nn.Parameter]) -> None:
        self._params = list(params)  # objects, not ids: a pickled or copied engine has new ones
        self._own: dict[nn.Module, list[nn.Parameter]] = {}
        self._handles: list[RemovableHandle] = []
        self._record = _Record()
        self.recording = True
        for module in shared.modules():
            own = [p for p in module.parameters(recurse=False) if any(p is q for q in self._params)]
            if own:
                self._own[module] = own
                self._handles.append(module.register_forward_hook(_Hook(self, "call")))
        self._handles.append(shared.register_forward_hook(_Hook(self, "root")))

    # -- recording ---------------------------------------------------------------------------
    def _on_call(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not (self.recording and torch.is_grad_enabled()):
            return
        edges = [get_gradient_edge(t) for t in _tensors(output) if t.requires_grad]
        if not edges:
            return
        call = _Call(module, edges)
        if type(module) is nn.Linear and args and isinstance(args[0], Tensor):
            call.inputs, call.version = args[0], args[0]._version
        self._record.calls.append(call)

    def _on_root(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not (self.recording and torch.is_grad_enabled()):
            return
        if len(self._record.roots) >= MAX_RECORDED:  # forwards that no backward consumed: drop them
            self._record = _Record(overflowed=True)
        self._record.roots.extend(get_gradient_edge(t) for t in _tensors(output) if t.requires_grad)

    def clear(self) -> None:
        """Drop what the last forward recorded (after each backward)."""
        self._record = _Record()

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.clear()

    @property
    def roots(self) -> list[GradientEdge]:
        """Where the tasks' gradients enter the shared module (its recorded outputs)."""
        return list(self._record.roots)

    # -- checking ----------------------------------------------------------------------------
    def unaccounted(self, terms: Sequence[Tensor]) -> str | None:
        """Why the recorded calls do not account for every path from the task ``terms`` to a
        shared parameter (``None`` when they do): walks over the autograd graph on the host.
        (What else in the loss reaches the parameters keeps its ordinary gradient.)"""
        record = self._record
        if record.overflowed:
            return f"more than {MAX_RECORDED} outputs of the shared module recorded since the last backward"
        if not record.roots:
            return "the shared module's forward was not recorded (compiled, or run without grad)"
        for call in record.calls:
            if call.inputs is not None and call.inputs._version != call.version:
                return f"the input of {type(call.module).__name__} was modified in place"
        ids = {id(p) for p in self._params}
        owners: dict[Any, set[int]] = {}
        for call in record.calls:
            for edge in call.outputs:
                owners.setdefault(edge.node, set()).update(id(p) for p in self._own[call.module])
        roots = {edge.node for edge in record.roots}
        if any(self._reached(t.grad_fn, roots, ids) for t in terms):
            return "a shared parameter is reached other than through the shared module's outputs"
        for start in roots | set(owners):
            if not self._reached(start, set(owners) - {start}, ids) <= owners.get(start, set()):
                return "a shared parameter is used outside the forward of the module that owns it"
        return None

    @staticmethod
    def _reached(start: Any, stops: set[Any], ids: set[int]) -> set[int]:
        """The ids (in ``ids``) of the parameters reached from the node ``start`` without
        passing ``stops``."""
        found: set[int] = set()
        seen: set[Any] = set()
        stack = [start]
        while stack:
            node = stack.pop()
            if node is None or node in seen or node in stops:
                continue
            seen.add(node)
            variable = getattr(node, "variable", None)
            if variable is not None and id(variable) in ids:
                found.add(id(variable))
            stack.extend(fn for fn, _ in node.next_functions)
        return found

    # -- computing ---------------------------------------------------------------------------
    def task_gradients(
        self, tasks: Sequence[Sequence[Tensor]], coefficients: Sequence[Sequence[Tensor]]
    ) -> dict[GradientEdge, Tensor]:
        """Every task's gradient ``(K, *shape)`` at each recorded output and root, from one
        batched backward of ``Σ c·t`` per task (the graph is kept for the step's backward)."""
        k = len(tasks)
        outputs: list[Tensor] = []
        seeds: list[Tensor] = []
        for i, (terms, weights) in enumerate(zip(tasks, coefficients, strict=True)):
            for term, weight in zip(terms, weights, strict=True):
                if term.requires_grad:
                    seed = weight.to(term.dtype).expand_as(term)
                    batched = torch.zeros((k, *term.shape), dtype=term.dtype, device=term.device)
                    batched[i] = seed
                    outputs.append(term)
                    seeds.append(batched)
        edges = list(
            dict.fromkeys([*self._record.roots, *(e for c in self._record.calls for e in c.outputs)])
        )
        if not outputs:
            return {}
        grads = torch.autograd.grad(
            outputs, edges, grad_outputs=seeds, retain_graph=True, allow_unused=True, is_grads_batched=True
        )
        return {edge: grad for edge, grad in zip(edges, grads, strict=True) if grad is not None}

    def gramian(self, grads: dict[GradientEdge, Tensor], k: int) -> Tensor:
        """``Σ_modules J_m J_mᵀ`` in float64 (``K×K``) from the recorded calls and ``grads``."""
        total = torch.zeros(k, k, dtype=torch.float64)
        by_module: dict[int, list[_Call]] = {}
        for call in self._record.calls:
            by_module.setdefault(id(call.module), []).append(call)
        for calls in by_module.values():
            with torch.no_grad():
                part = self._module_gramian(calls, grads)
            if part is not None:
                total = total.to(part.device) + part.double()
        return total

    def _module_gramian(self, calls: list[_Call], grads: dict[GradientEdge, Tensor]) -> Tensor | None:
        module = calls[0].module
        own = self._own[module]
        live = [(call, grads[call.outputs[0]]) for call in calls if call.outputs[0] in grads]
        if not live:
            return None
        if type(module) is nn.Linear and all(call.inputs is not None for call, _ in live):
            dtype = torch.promote_types(live[0][1].dtype, torch.float32)
            rows = torch.cat([c.inputs.reshape(-1, c.inputs.shape[-1]) for c, _ in live])  # type: ignore[union-attr]
            outs = torch.cat([g.reshape(g.shape[0], -1, g.shape[-1]) for _, g in live], dim=1)
            ids = {id(p) for p in own}
            return linear_gramian(
                rows.to(dtype),
                outs.to(dtype),
                weight=id(module.weight) in ids,
                bias=module.bias is not None and id(module.bias) in ids,
            )
        pairs = [(edge, grads[edge]) for call in calls for edge in call.outputs if edge in grads]
        blocks = torch.autograd.grad(
            [edge for edge, _ in pairs],
            own,
            grad_outputs=[g for _, g in pairs],
            retain_graph=True,
            allow_unused=True,
            is_grads_batched=True,
        )
        k = pairs[0][1].shape[0]
        flat = [b.reshape(k, -1) for b in blocks if b is not None]
        if not flat:
            return None
        block = torch.cat(flat, dim=1)
        block = block.to(torch.promote_types(block.dtype, torch.float32))
        return block @ block.T
