"""What ``LossMix`` costs over the same losses written by hand and summed, forward + backward.

Both sides call the *same* loss modules (same kernels, same weights, same normalisers) on
tiny tensors, where the framework's own cost dominates, as it does on a GPU where kernels
are cheap and asynchronous:

* ``hand``  — ``Σ wₖ · lossₖ(pred[outputs key], target[batch key], avg_factor=num_posₖ)``;
* ``mix``   — ``LossMix.from_config(...)(outputs, batch, step=...)`` with the same terms
  (routing, normalisers, the parts and weights a ``LossResult`` reports).

K ∈ {3, 8, 32} terms cycling focal (``num_pos``), GIoU (``weight_sum`` of a positive
mask), smooth L1 and cross-entropy. Each variant runs ``--steps`` forward + backward
passes per round, eager and under ``torch.compile``; the variants alternate for
``--rounds`` rounds and the medians are compared. Targets: eager ≤ 1.15× at K = 8,
compiled ≤ 1.05×.

Usage: ``python benchmarks/engine_overhead.py [--steps 200] [--rounds 7] [--write]``
"""

from __future__ import annotations

import argparse
import statistics
import time
import types
import warnings
from collections.abc import Callable

import torch

from lossmix import LossMix, build_loss

try:
    from benchmarks._results import write_section
except ImportError:  # run as a script from benchmarks/
    from _results import write_section

N, C = 64, 4  # rows and classes per term: tiny, so the framework's cost shows


def kinds(i: int) -> dict:
    """Term ``i``'s node: loss, routing and normaliser."""
    out, tgt = f"p{i}", f"t{i}"
    return [
        {"type": "FocalLoss", "inputs": {"pred": out, "target": tgt}, "normalizer": "num_pos"},
        {
            "type": "GIoULoss",
            "inputs": {"pred": out, "target": tgt, "weight": f"w{i}"},
            "normalizer": {"type": "weight_sum", "min": 1.0},
        },
        {"type": "SmoothL1Loss", "inputs": {"pred": out, "target": tgt}},
        {"type": "CrossEntropyLoss", "inputs": {"pred": out, "target": tgt}},
    ][i % 4] | {"loss_weight": 1.0 / (i + 1)}


def boxes(gen: torch.Generator) -> torch.Tensor:
    xy = torch.rand(N, 2, generator=gen) * 50
    return torch.cat([xy, xy + 1 + torch.rand(N, 2, generator=gen) * 20], dim=1)


