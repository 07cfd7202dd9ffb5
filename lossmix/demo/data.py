"""The datamodule shape every demo shares: a training and a validation set drawn by seed."""

from __future__ import annotations

import abc
from collections.abc import Sized
from typing import Generic, TypeVar, cast

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from lossmix.lightning.callbacks.resume import ResumableSampler

__all__ = ["SyntheticDataModule"]

#: The type of one dataset item (a dict of tensors, a tuple of tensors, ...).
ItemT = TypeVar("ItemT")


class SyntheticDataModule(pl.LightningDataModule, Generic[ItemT], metaclass=abc.ABCMeta):
    """Training set from ``seed``, validation set from ``seed + 1``, made once in ``setup``.

    Subclasses call ``self.save_hyperparameters()`` with (at least) ``num_train``,
    ``num_val``, ``batch_size``, ``num_workers`` and ``seed``, and implement
    :meth:`make_dataset`. ``ItemT`` is the type of one item of their datasets.
    """

    def __init__(self) -> None:
        super().__init__()
        self.train_set: Dataset[ItemT] | None = None
        self.val_set: Dataset[ItemT] | None = None

    @abc.abstractmethod
    def make_dataset(self, size: int, seed: int) -> Dataset[ItemT]:
        """``size`` samples drawn from ``seed``."""

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            num_train: int = self.hparams["num_train"]
            num_val: int = self.hparams["num_val"]
            seed: int = self.hparams["seed"]
            self.train_set = self.make_dataset(num_train, seed)
            self.val_set = self.make_dataset(num_val, seed + 1)

    def _loader(self, dataset: Dataset[ItemT], shuffle: bool) -> DataLoader[ItemT]:
        """A loader that resumes exactly (see :mod:`lossmix.lightning.callbacks.resume`): the order of
        epoch ``e`` comes from ``(seed, e)``, and the loader draws nothing from the global
        random stream."""
        workers: int = self.hparams["num_workers"]
        batch_size: int = self.hparams["batch_size"]
        seed: int = self.hparams["seed"]
        sampler = ResumableSampler(len(cast("Sized", dataset)), shuffle=shuffle, seed=seed)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )

    # Lightning calls ``setup`` before asking for a loader, so the sets exist by then.
    def train_dataloader(self) -> DataLoader[ItemT]:
        return self._loader(cast("Dataset[ItemT]", self.train_set), shuffle=True)

    def val_dataloader(self) -> DataLoader[ItemT]:
        return self._loader(cast("Dataset[ItemT]", self.val_set), shuffle=False)
