"""Synthetic detection data: coloured rectangles on noise, with dense per-location targets.

Every image holds 1 to ``max_objects`` axis-aligned rectangles, each filled with its
class's colour, on Gaussian noise. Targets follow FCOS: the feature map has one
location every ``stride`` pixels; a location whose centre lies inside a box is a
positive of that box (the smallest one when several cover it), every other location
is background.

Per image (``L = (image_size / stride) ** 2`` locations, ``C = num_classes``):

=====================  ==========  =====================================================
``image``              (3, S, S)   float image
``labels``             (L,)        class index, ``C`` for background
``box_targets``        (L, 4)      the assigned box ``(x1, y1, x2, y2)`` in pixels (a unit
                                   box around the location for background)
``centerness_targets`` (L,)        FCOS centerness of the location in its box, 0 for background
``pos_mask``           (L,)        1.0 at positives, 0.0 elsewhere
=====================  ==========  =====================================================
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from lossmix.demo.data import SyntheticDataModule

__all__ = ["SyntheticBoxDataset", "SyntheticBoxes", "location_centers"]


def location_centers(image_size: int, stride: int) -> Tensor:
    """Pixel centres ``(L, 2)`` as ``(x, y)`` of the feature locations, row-major."""
    side = image_size // stride
    coords = (torch.arange(side, dtype=torch.float32) + 0.5) * stride
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=1)


def _check_sizes(num_classes: int, image_size: int, stride: int, max_objects: int) -> None:
    if num_classes < 1 or max_objects < 1:
        raise ValueError(f"num_classes={num_classes} and max_objects={max_objects} must be >= 1.")
    if stride < 1 or image_size % stride or image_size < 4 * stride:
        raise ValueError(
            f"image_size={image_size} must be a multiple of stride={stride} and at least 4 strides."
        )


class SyntheticBoxDataset(Dataset[dict[str, Tensor]]):
    """``num_images`` synthetic detection images, generated once from ``seed``.

    The class colours come from ``palette_seed`` so that sets drawn with different
    seeds (train and validation) share them.
    """

    def __init__(
        self,
        num_images: int,
        *,
        num_classes: int = 3,
        image_size: int = 32,
        stride: int = 4,
        max_objects: int = 3,
        seed: int = 0,
        palette_seed: int = 0,
    ) -> None:
        _check_sizes(num_classes, image_size, stride, max_objects)
        self.num_classes, self.image_size, self.stride = num_classes, image_size, stride
        palette = torch.Generator().manual_seed(palette_seed)
        self.colours = torch.rand(num_classes, 3, generator=palette) * 2 - 1
        generator = torch.Generator().manual_seed(seed)
        centers = location_centers(image_size, stride)
        items = [self._make(generator, centers, max_objects) for _ in range(num_images)]
        self.items = {key: torch.stack([item[key] for item in items]) for key in items[0]}

    def _make(self, generator: torch.Generator, centers: Tensor, max_objects: int) -> dict[str, Tensor]:
        size = self.image_size
        image = torch.randn(3, size, size, generator=generator) * 0.3
        count = int(torch.randint(1, max_objects + 1, (), generator=generator))
        low, high = max(2 * self.stride, size // 5), max(2 * self.stride + 1, size // 2)
        wh = torch.randint(low, high + 1, (count, 2), generator=generator)
        x1y1 = (torch.rand(count, 2, generator=generator) * (size - wh)).floor()
        boxes = torch.cat([x1y1, x1y1 + wh], dim=1).float()
        classes = torch.randint(0, self.num_classes, (count,), generator=generator)
        for box, cls in zip(boxes.long().tolist(), classes.tolist(), strict=True):
            image[:, box[1] : box[3], box[0] : box[2]] += self.colours[cls, :, None, None]
        return {"image": image, **self._targets(boxes, classes, centers)}

    def _targets(self, boxes: Tensor, classes: Tensor, centers: Tensor) -> dict[str, Tensor]:
        x, y = centers[:, :1], centers[:, 1:]
        ltrb = torch.stack(
            [x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], dim=-1
        )  # (L, objects, 4)
        inside = ltrb.min(dim=-1).values > 0
        area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).expand_as(inside)
        best = torch.where(inside, area, torch.inf).argmin(dim=1)
        positive = inside.any(dim=1)
        rows = torch.arange(len(centers))
        chosen = ltrb[rows, best]
        lr, tb = chosen[:, [0, 2]], chosen[:, [1, 3]]
        centerness = (
            (lr.min(1).values / lr.max(1).values).clamp(min=0)
            * (tb.min(1).values / tb.max(1).values).clamp(min=0)
        ).sqrt()
        unit = torch.cat([centers - 1.0, centers + 1.0], dim=1)
        return {
            "labels": torch.where(positive, classes[best], self.num_classes),
            "box_targets": torch.where(positive[:, None], boxes[best], unit),
            "centerness_targets": torch.where(positive, centerness, 0.0),
            "pos_mask": positive.float(),
        }

    def __len__(self) -> int:
        return len(self.items["image"])

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {key: value[index] for key, value in self.items.items()}


class SyntheticBoxes(SyntheticDataModule[dict[str, Tensor]]):
    """Train and validation sets of :class:`SyntheticBoxDataset` (different seeds).

    Args:
        num_classes: object classes (background is ``num_classes``).
        image_size: side of the square images, in pixels.
        stride: pixels between feature locations (the detector's output stride).
        max_objects: most rectangles per image.
        num_train, num_val: images per set.
        batch_size: images per batch.
        num_workers: DataLoader workers.
        seed: generation seed (validation images use ``seed + 1``, the same colours).
    """

    def __init__(
        self,
        num_classes: int = 3,
        image_size: int = 32,
        stride: int = 4,
        max_objects: int = 3,
        num_train: int = 512,
        num_val: int = 128,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        _check_sizes(num_classes, image_size, stride, max_objects)
        self.save_hyperparameters()

    def make_dataset(self, size: int, seed: int) -> SyntheticBoxDataset:
        h = self.hparams
        num_classes: int = h["num_classes"]
        image_size: int = h["image_size"]
        stride: int = h["stride"]
        max_objects: int = h["max_objects"]
        palette_seed: int = h["seed"]
        return SyntheticBoxDataset(
            size,
            num_classes=num_classes,
            image_size=image_size,
            stride=stride,
            max_objects=max_objects,
            seed=seed,
            palette_seed=palette_seed,
        )
