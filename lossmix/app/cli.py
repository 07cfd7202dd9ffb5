"""The ``lossmix`` command: what is registered, and what a config composes to.

* ``lossmix list``: every registered loss (with its inputs), sampler, task weighting and
  gradient aggregator with its arguments, defaults and one-line summary, and the loss scopes
  (``mmagic.L1Loss``: the same name with another library's numbers).
* ``lossmix show NAME``: one registered loss, sampler or weighting: its docstring (the
  formula), the keys of its node, and for a loss each input with its shape and dtype.
* ``lossmix show [--config-dir DIR --config-name NAME] [overrides...]``: compose the training
  config (``lossmix/conf/train.yaml``, or your app's own) with Hydra overrides, as the app
  would, check the terms, and print the ``loss`` node as YAML and a table of its terms.

Errors print one ``Error: ...`` line and exit with status 1.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from lossmix.app.checks import (
    check_loss_config,
    explain_override_error,
    import_modules,
    one_line_error,
    term_rows,
)
from lossmix.app.compose import compose_config
from lossmix.app.key_overrides import compose_adding_keys
from lossmix.app.nodes import AppTrust, check_app_nodes
from lossmix.errors import LossConfigError, LossInputError, did_you_mean
from lossmix.losses import loss_inputs
from lossmix.losses.base import CALL_KEYS
from lossmix.registry.allowlist import check_prefix
from lossmix.registry.nodes import redact, secrets_hidden, to_plain
from lossmix.registry.registry import AGGREGATORS, LOSSES, REQUIRED, SAMPLERS, WEIGHTINGS, Registry

__all__ = ["main"]


def _console() -> Console:
    """A console that wraps instead of cutting: the terminal's width, or (piped, redirected)
    ``$COLUMNS`` or 160 columns."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=int(os.environ.get("COLUMNS") or 160))


def _input_names(entry: Any) -> str:
    """``pred, target, ignore_index?``: a loss's own inputs (``?``: optional)."""
    return ", ".join(
        i.name + ("" if i.required else "?") for i in loss_inputs(entry) if i.name not in CALL_KEYS
    )


def _registry_table(registry: Registry, title: str, inputs: bool = False) -> Table:
    """One row per entry: its name (never broken), then its inputs, arguments and summary
    stacked in one column that wraps at any width (80 columns included)."""
    table = Table(title=title, show_lines=True)
    table.add_column("name", style="bold", no_wrap=True)
    details = "arguments (defaults) · summary"
    table.add_column(f"inputs · {details}" if inputs else details)
    for info in registry.describe_all():
        name = info.name + ("\n" + "\n".join(info.aliases) if info.aliases else "")
        lines = [info.format_params() or "no arguments", info.summary]
        if inputs:
            lines.insert(0, f"inputs: {_input_names(registry.get(info.name))}")
        table.add_row(name, Text("\n".join(lines), overflow="fold"))
    return table


def _scope_table(registry: Registry) -> Table:
    table = Table(title=f"Loss scopes ({', '.join(registry.scopes())})", show_lines=False)
    table.add_column("type", style="bold", no_wrap=True)
    table.add_column("class · vs the bare name · summary")
    for scope in registry.scopes():
        table.add_section()
        table.add_row(f"{scope}.*", Text(registry.scope_summary(scope), overflow="fold"))
        for info, same in registry.describe_scope(scope):
            bare = info.name.split(".", 1)[1]
            versus = "the same class" if same else ("differs" if bare in registry else "scope only")
            cell = f"{info.target.rsplit('.', 1)[-1]} · {versus}\n{info.summary}"
            table.add_row(info.name, Text(cell, overflow="fold"))
    return table


