"""Fused kernels: the loss and its gradient in one forward pass.

:func:`fused_sigmoid_focal_loss`, :func:`fused_cross_entropy` and :func:`fused_giou_loss`
return what :func:`~lossmix.functional.sigmoid_focal_loss`,
:func:`~lossmix.functional.cross_entropy` and :func:`~lossmix.functional.giou_loss` return
(element-wise, unreduced), through a :class:`torch.autograd.Function` whose forward also
computes :math:`\\partial \\ell / \\partial \\text{pred}` in closed form and keeps that one
buffer; backward multiplies it by the incoming gradient. Autograd records one node instead
of the plain formula's dozens, keeps one buffer of ``pred``'s shape (and references to the
inputs, for double backward) instead of the plain formula's saved intermediates, and its
backward is one multiplication. Element weights and the reduction stay the template's, so
every reduction, weight shape and ``avg_factor`` behaves as on the plain path.

* **Values** come from the plain kernel's own operations: bitwise equal for class-index
  targets, within float rounding for soft targets. Gradients agree to float rounding.
* **Double backward** (``create_graph=True``, ``gradgradcheck``, a penalty on a gradient):
  backward then differentiates the plain formula instead, so every order is exact.
* ``torch.compile(fullgraph=True)``, ``torch.func.grad`` and ``torch.func.vmap`` trace the
  Functions (``setup_context``, a generated vmap rule). **Forward-mode AD** (``torch.func.jvp``,
  ``jacfwd``, ``hessian``) is not implemented: Dynamo refuses a Function with a custom
  ``jvp``; the automatic rule keeps the plain path inside ``torch.func`` transforms.
* **Half precision** is computed in float32 and rounded to ``pred``'s dtype; the plain focal
  and cross-entropy round after every operation instead, so the two differ by that rounding.

:func:`fused_applies` is the rule the losses use to choose between the two paths.
"""

from __future__ import annotations

from lossmix.functional.fused.cross_entropy import fused_cross_entropy
from lossmix.functional.fused.focal import fused_sigmoid_focal_loss
from lossmix.functional.fused.function import (
    AUTOMATIC_MIN_NUMEL,
    FUSED_DTYPES,
    MEASURED_FASTER,
    fused_applies,
)
from lossmix.functional.fused.iou import fused_giou_loss

__all__ = [
    "AUTOMATIC_MIN_NUMEL",
    "FUSED_DTYPES",
    "MEASURED_FASTER",
    "fused_applies",
    "fused_cross_entropy",
    "fused_giou_loss",
    "fused_sigmoid_focal_loss",
]
