"""The two-objective toy problem of CAGrad (Liu et al. 2021) and Nash-MTL (Navon et al. 2022).

Every aggregator registered in lossmix runs from the Nash-MTL paper's five starting points
with Adam (lr 1e-3) on ``x ∈ R²``, the two task gradients forming the Jacobian ``J (2, 2)``
at each step. The first loss is scaled by ``--scale`` (0.1 in Nash-MTL's variant, 1 in
CAGrad's). A run *reaches the Pareto front* when its final loss pair lies within ``--tol``
of the front, computed as the non-dominated set of a dense grid of ``x``. The trajectories
in loss space are drawn to ``benchmarks/toy_pareto_scale<scale>.png``.

DB-MTL, FAMO and the log-based scalarizers need positive losses; this problem's go down to
−20, so they are left out.

Usage: ``python benchmarks/toy_pareto.py [--steps 35000] [--scale 0.1] [--write]``
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from torch import Tensor

from lossmix import AGGREGATORS

try:
    from benchmarks._results import write_section
except ImportError:  # run as a script from benchmarks/
    from _results import write_section

LOWER = 5e-6
INITS = [[-8.5, 7.5], [0.0, 0.0], [9.0, 9.0], [-7.5, -0.5], [9.0, -1.0]]  # Nash-MTL's toy
METHODS = {
    "sum": {},
    "mgda": {},
    "pcgrad": {},
    "cagrad": {"c": 0.5},
    "imtl_g": {},
    "aligned_mtl": {},
    "upgrad": {},
    "nash_mtl": {},
    "graddrop": {},
    "gradvac": {},
}


def png_path(scale: float) -> Path:
    return Path(__file__).with_name(f"toy_pareto_scale{scale:g}.png")


def losses(x: Tensor, scale: float) -> Tensor:
    """``(N, 2)`` losses of the toy at points ``x`` ``(N, 2)`` (the papers' definition)."""
    x1, x2 = x[:, 0], x[:, 1]
    f1 = torch.clamp((0.5 * (-x1 - 7) - torch.tanh(-x2)).abs(), LOWER).log() + 6
    f2 = torch.clamp((0.5 * (-x1 + 3) + torch.tanh(-x2) + 2).abs(), LOWER).log() + 6
    c1 = torch.clamp(torch.tanh(x2 * 0.5), 0)
    f1_sq = ((-x1 + 7).pow(2) + 0.1 * (-x2 - 8).pow(2)) / 10 - 20
    f2_sq = ((-x1 - 7).pow(2) + 0.1 * (-x2 - 8).pow(2)) / 10 - 20
    c2 = torch.clamp(torch.tanh(-x2 * 0.5), 0)
    return torch.stack([(f1 * c1 + f1_sq * c2) * scale, f2 * c1 + f2_sq * c2], dim=1)


def pareto_front(scale: float, n: int = 1601) -> Tensor:
    """The non-dominated loss pairs of an ``n × n`` grid over ``[-10, 10]²``, sorted by ``f1``."""
    axis = torch.linspace(-10, 10, n, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    values = losses(grid, scale)
    values = values[values[:, 0].argsort()]
    best = torch.cummin(values[:, 1], dim=0).values
    keep = torch.ones(len(values), dtype=torch.bool)
    keep[1:] = best[1:] < best[:-1]
    return values[keep]


def distance_to(front: Tensor, point: Tensor) -> float:
    return float((front - point).norm(dim=1).min())


def run(method: str, steps: int, scale: float, every: int) -> Tensor:
    """The trajectories ``(inits, steps // every + 1, 2)`` of x."""
    x = torch.tensor(INITS, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([x], lr=1e-3)
    aggregators = [AGGREGATORS.get(method)(["f1", "f2"], **METHODS[method]) for _ in INITS]
    trail = [x.detach().clone()]
    for step in range(1, steps + 1):
        f = losses(x, scale)
        rows = [torch.autograd.grad(f[:, i].sum(), x, retain_graph=i == 0)[0] for i in range(2)]
        jacobians = torch.stack(rows, dim=1)  # (inits, tasks, 2)
        optimizer.zero_grad()
        x.grad = torch.stack(
            [agg(j, f[i].detach()) for i, (agg, j) in enumerate(zip(aggregators, jacobians, strict=True))]
        )
        optimizer.step()
        if step % every == 0:
            trail.append(x.detach().clone())
    return torch.stack(trail, dim=1)


def plot(trails: dict[str, Tensor], front: Tensor, scale: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 5
    rows = math.ceil(len(trails) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    for ax, (method, trail) in zip(axes.flat, trails.items(), strict=False):
        ax.plot(front[:, 0], front[:, 1], color="#72727A", linewidth=5, label="Pareto front")
        for path in trail:
            values = losses(path, scale)
            ax.scatter(
                values[:, 0], values[:, 1], c=range(len(values)), cmap="magma_r", s=2, vmin=-len(values) * 0.2
            )
            ax.scatter(values[:1, 0], values[:1, 1], color="k", s=30, zorder=5)
        ax.set_title(method)
        ax.set_xlabel("$\\ell_1$")
        ax.set_ylabel("$\\ell_2$")
    for ax in list(axes.flat)[len(trails) :]:
        ax.axis("off")
    fig.suptitle(f"Toy problem (CAGrad / Nash-MTL), ℓ₁ scaled by {scale}: trajectories from 5 starts")
    fig.tight_layout()
    fig.savefig(png_path(scale), dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=35000)
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--tol", type=float, default=0.1)
    parser.add_argument("--every", type=int, default=50, help="keep every n-th point for the plot")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md and the PNG")
    args = parser.parse_args()
    torch.set_num_threads(1)
    front = pareto_front(args.scale)
    trails, rows = {}, []
    for method in args.methods:
        trails[method] = run(method, args.steps, args.scale, args.every)
        final = losses(trails[method][:, -1], args.scale)
        gaps = [distance_to(front, point) for point in final]
        rows.append((method, gaps, final))
        marks = " ".join("✓" if g <= args.tol else "✗" for g in gaps)
        print(f"{method:12s} {marks}  gaps {[f'{g:.3f}' for g in gaps]}", flush=True)
    if not args.write:
        return
    plot(trails, front, args.scale)
    body = (
        f"ℓ₁ scaled by {args.scale}; Adam (lr 1e-3), {args.steps} steps from Nash-MTL's five starts "
        f"{INITS}. ✓: the final loss pair is within {args.tol} of the Pareto front (the "
        "non-dominated set of a 1601² grid); the number is that distance in loss units. "
        f"Trajectories in loss space: `benchmarks/{png_path(args.scale).name}`, drawn by the command "
        "(a run output, not kept in git).\n\n"
        "| method | reached | " + " | ".join(f"start {tuple(i)}" for i in INITS) + " |\n"
        "|---|---|" + "---|" * len(INITS) + "\n"
    )
    for method, gaps, _ in rows:
        cells = " | ".join(("✓ " if g <= args.tol else "✗ ") + f"{g:.3f}" for g in gaps)
        reached = sum(g <= args.tol for g in gaps)
        body += f"| {method} | {reached}/{len(gaps)} | {cells} |\n"
    command = f"python benchmarks/toy_pareto.py --steps {args.steps} --scale {args.scale} --write"
    write_section(f"toy_pareto_scale{args.scale:g}", command, body)


if __name__ == "__main__":
    main()