def list_command(console: Console, imports: Sequence[str] = ()) -> int:
    """Print the registered losses, their scopes, samplers, weightings and aggregators (after importing the
    user's ``imports``)."""
    import_modules(list(imports), granted=list(imports))  # named on the command line: trusted
    console.print(_registry_table(LOSSES, f"Losses ({len(LOSSES)})", inputs=True))
    console.print(_scope_table(LOSSES))
    console.print(_registry_table(SAMPLERS, f"Samplers ({len(SAMPLERS)})"))
    console.print(_registry_table(WEIGHTINGS, f"Task weightings ({len(WEIGHTINGS)})"))
    console.print(_registry_table(AGGREGATORS, f"Gradient aggregators ({len(AGGREGATORS)})"))
    console.print(
        "Use one in a term node with `type: <name>` (a scoped one with `type: mmagic.<Name>`, or "
        "`default_scope: mmagic` on the term or the whole loss node); any torch.nn loss with "
        "`_target_: torch.nn.<Name>`; a weighting as `weighting: {type: <name>}`, an aggregator "
        "as `aggregation: {type: <name>, over: shared, module: <submodule>}`.\n"
        "`lossmix show <name>` describes one: its inputs with shapes and dtypes, its arguments."
    )
    return 0


def show_config(
    console: Console,
    overrides: Sequence[str],
    config_name: str | None = None,
    config_dir: str | None = None,
    allow: Sequence[str] = (),
) -> int:
    """Print the composed ``loss`` node and a table of its terms.

    ``allow``: packages the user's app grants in Python (``lossmix.allow_targets``), which
    its config's ``_target_`` nodes name; given here on the command line, so trusted.
    """
    from omegaconf import OmegaConf

    if config_dir is not None and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # the app's own packages, as `python -m` would find them
    cfg = compose_adding_keys(overrides, config_name, config_dir)
    if not cfg.get("loss"):
        raise LossConfigError(
            "the composed config has no 'loss' node; a lossmix app keeps its terms under "
            "loss.<term> (e.g. defaults: [{loss/cls: focal}] with hydra.searchpath: [pkg://lossmix.conf])."
        )
    trust = AppTrust(cfg, overrides)
    trust.allowed += [check_prefix(p, source="--allow") for p in allow]
    lossmix_node = cfg.get("lossmix") or {}
    with secrets_hidden(cfg):
        import_modules(
            lossmix_node.get("imports"), allowed_targets=trust.allowed, granted=trust.imports_granted
        )
        loss = to_plain(cfg.loss)
        check_loss_config(cfg.loss, allowed_targets=trust.allowed)
        check_app_nodes(cfg, trust.allowed)
    console.print("[bold]loss:[/bold]")
    text = OmegaConf.to_yaml(OmegaConf.create({"loss": loss}))
    console.print(redact(text, trust.secrets), markup=False, highlight=False)
    table = Table(title="Terms")
    columns = ("term", "loss", "weight", "inputs", "sampler", "normalizer", "every", "in_total")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in term_rows(loss):
        table.add_row(*(row[c] for c in columns))
    console.print(table)
    return 0


def _registry_of(name: str) -> Registry | None:
    for registry in (LOSSES, SAMPLERS, WEIGHTINGS):
        if name in registry:
            return registry
    return None


