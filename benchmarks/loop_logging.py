"""Cost of per-term logging in a plain PyTorch loop, side by side in one run.

Three loops train the *same* model on the same K-term ``LossMix`` (forward, mix, backward,
optimizer step) and differ only in what they log every ``--every`` steps:

* ``total``   — the total only: ``sink({"train/loss": result.total.item()})`` (the baseline);
* ``logger``  — ``LoopLogger.update(result)`` every step (every term, its raw value, epoch
  sums on the device; one host read per interval);
* ``naive``   — ``{k: v.item() for k, v in result.terms.items()}`` every step (a host sync
  per term per step), for reference.

The variants' steps run interleaved one by one (the order rotating), so the machine's load
falls on all of them alike (on CPU each step is timed by the thread's CPU time, on CUDA by
the wall clock between synchronisations); per round of ``--steps`` steps the summed step times are
compared, and the median over ``--rounds`` rounds is reported. Target: ``logger`` ≤ 1.05×
``total`` at K = 32.

Usage: ``python benchmarks/loop_logging.py [--terms 32] [--steps 100] [--rounds 9] [--devices cpu cuda]
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


class Loop:
    """One variant's loop: its own model, mix, optimizer and logging; :meth:`step` runs one step."""

    def __init__(self, variant: str, k: int, every: int, device: str) -> None:
        torch.manual_seed(0)
        self.model = Heads(k).to(device)
        self.mix = LossMix.from_config(terms_config(k)).to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-3)
        self.sent: list[dict[str, float]] = []
        self.logger = LoopLogger(self.sent.append, every=every)
        self.every = every
        self.log: Callable = {"total": self.log_total, "logger": self.log_terms, "naive": self.log_naive}[
            variant
        ]

    def log_total(self, result, step: int) -> None:
        if (step + 1) % self.every == 0:
            self.sent.append({"train/loss": result.total.item()})

    def log_terms(self, result, step: int) -> None:
        self.logger.update(result, step=step, batch_size=64)

    def log_naive(self, result, step: int) -> None:
        self.sent.append({k: v.item() for k, v in result.terms.items()})

    def step(self, step: int, x: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        result = self.mix(self.model(x), batch, step=step)
        self.optimizer.zero_grad(set_to_none=True)
        result.total.backward()
        self.optimizer.step()
        self.log(result, step)


def measure(device: str, args: argparse.Namespace) -> dict[str, float]:
    """The median per-round ratios to ``total`` of the other variants on ``device``.

    The variants' steps are interleaved one by one (the order rotating each step), so a
    change in the machine's load falls on all of them alike; a round is ``--steps`` steps.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 32, generator=gen).to(device)
    batch = {f"t{i}": torch.randn(64, generator=gen).to(device) for i in range(args.terms)}
    variants = ["total", "logger", "naive"]
    loops = {v: Loop(v, args.terms, args.every, device) for v in variants}
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    # on CPU the thread's own CPU time: what other processes on a shared machine take is not counted
    clock = time.perf_counter if cuda else time.thread_time
    for step in range(5):  # warm-up
        for loop in loops.values():
            loop.step(step, x, batch)
    ratios: dict[str, list[float]] = {v: [] for v in variants[1:]}
    step = 5
    for _ in range(args.rounds):
        spent = dict.fromkeys(variants, 0.0)
        for _ in range(args.steps):
            order = variants[step % 3 :] + variants[: step % 3]
            for variant in order:
                sync()
                start = clock()
                loops[variant].step(step, x, batch)
                sync()
                spent[variant] += clock() - start
            step += 1
        for variant in variants[1:]:
            ratios[variant].append(spent[variant] / spent["total"])
    return {v: statistics.median(r) for v, r in ratios.items()}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terms", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100, help="steps per round")
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
            f"only; the three loops' steps interleaved one by one (the order rotating; CPU: the "
            "thread's CPU time per step, CUDA: wall time between synchronisations), median over "
            f"{args.rounds} rounds of {args.steps} steps of the per-round ratio of summed step times. "
            "Target: `LoopLogger` ≤ 1.05× at K = 32.\n\n"
            "| device | K terms | `LoopLogger.update` every step | `.item()` per term per step |\n"
            f"|---|---|---|---|\n{rows}"
        )
        write_section("loop_logging", command, body)
    return results


if __name__ == "__main__":
    main()
