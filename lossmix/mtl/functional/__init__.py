"""Pure multi-task kernels: a task Jacobian ``(K, D)`` or its Gramian ``(K, K)`` mapped to an
update or to task weights (:mod:`~lossmix.mtl.functional.aggregators`), the small exact
solvers they use (:mod:`~lossmix.mtl.functional.solvers`), gradient surgery
(:mod:`~lossmix.mtl.functional.surgery`) and the stateful stochastic steps
(:mod:`~lossmix.mtl.functional.stochastic`); no host sync.

Gramians and solvers run in :func:`exact_dtype` (float64) whatever the model's dtype;
the weights come back in the Gramian's dtype and :func:`combine` forms ``wᵀJ`` in
float64 before casting back to ``J``'s dtype.
"""

from lossmix.mtl.functional.aggregators import (
    aligned_mtl,
    aligned_mtl_weights,
    cagrad,
    combine,
    config_weights,
    db_mtl,
    db_mtl_weights,
    gradient_conflicts,
    gramian,
    imtl_g,
    imtl_g_weights,
    mgda,
    nash_mtl,
    upgrad,
)
from lossmix.mtl.functional.solvers import (
    MAX_EXACT_TASKS,
    cagrad_weights,
    clip_update,
    dualproj_weights,
    exact_dtype,
    fairgrad_weights,
    mgda_weights,
    nash_mtl_weights,
    sdmgrad_weights,
    upgrad_weights,
)
from lossmix.mtl.functional.stochastic import excess_mtl_step, moco_step, modo_step, simplex_projection
from lossmix.mtl.functional.surgery import (
    graddrop,
    gradvac,
    gradvac_weights,
    pcgrad,
    pcgrad_weights,
)

__all__ = [
    "MAX_EXACT_TASKS",
    "aligned_mtl",
    "aligned_mtl_weights",
    "cagrad",
    "cagrad_weights",
    "clip_update",
    "combine",
    "config_weights",
    "db_mtl",
    "db_mtl_weights",
    "dualproj_weights",
    "exact_dtype",
    "excess_mtl_step",
    "fairgrad_weights",
    "graddrop",
    "gradient_conflicts",
    "gradvac",
    "gradvac_weights",
    "gramian",
    "imtl_g",
    "imtl_g_weights",
    "mgda",
    "mgda_weights",
    "moco_step",
    "modo_step",
    "nash_mtl",
    "nash_mtl_weights",
    "pcgrad",
    "pcgrad_weights",
    "sdmgrad_weights",
    "simplex_projection",
    "upgrad",
    "upgrad_weights",
]
