"""Objects described by noisy feature vectors; each has a class (or is background) and a box.

A batch is ``{"features": (B, 16), "labels": (B,), "box_targets": (B, 4), "pos_mask": (B,)}``:
labels are class indices with background ``num_classes``, boxes ``(x1, y1, x2, y2)`` in a
64-pixel image, ``pos_mask`` is 1 for objects and 0 for background rows.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lossmix.lightning.callbacks.resume import ResumableSampler


def make_objects(count: int, num_classes: int, generator: torch.Generator) -> TensorDataset:
    labels = torch.randint(0, num_classes + 1, (count,), generator=generator)  # num_classes: background
    centre = torch.rand(count, 2, generator=generator) * 48 + 8
    size = torch.rand(count, 2, generator=generator) * 12 + 4
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    onehot = torch.nn.functional.one_hot(labels, num_classes + 1).float()
    code = torch.cat([centre / 64, size / 16, onehot], dim=1)
    mixing = torch.randn(code.shape[1], 16, generator=torch.Generator().manual_seed(7))
    features = code @ mixing + 0.05 * torch.randn(count, 16, generator=generator)
    pos_mask = (labels < num_classes).float()
    return TensorDataset(features, labels, boxes, pos_mask)


class ToyObjects(pl.LightningDataModule):
    """Train and validation sets of :func:`make_objects`, loaded in a resumable order."""

    def __init__(
        self,
        num_classes: int = 3,
        num_train: int = 2048,
        num_val: int = 512,
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        generator = torch.Generator().manual_seed(self.hparams["seed"])
        self.train_set = make_objects(self.hparams["num_train"], self.hparams["num_classes"], generator)
        self.val_set = make_objects(self.hparams["num_val"], self.hparams["num_classes"], generator)

    def _loader(self, dataset: TensorDataset, shuffle: bool) -> DataLoader:
        # ResumableSampler: a run resumed from a mid-epoch checkpoint continues with the next batch
        sampler = ResumableSampler(len(dataset), shuffle=shuffle, seed=self.hparams["seed"])
        return DataLoader(
            dataset, batch_size=self.hparams["batch_size"], sampler=sampler, collate_fn=_as_dict
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)


def _as_dict(rows: list[tuple[torch.Tensor, ...]]) -> dict[str, torch.Tensor]:
    features, labels, boxes, pos_mask = (torch.stack(column) for column in zip(*rows, strict=True))
    return {"features": features, "labels": labels, "box_targets": boxes, "pos_mask": pos_mask}