def data(k: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Leaf predictions (the 'model' outputs) and targets of the K terms."""
    gen = torch.Generator().manual_seed(0)
    outputs, batch = {}, {}
    for i in range(k):
        kind = i % 4
        if kind == 0:
            outputs[f"p{i}"] = torch.randn(N, C, generator=gen)
            batch[f"t{i}"] = torch.randint(0, C + 1, (N,), generator=gen)
        elif kind == 1:
            outputs[f"p{i}"], batch[f"t{i}"] = boxes(gen), boxes(gen)
            batch[f"w{i}"] = (torch.rand(N, generator=gen) > 0.5).float()
        elif kind == 2:
            outputs[f"p{i}"], batch[f"t{i}"] = (
                torch.randn(N, 4, generator=gen),
                torch.randn(N, 4, generator=gen),
            )
        else:
            outputs[f"p{i}"] = torch.randn(N, C, generator=gen)
            batch[f"t{i}"] = torch.randint(0, C, (N,), generator=gen)
        outputs[f"p{i}"].requires_grad_(True)
    return outputs, batch


def hand_written(k: int) -> Callable[[dict, dict], torch.Tensor]:
    """The sum a user would write: the same modules, weights and normalisers."""
    losses = [build_loss({key: v for key, v in kinds(i).items() if key in ("type",)}) for i in range(k)]
    weights = [1.0 / (i + 1) for i in range(k)]

    def total(outputs: dict, batch: dict) -> torch.Tensor:
        parts = []
        for i, (loss, weight) in enumerate(zip(losses, weights, strict=True)):
            pred, target = outputs[f"p{i}"], batch[f"t{i}"]
            if i % 4 == 0:
                num_pos = (target < C).sum().clamp(min=1)
                parts.append(weight * loss(pred, target, avg_factor=num_pos))
            elif i % 4 == 1:
                mask = batch[f"w{i}"]
                parts.append(weight * loss(pred, target, weight=mask, avg_factor=mask.sum().clamp(min=1.0)))
            else:
                parts.append(weight * loss(pred, target))
        return sum(parts[1:], parts[0])

    return total


def with_mix(k: int) -> Callable[[dict, dict], torch.Tensor]:
    mix = LossMix.from_config({f"t{i}": kinds(i) for i in range(k)})

    def total(outputs: dict, batch: dict) -> torch.Tensor:
        return mix(outputs, batch, step=0).total

    return total


def time_steps(fn: Callable[[dict, dict], torch.Tensor], outputs: dict, batch: dict, steps: int) -> float:
    params = list(outputs.values())
    for _ in range(3):  # warm up (and compile)
        fn(outputs, batch).backward()
    start = time.perf_counter()
    for _ in range(steps):
        for p in params:
            p.grad = None
        fn(outputs, batch).backward()
    return (time.perf_counter() - start) / steps


def check_equal(k: int) -> None:
    outputs, batch = data(k)
    a, b = hand_written(k)(outputs, batch), with_mix(k)(outputs, batch)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def guard_ratio(k: int, calls: int = 2000) -> float | None:
    """Dynamo's guard check before each compiled call, ``LossMix`` over the hand-written sum
    (``None`` where this torch does not expose the cache entries)."""
    outputs, batch = data(k)
    times = []
    for fn in (hand_written(k), with_mix(k)):
        torch.compile(fn)(outputs, batch)
        try:
            entry = torch._dynamo.eval_frame._debug_get_cache_entry_list(fn.__code__)[0]
        except (AttributeError, IndexError):
            return None
        frame = {"outputs": outputs, "batch": batch}
        frame.update(
            zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__ or ()), strict=True)
        )
        start = time.perf_counter()
        for _ in range(calls):
            entry.guard_manager.check(frame)
        times.append(time.perf_counter() - start)
    return times[1] / times[0]


def _own_code(fn: Callable[[dict, dict], torch.Tensor]) -> Callable[[dict, dict], torch.Tensor]:
    """``fn`` with a code object of its own, so Dynamo caches its compiled form apart."""
    code = fn.__code__.replace(co_name=f"{fn.__code__.co_name}_again")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


def measure(k: int, steps: int, rounds: int, compiled: bool, *, floor: bool = False) -> float:
    """Median of the per-round ratios ``LossMix`` / hand-written sum; ``floor``: a second,
    identical hand-written sum in place of ``LossMix`` (the A/A ratio: the noise floor and
    any bias of the measurement itself)."""
    outputs, batch = data(k)
    hand, mix = hand_written(k), (_own_code(hand_written(k)) if floor else with_mix(k))
    if compiled:
        hand, mix = torch.compile(hand), torch.compile(mix)
    ratios = []
    for r in range(rounds):  # the order alternates: whichever runs second is favoured a little
        if r % 2:
            t_mix = time_steps(mix, outputs, batch, steps)
            t_hand = time_steps(hand, outputs, batch, steps)
        else:
            t_hand = time_steps(hand, outputs, batch, steps)
            t_mix = time_steps(mix, outputs, batch, steps)
        ratios.append(t_mix / t_hand)
    return statistics.median(ratios)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}×"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ks", type=int, nargs="+", default=[3, 8, 32])
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    rows = []
    for k in args.ks:
        check_equal(k)
        eager = measure(k, args.steps, args.rounds, compiled=False)
        compiled = None if args.no_compile else measure(k, args.steps, args.rounds, compiled=True)
        floor = None if args.no_compile else measure(k, args.steps, args.rounds, compiled=True, floor=True)
        guards = None if args.no_compile else guard_ratio(k)
        rows.append((k, eager, compiled, floor, guards))
        print(
            f"K={k:>2}: eager {eager:.3f}×  compiled {_ratio(compiled)}  compiled A/A {_ratio(floor)}  "
            f"guard check {_ratio(guards)}"
        )
    body = (
        "Forward + backward of `LossMix` relative to the same loss modules called by hand and "
        "summed (same values, checked to 1e-6), tiny tensors (64 rows per term), median of "
        f"{args.rounds} interleaved rounds of {args.steps} steps (the order alternating). "
        "Targets: eager ≤ 1.15× at K = 8, "
        "compiled ≤ 1.05×. Guard check: Dynamo's check of the guards before each compiled call "
        "(the same kernels run after it), `LossMix` over the hand-written sum. Compiled A/A: a "
        "second, identical compiled hand-written sum in `LossMix`'s place, measured the same "
        "way (the noise floor of the compiled column).\n\n"
        "| K terms | eager | `torch.compile` | compiled A/A | guard check |\n|---|---|---|---|---|\n"
        + "\n".join(f"| {k} | {e:.3f}× | {_ratio(c)} | {_ratio(f)} | {_ratio(g)} |" for k, e, c, f, g in rows)
    )
    if args.write:
        command = (
            "python benchmarks/engine_overhead.py"
            + (" --no-compile" if args.no_compile else "")
            + (f" --steps {args.steps} --rounds {args.rounds} --write")
        )
        write_section("engine_overhead", command, body)


if __name__ == "__main__":
    main()
