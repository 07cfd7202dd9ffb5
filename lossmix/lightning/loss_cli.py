"""``LossCLI``: Lightning's ``LightningCLI`` with per-term overrides, one-line errors and the summary.

``pip install lossmix[cli]`` (jsonargparse). The model takes its loss node as a plain
``dict`` argument and calls ``self.configure_loss(loss)``; then, on top of ``LightningCLI``:

- ``--model.loss.cls.gamma=2`` (or ``--model.loss.cls.gamma 2``) **merges** into term
  ``cls``: its other keys stay, and the value is read as YAML (``2`` is an int,
  ``[1, 2]`` a list). Plain jsonargparse replaces the whole term by ``{'gamma': '2'}``.
  ``--model.loss='{...}'`` still replaces the whole node.
- every term is checked before anything is built, and each bad one is reported on one
  line naming the term and the key (all of them, not the first only); the exit code is 2,
  as for any argument error.
- after ``fit``, the per-term summary table and ``loss_curves.png`` in the run's log
  directory, as the Hydra app prints and writes.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no types
from lightning.pytorch.cli import LightningCLI

from lossmix.errors import LossConfigError
from lossmix.lightning.term_logger import TermLogger
from lossmix.loops.loss_plot import plot_loss_curves
from lossmix.loops.term_summary import print_summary, term_summary
from lossmix.mix.loss_mix import LossMix
from lossmix.mix.term import Term
from lossmix.registry.nodes import is_term_node

__all__ = ["LossCLI", "check_loss_node", "merge_term_overrides", "split_term_overrides"]

_NODE_KEYS = ("weighting", "aggregation", "default_scope")


def split_term_overrides(argv: Sequence[str], prefix: str = "--model.loss.") -> tuple[list[str], list[str]]:
    """``argv`` without the per-term overrides, and those overrides as ``path=value``.

    >>> split_term_overrides(["fit", "--model.loss.cls.gamma=2", "--model.loss.box.beta", "0.5"])
    (['fit'], ['cls.gamma=2', 'box.beta=0.5'])
    """
    rest: list[str] = []
    found: list[str] = []
    items = iter(argv)
    for item in items:
        if not item.startswith(prefix):
            rest.append(item)
            continue
        path, equals, value = item[len(prefix) :].partition("=")
        if not equals:
            value = next(items, "")
        found.append(f"{path}={value}")
    return rest, found


def merge_term_overrides(node: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``node`` with each ``term.key[.key...]=value`` override merged into its term (the value
    read as YAML). An override of a term the node does not have is an error naming it.

    >>> merge_term_overrides({"cls": {"type": "FocalLoss", "alpha": 0.25}}, ["cls.gamma=2"])
    {'cls': {'type': 'FocalLoss', 'alpha': 0.25, 'gamma': 2}}
    """
    merged: dict[str, Any] = _copy(node)
    errors: list[str] = []
    for override in overrides:
        path, _, text = override.partition("=")
        parts = path.split(".")
        if len(parts) < 2 or not all(parts):
            errors.append(f"--model.loss.{path}: give a term and a key, e.g. --model.loss.cls.gamma=2.")
            continue
        if parts[0] not in merged:
            errors.append(
                f"term '{parts[0]}' (from --model.loss.{path}) is not in the loss; its terms: "
                f"{', '.join(merged) or '(none)'}."
            )
            continue
        target = merged
        for part in parts[:-1]:
            child = target.get(part)
            if not isinstance(child, dict):
                child = target[part] = {}
            target = child
        target[parts[-1]] = yaml.safe_load(text) if text else None
    if errors:
        raise LossConfigError("\n".join(errors))
    return merged


def check_loss_node(node: Mapping[str, Any]) -> list[str]:
    """Every term's error (one line each, naming the term and the key); then, if every term
    builds, the whole mix's (a weighting or an aggregation node). Empty: the node is good."""
    errors: list[str] = []
    for path, name, term in _terms(node):
        try:
            Term.from_config(name, term, path=path)
        except (LossConfigError, TypeError, ValueError) as err:
            errors.append(_one_line(err))
    if not errors:
        try:
            LossMix.from_config(node)
        except (LossConfigError, TypeError, ValueError) as err:
            errors.append(_one_line(err))
    return errors


def _terms(node: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    found: list[tuple[str, str, Any]] = []
    for name, child in node.items():
        if name in _NODE_KEYS:
            continue
        if (
            isinstance(child, Mapping)
            and not is_term_node(child)
            and all(is_term_node(c) for c in child.values())
        ):
            found += [(f"{name}.{n}", n, c) for n, c in child.items()]
        else:
            found.append((name, name, child))
    return found


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _copy(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {k: _copy(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_copy(v) for v in node]
    return node


class LossCLI(LightningCLI):
    """``LightningCLI`` whose ``--model.loss.<term>.<key>=value`` merges into the term (see the
    module docstring). Set :attr:`loss_argument` when the loss node is not ``model.loss``."""

    #: where the loss node is in the parsed config
    loss_argument = "model.loss"

    def parse_arguments(self, parser: Any, args: Any) -> None:
        if args is not None and not isinstance(args, (list, tuple)):  # a dict or a Namespace
            super().parse_arguments(parser, args)
            overrides: list[str] = []
        else:
            argv = list(sys.argv[1:] if args is None else args)
            rest, overrides = split_term_overrides(argv, f"--{self.loss_argument}.")
            self.config = parser.parse_args(rest)
        subcommand = self.config.get("subcommand")
        key = f"{subcommand}.{self.loss_argument}" if subcommand else self.loss_argument
        node = self.config.get(key)
        if not isinstance(node, Mapping):
            if overrides:
                self._fail([f"--{self.loss_argument}: the model has no loss node to override."])
            return
        try:
            merged = merge_term_overrides(node, overrides)
        except LossConfigError as err:
            self._fail(str(err).splitlines())
        errors = check_loss_node(merged)
        if errors:
            self._fail(errors)
        self.config[key] = merged

    @staticmethod
    def _fail(errors: list[str]) -> None:
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)

    def after_fit(self) -> None:
        """The per-term summary table and ``loss_curves.png`` in the run's log directory."""
        trainer, model = self.trainer, self.model
        if not trainer.is_global_zero:
            return
        logger = next((c for c in trainer.callbacks if isinstance(c, TermLogger)), None)  # type: ignore[attr-defined]
        mix = getattr(model, "loss_mix", None)
        if logger is None or not isinstance(mix, LossMix):
            return
        rows = term_summary(mix, logger.epoch_summary.get("train", {}), trainer.callback_metrics)
        run_dir = Path(trainer.log_dir or trainer.default_root_dir)
        plot_loss_curves(logger.history, run_dir / "loss_curves.png")
        print_summary(rows, run_dir)
