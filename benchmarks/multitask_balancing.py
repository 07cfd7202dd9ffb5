"""Gradient-level and loss-level balancing on the multi-task demo, side by side in one run.

``lossmix.demo.TwoTasks`` (a shared trunk, a depth regression whose MSE starts near 10⁵ and
a 3-class head) trains on ``SyntheticTasks`` with each method: the plain sum (equal
weighting, the baseline), every aggregator ``over: shared`` (the trunk), the Gramian methods
``over: representation`` (the trunk's output), and the loss-level weightings. Reported per
method: the validation depth RMSE and accuracy, ``Δm%`` against the plain sum (Maninis et
al.: the mean relative change, sign-flipped for accuracy, so lower is better), and the
median step time as a ratio to the plain sum's, from short timing runs of every method
interleaved in rounds, so the ratios come from the same run.

``--ddp`` adds the same model on 2 CPU processes (gloo, ``ddp_spawn``): the largest
parameter difference between the ranks, and, for the aggregations, between DDP and one
process on the concatenated batch.

Usage: ``python benchmarks/multitask_balancing.py [--epochs 20] [--seeds 3] [--rounds 5] [--ddp] [--write]``
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from lossmix.demo import SyntheticTasks, TwoTasks, two_task_dataset
from lossmix.utilities.distributed import rank, world_size

try:
    from benchmarks._results import write_section
except ImportError:  # run as a script from benchmarks/
    from _results import write_section

TERMS = {
    "depth": {"type": "MSELoss", "inputs": {"pred": "depth", "target": "depth_gt"}},
    "cls": {"type": "CrossEntropyLoss", "inputs": {"pred": "logits", "target": "label"}},
}
SHARED = [
    "pcgrad",
    "cagrad",
    "mgda",
    "imtl_g",
    "aligned_mtl",
    "upgrad",
    "nash_mtl",
    "graddrop",
    "gradvac",
    "db_mtl",
]
REPRESENTATION = ["mgda", "aligned_mtl", "upgrad"]
WEIGHTINGS = ["famo", "rlw", "gls", "imtl_l", "log_loss", "uncertainty", "dwa"]


def methods() -> dict[str, dict]:
    """Method label → extra loss-config nodes."""
    table: dict[str, dict] = {"sum": {}}
    for name in SHARED:
        table[name] = {"aggregation": {"type": name, "over": "shared", "module": "trunk"}}
    for name in REPRESENTATION:
        table[f"{name} (repr.)"] = {
            "aggregation": {"type": name, "over": "representation", "input": "features"}
        }
    for name in WEIGHTINGS:
        table[name] = {"weighting": {"type": name}}
    return table


class StepTimer(L.Callback):
    """Wall time from one training step's start to the next's, after ``warmup`` steps: the
    forward, the backward, the optimizer step and every hook (FAMO's re-evaluation included)."""

    def __init__(self, warmup: int = 10) -> None:
        self.warmup, self.times, self._start = warmup, [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = time.perf_counter()
        if trainer.global_step > self.warmup:
            self.times.append(now - self._start)
        self._start = now


def quiet_trainer(**kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**{**defaults, **kwargs})


def evaluate(model: TwoTasks, seed: int) -> tuple[float, float]:
    """Validation depth RMSE and classification accuracy."""
    x, depth, label = two_task_dataset(512, seed + 1).tensors
    model.eval()
    with torch.no_grad():
        out = model(x)
    rmse = float(((out["depth"] - depth) ** 2).mean().sqrt())
    accuracy = float((out["logits"].argmax(1) == label).float().mean())
    return rmse, accuracy


def train(extra: dict, seed: int, epochs: int) -> tuple[float, float]:
    """Validation depth RMSE and accuracy after ``epochs``."""
    L.seed_everything(seed, verbose=False)
    model = TwoTasks({**TERMS, **extra})
    run = quiet_trainer(max_epochs=epochs, limit_val_batches=0)
    run.fit(model, datamodule=SyntheticTasks(num_train=512, num_val=128, batch_size=64, seed=seed))
    return evaluate(model, seed)


def step_time(extra: dict, steps: int) -> float:
    """The median time of a training step (after a warm-up) over ``steps`` steps."""
    L.seed_everything(0, verbose=False)
    timer = StepTimer()
    run = quiet_trainer(max_steps=steps, callbacks=[timer], limit_val_batches=0)
    run.fit(TwoTasks({**TERMS, **extra}), datamodule=SyntheticTasks(num_train=64 * steps, batch_size=64))
    return statistics.median(timer.times)


def delta_m(rmse: float, accuracy: float, base: tuple[float, float]) -> float:
    return 50.0 * ((rmse - base[0]) / base[0] - (accuracy - base[1]) / base[1])


# -- DDP: identical ranks, equal to one process on the concatenated batch ---------------------------
class Interleaved(Sampler[int]):
    """Rank r reads rows r, r + W, ...: the ranks' m-th batches together are the one-process
    m-th batch of twice the size."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        return iter(range(rank(), self.n, world_size()))

    def __len__(self) -> int:
        return self.n // world_size()


class Dump(L.Callback):
    def __init__(self, out: str) -> None:
        self.out = out

    def on_fit_end(self, trainer, pl_module):
        params = torch.cat([p.detach().double().flatten() for p in pl_module.parameters()]).tolist()
        Path(self.out, f"rank{trainer.global_rank}.json").write_text(json.dumps(params))


def ddp_fit(extra: dict, devices: int, out: Path, steps: int) -> list[list[float]]:
    L.seed_everything(0, verbose=False)
    model = TwoTasks({**TERMS, **extra})
    model.double()
    n = 64 * steps
    x, depth, label = two_task_dataset(n, 0).tensors
    rows = TensorDataset(x.double(), depth.double(), label)
    data = DataLoader(rows, batch_size=64 // devices, sampler=Interleaved(n))
    run = quiet_trainer(
        max_steps=steps,
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        use_distributed_sampler=False,
        callbacks=[Dump(str(out))],
        limit_val_batches=0,
    )
    run.fit(model, data)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(devices)]


def ddp_rows(labels: list[str], steps: int) -> list[tuple[str, float, float | None]]:
    rows = []
    for label in labels:
        extra = methods()[label]
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "ddp").mkdir()
            (Path(tmp) / "one").mkdir()
            ranks = ddp_fit(extra, 2, Path(tmp) / "ddp", steps)
            single = ddp_fit(extra, 1, Path(tmp) / "one", steps)[0]
        between = max(abs(a - b) for a, b in zip(ranks[0], ranks[1], strict=True))
        exact = "aggregation" in extra or label == "sum"
        vs_one = max(abs(a - b) for a, b in zip(ranks[0], single, strict=True)) if exact else None
        rows.append((label, between, vs_one))
        print(f"ddp {label:20s} rank0-rank1 {between:.2e}  vs one process {vs_one}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--timing-steps", type=int, default=60, help="steps per timing run")
    parser.add_argument("--ddp", action="store_true", help="also the 2-process DDP check")
    parser.add_argument("--ddp-steps", type=int, default=10)
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    table = methods()
    results: dict[str, list[tuple[float, float]]] = {label: [] for label in table}
    for seed in range(args.seeds):
        for label, extra in table.items():
            results[label].append(train(extra, seed, args.epochs))
            rmse, acc = results[label][-1]
            print(f"seed {seed} {label:20s} rmse {rmse:8.2f} acc {acc:.3f}", flush=True)
    times: dict[str, list[float]] = {label: [] for label in table}
    for _ in range(args.rounds):  # rounds outside, methods inside: interleaved
        for label, extra in table.items():
            times[label].append(step_time(extra, args.timing_steps))
    base_step = statistics.median(times["sum"])
    rows = []
    for label, runs in results.items():
        deltas = [delta_m(r[0], r[1], results["sum"][s]) for s, r in enumerate(runs)]
        ratio = statistics.median(times[label]) / base_step
        rmse = statistics.mean(r[0] for r in runs)
        rows.append((label, rmse, statistics.mean(r[1] for r in runs), statistics.mean(deltas), ratio))
        print(f"{label:20s} Δm {rows[-1][3]:+.1f}%  step {ratio:.2f}×", flush=True)
    ddp = (
        ddp_rows(["sum", "upgrad", "pcgrad", "mgda (repr.)", "aligned_mtl (repr.)", "famo"], args.ddp_steps)
        if args.ddp
        else []
    )
    if not args.write:
        return
    body = (
        f"`TwoTasks` on `SyntheticTasks` (512 training rows, batch 64, Adam lr 0.01, {args.epochs} "
        f"epochs), validation on 512 rows; means over {args.seeds} seeds. Δm% is the mean "
        "relative change against the plain sum (equal weighting) with the accuracy's sign "
        "flipped, per seed then averaged: negative is better. Step time: median training step "
        f"(start to start: forward, backward, optimizer, hooks; {args.timing_steps}-step runs after a "
        "10-step warm-up) "
        f"relative to the plain sum's, median of {args.rounds} interleaved rounds in one run. "
        "Aggregators run `over: shared` (the trunk) unless marked `(repr.)` "
        "(`over: representation`, the trunk's output).\n\n"
        "| method | depth RMSE | accuracy | Δm% | step time / sum |\n|---|---|---|---|---|\n"
    )
    for label, rmse, acc, delta, ratio in rows:
        body += f"| {label} | {rmse:.2f} | {acc:.3f} | {delta:+.1f} | {ratio:.2f}× |\n"
    command = (
        f"python benchmarks/multitask_balancing.py --epochs {args.epochs} --seeds {args.seeds} "
        f"--rounds {args.rounds} --timing-steps {args.timing_steps}"
    )
    if ddp:
        command += f" --ddp --ddp-steps {args.ddp_steps}"
        body += (
            f"\n**DDP, 2 CPU processes (gloo, `ddp_spawn`)**, float64, {args.ddp_steps} steps of 32 "
            "rows per rank: the largest parameter difference between the ranks, and between DDP "
            "and one process on the concatenated 64-row batch (FAMO's factors depend on each "
            "rank's own losses, as any loss-based weighting's do, so only its ranks are compared).\n\n"
            "| method | rank 0 vs rank 1 | DDP vs one process |\n|---|---|---|\n"
        )
        for label, between, vs_one in ddp:
            body += f"| {label} | {between:.1e} | {'—' if vs_one is None else f'{vs_one:.1e}'} |\n"
    write_section("multitask_balancing", command + " --write", body)


if __name__ == "__main__":
    main()
