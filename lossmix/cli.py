"""The ``lossmix`` command: what is registered, and what a config composes to.

* ``lossmix list``: every registered loss, sampler, task weighting and gradient aggregator
  with its arguments, defaults and one-line summary.
* ``lossmix show [overrides...]``: compose the training config (``lossmix/conf/train.yaml``)
  with Hydra overrides, as ``python -m lossmix.train`` would, check the terms, and print
  the ``loss`` node as YAML and a table of its terms.

Errors print one ``Error: ...`` line and exit with status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from lossmix.app import AppTrust, check_app_nodes
from lossmix.config import (
    check_loss_config,
    explain_override_error,
    import_modules,
    one_line_error,
    plain,
    term_rows,
)
from lossmix.errors import LossConfigError, LossInputError
from lossmix.nodes import redact, secrets_hidden
from lossmix.registry import AGGREGATORS, LOSSES, SAMPLERS, WEIGHTINGS, Registry

__all__ = ["main"]

CONFIG_MODULE = "lossmix.conf"


def _registry_table(registry: Registry, title: str) -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("name", style="bold")
    table.add_column("arguments (defaults)")
    table.add_column("summary")
    for info in registry.describe_all():
        name = info.name + (f" ({', '.join(info.aliases)})" if info.aliases else "")
        table.add_row(name, info.format_params() or "-", info.summary)
    return table


def list_command(console: Console, imports: Sequence[str] = ()) -> int:
    """Print the registered losses, samplers, weightings and aggregators (after importing the
    user's ``imports``)."""
    import_modules(list(imports), granted=list(imports))  # named on the command line: trusted
    console.print(_registry_table(LOSSES, f"Losses ({len(LOSSES)})"))
    console.print(_registry_table(SAMPLERS, f"Samplers ({len(SAMPLERS)})"))
    console.print(_registry_table(WEIGHTINGS, f"Task weightings ({len(WEIGHTINGS)})"))
    console.print(_registry_table(AGGREGATORS, f"Gradient aggregators ({len(AGGREGATORS)})"))
    console.print(
        "Use one in a term node with `type: <name>`; any torch.nn loss with `_target_: torch.nn.<Name>`; "
        "a weighting as `weighting: {type: <name>}`, an aggregator as "
        "`aggregation: {type: <name>, on: shared, module: <submodule>}`."
    )
    return 0


def compose_train_config(overrides: Sequence[str], config_name: str = "train") -> DictConfig:
    """The training config composed with ``overrides`` (Hydra's compose API)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return compose(config_name, overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def show_command(console: Console, overrides: Sequence[str]) -> int:
    """Print the composed ``loss`` node and a table of its terms."""
    from omegaconf import OmegaConf

    cfg = compose_train_config(overrides)
    trust = AppTrust(cfg, overrides)
    with secrets_hidden(cfg):
        import_modules(
            cfg.lossmix.get("imports"), allowed_targets=trust.allowed, granted=trust.imports_granted
        )
        loss = plain(cfg.loss)
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lossmix", description="Compose weighted loss terms from Hydra configs."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="registered losses and samplers")
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
        help="the loss config that overrides compose to, and its terms",
        description="Compose lossmix/conf/train.yaml with Hydra overrides (as python -m "
        "lossmix.train would) and print its loss terms.",
    )
    show.add_argument(
        "overrides",
        nargs="*",
        metavar="OVERRIDE",
        help="Hydra overrides, e.g. loss/cls=ce loss.cls.loss_weight=0.5",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lossmix`` command."""
    from hydra.errors import CompactHydraException

    args = _parser().parse_args(argv)
    console = Console()
    try:
        if args.command == "list":
            return list_command(console, args.imports)
        return show_command(console, args.overrides)
    except (CompactHydraException, LossConfigError, LossInputError) as err:
        overrides = getattr(args, "overrides", [])
        message = explain_override_error(err, overrides) or one_line_error(err)
        print(f"Error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
