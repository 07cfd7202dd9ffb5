"""Gradient aggregators as modules: one per method, built from the ``aggregation:`` node.

Each is a thin module over a pure function of :mod:`lossmix.functional` (the template is
:mod:`~lossmix.mtl.aggregators.base`, the methods :mod:`~lossmix.mtl.aggregators.methods` and
:mod:`~lossmix.mtl.aggregators.stateful`);
its state (GradVac's cosine targets, DB-MTL's gradient average, MoDo's and MoCo's weights,
the random generators)
is in buffers or the extra state, so checkpoints carry it. They live in
:data:`~lossmix.registry.registry.AGGREGATORS` (``lossmix list`` describes them).

============ ============================================= ====================== =========
``type``     update ``d`` (rows of ``J``: task gradients)  ``Σ weights``          Gramian
============ ============================================= ====================== =========
sum          ``Σ g_i`` (the plain backward)                 K                      yes
pcgrad       conflicting components projected away          ≥ K                    yes
cagrad       best worst case in a ball around the mean      1 + c‖ḡ‖/‖Jᵀw*‖        yes
mgda         min-norm point of the convex hull              1                      yes
sdmgrad      MGDA pulled towards the mean by ``λ``          1                      yes
imtl_g       equal projections on the unit gradients        1                      yes
aligned_mtl  rows made orthogonal, all of one norm          scaled by σ            yes
upgrad       mean of projections on the dual cone           ≥ 1                    yes
dualproj     the mean projected on the dual cone            ≥ 1                    yes
config       equal cosines, summed projection length        free                   yes
nash_mtl     Nash bargaining ``α ⊙ Gα = 1``                 free (clipped norm)    yes
fairgrad     α-fair utilities ``Gw = w^{-1/α}``             free                   yes
gradvac      cosines lifted to running targets              ≈ K                    yes†
modo         ``λ`` moved one projected step per update      1                      yes
graddrop     one sign kept per coordinate                   —                      no
db_mtl       log-loss gradients, averaged, max-norm scaled  —                      no
moco         tracked gradients, softmax weights             1 (on tracked rows)    no
excess_mtl   weights raised by estimated excess risk        K                      no
============ ============================================= ====================== =========

(†: ``group: whole`` only; likewise MGDA with ``normalize: loss`` or ``loss+`` needs
``over: shared``.)

A method with a Gramian form implements :meth:`BaseAggregator.weights` and can run
``over: representation``; the others override :meth:`BaseAggregator.combine`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lossmix.errors import LossConfigError
from lossmix.mtl.aggregators.base import AGGREGATION_KEY, BaseAggregator, SeededAggregator
from lossmix.mtl.aggregators.methods import (
    IMTLG,
    MGDA,
    AlignedMTL,
    CAGrad,
    ConFIG,
    DualProj,
    FairGrad,
    GradDrop,
    NashMTL,
    PCGrad,
    SDMGrad,
    Sum,
    UPGrad,
)
from lossmix.mtl.aggregators.stateful import DBMTL, ExcessMTL, GradVac, MoCo, MoDo
from lossmix.registry.registry import AGGREGATORS

__all__ = [
    "AGGREGATION_KEY",
    "AGGREGATORS",
    "DBMTL",
    "IMTLG",
    "MGDA",
    "AlignedMTL",
    "BaseAggregator",
    "CAGrad",
    "ConFIG",
    "DualProj",
    "ExcessMTL",
    "FairGrad",
    "GradDrop",
    "GradVac",
    "MoCo",
    "MoDo",
    "NashMTL",
    "PCGrad",
    "SDMGrad",
    "SeededAggregator",
    "Sum",
    "UPGrad",
    "build_aggregator",
    "representation_methods",
]


def representation_methods() -> list[str]:
    """Registered methods with a Gramian form (those ``over: representation`` accepts)."""
    return [n for n in AGGREGATORS.names() if AGGREGATORS.get(n).has_gramian_form()]


def build_aggregator(
    node: Any, tasks: Sequence[str], *, allowed_targets: Sequence[str] = ()
) -> BaseAggregator:
    """Build from ``{type: upgrad, **args}`` (or an allowed ``_target_``) over ``tasks``."""
    if isinstance(node, BaseAggregator):
        return node
    try:
        aggregator: BaseAggregator = AGGREGATORS.build(
            node, allowed_targets=allowed_targets, tasks=list(tasks)
        )
    except LossConfigError as err:
        message = str(err)
        prefix = f"{AGGREGATION_KEY}: "
        raise LossConfigError(message if message.startswith(prefix) else prefix + message) from err
    return aggregator
