"""What a lossmix loss and ``LossMix`` cost over torch's own functionals, forward + backward.

Three ways to compute the same weighted sum of K terms, on tiny tensors where the
framework's own cost dominates (as on a GPU, where kernels are cheap and asynchronous):

* ``torch``   — the sum a user writes by hand with torch's functionals (the reference):
  ``Σ wₖ · F.<kernel>(pred, target)`` with ``F.l1_loss``, ``F.mse_loss``,
  ``F.smooth_l1_loss``, ``F.binary_cross_entropy_with_logits`` and ``F.cross_entropy``;
* ``modules`` — the same sum with lossmix's loss modules (``L1Loss``, ``MSELoss``,
  ``SmoothL1Loss``, ``CrossEntropyLoss(use_sigmoid=True)``, ``CrossEntropyLoss``): the
  template's own cost;
* ``mix``     — ``LossMix.from_config(...)(outputs, batch, step=0).total`` with the same
  terms (routing, the per-term records of a ``LossResult``): the engine's cost on top.

A second table keeps the detection set (focal with ``num_pos``, GIoU with a ``weight_sum``
normaliser, smooth L1, cross-entropy): ``LossMix`` against the same modules and normalisers
written by hand, where the normalisers' own work is on both sides.

Each variant runs ``--steps`` forward + backward passes per round, eager and under
``torch.compile``; the variants alternate for ``--rounds`` rounds (the order reversing
every other round) and the medians of the per-round ratios are reported; times are the
thread's CPU time (forward and backward of tiny CPU tensors run in the calling thread), so
the other processes of a shared machine do not count. Each compiled variant has a code
object of its own (Dynamo keeps one cache per code object: a shared one would make a K = 8
call check the K = 3 entry's guards first), and each K runs in a fresh process (what one K
compiled and allocated would otherwise weigh on the next: measured, a K = 8 row run third in
one process gave up to 1.06× where a fresh one gives 1.02×). Targets at K = 8:
modules / torch ≤ 1.15× eager; LossMix / torch ≤ 1.3× eager and ≤ 1.05× compiled.

Usage: ``python benchmarks/engine_overhead.py [--steps 40] [--rounds 41] [--ks 3 8 32]
[--no-compile] [--write]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import types
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from lossmix import LossMix, build_loss

try:
    from benchmarks._results import write_section
except ImportError:  # run as a script from benchmarks/
    from _results import write_section

N, C = 64, 4  # rows and classes per term: tiny, so the framework's cost shows
Step = Callable[[dict, dict], torch.Tensor]

# -- the torch suite: lossmix modules on the kernels torch has ---------------------------------
TORCH_NODES = [
    {"type": "L1Loss"},
    {"type": "MSELoss"},
    {"type": "SmoothL1Loss"},
    {"type": "CrossEntropyLoss", "use_sigmoid": True},  # binary cross-entropy on logits
    {"type": "CrossEntropyLoss"},
]
TORCH_KERNELS: list[Callable[..., torch.Tensor]] = [
    F.l1_loss,
    F.mse_loss,
    F.smooth_l1_loss,
    F.binary_cross_entropy_with_logits,
    F.cross_entropy,
]


def weight(i: int) -> float:
    return 1.0 / (i + 1)


def torch_data(k: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Leaf predictions (the 'model' outputs) and targets of the K terms."""
    gen = torch.Generator().manual_seed(0)
    outputs, batch = {}, {}
    for i in range(k):
        kind = i % len(TORCH_NODES)
        outputs[f"p{i}"] = torch.randn(N, C, generator=gen).requires_grad_(True)
        if kind < 3:
            batch[f"t{i}"] = torch.randn(N, C, generator=gen)
        elif kind == 3:
            batch[f"t{i}"] = (torch.rand(N, C, generator=gen) > 0.5).float()
        else:
            batch[f"t{i}"] = torch.randint(0, C, (N,), generator=gen)
    return outputs, batch


def chain_sum(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """``parts[0] + parts[1] + ...``, as a hand-written sum adds."""
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def torch_sum(k: int) -> Step:
    """The reference: torch's functionals, weighted and added by hand."""
    kernels = [TORCH_KERNELS[i % len(TORCH_KERNELS)] for i in range(k)]
    weights = [weight(i) for i in range(k)]

    def total(outputs: dict, batch: dict) -> torch.Tensor:
        return chain_sum(
            [
                w * fn(outputs[f"p{i}"], batch[f"t{i}"])
                for i, (fn, w) in enumerate(zip(kernels, weights, strict=True))
            ]
        )

    return total


def modules_sum(k: int) -> Step:
    """The same sum with lossmix's loss modules."""
    losses = [build_loss(TORCH_NODES[i % len(TORCH_NODES)]) for i in range(k)]
    weights = [weight(i) for i in range(k)]

    def total(outputs: dict, batch: dict) -> torch.Tensor:
        return chain_sum(
            [
                w * loss(outputs[f"p{i}"], batch[f"t{i}"])
                for i, (loss, w) in enumerate(zip(losses, weights, strict=True))
            ]
        )

    return total


def torch_mix(k: int) -> Step:
    """The same terms through ``LossMix``."""
    node = {
        f"t{i}": TORCH_NODES[i % len(TORCH_NODES)]
        | {"loss_weight": weight(i), "inputs": {"pred": f"p{i}", "target": f"t{i}"}}
        for i in range(k)
    }
    return _mix_step(LossMix.from_config(node))


def _mix_step(mix: LossMix) -> Step:
    def total(outputs: dict, batch: dict) -> torch.Tensor:
        return mix(outputs, batch, step=0).total

    return total


# -- the detection suite: normalisers on both sides ---------------------------------------------
def detection_node(i: int) -> dict:
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
    ][i % 4] | {"loss_weight": weight(i)}


