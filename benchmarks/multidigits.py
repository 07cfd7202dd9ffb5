"""MultiDigits: every multi-task method on real images that ship with scikit-learn, offline.

The MultiMNIST protocol of Sener & Koltun on ``sklearn.datasets.load_digits`` (1,797 8×8
digits): the images are split into train / validation / test first, then each image is paired
with random partners of its split; the left digit goes at ``[0:8]²`` and the right one at
``[2:10]²`` of a 10×10 canvas (the 6/28 shift of MultiMNIST scaled to 8 px), with a pixel-wise
max where they overlap. Three tasks: the left digit and the right digit (cross-entropy,
accuracy) and the sum of the two digits (a regression, L1 on the sum / 18, scored by the mean
absolute error in digits). A LeNet-style trunk (conv 3×3 ×16, pool, conv 3×3 ×32, pool,
fc 128 → 64) feeds one small head per task.

Methods: the single-task baselines; the plain sum (equal weights); a fixed-weight baseline
tuned on the validation split over a small grid; every aggregator registered in
``AGGREGATORS`` (``over: shared``, the trunk; the Gramian methods through the Gramian engine);
every weighting registered in ``WEIGHTINGS``. Each trains ``--steps`` steps with Adam, for
``--seeds`` seeds. Reported on the test split: the accuracies and MAE (means over the seeds),
``Δm%`` against the single-task baselines (Maninis et al.: the mean relative change, the sign
flipped where higher is better; per seed, then the mean ± std over seeds; lower is better),
the median step time as a ratio to the plain sum's (interleaved timing rounds after the
training runs), and the peak memory of one step as a ratio to the plain sum's. A PNG of the
left / right accuracy plane with the Pareto front is written to ``--out``.

Usage: ``python benchmarks/multidigits.py [--steps 300] [--seeds 3] [--workers 2] [--out runs/multidigits]
[--write]``;
``--quick`` trains a few steps of one method and one seed (the test's smoke run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from lossmix import CompositeLoss, LossMix
from lossmix.registry.registry import AGGREGATORS, WEIGHTINGS

try:
    from benchmarks._results import write_section
    from benchmarks.fused_kernels import profiled_peak
except ImportError:  # run as a script from benchmarks/
    from _results import write_section
    from fused_kernels import profiled_peak

TASKS = ("left", "right", "sum")
HIGHER_IS_BETTER = {"left": True, "right": True, "sum": False}
CANVAS, SHIFT = 10, 2
PARTNERS = {"train": 4, "val": 2, "test": 3}
FIXED_GRID = [(1.0, 1.0, w) for w in (0.1, 0.3, 3.0, 10.0)] + [(2.0, 1.0, 1.0), (1.0, 2.0, 1.0)]
BATCH, LR = 64, 2e-3


# -- data -----------------------------------------------------------------------------------------
def compose(images: Tensor, labels: Tensor, partners: int, generator: torch.Generator) -> dict[str, Tensor]:
    """Each image beside ``partners`` random others of the same split, on a 10×10 canvas."""
    n = images.shape[0]
    left = torch.arange(n).repeat(partners)
    right = torch.randint(0, n, (n * partners,), generator=generator)
    canvas = torch.zeros(n * partners, 1, CANVAS, CANVAS)
    canvas[:, 0, :8, :8] = images[left]
    canvas[:, 0, SHIFT:, SHIFT:] = torch.maximum(canvas[:, 0, SHIFT:, SHIFT:], images[right])
    return {
        "x": canvas,
        "left": labels[left],
        "right": labels[right],
        "sum": (labels[left] + labels[right]).float() / 18.0,
    }


def multidigits(seed: int = 0) -> dict[str, dict[str, Tensor]]:
    """The three splits (``train``, ``val``, ``test``): images ``(N, 1, 10, 10)`` in [0, 1] and
    the targets ``left``, ``right`` (class indices) and ``sum`` (the digits' sum / 18)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(images.shape[0], generator=generator)
    cuts = {"train": order[:1097], "val": order[1097:1397], "test": order[1397:]}
    return {name: compose(images[i], labels[i], PARTNERS[name], generator) for name, i in cuts.items()}


# -- the model ------------------------------------------------------------------------------------
def loss_node(tasks: tuple[str, ...], extra: dict, weights: tuple[float, ...] | None = None) -> dict:
    node: dict[str, Any] = {}
    for i, task in enumerate(tasks):
        kind = {"type": "L1Loss"} if task == "sum" else {"type": "CrossEntropyLoss"}
        node[task] = {**kind, "inputs": {"pred": f"outputs.{task}", "target": f"batch.{task}"}}
        if weights is not None:
            node[task]["loss_weight"] = weights[i]
    return {**node, **extra}


class MultiDigitsNet(CompositeLoss, L.LightningModule):
    """LeNet-style trunk and one head per task (``left``/``right``: 10 logits, ``sum``: 1 value)."""

    def __init__(self, node: dict, tasks: tuple[str, ...], seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.tasks = tasks
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(128, 64), nn.ReLU(),
        )  # fmt: skip
        self.heads = nn.ModuleDict(
            {
                t: nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1 if t == "sum" else 10))
                for t in tasks
            }
        )
        self.configure_loss(node)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.trunk(x)
        return {t: head(h)[:, 0] if t == "sum" else head(h) for t, head in self.heads.items()}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.compute_loss(self(batch["x"]), batch, stage="train")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=LR)

    @torch.no_grad()
    def scores(self, split: dict[str, Tensor]) -> dict[str, float]:
        """Accuracy (``left``, ``right``) and MAE in digits (``sum``)."""
        self.eval()
        out = self(split["x"])
        found = {}
        for t in self.tasks:
            if t == "sum":
                found[t] = float((out[t] - split[t]).abs().mean() * 18.0)
            else:
                found[t] = float((out[t].argmax(1) == split[t]).float().mean())
        self.train()
        return found


