"""Pure element-wise loss kernels, one family per file.

Every kernel takes ``(pred, target, *, hyper-parameters)`` and returns an
unreduced tensor; none of them syncs with the host or branches on data, so
they compile with ``torch.compile(fullgraph=True)``.
"""

from lossmix.functional import adversarial, cross_entropy, dice, focal, ghm, iou, regression
from lossmix.functional.adversarial import *  # noqa: F403
from lossmix.functional.cross_entropy import *  # noqa: F403
from lossmix.functional.dice import *  # noqa: F403
from lossmix.functional.focal import *  # noqa: F403
from lossmix.functional.ghm import *  # noqa: F403
from lossmix.functional.iou import *  # noqa: F403
from lossmix.functional.regression import *  # noqa: F403

__all__ = [
    *adversarial.__all__,
    *cross_entropy.__all__,
    *dice.__all__,
    *focal.__all__,
    *ghm.__all__,
    *iou.__all__,
    *regression.__all__,
]
