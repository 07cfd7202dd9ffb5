"""The main job's demo: a small dense detector and the synthetic data it trains on.

They live in the package (not in ``examples/``) so ``python -m lossmix.train`` works
after ``pip install lossmix``.
"""

from lossmix.demo.boxes import SyntheticBoxDataset, SyntheticBoxes
from lossmix.demo.detector import DenseDetector

__all__ = ["DenseDetector", "SyntheticBoxDataset", "SyntheticBoxes"]
