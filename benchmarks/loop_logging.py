"""Cost of per-term logging in a plain PyTorch loop, side by side in one run.

Three loops train the *same* model on the same K-term ``LossMix`` (forward, mix, backward,
optimizer step) and differ only in what they log every ``--every`` steps:

* ``total``   — the total only: ``sink({"train/loss": result.total.item()})`` (the baseline);
* ``logger``  — ``LoopLogger.update(result)`` every step (every term, its raw value, epoch
  sums on the device; one host read per interval);
* ``naive``   — ``{k: v.item() for k, v in result.terms.items()}`` every step (a host sync
  per term per step), for reference.

The variants run interleaved for ``--rounds`` rounds (the order alternating) and the median
time per step is compared. Target: ``logger`` ≤ 1.05× ``total`` at K = 32.

Usage: ``python benchmarks/loop_logging.py [--terms 32] [--steps 200] [--rounds 9] [--devices cpu cuda]
[--write]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from lossmix import LossMix
from lossmix.loops import LoopLogger

try:
    from benchmarks._results import write_section
except ImportError:  # run as a script from benchmarks/
    from _results import write_section


def terms_config(k: int) -> dict:
    kinds = ["L1Loss", "MSELoss", "SmoothL1Loss", "CharbonnierLoss"]
    return {
        f"t{i}": {
            "type": kinds[i % len(kinds)],
            "loss_weight": 1.0 / (i + 1),
            "inputs": {"pred": f"outputs.p{i}", "target": f"batch.t{i}"},
        }
        for i in range(k)
    }


class Heads(nn.Module):
    """A shared layer and one output per term."""

    def __init__(self, k: int, dim: int = 32) -> None:
        super().__init__()
        self.trunk = nn.Linear(dim, dim)
        self.heads = nn.Linear(dim, k)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.heads(torch.relu(self.trunk(x)))
        return {f"p{i}": out[:, i] for i in range(out.shape[1])}


def run(
    variant: str, k: int, steps: int, every: int, batch: dict[str, torch.Tensor], x: torch.Tensor
) -> float:
    """Seconds per step of ``steps`` steps (after 5 warm-up steps)."""
    torch.manual_seed(0)
    model, mix = Heads(k).to(x.device), LossMix.from_config(terms_config(k)).to(x.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    sent: list[dict[str, float]] = []
    logger = LoopLogger(sent.append, every=every)

    def log_total(result, step: int) -> None:
        if (step + 1) % every == 0:
            sent.append({"train/loss": result.total.item()})

    def log_terms(result, step: int) -> None:
        logger.update(result, step=step, batch_size=len(x))

    def log_naive(result, step: int) -> None:
        sent.append({k: v.item() for k, v in result.terms.items()})

    log: Callable = {"total": log_total, "logger": log_terms, "naive": log_naive}[variant]
    start = 0.0
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    for step in range(steps + 5):
        if step == 5:
            sync()
            start = time.perf_counter()
        result = mix(model(x), batch, step=step)
        optimizer.zero_grad(set_to_none=True)
        result.total.backward()
        optimizer.step()
        log(result, step)
    sync()
    return (time.perf_counter() - start) / steps


def measure(device: str, args: argparse.Namespace) -> dict[str, float]:
    """The median per-round ratios to ``total`` of the other variants on ``device``."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 32, generator=gen).to(device)
    batch = {f"t{i}": torch.randn(64, generator=gen).to(device) for i in range(args.terms)}
    variants = ["total", "logger", "naive"]
    times: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for variant in variants if r % 2 == 0 else variants[::-1]:
            times[variant].append(run(variant, args.terms, args.steps, args.every, batch, x))
    return {
        v: statistics.median(t / b for t, b in zip(times[v], times["total"], strict=True))
        for v in variants[1:]
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terms", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--devices", nargs="+", default=["cpu"])
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results: dict[str, dict[str, float]] = {}
    for device in args.devices:
        results[device] = ratios = measure(device, args)
        print(
            f"{device}, K = {args.terms}: " + ", ".join(f"{v} {r:.3f}x total-only" for v, r in ratios.items())
        )
    if args.write:
        command = (
            f"python benchmarks/loop_logging.py --terms {args.terms} --steps {args.steps} "
            f"--every {args.every} --rounds {args.rounds} --devices {' '.join(args.devices)} --write"
        )
        rows = "".join(
            f"| {d} | {args.terms} | {r['logger']:.3f}× | {r['naive']:.3f}× |\n" for d, r in results.items()
        )
        body = (
            "A plain PyTorch loop (forward, K-term `LossMix`, backward, SGD step; 64 rows; one CPU "
            f"thread), logging every {args.every} steps, relative to the same loop logging the total "
            f"only; median over {args.rounds} interleaved rounds of {args.steps} steps (the order "
            "alternating) of the per-round ratio. Target: `LoopLogger` ≤ 1.05× at K = 32.\n\n"
            "| device | K terms | `LoopLogger.update` every step | `.item()` per term per step |\n"
            f"|---|---|---|---|\n{rows}"
        )
        write_section("loop_logging", command, body)
    return results


if __name__ == "__main__":
    main()
