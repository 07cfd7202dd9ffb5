"""Fused loss kernels against the plain formula and torchvision's eager formulas, side by side.

One training step of a loss: forward, then the gradient with respect to ``pred``. For each
loss and size the variants run interleaved for ``--rounds`` rounds; the medians are compared
to the plain path's (ratios only). Peak memory is that of one step above its inputs, from the
torch profiler's allocation records (``profile_memory=True``), compared the same way.

* ``plain``: the loss with ``fused=False`` (lossmix's element-wise formula, autograd's backward);
* ``fused``: the loss with ``fused=True`` (:mod:`lossmix.functional.fused`: loss and gradient
  in one forward pass);
* ``torchvision``: ``torchvision.ops.sigmoid_focal_loss`` and
  ``generalized_box_iou_loss``'s eager formulas, written out below (torchvision is no
  dependency of lossmix), the focal on the float one-hot targets its API takes (built
  outside the step). The cross-entropy has none: its plain path is torch's ``cross_entropy``.

Each row also says which kernel the automatic rule (``fused=None``) takes for that call, so
the table checks :data:`lossmix.functional.MEASURED_FASTER`.

Usage: ``python -m benchmarks.fused_kernels [--rounds 7] [--sizes 16 1024 8192] [--boxes 16 1024]
[--threads 1] [--write]`` (sizes in thousands, 2**10, of logits or boxes).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

from lossmix.functional import fused_applies
from lossmix.losses import CrossEntropyLoss, FocalLoss, GIoULoss

try:
    from benchmarks._results import write_section
except ImportError:  # run as a script from benchmarks/
    from _results import write_section

FOCAL_CLASSES = 80  # COCO's classes: RetinaNet's classification head
CE_CLASSES = 1000  # an ImageNet classifier
POSITIVES = 0.01  # share of anchors with a class (the rest are background)


def torchvision_focal(inputs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """``torchvision.ops.sigmoid_focal_loss(inputs, targets, alpha, gamma, reduction='none')``."""
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * loss


def torchvision_giou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """``torchvision.ops.generalized_box_iou_loss(boxes1, boxes2, reduction='none', eps)``."""
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xkis1, ykis1 = torch.max(x1, x1g), torch.max(y1, y1g)
    xkis2, ykis2 = torch.min(x2, x2g), torch.min(y2, y2g)
    intsctk = torch.zeros_like(x1)
    mask = (ykis2 > ykis1) & (xkis2 > xkis1)
    intsctk[mask] = (xkis2[mask] - xkis1[mask]) * (ykis2[mask] - ykis1[mask])
    unionk = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intsctk
    iouk = intsctk / (unionk + eps)
    xc1, yc1 = torch.min(x1, x1g), torch.min(y1, y1g)
    xc2, yc2 = torch.max(x2, x2g), torch.max(y2, y2g)
    area_c = (xc2 - xc1) * (yc2 - yc1)
    miouk = iouk - ((area_c - unionk) / (area_c + eps))
    return 1 - miouk


@dataclass
class Case:
    """One loss at one size: ``variants`` map a name to a step's loss from ``pred``; ``auto``
    says whether ``fused=None`` takes the fused kernel for such a call."""

    loss: str
    size: str
    pred: Tensor
    variants: dict[str, Callable[[Tensor], Tensor]]
    auto: bool


def focal_case(logits: int, gen: torch.Generator) -> Case:
    n = logits // FOCAL_CLASSES
    pred = torch.randn(n, FOCAL_CLASSES, generator=gen)
    labels = torch.randint(0, FOCAL_CLASSES, (n,), generator=gen)
    labels = torch.where(torch.rand(n, generator=gen) < POSITIVES, labels, FOCAL_CLASSES)
    num_pos = (labels < FOCAL_CLASSES).sum().clamp(min=1).float()
    onehot = F.one_hot(labels, FOCAL_CLASSES + 1)[:, :FOCAL_CLASSES].float()
    plain, fused = FocalLoss(fused=False), FocalLoss(fused=True)
    return Case(
        "FocalLoss (sigmoid, avg_factor = #pos)",
        f"{n} × {FOCAL_CLASSES}",
        pred,
        {
            "plain": lambda x: plain(x, labels, avg_factor=num_pos),
            "fused": lambda x: fused(x, labels, avg_factor=num_pos),
            "torchvision": lambda x: torchvision_focal(x, onehot).sum() / num_pos,
        },
        automatic(pred, "sigmoid_focal_loss", labels),
    )


def ce_case(logits: int, gen: torch.Generator, *, smoothing: bool) -> Case:
    n = logits // CE_CLASSES
    pred = torch.randn(n, CE_CLASSES, generator=gen)
    labels = torch.randint(0, CE_CLASSES, (n,), generator=gen)
    labels[::10] = -100  # ignored rows
    extra = {"class_weight": (torch.rand(CE_CLASSES, generator=gen) + 0.5).tolist(), "label_smoothing": 0.1}
    kwargs = extra if smoothing else {}
    plain, fused = CrossEntropyLoss(fused=False, **kwargs), CrossEntropyLoss(fused=True, **kwargs)
    name = "CrossEntropyLoss" + (" (class_weight, label_smoothing 0.1)" if smoothing else "")
    return Case(
        name,
        f"{n} × {CE_CLASSES}",
        pred,
        {"plain": lambda x: plain(x, labels), "fused": lambda x: fused(x, labels)},
        automatic(pred, "cross_entropy", labels),
    )


def giou_case(boxes: int, gen: torch.Generator) -> Case:
    xy = torch.rand(boxes, 2, generator=gen) * 500
    target = torch.cat([xy, xy + 5 + torch.rand(boxes, 2, generator=gen) * 100], -1)
    pred = target + torch.randn(boxes, 4, generator=gen) * 10
    weight = (torch.rand(boxes, generator=gen) < 0.5).float()
    avg = weight.sum()
    plain, fused = GIoULoss(fused=False), GIoULoss(fused=True)
    return Case(
        "GIoULoss (weight (N,), avg_factor)",
        f"{boxes} boxes",
        pred,
        {
            "plain": lambda x: plain(x, target, weight, avg_factor=avg),
            "fused": lambda x: fused(x, target, weight, avg_factor=avg),
            "torchvision": lambda x: (torchvision_giou(x, target) * weight).sum() / avg,
        },
        automatic(pred, "giou_loss", target),
    )


def automatic(pred: Tensor, kernel: str, *others: Tensor) -> bool:
    """Whether ``fused=None`` takes the fused ``kernel`` for a training step on ``pred``."""
    return fused_applies(None, kernel, pred.detach().requires_grad_(), *others)


def step(fn: Callable[[Tensor], Tensor], pred: Tensor) -> Tensor:
    x = pred.detach().requires_grad_()
    (grad,) = torch.autograd.grad(fn(x), x)
    return grad


def timed(fn: Callable[[Tensor], Tensor], pred: Tensor) -> float:
    start = time.perf_counter()
    step(fn, pred)
    return time.perf_counter() - start


def peak_bytes(fn: Callable[[Tensor], Tensor], pred: Tensor) -> int:
    """The most bytes allocated at once during one step, above what existed before it."""
    return profiled_peak(lambda: step(fn, pred))


def profiled_peak(call: Callable[[], object]) -> int:
    """The most bytes allocated at once during ``call()``, from the profiler's records."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    records = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    records.sort(key=lambda e: e.start_ns())
    return max(itertools.accumulate((e.nbytes() for e in records), initial=0))


