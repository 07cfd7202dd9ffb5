"""The engine: named terms computed from a model's outputs and a batch, weighted and summed.

``LossMix`` is a plain ``nn.Module`` (no Lightning, no Hydra): its terms' losses,
samplers and buffers are submodules, so they move with ``.to()`` and land in the
checkpoint. One call runs in two phases so that every synced normaliser of the
step shares a single collective:

1. each active term routes its inputs, samples, and reads its normaliser;
2. synced normalisers are averaged over ranks together, then each term runs its
   kernel, weights and reduces; the total is the sum of the included terms.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.compiler import is_compiling

from lossmix.errors import LossConfigError, LossInputError
from lossmix.mix.build import (
    build_parts,
    check_aggregation,
    check_shared_log_names,
    check_weighting,
    window_scoped,
)
from lossmix.mix.result import LossResult, device_of, gate, zero_like
from lossmix.mix.term import Term, TermInputs, check_term_name
from lossmix.mtl.aggregation import AGGREGATION_KEY, GradientAggregation
from lossmix.mtl.weighting import WEIGHTING_KEY, BaseWeighting
from lossmix.reduction import EPS32
from lossmix.registry.nodes import env_secrets, errors_hidden, loss_key_label, resolve_env_values, to_plain
from lossmix.utilities.checks import check_choice, check_float
from lossmix.utilities.distributed import all_reduce_mean
from lossmix.utilities.modules import no_global_hooks

__all__ = ["AGGREGATION_KEY", "GUARD_POLICIES", "WEIGHTING_KEY", "LossMix", "LossResult"]

GUARD_POLICIES: tuple[str, ...] = ("raise", "skip", "zero")


class LossMix(nn.Module):
    """Named, weighted loss terms, optionally in groups (a GAN's ``gen`` and ``disc``).

    Args:
        terms: ``{name: Term}`` for a flat mix, or ``{group: {name: Term}}``; a mapping
            may mix flat terms and groups as long as no term is named like a group.

    Example:
        >>> import torch
        >>> mix = LossMix.from_config({
        ...     "reg": {"type": "L1Loss", "loss_weight": 2.0,
        ...             "inputs": {"pred": "box", "target": "box_target"}},
        ...     "aux": {"type": "MSELoss", "in_total": False,
        ...             "inputs": {"pred": "box", "target": "box_target"}},
        ... })
        >>> out = mix({"box": torch.zeros(4)}, {"box_target": torch.ones(4)})
        >>> out.total, out.terms["reg"], out.raw["reg"], out.terms["aux"]
        (tensor(2.), tensor(2.), tensor(1.), tensor(1.))
    """

    terms: nn.ModuleDict
    groups: nn.ModuleDict
    weighting: BaseWeighting | None
    aggregation: GradientAggregation | None
    drop_nonfinite: bool
    keep_inputs: bool

    def __init__(
        self,
        terms: Mapping[str, Term | Mapping[str, Term]],
        *,
        weighting: BaseWeighting | None = None,
        aggregation: GradientAggregation | None = None,
    ) -> None:
        super().__init__()
        self.groups = nn.ModuleDict()
        flat: dict[str, Term] = {}
        for name, value in terms.items():
            if name in _RESERVED:
                raise LossConfigError(
                    f"term '{name}': '{name}' is reserved for {_RESERVED[name]}; rename the term or group."
                )
            if isinstance(value, Term):
                flat[name] = value
            elif isinstance(value, Mapping) and value:
                check_term_name(name, what="group")
                self.groups[name] = nn.ModuleDict(
                    {check_term_name(n): self._check_term(n, t) for n, t in value.items()}
                )
            else:
                raise LossConfigError(
                    f"term '{name}': expected a Term or a group of terms, got {type(value).__name__}."
                )
        clash = sorted(
            ({*flat} | {t.log_name for t in flat.values() if isinstance(t, Term)}) & set(self.groups)
        )
        if clash:
            raise LossConfigError(
                f"term '{clash[0]}' has the same name as a group; its log key would collide with "
                "the group's total. Rename the term or the group."
            )
        self.terms = nn.ModuleDict({n: self._check_term(n, t) for n, t in flat.items()})
        for table in (self.terms, *self.groups.values()):
            check_shared_log_names([cast(Term, t) for t in cast(nn.ModuleDict, table).values()])
        if not self.terms and not self.groups:
            raise LossConfigError("LossMix needs at least one term, e.g. {cls: {type: FocalLoss}}.")
        flat_terms, group_names = (self.term_list() if self.terms else []), list(self.groups)
        check_weighting(weighting, flat_terms, group_names)
        check_aggregation(aggregation, flat_terms, group_names)
        self.weighting = weighting
        self.aggregation = aggregation
        for name in weighting.tasks if weighting is not None else ():
            self.track_weight(name)
        # What set_guard chooses: drop non-finite terms ('zero') / keep routed inputs ('raise',
        # and by default, so that LossResult.check_finite can name the input: references only).
        self.drop_nonfinite = False
        self.keep_inputs = True

    # -- what callbacks may change ----------------------------------------------------------
    def set_scale(self, name: str, value: float) -> None:
        """Multiply term ``name``'s (``group/name``'s) weight by ``value`` from now on (a
        schedule's multiplier; 1 restores the configured weight)."""
        term = self.find_term(name)
        term.scale = check_float(f"term '{name}'", "scale", value)

    def track_weight(self, name: str) -> None:
        """Log term ``name``'s effective weight as ``{stage}/weight/{name}`` (it changes)."""
        self.find_term(name).log_weight = True

    def set_guard(self, policy: str | None) -> None:
        """How non-finite terms are handled: ``'zero'`` drops them on the device (value and
        gradient), ``'raise'`` keeps each step's routed inputs for the error message,
        ``'skip'`` and ``None`` change nothing here."""
        if policy is not None:
            check_choice("LossMix.set_guard", "policy", policy, GUARD_POLICIES)
        self.drop_nonfinite = policy == "zero"
        self.keep_inputs = policy == "raise"

    @staticmethod
    def _check_term(name: str, term: Any) -> Term:
        if not isinstance(term, Term):
            raise LossConfigError(f"term '{name}': expected a Term, got {type(term).__name__}.")
        if term.name != name:
            raise LossConfigError(f"term '{name}' is registered under the name '{term.name}'.")
        return term

    @classmethod
    def from_config(
        cls, node: Mapping[str, Any], *, allowed_targets: tuple[str, ...] | list[str] = ()
    ) -> LossMix:
        """Build from ``{term: node}`` or ``{group: {term: node}}`` (dicts or DictConfig).

        A node with ``type`` or ``_target_`` is a term; a node whose children are all
        term nodes is a group. A top-level ``default_scope: mmagic`` applies to every term
        that does not set its own (bare ``type`` names are looked up in that scope first).
        A string that is exactly ``${oc.env:NAME}`` (or ``${oc.env:NAME,default}``), as a run
        stores a value it read from the environment, is read from the environment now
        (:func:`lossmix.registry.nodes.resolve_env_values`); nothing else is evaluated.
        """
        secrets = env_secrets(node)
        with errors_hidden(secrets):
            plain = to_plain(node)
            # a stored node (a checkpoint's hyper-parameters) keeps ${oc.env:NAME}: read it now
            plain, read = resolve_env_values(plain, label=functools.partial(loss_key_label, plain))
        with errors_hidden({**read, **secrets}):
            built, weighting, aggregation = build_parts(plain, tuple(allowed_targets))
        return cls(built, weighting=weighting, aggregation=aggregation)

    # -- introspection ------------------------------------------------------------------------
    def group_names(self) -> list[str]:
        """Names of the groups (empty for a flat mix)."""
        return list(self.groups)

    def terms_of(self, group: str | None = None) -> nn.ModuleDict:
        """The terms of ``group`` (``None``: the ungrouped terms)."""
        if group is None:
            if not self.terms and self.groups:
                raise LossConfigError(
                    f"this LossMix has groups {', '.join(self.groups)} and no ungrouped terms; "
                    "pass group=<name>."
                )
            return self.terms
        if group not in self.groups:
            raise LossConfigError(
                f"unknown loss group '{group}'; groups: {', '.join(self.groups) or '(none)'}."
            )
        return cast(nn.ModuleDict, self.groups[group])

    def term_list(self, group: str | None = None) -> list[Term]:
        """The terms of ``group`` (``None``: the ungrouped terms), in order."""
        return cast(list[Term], list(self.terms_of(group).values()))

    def all_terms(self) -> Iterator[tuple[str | None, Term]]:
        """Every ``(group, term)`` pair."""
        for term in self.terms.values():
            yield None, cast(Term, term)
        for group, terms in self.groups.items():
            for term in cast(nn.ModuleDict, terms).values():
                yield group, cast(Term, term)

    def find_term(self, name: str) -> Term:
        """A term by ``name`` or ``group/name``."""
        group, _, leaf = name.rpartition("/")
        terms = self.terms_of(group or None) if group or self.terms else None
        if terms is not None and leaf in terms:
            return cast(Term, terms[leaf])
        known = [f"{g}/{t.name}" if g else t.name for g, t in self.all_terms()]
        raise LossConfigError(f"unknown term '{name}'; terms: {', '.join(known)}.")

    # -- computing ------------------------------------------------------------------------------
    def forward(
        self, outputs: Mapping[str, Any], batch: Any = None, step: int | None = None, group: str | None = None
    ) -> LossResult:
        """Compute the terms of ``group`` and their total; see :meth:`mix`."""
        return self.mix(outputs, batch, step=step, group=group)

    def mix(
        self, outputs: Mapping[str, Any], batch: Any = None, step: int | None = None, group: str | None = None
    ) -> LossResult:
        """Compute every term of ``group`` from ``outputs`` and ``batch``.

        Args:
            outputs: mapping of the model's outputs (nested mappings allowed).
            batch: the batch (a mapping, a sequence, or ``None``).
            step: the training step, for lazy terms (``every: k`` runs when
                ``step % k == 0``, weighted × k). ``None`` runs every term with its
                plain weight (evaluation).
            group: which group to compute (``None``: the ungrouped terms).
        """
        if type(outputs) is not dict:  # (inline: under torch.compile each call costs guards)
            self._check_outputs(outputs, group)
        # (no typing.cast in this method: under torch.compile each call is traced and guarded)
        ungrouped: dict[str, Term] = self._modules["terms"]._modules  # type: ignore[union-attr,assignment]
        terms = list(ungrouped.values()) if group is None and ungrouped else self.term_list(group)
        # (every dict given: under torch.compile a field's default_factory costs guards)
        # (the total is set below; no placeholder tensor, which torch.compile would guard)
        result = LossResult(None, {}, {}, {}, stats={}, group=group, inputs={}, term_of={})  # type: ignore[arg-type]
        # Phase one. A term that only routes keys into its loss (Term.evaluate_plain) runs both
        # phases at once, unless its inputs are gated: the others' normalisers do not wait for
        # it. It is read from its plain plan, one tuple (one guard under torch.compile).
        direct, kept = not self.drop_nonfinite, result.inputs if self.keep_inputs else None
        compiling, no_hooks = _call_context()
        bare = direct and no_hooks  # (one check for every plain term's loss call)
        rows: list[tuple[Term, _Done | None]] = []
        later: list[Term] = []  # prepared now, evaluated in phase two
        prepared: dict[str, TermInputs] = {}
        for t in terms:
            done: _Done | None = None
            plan = t._plain if direct else None
            if plan is not None:
                name, log_name, every, weight, by_every, in_total, *_, scale, log_weight, _ = plan
                if step is None or step % every == 0:
                    parts = t.evaluate_plain(outputs, batch, kept, bare)
                    if parts is not None:  # Term.weight_at's product, in its order
                        lazy = every if step is not None and by_every else 1
                        done = (parts, weight * scale * lazy, (name, log_name, in_total, log_weight))
            if done is None and (step is None or step % t.every == 0):
                prepared[t.name] = t.prepare(outputs, batch)
                later.append(t)
            rows.append((t, done))
        # (the same on every rank: a term with a normaliser is never plain)
        reduced = self._synced_normalizers(later, prepared) if later else {}
        record = self._record  # (once: under torch.compile each lookup is guarded)
        owner: dict[str, Term] = {}
        shared: set[str] = set()
        excluded: set[str] = set()  # the keys of terms that are not in the total
        tracked: list[str] = []  # the keys of terms whose weight is logged
        for term, done in rows:
            if done is not None:
                parts, weight, ident = done
            else:
                ident = (term.name, term.log_name, term.in_total, term.log_weight)
                if term.name in prepared:
                    parts, weight = self._evaluate(term, prepared[term.name], reduced, step, result)
                else:
                    parts, weight = term.connected_zero(outputs, batch), 0.0
                    result.skipped += tuple(f"{ident[1]}.{p}" if p else ident[1] for p in parts)
            record(result, owner, shared, (excluded, tracked), term, ident, parts, weight)
        if self.weighting is not None and group is None:
            self._apply_weighting(result, training=step is not None)
        result.dynamic = tuple(k for k in tracked if k not in shared)
        included = [c for k, c in result.terms.items() if k not in excluded]
        result.total = self._sum(included, compiling) if included else zero_like(result.terms)
        if step is not None and later and any(window_scoped(t) for t in later):  # (plain: no normaliser)
            result.unnormalized_total = self._unnormalized(result, owner)
        aggregation = self.aggregation
        if aggregation is not None and step is not None and aggregation.over == "representation":
            result.aggregation_input = aggregation.route(outputs, batch)
        return result

    def _sum(self, values: list[Tensor], compiling: bool) -> Tensor:
        """``Σ values`` of scalar tensors: one ``stack`` and one ``sum`` in eager mode (two ops
        whatever K); in a compiled call a chain of adds, which Inductor fuses into the step's
        kernel, where a stack would write K aliased views of one buffer first. (A method, not a
        module-level or static function: under ``torch.compile`` either name would be a guard
        path checked at every call.)"""
        if compiling:
            total = values[0]
            for value in values[1:]:
                total = total + value
            return total
        return torch.stack(values).sum()

    def _unnormalized(self, result: LossResult, owner: Mapping[str, Term]) -> Tensor:
        """Σ contribution × (its divisor + eps): the terms' sums, before any normaliser."""
        parts = []
        for key, contribution in result.terms.items():
            term = owner.get(key)
            if term is None or not term.in_total:
                continue
            divisor = result.stats.get(f"{term.name}.avg_factor")
            parts.append(contribution if divisor is None else contribution * (divisor + EPS32))
        return self._sum(parts, is_compiling()) if parts else zero_like(result.terms)

    # -- the backward -----------------------------------------------------------------------------
    def task_terms(self, result: LossResult) -> dict[str, list[Tensor]]:
        """Each term added to the total → its weighted contributions in ``result`` (its parts)."""
        tasks = result.task_keys([t.name for t in self.term_list() if t.in_total])
        return {name: [result.terms[k] for k in keys] for name, keys in tasks.items()}

    def backward(
        self,
        result: LossResult,
        loss: Tensor | None = None,
        *,
        ordinary: Callable[[], None] | None = None,
        loss_scale: Tensor | float = 1.0,
        accumulating: bool = False,
    ) -> None:
        """Backpropagate ``loss`` (default ``result.total``): the plain backward, or with the
        ``aggregation`` node's update (see :meth:`GradientAggregation.backward`)."""
        loss = result.total if loss is None else loss
        aggregation = self.aggregation
        if aggregation is None:
            (ordinary or loss.backward)()
            return
        aggregation.backward(
            loss,
            self.task_terms(result),
            result.aggregation_input,
            ordinary=ordinary,
            loss_scale=loss_scale,
            accumulating=accumulating,
        )

    def _check_outputs(self, outputs: Any, group: str | None) -> None:
        if type(outputs) is not dict and not isinstance(outputs, Mapping):
            names = ", ".join(t.name for t in self.term_list(group))
            raise LossInputError(
                f"terms {names}: outputs must be a mapping of names to tensors (got "
                f"{type(outputs).__name__}); return a dict from your model, e.g. "
                "{'cls_logits': logits}."
            )

    @staticmethod
    def _synced_normalizers(active: list[Term], prepared: Mapping[str, TermInputs]) -> dict[str, Tensor]:
        """Every synced normaliser of the step, averaged over ranks in one collective."""
        synced = [t.name for t in active if t.normalizer is not None and t.normalizer.sync]
        if not synced:
            return {}
        values: list[Tensor] = []
        for name in synced:
            value = prepared[name].avg_factor
            assert value is not None  # a term with a normaliser always reads one
            values.append(value)
        return dict(zip(synced, all_reduce_mean(values), strict=True))

    def _record(
        self,
        result: LossResult,
        owner: dict[str, Term],
        shared: set[str],
        keys: tuple[set[str], list[str]],
        term: Term,
        ident: tuple[str, str, bool, bool],
        parts: Mapping[str, Tensor],
        weight: float,
    ) -> None:
        """Each part's raw value, weighted contribution and weight, under its log key (a
        second term with the same key adds its contribution to the first's). ``ident``: the
        term's name, log name, ``in_total`` and ``log_weight``; ``keys``: the keys left out of
        the total and the keys whose weight is logged, filled here."""
        name, log_name, in_total, log_weight = ident
        excluded, tracked = keys
        for part, raw in parts.items():
            key = f"{log_name}.{part}" if part else log_name
            # a weight of exactly 1 multiplies by nothing (one kernel less, forward and backward)
            contribution = raw if weight.__class__ is float and weight == 1.0 else raw * weight
            if self.drop_nonfinite:
                contribution = torch.where(
                    torch.isfinite(contribution), contribution, torch.zeros_like(contribution)
                )
            if key in owner:
                shared.add(key)
                result.terms[key] = result.terms[key] + contribution
                result.raw[key], result.weights[key] = result.terms[key], 1.0
                continue
            result.raw[key], result.terms[key], result.weights[key] = raw, contribution, weight
            owner[key] = term
            result.term_of[key] = name
            if not in_total:
                excluded.add(key)
            if log_weight:
                tracked.append(key)

    def _evaluate(
        self, term: Term, p: TermInputs, reduced: dict[str, Tensor], step: int | None, result: LossResult
    ) -> tuple[dict[str, Tensor], float]:
        """Phase two of one computed term: its parts and its scalar weight this step."""
        avg = reduced.get(term.name, p.avg_factor)
        invalid = term.invalid_inputs(p.kwargs, avg)
        if avg is not None and term.normalizer is not None:
            p.stats["count"] = avg  # synced, not yet clamped: what a window sums
            avg = term.normalizer.finish(avg, step)  # floored; smoothed in training
            p.stats["avg_factor"] = avg
        if self.keep_inputs:
            result.inputs[term.name] = p.kwargs
        keep: Tensor | None = None
        if self.drop_nonfinite:
            # The gate zeroes the gradient reaching the inputs when the term is dropped, so a
            # NaN inside the term's own backward (0 × NaN) cannot leak into the model.
            keep = torch.ones((), dtype=torch.bool, device=device_of(p.kwargs))
            p.kwargs = {k: gate(v, keep) for k, v in p.kwargs.items()}
        parts = term.evaluate(p, avg)
        if invalid is not None:  # refused values (a negative element weight, a zero normaliser)
            parts = {k: torch.where(invalid, torch.full_like(v, float("nan")), v) for k, v in parts.items()}
        weight = term.weight_at(step)
        if keep is not None:
            # a NaN or Inf weight (a schedule's) drops the term as a non-finite value does
            finite = torch.stack([torch.isfinite(v * weight).all() for v in parts.values()]).all()
            keep.copy_(finite)
        for key, value in p.stats.items():
            result.stats[f"{term.name}.{key}"] = value
        return parts, weight

    def _apply_weighting(self, result: LossResult, *, training: bool) -> None:
        """Multiply each task's contributions by its dynamic factor; add the regulariser."""
        weighting = self.weighting
        if weighting is None:
            return
        keys = result.task_keys(weighting.tasks)
        losses = torch.stack([torch.stack([result.terms[k] for k in keys[n]]).sum() for n in weighting.tasks])
        result.task_losses = losses.detach()
        factors, regulariser = weighting(losses, training=training)
        for i, name in enumerate(weighting.tasks):
            for key in keys[name]:
                weighted = result.terms[key] * factors[i]
                if self.drop_nonfinite:  # a learned factor gone non-finite drops the term too
                    weighted = torch.where(torch.isfinite(weighted), weighted, torch.zeros_like(weighted))
                result.terms[key] = weighted
                result.weights[key] = result.weights[key] * factors[i].detach()
        if regulariser is not None:
            result.raw[WEIGHTING_KEY] = result.terms[WEIGHTING_KEY] = regulariser
            result.weights[WEIGHTING_KEY] = 1.0


@torch.compiler.assume_constant_result  # type: ignore[untyped-decorator]
def _call_context() -> tuple[bool, bool]:
    """(whether ``torch.compile`` is tracing this call, whether no global module hook is
    registered), read once per call. Under ``torch.compile`` a constant of the trace, with no
    guard: a global hook registered after compiling is not seen inside the compiled graph,
    as for any module there."""
    return is_compiling(), no_global_hooks()


#: a term computed in phase one: its parts, its weight this step, (name, log name, in_total,
#: log_weight)
_Done = tuple[dict[str, Tensor], float, tuple[str, str, bool, bool]]
_RESERVED = {
    WEIGHTING_KEY: f"dynamic task weighting (e.g. {WEIGHTING_KEY}: {{type: uncertainty}})",
    AGGREGATION_KEY: (
        f"gradient aggregation (e.g. {AGGREGATION_KEY}: {{type: upgrad, over: shared, module: trunk}})"
    ),
}
