"""Pure element-wise loss kernels, one family per file, and the gradient aggregators.

Every kernel takes ``(pred, target, *, hyper-parameters)`` and returns an
unreduced tensor; none of them syncs with the host or branches on data, so
they compile with ``torch.compile(fullgraph=True)``. The aggregators
(:mod:`~lossmix.functional.aggregators`, :mod:`~lossmix.functional.surgery`, solvers in
:mod:`~lossmix.functional.multi_objective`) map a task Jacobian ``(K, D)`` or its
Gramian ``(K, K)`` to an update or to task weights, with no host sync either.
"""

from lossmix.functional import adversarial as _adversarial
from lossmix.functional import aggregators as _aggregators
from lossmix.functional import asymmetric as _asymmetric
from lossmix.functional import class_balance as _class_balance
from lossmix.functional import cross_entropy as _cross_entropy
from lossmix.functional import dice as _dice
from lossmix.functional import embedding as _embedding
from lossmix.functional import focal as _focal
from lossmix.functional import fused as _fused
from lossmix.functional import ghm as _ghm
from lossmix.functional import heatmap as _heatmap
from lossmix.functional import image as _image
from lossmix.functional import iou as _iou
from lossmix.functional import iou_shape as _iou_shape
from lossmix.functional import long_tail as _long_tail
from lossmix.functional import lovasz as _lovasz
from lossmix.functional import multi_objective as _multi_objective
from lossmix.functional import path as _path
from lossmix.functional import regression as _regression
from lossmix.functional import surgery as _surgery
from lossmix.functional.adversarial import *  # noqa: F403
from lossmix.functional.aggregators import *  # noqa: F403
from lossmix.functional.asymmetric import *  # noqa: F403
from lossmix.functional.class_balance import *  # noqa: F403
from lossmix.functional.cross_entropy import *  # noqa: F403
from lossmix.functional.dice import *  # noqa: F403
from lossmix.functional.embedding import *  # noqa: F403
from lossmix.functional.focal import *  # noqa: F403
from lossmix.functional.fused import *  # noqa: F403
from lossmix.functional.ghm import *  # noqa: F403
from lossmix.functional.heatmap import *  # noqa: F403
from lossmix.functional.image import *  # noqa: F403
from lossmix.functional.iou import *  # noqa: F403
from lossmix.functional.iou_shape import *  # noqa: F403
from lossmix.functional.long_tail import *  # noqa: F403
from lossmix.functional.lovasz import *  # noqa: F403
from lossmix.functional.multi_objective import *  # noqa: F403
from lossmix.functional.path import *  # noqa: F403
from lossmix.functional.regression import *  # noqa: F403
from lossmix.functional.surgery import *  # noqa: F403

__all__ = [
    *_adversarial.__all__,
    *_aggregators.__all__,
    *_asymmetric.__all__,
    *_class_balance.__all__,
    *_cross_entropy.__all__,
    *_dice.__all__,
    *_embedding.__all__,
    *_focal.__all__,
    *_fused.__all__,
    *_ghm.__all__,
    *_heatmap.__all__,
    *_image.__all__,
    *_iou.__all__,
    *_iou_shape.__all__,
    *_long_tail.__all__,
    *_lovasz.__all__,
    *_path.__all__,
    *_multi_objective.__all__,
    *_regression.__all__,
    *_surgery.__all__,
]
