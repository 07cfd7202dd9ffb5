"""``lossmix calibrate``: the term weights that balance a mix, measured before any training.

Runs ``batches`` training batches of the app (the same config and overrides as
``python -m lossmix.train``; no optimizer step), and measures for every term ``i`` of the
total its raw value ``L_i`` (before its weight) and the norm of its gradient on the shared
parameters ``g_i = ‖∇_θ L_i‖`` (one backward per term and batch), each averaged over the
batches (and, under DDP, over the ranks: one collective). The weights that give each term
its target share ``s_i`` (default ``1/n``) of the chosen statistic ``x`` (``g``: gradient
norm, the default; or ``L``: loss value) are

    w_i = s_i · (Σ_j w⁰_j x_j) / x_i

with ``w⁰`` the current weights: the weighted sum ``Σ w_i x_i`` is kept, so the gradient's
overall scale (and the learning rate that suits it) does not change, and each weighted term
holds ``w_i x_i / Σ_j w_j x_j = s_i``.

**Shared parameters**: see :mod:`lossmix.app.term_statistics`, which measures.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lossmix.app.term_statistics import TermStatistics, term_statistics
from lossmix.errors import LossConfigError, did_you_mean

__all__ = [
    "STATISTICS",
    "CalibrationResult",
    "calibrate",
    "calibrated_weights",
    "parse_shares",
    "print_calibration",
    "run_command",
]

#: what the weights can equalise: the gradient norm on the shared parameters, or the loss value
STATISTICS = ("grad_norm", "loss")


@dataclass(frozen=True)
class CalibrationResult:
    """What :func:`calibrate` measured and the weights it proposes.

    Attributes:
        by: the statistic the weights equalise (``grad_norm`` or ``loss``).
        batches: how many batches were measured (per rank).
        shared: names of the shared parameters the gradient norms are taken on.
        terms: the measurements, one per term of the total.
        target: each term's target share of the weighted statistic (sums to 1).
        weights: the calibrated weights.
    """

    by: str
    batches: int
    shared: tuple[str, ...]
    terms: tuple[TermStatistics, ...]
    target: dict[str, float]
    weights: dict[str, float]

    def shares(self, by: str | None = None, weights: Mapping[str, float] | None = None) -> dict[str, float]:
        """Each term's share ``w_i x_i / Σ_j w_j x_j`` of statistic ``by`` (default: the
        calibrated one) under ``weights`` (default: the config's current weights)."""
        by = by or self.by
        parts = {t.name: abs((weights or {}).get(t.name, t.weight) * t.value(by)) for t in self.terms}
        whole = sum(parts.values())
        return {k: (v / whole if whole > 0 else math.nan) for k, v in parts.items()}

    def override_line(self) -> str:
        """The weights as Hydra overrides: ``loss.cls.loss_weight=... loss.reg.loss_weight=...``."""
        return " ".join(f"loss.{name}.loss_weight={_short(w)}" for name, w in self.weights.items())

    def to_dict(self) -> dict[str, Any]:
        """Plain containers: the weights as a ``loss`` node, the measurements, the override line."""
        return {
            "loss": {name: {"loss_weight": float(_short(w))} for name, w in self.weights.items()},
            "overrides": self.override_line(),
            "by": self.by,
            "batches": self.batches,
            "shared_parameters": len(self.shared),
            "terms": {
                t.name: {
                    "weight": t.weight,
                    "loss": t.loss,
                    "grad_norm": t.grad_norm,
                    "share_before": self.shares(weights={})[t.name],
                    "share_after": self.shares(weights=self.weights)[t.name],
                }
                for t in self.terms
            },
        }

    def write(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as YAML (merge it into a config, or copy the override line)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(OmegaConf.to_yaml(OmegaConf.create(self.to_dict())))
        return target


def _short(value: float) -> str:
    return f"{value:.4g}"


def parse_shares(text: str | None) -> dict[str, float] | None:
    """``cls=0.5,reg=0.3,ctr=0.2`` → ``{"cls": 0.5, ...}`` (``None`` stays ``None``).

    Raises:
        LossConfigError: an entry is not ``term=number``.
    """
    if text is None:
        return None
    shares: dict[str, float] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, sep, value = entry.partition("=")
        try:
            shares[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise LossConfigError(
                f"--share entry '{entry}' is not term=number; write e.g. --share cls=0.5,reg=0.3,ctr=0.2."
            )
    return shares


def _target_shares(names: Sequence[str], shares: Mapping[str, float] | None) -> dict[str, float]:
    if not shares:
        return {name: 1.0 / len(names) for name in names}
    for name in shares:
        if name not in names:
            raise LossConfigError(
                f"--share names term '{name}', which is not in the loss total.{did_you_mean(name, names)} "
                f"Terms: {', '.join(names)}."
            )
    missing = [n for n in names if n not in shares]
    if missing:
        raise LossConfigError(
            f"--share gives no share for term(s) {', '.join(missing)}; give every term one, "
            f"e.g. --share {','.join(f'{n}={1 / len(names):.2g}' for n in names)}."
        )
    bad = [n for n in names if not shares[n] > 0 or not math.isfinite(shares[n])]
    if bad:
        raise LossConfigError(f"--share for term '{bad[0]}' is {shares[bad[0]]}; a share must be > 0.")
    whole = sum(shares[n] for n in names)
    return {n: shares[n] / whole for n in names}


def calibrated_weights(
    terms: Sequence[TermStatistics], by: str = "grad_norm", shares: Mapping[str, float] | None = None
) -> dict[str, float]:
    """The weights ``w_i = s_i · (Σ_j w⁰_j x_j) / x_i`` (see the module doc).

    Args:
        terms: the measurements (:func:`term_statistics`).
        by: the statistic ``x``: ``grad_norm`` or ``loss``.
        shares: target shares by term (normalised to sum 1); default equal.

    Raises:
        LossConfigError: an unknown ``by``, a share for an unknown term, or a term whose
            statistic is zero (it has no gradient on the shared parameters, say).

    >>> t = [TermStatistics("a", 1.0, 2.0, 4.0), TermStatistics("b", 1.0, 1.0, 1.0)]
    >>> calibrated_weights(t)
    {'a': 0.625, 'b': 2.5}
    """
    if by not in STATISTICS:
        raise LossConfigError(f"--by {by!r} is not valid; use one of: {', '.join(STATISTICS)}.")
    target = _target_shares([t.name for t in terms], shares)
    for t in terms:
        if not abs(t.value(by)) > 0:
            raise LossConfigError(
                f"term '{t.name}': its {by} is {t.value(by)} on the calibration batches, so no weight "
                "can give it a share; measure more batches (--batches), or pick --by loss or "
                "--shared MODULE."
            )
    whole = sum(abs(t.weight * t.value(by)) for t in terms)
    return {t.name: target[t.name] * whole / abs(t.value(by)) for t in terms}


def calibrate(
    cfg: DictConfig,
    *,
    batches: int = 8,
    by: str = "grad_norm",
    shares: Mapping[str, float] | None = None,
    shared: str | None = None,
    overrides: Sequence[str] | None = None,
) -> CalibrationResult:
    """Measure a composed training config's terms on ``batches`` batches and calibrate them.

    The config is checked and built as the app does (:func:`lossmix.app.runner.build`, seeded
    with its ``seed``: the same config gives the same weights); the batches are the first of
    the datamodule's training loader, on the trainer's device; nothing is trained or written.

    Args:
        cfg: the composed config (``lossmix.app.compose.compose_config``).
        batches: how many batches to average over.
        by: ``grad_norm`` (default) or ``loss``: the statistic the weights equalise.
        shares: target shares by term (default equal), e.g. ``{"cls": 0.5, "reg": 0.5}``.
        shared: a submodule to measure the gradients on (default: see the module doc).
        overrides: the command line's overrides (grants), as for :func:`~lossmix.app.runner.build`.

    Returns:
        a :class:`CalibrationResult` (its ``override_line()`` and ``write(path)``).
    """
    from lightning.fabric.utilities.apply_func import move_data_to_device

    from lossmix.app.runner import build

    if batches < 1:
        raise LossConfigError(f"--batches {batches} is not valid; measure at least 1 batch.")
    if by not in STATISTICS:
        raise LossConfigError(f"--by {by!r} is not valid; use one of: {', '.join(STATISTICS)}.")
    loss = cfg.get("loss") or {}
    if shares:  # before anything is built: a share for a term the config does not have
        _target_shares([str(k) for k, v in loss.items() if v is not None and v.get("in_total", True)], shares)
    cfg = cfg.copy()
    with tempfile.TemporaryDirectory(prefix="lossmix-calibrate-") as scratch:
        OmegaConf.update(cfg, "paths.output_dir", scratch, force_add=True)
        datamodule, model, trainer = build(cfg, list(overrides or []))
        device = trainer.strategy.root_device
        model.to(device).train()
        if datamodule is None:
            raise LossConfigError("calibrate needs the config's 'data' node (a LightningDataModule).")
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()
        taken = (move_data_to_device(b, device) for _, b in zip(range(batches), loader, strict=False))
        terms, shared_names = term_statistics(model, taken, shared=shared)
    weights = calibrated_weights(terms, by, shares)
    target = _target_shares([t.name for t in terms], shares)
    return CalibrationResult(by, batches, shared_names, tuple(terms), target, weights)


def print_calibration(result: CalibrationResult, console: Any = None) -> None:
    """The table of shares (which term dominates now, and after calibration) and the override line."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    before_g, before_l = result.shares("grad_norm", {}), result.shares("loss", {})
    after = result.shares(weights=result.weights)
    table = Table(
        title=f"lossmix calibrate: {result.batches} batches, {len(result.shared)} shared parameters"
    )
    for column in (
        "term",
        "weight",
        "loss",
        "grad norm",
        "grad share",
        "loss share",
        "new weight",
        "new share",
    ):
        table.add_column(column, justify="left" if column == "term" else "right")
    for t in result.terms:
        table.add_row(
            t.name,
            _short(t.weight),
            f"{t.loss:.4g}",
            f"{t.grad_norm:.4g}",
            f"{100 * before_g[t.name]:.1f} %",
            f"{100 * before_l[t.name]:.1f} %",
            _short(result.weights[t.name]),
            f"{100 * after[t.name]:.1f} %",
        )
    console.print(table)
    top = max(before_g, key=lambda k: before_g[k])
    console.print(
        f"Dominant term today: {top} ({100 * before_g[top]:.1f} % of the gradient on the shared parameters).",
        highlight=False,
    )
    console.print(f"Weights equalising {result.by} ('new share'):", highlight=False)
    console.print(result.override_line(), markup=False, highlight=False, soft_wrap=True)


def run_command(
    console: Any,
    overrides: Sequence[str],
    *,
    batches: int = 8,
    by: str = "grad_norm",
    share: str | None = None,
    shared: str | None = None,
    out: str = "calibration.yaml",
    config_name: str | None = None,
    config_dir: str | None = None,
) -> int:
    """``lossmix calibrate [options] [overrides...]``: compose, calibrate, print, write the YAML."""
    import os
    import sys

    from lossmix.app.compose import compose_config

    if config_dir is not None and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # the app's own packages, as `python -m` would find them
    cfg = compose_config(overrides, config_name, config_dir)
    result = calibrate(
        cfg, batches=batches, by=by, shares=parse_shares(share), shared=shared, overrides=list(overrides)
    )
    print_calibration(result, console)
    path = result.write(out)
    console.print(f"Written: {path}", highlight=False)
    return 0
