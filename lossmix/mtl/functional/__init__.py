"""Pure multi-task kernels: a task Jacobian ``(K, D)`` or its Gramian ``(K, K)`` mapped to an
update or to task weights (:mod:`~lossmix.mtl.functional.aggregators`), the small exact
solvers they use (:mod:`~lossmix.mtl.functional.solvers`) and gradient surgery
(:mod:`~lossmix.mtl.functional.surgery`); no host sync.
"""

from lossmix.mtl.functional.aggregators import (
    aligned_mtl,
    aligned_mtl_weights,
    cagrad,
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
    mgda_weights,
    nash_mtl_weights,
    upgrad_weights,
)
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
    "db_mtl",
    "db_mtl_weights",
    "graddrop",
    "gradient_conflicts",
    "gradvac",
    "gradvac_weights",
    "gramian",
    "imtl_g",
    "imtl_g_weights",
    "mgda",
    "mgda_weights",
    "nash_mtl",
    "nash_mtl_weights",
    "pcgrad",
    "pcgrad_weights",
    "upgrad",
    "upgrad_weights",
]
