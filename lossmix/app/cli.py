"""The ``lossmix`` command: what is registered, and what a config composes to.

* ``lossmix list``: every registered loss (with its inputs), sampler, task weighting and
  gradient aggregator with its arguments, defaults and one-line summary, and the loss scopes
  (``mmagic.L1Loss``: the same name with another library's numbers).
* ``lossmix show [--import MODULE] NAME``: any entry ``lossmix list`` lists (a loss,
  sampler, weighting, aggregator or schedule kind, your own after ``--import``): its docstring (the
  formula), the keys of its node, and for a loss each input with its shape and dtype.
* ``lossmix show [--config-dir DIR --config-name NAME] [overrides...]``: compose the training
  config (``lossmix/conf/train.yaml``, or your app's own) with Hydra overrides, as the app
  would, check the terms, and print the ``loss`` node as YAML and a table of its terms.
* ``lossmix calibrate [--batches N] [--by grad_norm|loss] [--share cls=0.5,...] [--shared MODULE]
  [overrides...]``: measure each term's value and gradient norm on a few batches of the app,
  print the shares (which term dominates) and the weights that balance them, as an override
  line and a YAML file (:mod:`lossmix.app.calibrate`).

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

from lossmix.app.catalog import catalog_entries, input_names
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
from lossmix.registry.allowlist import check_prefix
from lossmix.registry.nodes import redact, secrets_hidden, to_plain
from lossmix.registry.registry import AGGREGATORS, LOSSES, REQUIRED, SAMPLERS, WEIGHTINGS, Registry
from lossmix.schedules.kinds import SCHEDULE_KINDS

__all__ = ["main"]


def _console() -> Console:
    """A console that wraps instead of cutting: the terminal's width, or (piped, redirected)
    ``$COLUMNS`` or 160 columns."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=int(os.environ.get("COLUMNS") or 160))


def _registry_table(registry: Registry, title: str, inputs: bool = False) -> Table:
    """One row per entry: its name (never broken), then its inputs, arguments and summary
    stacked in one column that wraps at any width (80 columns included)."""
    table = Table(title=title, show_lines=True)
    table.add_column("name", style="bold", no_wrap=True)
    details = "arguments (defaults) · summary"
    table.add_column(f"inputs · {details}" if inputs else details)
    for entry in catalog_entries(registry):
        name = entry.name + ("\n" + "\n".join(entry.info.aliases) if entry.info.aliases else "")
        lines = [entry.format_params(), entry.info.summary]
        if inputs:
            lines.insert(0, f"inputs: {input_names(entry.inputs)}")
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
    console.print(_schedule_kind_table())
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


_REGISTRIES = (LOSSES, SAMPLERS, WEIGHTINGS, AGGREGATORS)


def _registry_of(name: str) -> Registry | None:
    for registry in _REGISTRIES:
        if name in registry:
            return registry
    return None


def _schedule_kind_table() -> Table:
    table = Table(title=f"Schedule kinds ({len(SCHEDULE_KINDS)})", show_lines=True)
    table.add_column("kind", style="bold", no_wrap=True)
    table.add_column("keys · summary")
    for name, cls in SCHEDULE_KINDS.items():
        table.add_row(
            name, Text(f"{_kind_arguments(cls) or 'no arguments'}\n{_summary(cls)}", overflow="fold")
        )
    return table


def _kind_arguments(cls: Any) -> str:
    """A schedule kind's keys besides ``kind`` and ``by`` (its docstring gives the defaults)."""
    return ", ".join(sorted(cls.keys))


def _summary(obj: Any) -> str:
    return (inspect.getdoc(obj) or "").split("\n", 1)[0]