class Batches(torch.utils.data.IterableDataset):
    """Shuffled mini-batches of the training split, forever (seeded)."""

    def __init__(self, split: dict[str, Tensor], seed: int) -> None:
        self.split, self.seed = split, seed

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed)
        n = self.split["x"].shape[0]
        while True:
            order = torch.randperm(n, generator=generator)
            for i in range(0, n - BATCH + 1, BATCH):
                rows = order[i : i + BATCH]
                yield {k: v[rows] for k, v in self.split.items()}


class StepTimer(L.Callback):
    """Start-to-start wall time of the training steps after ``warmup`` steps."""

    def __init__(self, warmup: int = 5) -> None:
        self.warmup, self.times, self.last = warmup, [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = time.perf_counter()
        if self.last is not None and batch_idx > self.warmup:
            self.times.append(now - self.last)
        self.last = now


# -- methods --------------------------------------------------------------------------------------
def methods() -> dict[str, tuple[dict, tuple[str, ...], tuple[float, ...] | None]]:
    """Label → (extra loss-config nodes, tasks, fixed loss weights)."""
    table: dict[str, tuple[dict, tuple[str, ...], tuple[float, ...] | None]] = {
        f"single: {t}": ({}, (t,), None) for t in TASKS
    }
    table["sum (equal)"] = ({}, TASKS, None)
    for w in FIXED_GRID:
        table[f"fixed {w}"] = ({}, TASKS, w)
    for name in AGGREGATORS.names():
        table[name] = ({"aggregation": {"type": name, "over": "shared", "module": "trunk"}}, TASKS, None)
    for name in WEIGHTINGS.names():
        node: dict[str, Any] = {"type": name}
        if name == "gradnorm":
            node["shared"] = "trunk"
        table[f"{name} (weighting)"] = ({"weighting": node}, TASKS, None)
    return table


def quiet_trainer(**kwargs: Any) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=10**6,
        **kwargs,
    )


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Lightning's info lines and the warnings off, for one training run."""
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def train(label: str, seed: int, steps: int) -> dict[str, Any]:
    """Train one method for one seed; the validation and test scores and the median step."""
    torch.set_num_threads(1)
    extra, tasks, weights = methods()[label]
    data = multidigits(seed)
    model = MultiDigitsNet(loss_node(tasks, extra, weights), tasks, seed)
    timer = StepTimer()
    loader = torch.utils.data.DataLoader(Batches(data["train"], seed), batch_size=None)
    with quiet():
        quiet_trainer(max_steps=steps, callbacks=[timer]).fit(model, loader)
    return {
        "label": label,
        "seed": seed,
        "val": model.scores(data["val"]),
        "test": model.scores(data["test"]),
        "step": statistics.median(timer.times) if timer.times else float("nan"),
    }


