"""``over: shared`` step cost: the Gramian engine against the Jacobian path and the plain sum.

A 1.84M-parameter MLP trunk (256 → 1024 → 1024 → 512, tanh) feeds K = 3 linear heads (MSE
each). One training step (forward, loss, backward, Adam) with: the plain sum (no
aggregation node), and each method ``over: shared`` with ``engine: jacobian`` (the K×D task
Jacobian, K backward passes) and ``engine: gramian`` (per-module Gramian, one batched
backward to the activations, one ordinary backward). Reported per variant, as ratios to the
plain sum's: the median step time (the variants interleaved in rounds, the order alternated,
the median over rounds of each round's ratio) and the peak memory allocated during a step
above what existed before it (the torch profiler's records), and the largest difference
between the engine's and the Jacobian path's shared-parameter gradients (float64 check).

Usage: ``python benchmarks/mtl_engine.py [--batch 64] [--rounds 7] [--steps 10] [--threads 1] [--write]``
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lossmix import LossMix

try:
    from benchmarks._results import write_section
    from benchmarks.fused_kernels import profiled_peak
except ImportError:  # run as a script from benchmarks/
    from _results import write_section
    from fused_kernels import profiled_peak

K, WIDTHS = 3, (256, 1024, 1024, 512)
METHODS = ("upgrad", "mgda", "imtl_g")


class Trunk(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(WIDTHS):
            layers += [nn.Linear(a, b), nn.Tanh()]
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleList(nn.Linear(WIDTHS[-1], 1) for _ in range(K))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.trunk(x)
        return {f"p{i}": head(h)[:, 0] for i, head in enumerate(self.heads)}


def loss_node(method: str | None, engine: str) -> dict:
    node: dict = {
        f"t{i}": {"type": "MSELoss", "inputs": {"pred": f"p{i}", "target": f"y{i}"}} for i in range(K)
    }
    if method is not None:
        node["aggregation"] = {"type": method, "over": "shared", "module": "trunk", "engine": engine}
    return node


class Variant:
    """One model, loss mix and optimizer; :meth:`step` runs one training step."""

    def __init__(
        self, method: str | None, engine: str, batch: int, dtype: torch.dtype = torch.float32
    ) -> None:
        torch.manual_seed(0)
        self.model = Trunk().to(dtype)
        self.mix = LossMix.from_config(loss_node(method, engine))
        if self.mix.aggregation is not None:
            self.mix.aggregation.bind(self.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.x = torch.randn(batch, WIDTHS[0], dtype=dtype)
        self.batch = {f"y{i}": torch.randn(batch, dtype=dtype) * (i + 1) for i in range(K)}
        self.calls = 0

    def backward(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        result = self.mix(self.model(self.x), self.batch, step=self.calls)
        self.mix.backward(result)
        self.calls += 1

    def step(self) -> None:
        self.backward()
        self.optimizer.step()


def timed(step: Callable[[], None], steps: int) -> float:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gradient_gap(method: str, batch: int) -> float:
    """The largest difference between the two routes' trunk gradients (float64)."""
    grads = []
    for engine in ("jacobian", "gramian"):
        variant = Variant(method, engine, batch, torch.float64)
        variant.backward()
        grads.append(torch.cat([p.grad.flatten() for p in variant.model.trunk.parameters()]))  # type: ignore[union-attr]
    return float((grads[0] - grads[1]).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=10, help="steps per variant per round")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: steadier on a busy machine)"
    )
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    labels = ["sum"] + [f"{m} ({e})" for m in args.methods for e in ("jacobian", "gramian")]
    variants = {"sum": Variant(None, "auto", args.batch)}
    for m in args.methods:
        for e in ("jacobian", "gramian"):
            variants[f"{m} ({e})"] = Variant(m, e, args.batch)
    for variant in variants.values():  # warm-up: Adam's state, the allocator
        for _ in range(3):
            variant.step()
    ratios: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(args.rounds):
        order = labels if r % 2 == 0 else labels[::-1]
        times = {label: timed(variants[label].step, args.steps) for label in order}
        for label in labels:
            ratios[label].append(times[label] / times["sum"])
    peaks = {label: profiled_peak(variants[label].step) for label in labels}
    params = sum(p.numel() for p in variants["sum"].model.trunk.parameters())
    rows = [
        "| variant | step time / sum | peak memory / sum | route | max \\|Δ grad\\| vs jacobian (float64) |",
        "|---|---|---|---|---|",
    ]
    for label in labels:
        method, engine = [*label.split(" ("), ""][:2]
        engine = engine.rstrip(")")
        agg = variants[label].mix.aggregation
        route = agg.last_route if agg is not None else "plain backward"
        gap = f"{gradient_gap(method, args.batch):.1e}" if engine == "gramian" else "—"
        rows.append(
            f"| {label} | {statistics.median(ratios[label]):.2f}× | {peaks[label] / peaks['sum']:.2f}× "
            f"| {route} | {gap} |"
        )
    body = (
        f"MLP trunk {' → '.join(map(str, WIDTHS))} (tanh, {params / 1e6:.2f}M parameters), K = {K} linear "
        f"heads with MSE, batch {args.batch}, float32, Adam; one step = forward, loss, backward, optimizer "
        f"step. Step time: median over {args.rounds} interleaved rounds (order alternated) of each "
        f"round's median step ({args.steps} steps) divided by the plain sum's in the same round. Peak "
        "memory: the most bytes allocated at once during one step above what existed before it (torch "
        f"profiler), divided by the plain sum's ({peaks['sum'] / 2**20:.1f} MB). The last column: the "
        "largest difference between the engine's and the Jacobian path's trunk gradients on the same "
        "model in float64.\n\n" + "\n".join(rows)
    )
    print(body)
    if args.write:
        command = (
            f"python benchmarks/mtl_engine.py --batch {args.batch} --rounds {args.rounds} "
            f"--steps {args.steps} --threads {args.threads} --methods {' '.join(args.methods)} --write"
        )
        write_section("Multi-task: the Gramian engine of over: shared", command, body)


if __name__ == "__main__":
    main()