def check_same(case: Case) -> float:
    """The largest difference between the plain and the fused gradient (a sanity check)."""
    plain, fused = step(case.variants["plain"], case.pred), step(case.variants["fused"], case.pred)
    return float((plain - fused).abs().max())


def run(case: Case, rounds: int) -> dict[str, tuple[float, float]]:
    """``{variant: (median time / plain's, peak memory / plain's)}``, and plain's peak in MB."""
    for fn in case.variants.values():  # warm-up
        step(fn, case.pred)
    times: dict[str, list[float]] = {name: [] for name in case.variants}
    order = list(case.variants.items())
    for r in range(rounds):  # the order reverses every other round: no variant always runs first
        for name, fn in order if r % 2 == 0 else order[::-1]:
            times[name].append(timed(fn, case.pred))
    peaks = {name: peak_bytes(fn, case.pred) for name, fn in case.variants.items()}
    base_time, base_peak = statistics.median(times["plain"]), peaks["plain"]
    return {
        name: (statistics.median(times[name]) / base_time, peaks[name] / base_peak) for name in case.variants
    } | {"plain MB": (0.0, base_peak / 2**20)}


def ratio(result: dict[str, tuple[float, float]], name: str, index: int) -> str:
    return f"{result[name][index]:.2f}×" if name in result else "—"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 1024, 8192], help="2**10s of logits")
    parser.add_argument("--boxes", type=int, nargs="+", default=[16, 1024], help="2**10s of boxes")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    cases = [focal_case(k * 2**10, gen) for k in args.sizes]
    cases += [ce_case(k * 2**10, gen, smoothing=s) for s in (False, True) for k in args.sizes]
    cases += [giou_case(k * 2**10, gen) for k in args.boxes]
    rows = []
    for case in cases:
        diff = check_same(case)
        result = run(case, args.rounds)
        rows.append((case, result))
        print(
            f"{case.loss:40} {case.size:>12}: fused/plain time {ratio(result, 'fused', 0)} "
            f"memory {ratio(result, 'fused', 1)}; torchvision/plain time {ratio(result, 'torchvision', 0)} "
            f"memory {ratio(result, 'torchvision', 1)}; plain peak {result['plain MB'][1]:.1f} MB; "
            f"automatic: {'fused' if case.auto else 'plain'}; max |Δgrad| {diff:.1e}",
            flush=True,
        )
    if args.write:
        command = (
            f"python -m benchmarks.fused_kernels --rounds {args.rounds}"
            f" --sizes {' '.join(map(str, args.sizes))} --boxes {' '.join(map(str, args.boxes))}"
            f" --threads {args.threads} --write"
        )
        write_section("fused_kernels", command, table(rows))


