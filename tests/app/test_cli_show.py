"""Issue 23, item 11: ``lossmix show`` describes every entry ``lossmix list`` lists, the user's
own loss after ``--import`` (found in the current directory), and prints a config once."""

import io
import sys

import pytest
from rich.console import Console

from lossmix.app import cli
from lossmix.app.checks import import_modules
from lossmix.registry.registry import AGGREGATORS, LOSSES, SAMPLERS, WEIGHTINGS
from lossmix.schedules.kinds import SCHEDULE_KINDS


def _shown(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    console = Console(file=out, width=120)
    return cli.show_command(console, list(argv[-1:]), imports=list(argv[:-1])), out.getvalue()


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("upgrad", "aggregator"),
        ("uncertainty", "weighting"),
        ("linear", "schedule kind"),
        ("FocalLoss", "loss"),
    ],
)
def test_show_describes_each_family(name, kind):
    code, text = _shown(name)
    assert code == 0 and text.startswith(f"{name}  {kind}")


def test_show_describes_every_listed_name():
    names = [n for r in (LOSSES, SAMPLERS, WEIGHTINGS, AGGREGATORS) for n in r.names()] + list(SCHEDULE_KINDS)
    console = Console(file=io.StringIO(), width=120)
    for name in names:
        assert cli.show_entry(console, name) == 0, name


def test_show_import_finds_a_module_of_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "first_hour_losses.py").write_text(
        "import torch\nfrom lossmix import LOSSES\nfrom lossmix.losses.base import BaseLoss\n\n\n"
        "@LOSSES.register()\nclass FirstHourLoss(BaseLoss):\n"
        '    """Cubed error."""\n\n'
        "    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:\n"
        "        return (pred - target).abs() ** 3\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    saved = dict(LOSSES._entries), dict(LOSSES._aliases)
    try:
        code, text = _shown("first_hour_losses", "FirstHourLoss")
        assert code == 0 and "FirstHourLoss  loss (first_hour_losses.FirstHourLoss)" in text
        assert "Cubed error." in text
        import_modules(["first_hour_losses"], granted=["first_hour_losses"])  # lossmix.imports too
    finally:
        for table, kept in zip((LOSSES._entries, LOSSES._aliases), saved, strict=True):
            table.clear()
            table.update(kept)
        sys.modules.pop("first_hour_losses", None)


def test_show_prints_the_loss_node_once():
    out = io.StringIO()
    assert cli.show_config(Console(file=out, width=120), []) == 0
    assert out.getvalue().count("loss:") == 1
