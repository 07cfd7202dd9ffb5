"""Each aggregator's defining constraint and its cost, on adversarial Jacobians, in one run.

Jacobians: opposite, duplicate, zero, rank-deficient, badly scaled (norms 10⁻⁴…10⁴),
near-Pareto-stationary (a convex combination vanishes to 1e-6) and tiny (1e-20) rows, for
K = 2…8 and D = 50 and 5000, in float32 and float64 (``--seeds`` draws each). Reported per
method, the worst value of its normalised constraint (0 or below is exact; what each means
is in the table), then the median time of one ``aggregator(J)`` call as a ratio to the plain
sum's on a K = 3, D = ``--dim`` float32 Jacobian, all methods interleaved in rounds.

Usage: ``python benchmarks/aggregator_exactness.py [--seeds 5] [--rounds 7] [--dim 200000] [--write]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from lossmix import AGGREGATORS
from lossmix.mtl import functional as F

KINDS = ("opposite", "duplicate", "zero", "rank_deficient", "badly_scaled", "near_stationary", "tiny")


def adversarial(kind: str, k: int, d: int, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    j = torch.randn(k, d, generator=gen, dtype=torch.float64)
    if kind == "opposite":
        j[1] = -j[0]
    elif kind == "duplicate":
        j[1] = j[0]
    elif kind == "zero":
        j[0] = 0.0
    elif kind == "rank_deficient":
        j = torch.randn(k, 2, generator=gen, dtype=torch.float64) @ torch.randn(
            2, d, generator=gen, dtype=torch.float64
        )
    elif kind == "badly_scaled":
        j = j * torch.logspace(-4, 4, k, dtype=torch.float64)[:, None]
    elif kind == "near_stationary":
        w = torch.rand(k, generator=gen, dtype=torch.float64) + 0.1
        j[-1] = -(w[:-1] @ j[:-1]) / w[-1] + 1e-6 * torch.randn(d, generator=gen, dtype=torch.float64)
    elif kind == "tiny":
        j = j * 1e-20
    return j.to(dtype)


def _cagrad(j: torch.Tensor) -> float:
    d, j64 = F.cagrad(j, c=0.5).double(), j.double()
    g0 = j64.mean(0)
    return float((((d - g0).norm() - 0.5 * g0.norm()) / j64.norm(dim=1).max()).item())


def _dual_cone(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], float]:
    def violation(j: torch.Tensor) -> float:
        w = fn(F.gramian(j))
        d, j64 = F.combine(w, j).double(), j.double()
        scale = j64.norm(dim=1) * w.abs().sum() * j64.norm(dim=1).max()
        return float((-(j64 @ d) / scale.clamp(min=1e-300)).max().item())

    return violation


def _mgda(j: torch.Tensor) -> float:
    w = F.mgda_weights(F.gramian(j)).double()
    j64 = j.double()
    d = w @ j64
    return float(((d @ d - j64 @ d) / j64.norm(dim=1).max() ** 2).max().item())


def _system(fn: Callable[[torch.Tensor], torch.Tensor], power: float) -> Callable[[torch.Tensor], float]:
    def residual(j: torch.Tensor) -> float:
        g = F.gramian(j)
        values = torch.linalg.eigvalsh(g)
        if values[0] <= 1e-12 * values[-1]:
            return float("-inf")  # singular: the system has no exact solution to check

        w = fn(g)
        return float(((g @ w) / w**-power - 1.0).abs().max().item())

    return residual


CHECKS: dict[str, tuple[str, Callable[[torch.Tensor], float]]] = {
    "cagrad": ("(‖d − g₀‖ − c‖g₀‖) / ‖g‖max, c = 0.5", _cagrad),
    "upgrad": ("−min g_iᵀd / (‖g_i‖ Σ|w|‖g‖max)", _dual_cone(F.upgrad_weights)),
    "dualproj": ("−min g_iᵀd / (‖g_i‖ Σ|w|‖g‖max)", _dual_cone(F.dualproj_weights)),
    "mgda": ("max (‖d‖² − g_iᵀd) / ‖g‖max²", _mgda),
    "nash_mtl": (
        "max |α_i(Gα)_i − 1| (Gramians of condition ≤ 1e12)",
        _system(lambda g: F.nash_mtl_weights(g, max_norm=0.0), 1.0),
    ),
    "fairgrad": (
        "max |(Gw)_i w_i^{1/2} − 1|, α = 2 (same)",
        _system(lambda g: F.fairgrad_weights(g, alpha=2.0), 0.5),
    ),
}


def exactness(seeds: int) -> str:
    rows = [
        "| method | constraint (≤ 0: holds; float32 rounding ~1e-8) | worst float32 | worst float64 |",
        "|---|---|---|---|",
    ]
    for name, (meaning, check) in CHECKS.items():
        worst = {}
        for dtype in (torch.float32, torch.float64):
            gen = torch.Generator().manual_seed(0)
            values = [
                check(adversarial(kind, k, d, dtype, gen))
                for kind in KINDS
                for k in range(2, 9)
                for d in (50, 5000)
                for _ in range(seeds)
            ]
            worst[dtype] = max(values)
        cell = meaning.replace("|", "\\|")  # a Markdown table cell
        rows.append(f"| {name} | {cell} | {worst[torch.float32]:.2e} | {worst[torch.float64]:.2e} |")
    count = len(KINDS) * 7 * 2 * seeds
    return f"{count} Jacobians per dtype.\n\n" + "\n".join(rows)


def cost(rounds: int, dim: int, calls: int = 5) -> str:
    j = torch.randn(3, dim, generator=torch.Generator().manual_seed(0))
    losses = torch.rand(3) + 0.5
    methods = {name: AGGREGATORS.get(name)(["a", "b", "c"]) for name in AGGREGATORS.names()}
    times: dict[str, list[float]] = {name: [] for name in methods}
    for name in methods:
        methods[name](j, losses)  # warm up (and the stateful ones' buffers)
    for r in range(rounds):
        order = list(methods) if r % 2 == 0 else list(reversed(methods))
        for name in order:
            start = time.perf_counter()
            for _ in range(calls):
                methods[name](j, losses)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["sum"])
    rows = ["| method | step / sum |", "|---|---|"]
    rows += [f"| {n} | {statistics.median(t) / base:.2f} |" for n, t in sorted(times.items())]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--dim", type=int, default=200_000)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    body = (
        "### Constraints on adversarial Jacobians\n\n"
        + exactness(args.seeds)
        + f"\n\n### One aggregation call, K = 3, D = {args.dim}, float32 (median of {args.rounds} "
        "interleaved rounds of 5 calls each, alternating order; the baseline is the `sum` aggregator)\n\n"
        + cost(args.rounds, args.dim)
    )
    print(body)
    if args.write:
        from benchmarks._results import write_section

        command = (
            f"python benchmarks/aggregator_exactness.py --seeds {args.seeds} --rounds {args.rounds} "
            f"--dim {args.dim} --write"
        )
        write_section("aggregator_exactness", command, body)


if __name__ == "__main__":
    main()
