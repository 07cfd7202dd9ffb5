"""GPU figures: the focal loss at scale, a K-term LossMix step and a compiled step, on CUDA.

1. **Sigmoid focal, forward + backward** at ``--logits`` (2**26 ≈ 67M; RetinaNet's 80
   classes, 1% positives, ``avg_factor = #pos``), float32 and bfloat16: ``fused``
   (``fused=True``), ``plain`` (``fused=False``), ``compiled plain`` (``torch.compile`` of
   the plain loss) and ``torchvision`` (its eager formula on float one-hot targets, from
   ``benchmarks/fused_kernels.py``). Each is also compared with the **one-pass floor**: the
   bytes a kernel must move at least (read the logits and the class indices once, write one
   gradient) over the device bandwidth measured by a large device-to-device copy.
2. **A K-term step**: ``LossMix`` (K terms: focal, GIoU and L1 in turn, each with its weight)
   against the same losses called by hand and summed, forward + backward, small tensors.
3. **A compiled step**: the same LossMix step under ``torch.compile``, against eager.

Times are medians of interleaved rounds (CUDA events); peak memory is
``torch.cuda.max_memory_allocated`` above what existed before the step. Without CUDA the
script prints one line and exits 0. ``--device cpu --small`` runs every part on tiny inputs
(a smoke test of the script itself, no figures).

Usage: ``python -m benchmarks.gpu [--rounds 10] [--logits 67108864] [--terms 8] [--write]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lossmix import LossMix
from lossmix.losses import FocalLoss, GIoULoss, L1Loss

try:
    from benchmarks._results import write_section
    from benchmarks.fused_kernels import FOCAL_CLASSES, POSITIVES, profiled_peak, torchvision_focal
except ImportError:  # run as a script from benchmarks/
    from _results import write_section  # type: ignore[no-redef]
    from fused_kernels import FOCAL_CLASSES, POSITIVES, profiled_peak, torchvision_focal  # type: ignore[no-redef]

Step = Callable[[], object]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Step, device: torch.device) -> float:
    """One call's wall time, the device's queue drained before and after."""
    sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


def medians(variants: dict[str, Step], device: torch.device, rounds: int) -> dict[str, float]:
    """Median seconds per variant over interleaved rounds, after two warm-up calls each."""
    for fn in variants.values():
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            times[name].append(seconds(fn, device))
    return {name: statistics.median(values) for name, values in times.items()}


def peak(fn: Step, device: torch.device) -> int:
    """Bytes allocated at most during one call, above what existed before it."""
    if device.type != "cuda":
        return profiled_peak(fn)
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated(device) - base


def bandwidth(device: torch.device, nbytes: int, rounds: int) -> float:
    """Bytes per second of a device-to-device copy (read + write counted)."""
    src = torch.empty(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    return 2 * src.nbytes / medians({"copy": lambda: dst.copy_(src)}, device, rounds)["copy"]


def backward_of(loss_fn: Callable[[Tensor], Tensor], pred: Tensor) -> Step:
    """A step: forward and the gradient of ``pred``."""

    def step() -> Tensor:
        x = pred.detach().requires_grad_()
        (grad,) = torch.autograd.grad(loss_fn(x), x)
        return grad

    return step


def focal_rows(device: torch.device, logits: int, dtype: torch.dtype, args: argparse.Namespace) -> list[str]:
    gen = torch.Generator(device=device).manual_seed(0)
    n = logits // FOCAL_CLASSES
    pred = torch.randn(n, FOCAL_CLASSES, device=device, generator=gen).to(dtype)
    labels = torch.randint(0, FOCAL_CLASSES, (n,), device=device, generator=gen)
    labels = torch.where(torch.rand(n, device=device, generator=gen) < POSITIVES, labels, FOCAL_CLASSES)
    num_pos = (labels < FOCAL_CLASSES).sum().clamp(min=1).to(dtype)
    onehot = F.one_hot(labels, FOCAL_CLASSES + 1)[:, :FOCAL_CLASSES].to(dtype)
    plain, fused = FocalLoss(fused=False), FocalLoss(fused=True)
    compiled = torch.compile(lambda x: plain(x, labels, avg_factor=num_pos), backend=args.backend)
    variants = {
        "fused": backward_of(lambda x: fused(x, labels, avg_factor=num_pos), pred),
        "plain": backward_of(lambda x: plain(x, labels, avg_factor=num_pos), pred),
        "compiled plain": backward_of(compiled, pred),
        "torchvision": backward_of(lambda x: torchvision_focal(x, onehot).sum() / num_pos, pred),
    }
    times = medians(variants, device, args.rounds)
    floor = (2 * pred.nbytes + labels.nbytes) / args.bandwidth
    rows = []
    for name, fn in variants.items():
        mb = peak(fn, device) / 2**20
        rows.append(
            f"| focal {str(dtype).removeprefix('torch.')}, {n} × {FOCAL_CLASSES} | {name} "
            f"| {times[name] * 1e3:.3f} ms | {times[name] / times['plain']:.2f}× | {mb:.1f} MB "
            f"| {times[name] / floor:.1f}× |"
        )
    return rows


def mix_inputs(device: torch.device, terms: int, n: int) -> tuple[dict[str, Tensor], dict[str, Tensor], dict]:
    gen = torch.Generator(device=device).manual_seed(0)
    xy = torch.rand(n, 2, device=device, generator=gen) * 50
    boxes = torch.cat([xy, xy + 1 + torch.rand(n, 2, device=device, generator=gen) * 20], -1)
    outputs = {
        "logits": torch.randn(n, 4, device=device, generator=gen, requires_grad=True),
        "boxes": (boxes + torch.randn(n, 4, device=device, generator=gen)).requires_grad_(),
    }
    batch = {"labels": torch.randint(0, 5, (n,), device=device, generator=gen), "box_targets": boxes}
    kinds = [
        ("FocalLoss", {"pred": "logits", "target": "labels"}),
        ("GIoULoss", {"pred": "boxes", "target": "box_targets"}),
        ("L1Loss", {"pred": "boxes", "target": "box_targets"}),
    ]
    node = {
        f"t{k}": {"type": kinds[k % 3][0], "inputs": kinds[k % 3][1], "loss_weight": 1.0 + k / 10}
        for k in range(terms)
    }
    return outputs, batch, node


def step_rows(device: torch.device, args: argparse.Namespace) -> list[str]:
    outputs, batch, node = mix_inputs(device, args.terms, 256)
    mix = LossMix.from_config(node).to(device)
    by_hand = [
        ({"FocalLoss": FocalLoss, "GIoULoss": GIoULoss, "L1Loss": L1Loss}[spec["type"]](), spec)
        for spec in node.values()
    ]
    leaves = list(outputs.values())

    def hand_sum() -> tuple[Tensor, ...]:
        total = sum(
            spec["loss_weight"] * loss(outputs[spec["inputs"]["pred"]], batch[spec["inputs"]["target"]])
            for loss, spec in by_hand
        )
        return torch.autograd.grad(total, leaves)

    def mixed(run: Callable[..., Tensor]) -> Step:
        return lambda: torch.autograd.grad(run(outputs, batch), leaves)

    compiled = torch.compile(lambda o, b: mix(o, b).total, backend=args.backend)
    variants = {
        "hand-written sum": hand_sum,
        "LossMix": mixed(lambda o, b: mix(o, b).total),
        "LossMix, compiled": mixed(compiled),
    }
    times = medians(variants, device, args.rounds)
    return [
        f"| {args.terms}-term step, 256 rows | {name} | {times[name] * 1e3:.3f} ms "
        f"| {times[name] / times['hand-written sum']:.2f}× | {peak(fn, device) / 2**20:.1f} MB | — |"
        for name, fn in variants.items()
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny inputs: a smoke test, no figures")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--logits", type=int, default=2**26)
    parser.add_argument("--terms", type=int, default=8)
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device here; nothing measured.")
        return
    if args.small:
        args.logits, args.terms, args.rounds = 2**14, 3, 2
    args.bandwidth = bandwidth(device, 2**30 if not args.small else 2**20, args.rounds)
    rows = [
        row
        for dtype in (torch.float32, torch.bfloat16)
        for row in focal_rows(device, args.logits, dtype, args)
    ]
    rows += step_rows(device, args)
    body = (
        f"Device bandwidth (a {'1 GiB' if not args.small else '1 MiB'} device-to-device copy): "
        f"{args.bandwidth / 1e9:.0f} GB/s. Forward + backward; time is the median of interleaved "
        "rounds (CUDA events), memory the peak above the step's inputs "
        "(`torch.cuda.max_memory_allocated`); *floor* is the time over the one-pass floor "
        "(read the logits and the int64 class indices once, write one gradient, at the measured "
        "bandwidth). The ratio column compares with `plain` (focal) or with the hand-written sum "
        "(the K-term step).\n\n"
        "| case | variant | time | ratio | peak memory | floor |\n|---|---|---|---|---|---|\n"
        + "\n".join(rows)
    )
    print(body)
    if args.write and not args.small:
        command = (
            f"python -m benchmarks.gpu --rounds {args.rounds} --logits {args.logits} --terms {args.terms}"
        )
        command += " --write"
        write_section("gpu", command, body)


if __name__ == "__main__":
    main()
