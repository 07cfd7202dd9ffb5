"""One named term: route → sample → kernel → weight → reduce → scale (MMDetection's five steps).

A term is built from its config node (``loss.<name>`` in the Hydra configs): the
term-level keys in :data:`TERM_KEYS` are taken off, ``loss_weight`` becomes the
term's scalar weight (step 5, owned by the term so schedules and weightings can
change it), and everything else goes to the loss's constructor.

MMagic's spellings are accepted beside lossmix's: ``data_info`` is ``inputs`` (loss
argument → key), ``loss_name`` the term's log key (terms sharing one are logged, and
added, as one value), and ``default_scope: mmagic`` makes a bare ``type`` MMagic's loss
of that name.
"""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lossmix.errors import LossConfigError, LossInputError, did_you_mean
from lossmix.losses.base import (
    CALL_KEYS,
    BaseLoss,
    call_parameters,
    check_tensor_input,
    positional_inputs,
    tensor_parameters,
)
from lossmix.mix.keys import (
    SAMPLER_TARGET_KEYS,
    TERM_KEYS,
    check_normalized_reduction,
    check_sampler_node,
    check_term_node,
    routing_of,
)
from lossmix.mix.normalizers import Normalizer, NormalizerInputs, build_normalizer
from lossmix.mix.routing import lookup, own_key
from lossmix.registry.nodes import to_plain
from lossmix.registry.registry import LOSSES, REQUIRED, SAMPLERS
from lossmix.samplers.labels import positives_and_negatives, relabel_ignored
from lossmix.utilities.checks import check_bool, check_float, check_int, check_optional_int, describe_value

__all__ = ["Term", "TermInputs"]

