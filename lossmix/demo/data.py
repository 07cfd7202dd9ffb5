"""The datamodule shape every demo shares: a training and a validation set drawn by seed."""

from __future__ import annotations

import abc

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset

__all__ = ["SyntheticDataModule"]


class SyntheticDataModule(pl.LightningDataModule, metaclass=abc.ABCMeta):
    """Training set from ``seed``, validation set from ``seed + 1``, made once in ``setup``.

    Subclasses call ``self.save_hyperparameters()`` with (at least) ``num_train``,
    ``num_val``, ``batch_size``, ``num_workers`` and ``seed``, and implement
    :meth:`make_dataset`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    @abc.abstractmethod
    def make_dataset(self, size: int, seed: int) -> Dataset:
        """``size`` samples drawn from ``seed``."""

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self.make_dataset(self.hparams.num_train, self.hparams.seed)
            self.val_set = self.make_dataset(self.hparams.num_val, self.hparams.seed + 1)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(dataset, batch_size=self.hparams.batch_size, shuffle=shuffle,
                          num_workers=workers, persistent_workers=workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