def show_schedule_kind(console: Console, name: str) -> int:
    """Describe one schedule kind: its docstring and the keys of its ``schedules`` entry."""
    cls = SCHEDULE_KINDS[name]
    console.print(
        f"[bold]{name}[/bold]  schedule kind ({cls.__module__}.{cls.__qualname__})", highlight=False
    )
    console.print()
    console.print(inspect.getdoc(cls) or "", markup=False, highlight=False)
    console.print()
    console.print(
        f"Keys of a callbacks.loss_schedule.schedules entry: kind: {name}, by (step | epoch), "
        f"{_kind_arguments(cls) or '(no others)'}.",
        markup=False,
        highlight=False,
    )
    return 0


def show_entry(console: Console, name: str) -> int:
    """Describe one entry that ``lossmix list`` lists (a loss, sampler, task weighting or
    scalarizer, gradient aggregator, schedule kind): what it computes, the keys its node
    takes, and (a loss) each input with its shape and dtype."""
    registry = _registry_of(name)
    if registry is None and name in SCHEDULE_KINDS:
        return show_schedule_kind(console, name)
    if registry is None:
        names = [*(n for r in _REGISTRIES for n in r.names()), *SCHEDULE_KINDS]
        raise LossConfigError(
            f"'{name}' is no registered loss, sampler, task weighting, gradient aggregator or schedule "
            f"kind, nor a Hydra override (key=value).{did_you_mean(name, names)} `lossmix list` shows "
            "them all."
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
    imports: Sequence[str] = (),
) -> int:
    """``lossmix show NAME`` describes an entry; ``lossmix show [overrides]`` a config. The
    ``imports`` (``--import MODULE``, named on the command line: trusted) are imported first,
    so the user's own registered losses can be shown."""
    import_modules(list(imports), granted=list(imports))
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
    show.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a module first (your own losses: lossmix show --import my_losses MyLoss); "
        "a module of the current directory is found; repeatable",
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
    _calibrate_parser(commands)
    return parser


def _calibrate_parser(commands: Any) -> None:
    from lossmix.app.calibrate import STATISTICS

    calibrate = commands.add_parser(
        "calibrate",
        help="the term weights that balance the mix, measured on a few batches (no training)",
        description="Run N training batches of the app (the same overrides as python -m "
        "lossmix.train, no optimizer step), measure each term's raw value and gradient norm on "
        "the shared parameters, print the shares and the weights that equalise them, and write "
        "them as YAML.",
    )
    calibrate.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="Hydra overrides, as for the app")
    calibrate.add_argument("--batches", type=int, default=8, help="batches to average over (default 8)")
    calibrate.add_argument(
        "--by", choices=STATISTICS, default="grad_norm", help="the statistic to equalise (default grad_norm)"
    )
    calibrate.add_argument(
        "--share",
        default=None,
        metavar="TERM=S,...",
        help="target shares instead of equal ones, e.g. cls=0.5,reg=0.25,ctr=0.25",
    )
    calibrate.add_argument(
        "--shared",
        default=None,
        metavar="MODULE",
        help="the submodule whose parameters are shared "
        "(default: the parameters every term's gradient reaches)",
    )
    calibrate.add_argument(
        "--out", default="calibration.yaml", help="the YAML file written (default calibration.yaml)"
    )
    calibrate.add_argument("--config-dir", "-cd", default=None, help="your app's config directory")
    calibrate.add_argument("--config-name", "-cn", default=None, help="the primary config's name")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lossmix`` command."""
    from hydra.errors import CompactHydraException
    from omegaconf.errors import OmegaConfBaseException

    args = _parser().parse_args(argv)
    console = _console()
    try:
        if args.command == "list":
            return list_command(console, args.imports)
        if args.command == "calibrate":
            from lossmix.app.calibrate import run_command

            return run_command(
                console,
                args.overrides,
                batches=args.batches,
                by=args.by,
                share=args.share,
                shared=args.shared,
                out=args.out,
                config_name=args.config_name,
                config_dir=args.config_dir,
            )
        return show_command(console, args.items, args.config_name, args.config_dir, args.allow, args.imports)
    except (CompactHydraException, OmegaConfBaseException, LossConfigError, LossInputError) as err:
        overrides = getattr(args, "items", None) or getattr(args, "overrides", [])
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