def step_peak(label: str) -> int:
    """Peak bytes of one plain-PyTorch step (forward, loss, backward, Adam) after a warm-up."""
    extra, tasks, weights = methods()[label]
    model = MultiDigitsNet(loss_node(tasks, extra, weights), tasks, 0)
    mix: LossMix = model.loss_mix
    for part in (mix.weighting, mix.aggregation):
        if part is not None:
            part.bind(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    batch = next(iter(Batches(multidigits(0)["train"], 0)))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        result = mix(model(batch["x"]), batch, step=0)
        mix.backward(result)
        optimizer.step()

    for _ in range(2):
        step()
    return profiled_peak(step)


# -- scoring --------------------------------------------------------------------------------------
def delta_m(scores: dict[str, float], single: dict[str, float]) -> float:
    """Δm% (Maninis et al.): ``100/T Σ_t (−1)^{h_t} (M_t − B_t) / B_t``; lower is better."""
    changes = [(-1.0 if HIGHER_IS_BETTER[t] else 1.0) * (scores[t] - single[t]) / single[t] for t in TASKS]
    return 100.0 * sum(changes) / len(changes)


def pareto(points: dict[str, tuple[float, float]]) -> list[str]:
    """The labels not dominated in (left accuracy, right accuracy), both maximised."""
    return [
        a
        for a, (x, y) in points.items()
        if not any(u >= x and v >= y and (u, v) != (x, y) for b, (u, v) in points.items() if b != a)
    ]


def plot(points: dict[str, tuple[float, float]], front: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    for label, (x, y) in points.items():
        ax.scatter(x, y, color="tab:red" if label in front else "tab:blue", s=20)
        ax.annotate(label, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ordered = sorted(points[f] for f in front)
    ax.plot([p[0] for p in ordered], [p[1] for p in ordered], color="tab:red", lw=1)
    ax.set_xlabel("left-digit test accuracy")
    ax.set_ylabel("right-digit test accuracy")
    ax.set_title("MultiDigits: methods (mean over seeds), Pareto front in red")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def timing(labels: list[str], rounds: int, steps: int) -> dict[str, float]:
    """Median step time / the plain sum's, from interleaved short runs (order alternated)."""
    ratios: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(rounds):
        order = labels if r % 2 == 0 else labels[::-1]
        times = {label: train(label, 0, steps)["step"] for label in order}
        for label in labels:
            ratios[label].append(times[label] / times["sum (equal)"])
    return {label: statistics.median(v) for label, v in ratios.items()}


def table(results: list[dict[str, Any]], ratios: dict[str, float], peaks: dict[str, int]) -> tuple[str, dict]:
    by: dict[str, dict[int, dict[str, Any]]] = {}
    for r in results:
        by.setdefault(r["label"], {})[r["seed"]] = r
    seeds = sorted(by["single: left"])
    single = {
        split: {s: {t: by[f"single: {t}"][s][split][t] for t in TASKS} for s in seeds}
        for split in ("val", "test")
    }
    multi = [label for label in by if not label.startswith("single")]
    deltas = {
        split: {m: [delta_m(by[m][s][split], single[split][s]) for s in seeds] for m in multi}
        for split in ("val", "test")
    }
    fixed = [m for m in multi if m.startswith("fixed")]
    tuned = min(fixed, key=lambda m: statistics.mean(deltas["val"][m])) if fixed else None
    shown = [m for m in multi if not m.startswith("fixed") or m == tuned]
    rows = [
        "| method | left acc | right acc | sum MAE | Δm% (test) | step time / sum | peak memory / sum |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in TASKS:
        mean = statistics.mean(single["test"][s][t] for s in seeds)
        cells = ["—"] * 3
        cells[TASKS.index(t)] = f"{mean:.3f}"
        rows.append(f"| single-task {t} | {' | '.join(cells)} | 0 (baseline) | — | — |")
    points = {}
    for m in sorted(shown, key=lambda m: statistics.mean(deltas["test"][m])):
        means = {t: statistics.mean(by[m][s]["test"][t] for s in seeds) for t in TASKS}
        d = deltas["test"][m]
        spread = statistics.stdev(d) if len(d) > 1 else 0.0
        name = f"{m} (tuned on val)" if m == tuned else m
        ratio = f"{ratios[m]:.2f}×" if m in ratios else "—"
        peak = f"{peaks[m] / peaks['sum (equal)']:.2f}×" if m in peaks else "—"
        rows.append(
            f"| {name} | {means['left']:.3f} | {means['right']:.3f} | {means['sum']:.3f} | "
            f"{statistics.mean(d):+.2f} ± {spread:.2f} | {ratio} | {peak} |"
        )
        points[m] = (means["left"], means["right"])
    return "\n".join(rows), points


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="training processes (1 thread each)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--timing-steps", type=int, default=40)
    parser.add_argument("--out", default="runs/multidigits", help="folder for the PNG and the raw JSON")
    parser.add_argument("--quick", action="store_true", help="a few steps of one method, one seed")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    labels = list(methods())
    if args.quick:
        args.steps, args.seeds, args.rounds, args.timing_steps, args.workers = 8, 1, 1, 8, 1
        labels = [label for label in labels if label.startswith("single")] + ["sum (equal)", "upgrad"]
    jobs = [(label, seed) for seed in range(args.seeds) for label in labels]
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            results = list(pool.map(train, *zip(*jobs, strict=True), [args.steps] * len(jobs)))
    else:
        results = [train(label, seed, args.steps) for label, seed in jobs]
    timed = [label for label in labels if not label.startswith(("single", "fixed"))]
    ratios = timing(timed, args.rounds, args.timing_steps)
    peaks = {label: step_peak(label) for label in timed}
    torch.set_num_threads(threads)
    body, points = table(results, ratios, peaks)
    front = pareto(points)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(points, front, out / "pareto.png")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    minutes = (time.perf_counter() - start) / 60
    text = (
        f"MultiDigits (10×10 canvases of two overlapping `load_digits` digits; {PARTNERS['train']} partners "
        f"per training image), LeNet-style trunk, tasks left digit / right digit (accuracy) and their sum "
        f"(MAE in digits), Adam {LR}, batch {BATCH}, {args.steps} steps, {args.seeds} seeds, "
        f"{args.workers} training process(es) with 1 thread each; total {minutes:.1f} min. Means over the "
        "seeds on the test split; Δm% against the single-task baselines of the same seed, mean ± std over "
        "seeds (lower is better). The fixed-weight baseline is the grid point (left, right, sum weights) "
        "with the best validation Δm%. Step time: median training step relative to the plain sum's, "
        f"median of {args.rounds} interleaved timing rounds of {args.timing_steps}-step runs. Peak memory: "
        "one plain-PyTorch step (forward, loss, backward, Adam), torch profiler, relative to the plain "
        f"sum's. Pareto front in (left, right) accuracy: {', '.join(front)}.\n\n{body}"
    )
    print(text)
    print(f"wrote {out / 'pareto.png'} and {out / 'results.json'}")
    if args.write and not args.quick:
        command = (
            f"python benchmarks/multidigits.py --steps {args.steps} --seeds {args.seeds} "
            f"--workers {args.workers} --rounds {args.rounds} --timing-steps {args.timing_steps} --write"
        )
        write_section("Multi-task: MultiDigits", command, text)


if __name__ == "__main__":
    main()
