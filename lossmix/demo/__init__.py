"""The main job's demos: small models and the synthetic data they train on.

They live in the package (not in ``examples/``) so ``python -m lossmix.train`` works
after ``pip install lossmix``; the scripts in ``examples/`` import them too.

One per experiment of the app (``experiment=<name>``):

* ``detection`` (the default): :class:`DenseDetector` on :class:`SyntheticBoxes`;
* ``segmentation`` and ``custom``: :class:`Segmenter` on :class:`SyntheticShapes`;
* ``gan`` and ``stylegan2``: :class:`ToyGAN` on :class:`SyntheticRing` (``gen`` and ``disc``
  groups; ``stylegan2`` adds the generator's path-length regulariser);
* ``inpainting``: :class:`ToyInpainter` on :class:`SyntheticInpainting` (MMagic's
  inpainting losses, ``gen`` and ``disc`` groups);
* ``multitask``: :class:`TwoTasks` on :class:`SyntheticTasks` (dynamic task weighting).

``lossmix.demo.custom_losses`` (the ``custom`` experiment's losses) is not imported
here: it stands for user code, which the app imports through ``lossmix.imports``.
"""

from lossmix.demo.boxes import SyntheticBoxDataset, SyntheticBoxes
from lossmix.demo.detector import DenseDetector
from lossmix.demo.gan import SyntheticRing, ToyGAN, ToyGenerator, ring
from lossmix.demo.inpainting import SyntheticInpainting, SyntheticInpaintingDataset, ToyInpainter
from lossmix.demo.multitask import SyntheticTasks, TwoTasks, two_task_dataset
from lossmix.demo.segmentation import Segmenter, SyntheticShapeDataset, SyntheticShapes

__all__ = [
    "DenseDetector",
    "Segmenter",
    "SyntheticBoxDataset",
    "SyntheticBoxes",
    "SyntheticInpainting",
    "SyntheticInpaintingDataset",
    "SyntheticRing",
    "SyntheticShapeDataset",
    "SyntheticShapes",
    "SyntheticTasks",
    "ToyGAN",
    "ToyGenerator",
    "ToyInpainter",
    "TwoTasks",
    "ring",
    "two_task_dataset",
]