_NOT_ROUTABLE = ("avg_factor", "reduction_override", "self")
#: the largest ``every``: a longer lazy interval is a typo (``10**12`` scales the weight by 1e12)
MAX_EVERY = 1_000_000
_FLOAT32_MAX = torch.finfo(torch.float32).max
_ABSENT: Any = object()
_STRIDED = torch.strided
#: :meth:`Term._plain_plan`: name, log name, every, weight, scale_by_every, in_total, the
#: sources and the loss's inputs they feed (positional order), the loss's by-name arguments,
#: whether the loss returns one value (its parts are ``("",)``), scale, log_weight, whether
#: the loss's forward is the template's
PlainPlan = tuple[
    str,
    str,
    int,
    float,
    bool,
    bool,
    tuple[str, ...],
    tuple[str, ...],
    tuple[str, ...],
    bool,
    float,
    bool,
    bool,
]
#: the attributes the plain plan reads: setting one builds it again
_PLAIN_FIELDS = frozenset(
    {
        "name",
        "log_name",
        "every",
        "weight",
        "scale_by_every",
        "in_total",
        "inputs",
        "sampler",
        "normalizer",
        "loss",
        "_positional",
        "_by_name",
        "_parts",
        "scale",
        "log_weight",
    }
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def check_term_name(name: Any, *, what: str = "term") -> str:
    """Term and group names are identifiers (``.`` marks sub-terms and ``/`` log groups)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise LossConfigError(
            f"{what} name {name!r} is not valid; use letters, digits, '_' or '-' (no '.' or '/')."
        )
    return name


def _check_log_name(term: str, loss_name: Any) -> str:
    if not isinstance(loss_name, str) or not _NAME.match(loss_name):
        raise LossConfigError(
            f"term '{term}': loss_name={loss_name!r} is not valid; use letters, digits, '_' or '-' "
            "(like loss_l1)."
        )
    return loss_name


def _routed_input(
    outputs: Any, batch: Any, src: str, term: str, arg: str, tensor_inputs: Mapping[str, bool]
) -> Any:
    """The value key ``src`` names for loss argument ``arg`` of ``term``, checked to be a tensor
    where the loss takes one (``tensor_inputs``: argument → whether ``None`` is allowed); a
    dense tensor passes with one comparison. A host-side type check: no sync."""
    value = lookup(outputs, batch, src, term=term, arg=arg)
    if type(value) is Tensor and value.layout is _STRIDED:
        return value
    optional = tensor_inputs.get(arg)
    if optional is not None:
        check_tensor_input(f"term '{term}'", arg, value, optional=optional, key=src)
    return value


@dataclass
class TermInputs:
    """What phase one of a term found: its routed arguments, sample and normaliser."""

    kwargs: dict[str, Any]
    avg_factor: Tensor | None = None
    stats: dict[str, Tensor] = field(default_factory=dict)


class Term(nn.Module):
    """A named, weighted loss term.

    Args:
        name: the term's name (log key ``{stage}/loss/{name}``).
        loss: the loss module (built with ``loss_weight=1``; the term holds the weight).
        weight: scalar weight (step 5).
        inputs: loss argument → key (or constant); defaults to each required
            argument of ``loss.forward`` routed by its own name. It also routes
            ``pos_mask``/``neg_mask`` and the inputs the sampler declares
            (``routed_inputs``: ``ious``, ``gt_inds``, ``boxes``, ...), which go to the
            sampler, detached; one the loss also takes (``pred``) goes to both.
        sampler: a sampler module (:mod:`lossmix.samplers`) or ``None``.
        normalizer: where ``avg_factor`` comes from, or ``None``.
        every: compute on every ``every``-th step only (lazy term).
        scale_by_every: multiply the weight by ``every`` on the steps it runs.
        in_total: add to the objective (``False``: log only).
        allow_negative: accept a negative ``weight`` (the term is maximised; warned once).
            Without it a negative weight is refused: it is almost always a sign error.
        background, ignore_index: how positives/negatives are read from class-index
            targets for the sampler and ``num_pos`` (default background: the number
            of classes of ``pred``; default ignore: negative labels).
        parts: the sub-terms a loss returning a dict or tuple produces (``["a", "b"]``),
            when the loss does not declare them itself (``part_names``); logged as
            ``{name}.{part}``.
        loss_name: the log key (MMagic's ``loss_name``, e.g. ``loss_l1``); default ``name``.
            Terms of one group sharing a log key are added into one logged value.

    The log keys are known before the first step: a lossmix loss declares its parts
    (``BaseLoss.part_names``; ``("",)``: one value), and so may any module; else they
    are ``parts`` or, if not given, learned once from the first evaluation (on a lazy
    step it skips, the loss is evaluated once without gradient to learn them). A
    later call returning other parts is an error.
    """

    def __init__(
        self,
        name: str,
        loss: nn.Module,
        *,
        weight: float = 1.0,
        inputs: Mapping[str, Any] | None = None,
        sampler: nn.Module | None = None,
        normalizer: Normalizer | None = None,
        every: int = 1,
        scale_by_every: bool = True,
        in_total: bool = True,
        background: int | None = None,
        ignore_index: int | None = None,
        parts: Sequence[str] | None = None,
        allow_negative: bool = False,
        loss_name: str | None = None,
    ) -> None:
        super().__init__()
        self.name = check_term_name(name)
        self.log_name = self.name if loss_name is None else _check_log_name(name, loss_name)
        self.loss = loss
        self.sampler = sampler
        # step 4's owner: source, value, floor and moving average (a child: checkpointed)
        self.normalizer = normalizer
        label = f"term '{name}'"
        self.weight = check_float(label, "loss_weight", weight)
        if self.weight < 0 and not check_bool(label, "allow_negative", allow_negative):
            raise LossConfigError(
                f"{label}: loss_weight={weight!r} is negative, so the term would be maximised; if "
                "that is meant, add allow_negative: true to the term, else give a weight >= 0."
            )
        if self.weight < 0:
            warnings.warn(
                f"{label}: loss_weight={weight!r} is negative: the term is maximised.",
                UserWarning,
                stacklevel=2,
            )
        if abs(self.weight) > _FLOAT32_MAX:
            raise LossConfigError(
                f"{label}: loss_weight={weight!r} overflows float32 (largest {_FLOAT32_MAX:.3g}): the "
                "term would be inf; give a weight of a sensible size (the losses are float32)."
            )
        self.every = check_int(label, "every", every, min=1)
        if self.every > MAX_EVERY:
            raise LossConfigError(
                f"{label}: every={every!r} is too large (at most {MAX_EVERY:,}); a lazy term runs every "
                "k-th step with its weight x k (MMagic's r1_interval is 16): give the interval in steps."
            )
        self.allow_negative = bool(allow_negative)
        self.scale_by_every = check_bool(label, "scale_by_every", scale_by_every)
        self.in_total = check_bool(label, "in_total", in_total)
        self.background = check_optional_int(label, "background", background)
        self.ignore_index = check_optional_int(label, "ignore_index", ignore_index)
        params = call_parameters(loss)
        self._loss_inputs = frozenset(params)
        self._tensor_inputs = tensor_parameters(params)
        self._first_input = next((k for k in params if k not in _NOT_ROUTABLE), "pred")
        self._positional = positional_inputs(loss)
        self.inputs = self._check_inputs(inputs)
        self._check_normalizer_taken(params)
        # optional loss arguments the routing leaves out: found by their own name at each call
        self._by_name = tuple(
            k
            for k, p in params.items()
            if p.default is not p.empty and k not in (*_NOT_ROUTABLE, *self.inputs)
        )
        self._told: set[str] = set()
        check_normalized_reduction(
            f"term '{name}'",
            None if normalizer is None else normalizer.source,
            getattr(loss, "reduction", "mean"),
        )
        self._parts = self._declared_parts(parts)
        # Changed through LossMix.set_scale / LossMix.track_weight: a schedule's multiplier of
        # ``weight`` (a Python float computed from the step), and whether the weight is logged.
        self.scale = 1.0
        self.log_weight = False
        # a term that only routes keys into its loss's positional inputs (no sampler, no
        # normaliser, no constant): what mix() reads of it, one tuple (see evaluate_plain)
        self._plain = self._plain_plan()

    def weight_at(self, step: int | None) -> float:
        """Step 5, the term's scalar weight at ``step``: the configured ``loss_weight`` × the
        schedule's multiplier (``scale``) × ``every`` for a lazy term that scales by it, on the
        training steps it runs (``step`` is ``None`` outside training: no lazy factor)."""
        lazy = self.every if step is not None and self.scale_by_every else 1
        return self.weight * self.scale * lazy

    def _declared_parts(self, parts: Sequence[str] | None) -> tuple[str, ...] | None:
        declared = getattr(self.loss, "part_names", None)
        if parts is not None:
            if isinstance(parts, str) or not all(isinstance(p, str) and p for p in parts):
                raise LossConfigError(
                    f"term '{self.name}': parts={parts!r} is not valid; give the names of the "
                    "loss's outputs, e.g. parts: [percep, style]."
                )
            return tuple(parts)
        return None if declared is None else tuple(declared)

    @property
    def part_names(self) -> tuple[str, ...] | None:
        """The sub-terms (``("",)`` for one value), or ``None`` until learned."""
        return self._parts

    def _sampler_needs(self) -> dict[str, str]:
        """The inputs the sampler declares (name → what it is), beyond the masks."""
        return dict(getattr(self.sampler, "routed_inputs", {}))

    def _check_inputs(self, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        params = call_parameters(self.loss)
        routable = [k for k in params if k not in _NOT_ROUTABLE]
        extra = ["pos_mask", "neg_mask"] if self.sampler is not None or self._counts_pos() else []
        needs = self._sampler_needs()
        extra += [k for k in needs if k not in routable]
        if inputs is None:
            routed = {k: k for k, p in params.items() if p.default is p.empty and k in routable}
            return {**routed, **{k: k for k in needs}}
        if not isinstance(inputs, Mapping):
            raise LossConfigError(
                f"term '{self.name}': inputs must map loss arguments to keys, e.g. "
                f"{{pred: cls_logits, target: labels}}; got {inputs!r}."
            )
        for arg in inputs:
            if arg not in routable and arg not in extra:
                own = getattr(self.loss, "loss_name", type(self.loss).__name__)
                template = (
                    f" A plain nn.Module gets no {arg} from lossmix: make {own} a lossmix.losses.BaseLoss "
                    "subclass (the template weights, reduces and divides its elementwise())."
                    if arg in CALL_KEYS and not isinstance(self.loss, BaseLoss)
                    else ""
                )
                raise LossConfigError(
                    f"term '{self.name}': inputs has '{arg}', which {own} "
                    f"does not take.{did_you_mean(arg, routable + extra)} Its arguments: "
                    f"{', '.join(routable + extra)}.{template}"
                )
        missing = [k for k, p in params.items() if p.default is p.empty and k in routable and k not in inputs]
        if missing:
            raise LossConfigError(
                f"term '{self.name}': inputs does not say where '{missing[0]}' comes from; add "
                f"inputs.{missing[0]}: <key in the outputs or batch>."
            )
        unrouted = [k for k in needs if k not in inputs]
        if unrouted:
            raise LossConfigError(
                f"term '{self.name}': {type(self.sampler).__name__} needs the routed input "
                f"'{unrouted[0]}' ({needs[unrouted[0]]}); add inputs.{unrouted[0]}: <key in the "
                f"outputs or batch>. The term routes: {', '.join(inputs) or '(nothing)'}."
            )
        return dict(inputs)

    def _check_normalizer_taken(self, params: Mapping[str, Any]) -> None:
        """A normaliser's value reaches the loss as ``avg_factor``: the loss must take it."""
        if self.normalizer is None or "avg_factor" in params or _takes_any_keyword(self.loss):
            return
        raise LossConfigError(
            f"term '{self.name}': normalizer '{self.normalizer.source}' divides by avg_factor, which "
            f"{type(self.loss).__name__}.forward does not take (its arguments: {', '.join(params)}); "
            f"drop the normalizer, or make the loss a lossmix.losses.BaseLoss subclass (its "
            "elementwise() gets weight, avg_factor and reduction from the template)."
        )

    def _counts_pos(self) -> bool:
        return self.normalizer is not None and self.normalizer.counts_positives

    # -- building -----------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        name: str,
        node: Mapping[str, Any],
        *,
        allowed_targets: tuple[str, ...] | list[str] = (),
        default_scope: str | None = None,
        path: str | None = None,
    ) -> Term:
        """Build a term from its config node (a dict or DictConfig).

        The node is first checked against the term schema
        (:func:`~lossmix.mix.keys.check_term_node`; ``path`` is its place in the loss
        config, ``gen.adv``, default the name). ``default_scope`` (the mix's) applies unless
        the node sets its own.
        """
        check_term_name(name)
        node = to_plain(node)
        check_term_node(
            path or name, name, node, allowed_targets=allowed_targets, default_scope=default_scope
        )
        node = dict(node)
        term_args = {k: node.pop(k) for k in TERM_KEYS if k in node}
        if term_args.pop("schedule", None) is not None:
            raise LossConfigError(
                f"term '{name}': 'schedule' is set by the LossSchedule callback "
                "(callbacks.loss_schedule.schedules), not in the term node."
            )
        term_args["inputs"] = routing_of(name, term_args.get("inputs"), term_args.pop("data_info", None))
        scope = term_args.pop("default_scope", default_scope)
        weight = node.pop("loss_weight", None)
        loss, weight = _build_term_loss(name, node, weight, allowed_targets, scope, term_args["inputs"])
        sampler_node = term_args.pop("sampler", None)
        target_keys: dict[str, Any] = {}
        sampler = None
        if sampler_node is not None:
            sampler_node = check_sampler_node(f"term '{name}'", to_plain(sampler_node))
            target_keys = {k: sampler_node.pop(k) for k in SAMPLER_TARGET_KEYS if k in sampler_node}
            try:
                sampler = SAMPLERS.build(sampler_node, allowed_targets=allowed_targets)
            except LossConfigError as err:
                raise LossConfigError(f"term '{name}': sampler: {err}") from err
        normalizer = build_normalizer(term_args.pop("normalizer", None), term=name)
        return cls(
            name, loss, weight=weight, sampler=sampler, normalizer=normalizer, **target_keys, **term_args
        )

    # -- phase one: route, sample, normaliser ---------------------------------------------------
    def route(self, outputs: Any, batch: Any) -> dict[str, Any]:
        """The loss arguments by name (``pos_mask``/``neg_mask`` included when routed); an input
        the loss takes as a tensor is checked to be one (a host-side type check, no sync).

        An optional argument of the loss that ``inputs`` does not name is taken by its own name
        when the outputs or the batch has that key (``mask`` for ``MaskedTVLoss``), and said
        once; ``weight`` is not (an element weight in the batch may belong to another term):
        it is only said. ``inputs.<argument>: null`` leaves an argument out without a word.
        """
        routed = {}
        for arg, src in self.inputs.items():
            if not isinstance(src, str):
                routed[arg] = src
                continue
            routed[arg] = _routed_input(outputs, batch, src, self.name, arg, self._tensor_inputs)
        for arg in self._by_name:
            if arg == "weight" and arg in self._told:
                continue  # never routed, only said, and said already
            found, value = own_key(outputs, batch, arg)
            if not found:
                continue
            if arg != "weight":
                routed[arg] = value
            if arg not in self._told and not torch.compiler.is_compiling():
                self._told.add(arg)
                warnings.warn(self._by_name_message(arg), UserWarning, stacklevel=2)
        return routed

    def __setattr__(self, key: str, value: Any) -> None:
        super().__setattr__(key, value)
        if key in _PLAIN_FIELDS and "_plain" in self.__dict__:  # what the plain plan holds changed
            object.__setattr__(self, "_plain", self._plain_plan())

    def _plain_plan(self) -> PlainPlan | None:
        """What :meth:`LossMix.mix` and :meth:`evaluate_plain` read of a term that only routes
        keys into its loss's positional inputs (no sampler, normaliser or constant), as one
        tuple of constants (under ``torch.compile`` one guard, not one per attribute);
        ``None`` for any other term."""
        order = self._positional
        if self.sampler is not None or self.normalizer is not None or order is None:
            return None
        if set(self.inputs) != set(order) or not all(isinstance(self.inputs[k], str) for k in order):
            return None
        sources = tuple(self.inputs[k] for k in order)
        return (
            self.name,
            self.log_name,
            self.every,
            self.weight,
            self.scale_by_every,
            self.in_total,
            sources,
            order,
            self._by_name,
            self._parts == ("",),
            self.scale,
            self.log_weight,
            type(self.loss).forward is BaseLoss.forward,
        )

    def evaluate_plain(
        self, outputs: Any, batch: Any, kept: dict[str, dict[str, Any]] | None = None, bare: bool = False
    ) -> dict[str, Tensor] | None:
        """Both phases of a term that only routes keys into its loss's inputs (no sampler,
        normaliser, constant or element weight): the routed values straight into the loss's
        positional call, the same checks and messages as :meth:`route` and :meth:`evaluate`.
        ``None``, before anything ran, where the term needs the full way: another term's
        layout, or an optional argument of the loss found by its own name. ``kept``: where
        the routed inputs are kept by term name (``LossResult.inputs``), if they are;
        ``bare``: no global module hook is registered (see :meth:`BaseLoss.call_plain`).

        The common case (plain dicts, plain keys, a template loss whose direct way takes the
        inputs) reads no module-level name: under ``torch.compile`` each one a call reads is
        one more guard path checked before every call. Anything else takes the checked way.
        """
        plan = self._plain
        if plan is None:
            return None
        name, _, _, _, _, _, sources, positional, by_name, single, _, _, template = plan
        # (type(x) is dict, not isinstance(x, Mapping): a module-level name)
        plain = outputs.__class__ is dict and (batch is None or batch.__class__ is dict)
        for arg in by_name:
            if plain:
                found = (arg in outputs) != (batch is not None and arg in batch)
            else:
                found = own_key(outputs, batch, arg)[0]
            if found and not (arg == "weight" and arg in self._told):
                return None  # route() takes it (or says it is not taken)
        args: list[Any] = []
        if plain:
            for src in sources:
                # (self marks a missing key: no routed value is the term itself)
                value = outputs.get(src, self)
                other = self if batch is None else batch.get(src, self)
                if value is self:
                    value, other = other, self
                if value is self or other is not self or value is None or "." in src:
                    break  # missing, in both, None or a path: the checked way says which
                args.append(value)
        loss = self._modules["loss"]  # (self.loss is nn.Module.__getattr__, ~2 µs a call)
        out: Any = None
        if template and len(args) == len(sources):
            # the loss's own input check, one comparison each; None: the checked way
            out = loss.call_plain((*args,), bare)  # type: ignore[union-attr,operator]
            if out is not None and not single:
                out = self._parts_of(out)
        if out is None:
            checked = self._tensor_inputs
            pairs = zip(positional, sources, strict=True)
            args = [_routed_input(outputs, batch, s, name, a, checked) for a, s in pairs]
            try:
                if template:  # (the keywords given: Dynamo does not guard their defaults)
                    out = loss(*args, weight=None, avg_factor=None, reduction_override=None)  # type: ignore[misc]
                else:
                    out = loss(*args)  # type: ignore[misc]
            except (LossInputError, LossConfigError) as err:
                raise type(err)(f"term '{name}': {err}") from err
            if not (single and isinstance(out, Tensor) and out.dim() == 0):
                out = self._parts_of(out)
        if kept is not None:  # (a comprehension, not dict(zip()), which costs more guards)
            kept[name] = {arg: value for arg, value in zip(positional, args, strict=True)}
        return out if out.__class__ is dict else {"": out}  # one value, as declared

    def _by_name_message(self, arg: str) -> str:
        loss = getattr(self.loss, "loss_name", type(self.loss).__name__)
        if arg == "weight":
            return (
                f"term '{self.name}': the outputs or the batch has a key 'weight', which the term does "
                f"not route, so {loss} weighs no element by it; route it with inputs.weight: weight, "
                "or write inputs.weight: null if it is not this term's."
            )
        return (
            f"term '{self.name}': routes '{arg}' (an optional argument of {loss}) from the key of that "
            f"name, which its inputs do not name; write inputs.{arg}: {arg} to say so, or "
            f"inputs.{arg}: null to leave it out."
        )

    def pos_neg(self, kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Positive and negative element masks (:func:`~lossmix.samplers.labels.positives_and_negatives`)."""
        return positives_and_negatives(
            kwargs, term=self.name, background=self.background, ignore_index=self.ignore_index
        )

    def prepare(self, outputs: Any, batch: Any) -> TermInputs:
        """Phase one: route the inputs, sample, and read the normaliser (not yet synced)."""
        kwargs = self.route(outputs, batch)
        if self.sampler is None and self.normalizer is None:  # routing is all there is to do
            if "pos_mask" in kwargs or "neg_mask" in kwargs:
                kwargs.pop("pos_mask", None)
                kwargs.pop("neg_mask", None)
            return TermInputs(kwargs)
        sampler_inputs = self._take_sampler_inputs(kwargs)
        stats: dict[str, Tensor] = {}
        sample = None
        if self.sampler is not None:
            pos, neg = self.pos_neg(kwargs)
            if "pos_mask" not in kwargs:
                relabel_ignored(kwargs, pos | neg, term=self.name, background=self.background)
            scores = self._scores(kwargs) if getattr(self.sampler, "needs_scores", False) else None
            sample = self.sampler(pos, neg, scores, **sampler_inputs)
            kwargs["weight"] = _combine_weight(kwargs.get("weight"), sample.weight)
            stats["num_pos"], stats["num_neg"] = sample.num_pos, sample.num_neg
            stats["num_sampled"] = sample.num_sampled
        avg_factor = None
        if self.normalizer is not None:
            avg_factor = self._normalizer_value(kwargs, sample, outputs, batch)
            stats["avg_factor"] = avg_factor
        kwargs.pop("pos_mask", None)
        kwargs.pop("neg_mask", None)
        return TermInputs(kwargs, avg_factor, stats)

    def _take_sampler_inputs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The sampler's routed inputs, detached; those the loss does not take leave ``kwargs``."""
        taken: dict[str, Any] = {}
        for key in self._sampler_needs():
            value = kwargs[key] if key in self._loss_inputs else kwargs.pop(key)
            taken[key] = value.detach() if isinstance(value, Tensor) else value
        return taken

    def _scores(self, kwargs: dict[str, Any]) -> Tensor:
        """The term's own element-wise loss without gradient, summed to one value per element."""
        args = {
            k: (v.detach() if isinstance(v, Tensor) else v)
            for k, v in kwargs.items()
            if k not in ("pos_mask", "neg_mask", "weight")
        }
        with torch.no_grad():
            scores: Tensor = self.loss(**args, reduction_override="none")
        target = kwargs.get("target")
        rows = target.dim() if isinstance(target, Tensor) else scores.dim()
        return scores.flatten(rows).sum(-1) if scores.dim() > rows else scores

    def _normalizer_value(self, kwargs: dict[str, Any], sample: Any, outputs: Any, batch: Any) -> Tensor:
        assert self.normalizer is not None  # only called for a term with a normaliser
        inputs = NormalizerInputs(
            self.name, kwargs, sample, outputs, batch, lambda: self.pos_neg(kwargs), self._first_input
        )
        return self.normalizer.read(inputs)

    def invalid_inputs(self, kwargs: Mapping[str, Any], count: Tensor | None) -> Tensor | None:
        """A device flag (no host sync): the element weight has a negative value (the term would
        be maximised; ``allow_negative: true`` accepts it) or the normaliser's (synced) value can
        not divide the term; ``None`` when nothing is checked. :meth:`LossMix.mix` turns a
        flagged term into NaN, which the non-finite guard stops at and
        :meth:`LossResult.check_finite` explains."""
        weight = kwargs.get("weight")
        if weight is None and self.normalizer is None:
            return None  # nothing to check (the common term)
        flags: list[Tensor] = []
        if not self.allow_negative and isinstance(weight, Tensor) and weight.numel():
            flags.append((weight < 0).any())
        if count is not None and self.normalizer is not None:
            zero = self.normalizer.invalid(count)
            if zero is not None:
                flags.append(zero)
        if not flags:
            return None
        return flags[0] if len(flags) == 1 else torch.stack(flags).any()

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        # checkpoints before the normaliser owned its moving average kept it as normalizer_ema
        old = prefix + "normalizer_ema."
        for key in [k for k in state_dict if k.startswith(old)]:
            state_dict[prefix + "normalizer.moving." + key[len(old) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)

    # -- phase two: kernel, weight, reduce -------------------------------------------------------
    def evaluate(self, prepared: TermInputs, avg_factor: Tensor | None) -> dict[str, Tensor]:
        """Phase two: the raw (unweighted) value of each part (``""`` for a single output)."""
        try:
            out = self._call_loss(prepared.kwargs, avg_factor)
        except (LossInputError, LossConfigError) as err:
            raise type(err)(f"term '{self.name}': {err}") from err
        return self._parts_of(out)

    def _parts_of(self, out: Any) -> dict[str, Tensor]:
        """The loss's output as ``{part: 0-dim tensor}``, checked against the declared parts."""
        if isinstance(out, Tensor) and out.dim() == 0 and self._parts == ("",):
            return {"": out}  # one value, as declared: nothing to split or compare
        parts = _split_parts(out, self.name, self._parts)
        for part, value in parts.items():
            if not isinstance(value, Tensor) or value.dim() != 0:
                label = f"{self.name}.{part}" if part else self.name
                raise LossInputError(
                    f"term '{label}': the loss returned {describe_value(value)}, not a scalar; a term "
                    "must reduce (reduction: mean or sum), or use reduction_override only inside "
                    "samplers."
                )
        names = tuple(parts)
        if self._parts is None:
            self._parts = names
        elif names != self._parts:
            raise LossInputError(
                f"term '{self.name}': the loss returned parts {_part_list(names)}, but the term "
                f"logs {_part_list(self._parts)}; a loss must return the same parts on every "
                "call (declare them with part_names on the loss, or parts: [...] in the term)."
            )
        return parts

    def _call_loss(self, kwargs: dict[str, Any], avg_factor: Tensor | None) -> Any:
        """The loss on the routed arguments: its inputs positionally, in the kernel's order,
        when they are exactly what was routed (a lossmix loss then takes its call plan),
        else by name."""
        order = self._positional
        if order is not None and len(kwargs) - ("weight" in kwargs) == len(order):
            args = []
            for name in order:
                value = kwargs.get(name, _ABSENT)
                if value is _ABSENT:
                    break
                args.append(value)
            else:
                weight = kwargs.get("weight")
                if weight is None and avg_factor is None:
                    return self.loss(*args)  # no keywords to pass through the module call
                return self.loss(*args, weight=weight, avg_factor=avg_factor)
        if avg_factor is not None:
            kwargs = {**kwargs, "avg_factor": avg_factor}
        return self.loss(**kwargs)

    def connected_zero(self, outputs: Any, batch: Any) -> dict[str, Tensor]:
        """What a skipped (lazy) step returns: zeros still connected to the inputs (and to the
        parameters of a routed network, on its device), one per part (learned once, without
        gradient, if the loss has not said yet)."""
        if self._parts is None:
            with torch.no_grad():
                self.evaluate(self.prepare(outputs, batch), None)
        kwargs = self.route(outputs, batch)
        tensors = [v for v in kwargs.values() if isinstance(v, Tensor) and v.is_floating_point()]
        # a routed network (a discriminator, a generator) counts through its parameters
        params = [p for v in kwargs.values() if isinstance(v, nn.Module) for p in v.parameters()]
        grads = [t for t in tensors + params if t.requires_grad] or tensors or params[:1]
        zero = torch.stack([t.sum() * 0.0 for t in grads]).sum() if grads else torch.zeros(())
        return {part: zero for part in (self._parts or ("",))}

    def extra_repr(self) -> str:
        extra = f", every={self.every}" if self.every > 1 else ""
        extra += f", scale={self.scale}" if self.scale != 1.0 else ""
        extra += "" if self.in_total else ", in_total=False"
        extra += f", loss_name={self.log_name!r}" if self.log_name != self.name else ""
        return f"name={self.name!r}, weight={self.weight}, inputs={self.inputs}{extra}"


def _build_term_loss(
    name: str,
    node: dict[str, Any],
    weight: Any,
    allowed: tuple[str, ...] | list[str],
    scope: str | None,
    inputs: Any = None,
) -> tuple[nn.Module, Any]:
    """Build the loss with its own scalar weight at 1 and return the term's weight (step 5).

    The term's weight is ``loss_weight`` from the node, else the loss's own default
    (``DiscShiftLoss`` defaults to 0.1), read from the loss's signature before it is built:
    the loss is built with ``loss_weight=1``, never changed afterwards. A loss that sets
    ``owns_loss_weight`` (GANLoss, whose weight applies to the generator side only) is
    built with the node's weight and the term's is 1 when its side is routed from a key; a
    term whose side is a constant (``is_disc`` not routed, or ``is_disc: false``: the
    generator's) holds the weight as every other term does, so its raw value is unweighted.
    """
    side = inputs.get("is_disc", False) if isinstance(inputs, Mapping) else False
    generator_side = side is False
    chosen: list[Any] = [1.0 if weight is None else weight]

    def take_weight(entry: Any, kwargs: dict[str, Any]) -> None:
        params, _ = LOSSES.parameters(entry)
        if "loss_weight" not in params:
            return
        if getattr(entry, "owns_loss_weight", False) and not generator_side:
            if weight is not None:
                kwargs["loss_weight"] = weight
            chosen[0] = 1.0
            return
        default = params["loss_weight"]
        chosen[0] = (1.0 if default is REQUIRED else default) if weight is None else weight
        kwargs["loss_weight"] = 1.0

    try:
        loss = LOSSES.build(node, allowed_targets=allowed, default_scope=scope, prepare=take_weight)
    except LossConfigError as err:
        # an unknown key may be a term-level key in the wrong place: list those too
        hint = (
            f" Term-level keys are: {', '.join(TERM_KEYS)}, loss_weight."
            if ("unknown argument" in str(err))
            else ""
        )
        raise LossConfigError(f"term '{name}': {err}{hint}") from err
    return loss, chosen[0]


def _takes_any_keyword(module: nn.Module) -> bool:
    """A module whose ``forward`` takes ``**kwargs`` (it may take ``avg_factor``)."""
    if isinstance(module, BaseLoss):
        return False
    params = inspect.signature(module.forward).parameters.values()
    return any(p.kind is p.VAR_KEYWORD for p in params)


def _combine_weight(weight: Tensor | None, sample_weight: Tensor) -> Tensor:
    if weight is None:
        return sample_weight
    while sample_weight.dim() < weight.dim():
        sample_weight = sample_weight.unsqueeze(-1)
    return weight * sample_weight


def _part_list(parts: tuple[str, ...]) -> str:
    return "(one value)" if parts == ("",) else ", ".join(parts)


def _split_parts(out: Any, name: str, declared: tuple[str, ...] | None = None) -> dict[str, Tensor]:
    """The parts of a loss's output by name; a tuple takes its declared names, if as many."""
    if isinstance(out, Tensor):
        return {"": out}
    if isinstance(out, Mapping):
        return {str(k): v for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        if declared is not None and len(declared) == len(out) and declared != ("",):
            return dict(zip(declared, out, strict=True))
        return {str(i): v for i, v in enumerate(out)}
    raise LossInputError(
        f"term '{name}': the loss returned {type(out).__name__}; a loss returns a tensor, or a "
        "dict/tuple of tensors (sub-terms)."
    )