def table(rows: list[tuple[Case, dict[str, tuple[float, float]]]]) -> str:
    body = (
        "One step (forward, then the gradient with respect to `pred`), float32 on the CPU, "
        "relative to the same step on the plain path (`fused=False`): time as the median of "
        "interleaved rounds, peak memory above the step's inputs from the torch profiler's "
        "allocation records (`profile_memory=True`). `fused` is `fused=True`; `torchvision` is "
        "torchvision's eager formula (sigmoid focal on float one-hot targets, "
        "`generalized_box_iou_loss`), written out in the benchmark; the cross-entropy's plain "
        "path is torch's own `cross_entropy`. *automatic* is what `fused=None` takes for the "
        "call (`lossmix.functional.MEASURED_FASTER`, from `AUTOMATIC_MIN_NUMEL` = 16K elements). "
        "Lower is better. On a CPU each torch "
        "operation is its own pass over memory, so fusing here means fewer operations, "
        "computed a cache-sized block of rows at a time, and one saved buffer, not one kernel.\n\n"
        "| loss | size (rows × classes) | fused / plain, time | fused / plain, peak memory "
        "| torchvision / plain, time | torchvision / plain, peak memory | plain's peak | automatic |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    return body + "".join(
        f"| {case.loss} | {case.size} | {ratio(r, 'fused', 0)} | {ratio(r, 'fused', 1)} "
        f"| {ratio(r, 'torchvision', 0)} | {ratio(r, 'torchvision', 1)} | {r['plain MB'][1]:.1f} MB "
        f"| {'fused' if case.auto else 'plain'} |\n"
        for case, r in rows
    )


if __name__ == "__main__":
    main()