def show_entry(console: Console, name: str) -> int:
    """Describe one registered loss, sampler or task weighting: what it computes, the keys
    its term node takes, and (a loss) each input with its shape and dtype."""
    registry = _registry_of(name)
    if registry is None:
        names = [*LOSSES.names(), *SAMPLERS.names(), *WEIGHTINGS.names()]
        raise LossConfigError(
            f"'{name}' is no registered loss, sampler or task weighting, nor a Hydra override "
            f"(key=value).{did_you_mean(name, names)} `lossmix list` shows them all."
        )
    info = registry.describe(name)
    entry = registry.get(name)
    console.print(f"[bold]{info.name}[/bold]  {registry.kind} ({info.target})", highlight=False)
    if info.aliases:
        console.print(f"aliases: {', '.join(info.aliases)}", highlight=False)
    console.print()
    console.print(inspect.getdoc(entry) or info.summary, markup=False, highlight=False)
    console.print()
    arguments = Table(title="Arguments (keys of its node)")
    for column in ("argument", "default"):
        arguments.add_column(column, overflow="fold")
    for key, value in info.params.items():
        arguments.add_row(key, "<required>" if value is REQUIRED else repr(value))
    console.print(arguments)
    if registry is not LOSSES:
        return 0
    inputs = Table(title="Inputs (route each with inputs.<argument>: <key of the outputs or batch>)")
    for column in ("argument", "required", "shape, dtype, meaning"):
        inputs.add_column(column, overflow="fold")
    described = loss_inputs(entry)
    for item in described:
        inputs.add_row(item.name, "yes" if item.required else f"no ({item.default!r})", item.description)
    console.print(inputs)
    returns = (entry.input_shapes() if hasattr(entry, "input_shapes") else {}).get("returns")
    if returns:
        console.print(f"Returns with reduction='none': {returns}", markup=False, highlight=False)
    routed = ", ".join(f"{i.name}: <key>" for i in described if i.required)
    console.print(f"In a term: {{type: {info.name}, inputs: {{{routed}}}}}", markup=False, highlight=False)
    return 0


def show_command(
    console: Console,
    items: Sequence[str],
    config_name: str | None = None,
    config_dir: str | None = None,
    allow: Sequence[str] = (),
) -> int:
    """``lossmix show NAME`` describes an entry; ``lossmix show [overrides]`` a config."""
    names = [i for i in items if "=" not in i and not i.startswith(("~", "+", "-"))]
    if names:
        if len(items) > 1 or config_dir is not None or config_name is not None:
            raise LossConfigError(
                f"'{names[0]}' is not an override (key=value); describe one entry with "
                f"`lossmix show {names[0]}`, or compose a config with overrides only."
            )
        return show_entry(console, names[0])
    return show_config(console, items, config_name, config_dir, allow)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lossmix", description="Compose weighted loss terms from Hydra configs."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="registered losses (with their inputs), samplers, weightings")
    listing.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a module first so its registered losses are listed "
        "(as lossmix.imports does for the app); repeatable",
    )
    show = commands.add_parser(
        "show",
        help="one loss described (lossmix show FocalLoss), or the terms a config composes to",
        description="`lossmix show NAME`: a registered loss, sampler or weighting: formula, "
        "arguments, inputs with shapes and dtypes. `lossmix show [OVERRIDE...]`: compose "
        "lossmix/conf/train.yaml (or your own config with --config-dir/--config-name) with "
        "Hydra overrides, as the app would, check the terms and print them.",
    )
    show.add_argument(
        "items",
        nargs="*",
        metavar="NAME | OVERRIDE",
        help="a registered name, or Hydra overrides, e.g. loss/cls=ce loss.cls.loss_weight=0.5",
    )
    show.add_argument("--config-dir", "-cd", default=None, help="your app's config directory")
    show.add_argument(
        "--config-name", "-cn", default=None, help="the primary config's name (default: lossmix's train)"
    )
    show.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="PACKAGE",
        help="a package your app allows in Python (lossmix.allow_targets), so its _target_ "
        "nodes are checked; run from the directory it imports from; repeatable",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lossmix`` command."""
    from hydra.errors import CompactHydraException
    from omegaconf.errors import OmegaConfBaseException

    args = _parser().parse_args(argv)
    console = _console()
    try:
        if args.command == "list":
            return list_command(console, args.imports)
        return show_command(console, args.items, args.config_name, args.config_dir, args.allow)
    except (CompactHydraException, OmegaConfBaseException, LossConfigError, LossInputError) as err:
        overrides = getattr(args, "items", [])
        config = {
            "config_name": getattr(args, "config_name", None),
            "config_dir": getattr(args, "config_dir", None),
        }
        message = explain_override_error(
            err, overrides, lambda rest: compose_config(rest, **config)
        ) or one_line_error(err)
        print(f"Error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