def boxes(gen: torch.Generator) -> torch.Tensor:
    xy = torch.rand(N, 2, generator=gen) * 50
    return torch.cat([xy, xy + 1 + torch.rand(N, 2, generator=gen) * 20], dim=1)


def detection_data(k: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
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
            outputs[f"p{i}"] = torch.randn(N, 4, generator=gen)
            batch[f"t{i}"] = torch.randn(N, 4, generator=gen)
        else:
            outputs[f"p{i}"] = torch.randn(N, C, generator=gen)
            batch[f"t{i}"] = torch.randint(0, C, (N,), generator=gen)
        outputs[f"p{i}"].requires_grad_(True)
    return outputs, batch


def detection_modules(k: int) -> Step:
    """The sum a user would write: the same modules, weights and normalisers."""
    losses = [build_loss({"type": detection_node(i)["type"]}) for i in range(k)]
    weights = [weight(i) for i in range(k)]

    def total(outputs: dict, batch: dict) -> torch.Tensor:
        parts = []
        for i, (loss, w) in enumerate(zip(losses, weights, strict=True)):
            pred, target = outputs[f"p{i}"], batch[f"t{i}"]
            if i % 4 == 0:
                num_pos = (target < C).sum().clamp(min=1)
                parts.append(w * loss(pred, target, avg_factor=num_pos))
            elif i % 4 == 1:
                mask = batch[f"w{i}"]
                parts.append(w * loss(pred, target, weight=mask, avg_factor=mask.sum().clamp(min=1.0)))
            else:
                parts.append(w * loss(pred, target))
        return chain_sum(parts)

    return total


def detection_mix(k: int) -> Step:
    return _mix_step(LossMix.from_config({f"t{i}": detection_node(i) for i in range(k)}))


# -- measuring ------------------------------------------------------------------------------------
def time_steps(fn: Step, outputs: dict, batch: dict, steps: int) -> float:
    params = list(outputs.values())
    for _ in range(3):  # warm up (and compile)
        fn(outputs, batch).backward()
    # the thread's CPU time: tiny CPU tensors run forward and backward in this thread, so the
    # other processes of a shared machine are not counted (wall time would count them)
    start = time.thread_time()
    for _ in range(steps):
        for p in params:
            p.grad = None
        fn(outputs, batch).backward()
    return (time.thread_time() - start) / steps


def check_equal(fns: Sequence[Step], outputs: dict, batch: dict) -> None:
    values = [fn(outputs, batch) for fn in fns]
    for value in values[1:]:
        torch.testing.assert_close(value, values[0], rtol=1e-6, atol=1e-6)


def _own_code(fn: Step) -> Step:
    """``fn`` with a code object of its own, so Dynamo caches its compiled form apart."""
    code = fn.__code__.replace(co_name=f"{fn.__code__.co_name}_again")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


def interleaved(fns: Sequence[Step], outputs: dict, batch: dict, steps: int, rounds: int) -> list[float]:
    """Median over rounds of each ``fns[j]``'s time / ``fns[0]``'s, measured in the same round;
    the order reverses every other round (whichever runs later is favoured a little)."""
    ratios: list[list[float]] = [[] for _ in fns]
    order = list(range(len(fns)))
    for r in range(rounds):
        times = {j: time_steps(fns[j], outputs, batch, steps) for j in (order if r % 2 == 0 else order[::-1])}
        for j in order:
            ratios[j].append(times[j] / times[0])
    return [statistics.median(r) for r in ratios]


def guard_ratio(reference: Step, mix: Step, outputs: dict, batch: dict, calls: int = 2000) -> float | None:
    """Dynamo's guard check before each compiled call, ``mix``'s over ``reference``'s (``None``
    where this torch does not expose the cache entries)."""
    times = []
    for fn in (_own_code(reference), _own_code(mix)):
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


def torch_row(k: int, steps: int, rounds: int, compiled: bool) -> tuple[float, ...]:
    """modules / torch, LossMix / torch (and, compiled, the A/A floor and the guard ratio)."""
    outputs, batch = torch_data(k)
    reference, modules, mix = torch_sum(k), modules_sum(k), torch_mix(k)
    check_equal([reference, modules, mix], outputs, batch)
    if not compiled:
        _, mod, mixed = interleaved([reference, modules, mix], outputs, batch, steps, rounds)
        return mod, mixed
    # each its own code object: Dynamo caches compiled code per code object, and the closures
    # of one builder share theirs, so a K = 8 call would first check (and fail) the guards of
    # the K = 3 entry left by the row before
    again = torch_sum(k)
    fns = [torch.compile(_own_code(f)) for f in (reference, modules, mix, again)]
    _, mod, mixed, floor = interleaved(fns, outputs, batch, steps, rounds)
    guards = guard_ratio(torch_sum(k), torch_mix(k), outputs, batch)
    return mod, mixed, floor, (float("nan") if guards is None else guards)


def detection_row(k: int, steps: int, rounds: int, compiled: bool) -> float:
    outputs, batch = detection_data(k)
    hand, mix = detection_modules(k), detection_mix(k)
    check_equal([hand, mix], outputs, batch)
    if compiled:
        hand, mix = torch.compile(_own_code(hand)), torch.compile(_own_code(mix))
    return interleaved([hand, mix], outputs, batch, steps, rounds)[1]


def _x(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.3f}×"


def measure(k: int, steps: int, rounds: int, compiled: bool) -> tuple[list, list]:
    """K's row of each table: (K, modules / torch and LossMix / torch eager[, compiled, A/A,
    guard check]) and (K, detection eager, compiled)."""
    eager = torch_row(k, steps, rounds, compiled=False)
    comp = torch_row(k, steps, rounds, compiled=True) if compiled else (None,) * 4
    det_eager = detection_row(k, steps, rounds, compiled=False)
    det_comp = detection_row(k, steps, rounds, compiled=True) if compiled else None
    return [k, *eager, *comp], [k, det_eager, det_comp]


def in_own_process(k: int, args: argparse.Namespace) -> tuple[list, list]:
    """:func:`measure` in a fresh interpreter: what one K compiled and allocated (Dynamo's
    caches, Inductor's loaded kernels, the allocator's state) does not weigh on the next."""
    command = [sys.executable, __file__, "--one", str(k), "--steps", str(args.steps)]
    command += ["--rounds", str(args.rounds)] + (["--no-compile"] if args.no_compile else [])
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    row, det_row = json.loads(done.stdout.strip().splitlines()[-1])
    return row, det_row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # many short rounds: a burst of the shared machine's load spoils few of them, and the
    # median of the per-round ratios ignores those
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--ks", type=int, nargs="+", default=[3, 8, 32])
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: one K, as JSON
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    if args.one is not None:
        print(json.dumps(measure(args.one, args.steps, args.rounds, not args.no_compile)))
        return
    rows, det_rows = [], []
    for k in args.ks:
        row, det_row = in_own_process(k, args)
        rows.append(row)
        det_rows.append(det_row)
        _, mod, mixed, *comp = row
        print(
            f"K={k:>2}: modules/torch eager {_x(mod)}  LossMix/torch eager {_x(mixed)}"
            + ("" if args.no_compile else f"  compiled {_x(comp[0])} {_x(comp[1])} A/A {_x(comp[2])}")
        )
        print(f"      detection LossMix/modules eager {_x(det_row[1])}  compiled {_x(det_row[2])}")
    body = (
        "Forward + backward of the same weighted sum of K terms (values checked equal to 1e-6), "
        f"tiny tensors ({N} × {C} per term), median of the per-round ratios of {args.rounds} "
        f"interleaved rounds of {args.steps} steps (the order reversing every other round), each "
        "K in a fresh process. "
        "Reference: the sum written by hand with torch's functionals (`F.l1_loss`, `F.mse_loss`, "
        "`F.smooth_l1_loss`, `F.binary_cross_entropy_with_logits`, `F.cross_entropy`, cycling); "
        "modules: the same sum with lossmix's loss modules; LossMix: the same terms through "
        "`LossMix`. Targets at K = 8: modules / torch ≤ 1.15× eager, LossMix / torch ≤ 1.3× eager "
        "and ≤ 1.05× compiled. Compiled A/A: a second, identical compiled torch sum in the "
        "measured place (the noise floor of the compiled columns). Guard check: Dynamo's check "
        "of the guards before each compiled call, `LossMix` over the torch sum (the same kernels "
        "run after it).\n\n"
        "| K terms | modules / torch, eager | LossMix / torch, eager | modules / torch, compiled "
        "| LossMix / torch, compiled | compiled A/A | guard check |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(f"| {k} | " + " | ".join(_x(v) for v in values) + " |" for k, *values in rows)
        + "\n\nThe detection set (focal with `num_pos`, GIoU with a `weight_sum` normaliser, smooth "
        "L1, cross-entropy): `LossMix` against the same lossmix modules and normalisers written "
        "by hand, so the normalisers' own work is on both sides.\n\n"
        "| K terms | LossMix / modules, eager | LossMix / modules, compiled |\n|---|---|---|\n"
        + "\n".join(f"| {k} | {_x(e)} | {_x(c)} |" for k, e, c in det_rows)
    )
    if args.write:
        command = (
            "python benchmarks/engine_overhead.py"
            + (" --no-compile" if args.no_compile else "")
            + f" --steps {args.steps} --rounds {args.rounds} --ks {' '.join(map(str, args.ks))} --write"
        )
        write_section("engine_overhead", command, body)


if __name__ == "__main__":
    main()
