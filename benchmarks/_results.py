"""Write one benchmark's section of ``benchmarks/RESULTS.md`` (between its own markers)."""

from __future__ import annotations

import platform
import sys
from datetime import date
from pathlib import Path

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = (
    "# Benchmark results\n\n"
    "Ratios measured side by side in one run (never absolute times). Each section says the\n"
    "command that produced it; re-run it to refresh the section.\n"
)


def machine() -> str:
    """One line describing where the numbers were taken."""
    cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.machine()}, {torch.get_num_threads()} CPU threads, {cuda}, "
        f"Python {sys.version.split()[0]}, torch {torch.__version__}"
    )


def write_section(name: str, command: str, body: str) -> None:
    """Replace (or append) the section ``name`` of RESULTS.md."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    section = (
        f"{start}\n## {name}\n\nCommand: `{command}`  \nDate: {date.today()}  \n"
        f"Machine: {machine()}\n\n{body.strip()}\n{end}"
    )
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(text)
