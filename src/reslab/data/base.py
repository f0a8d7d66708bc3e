"""What every image-classification DataModule shares: transforms, loaders, batch mixing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from reslab.data.resumable import ResumableDataLoader
from reslab.distributed import per_device_batch
from reslab.errors import ConfigError


def build_transform(
    augment: Sequence[Any], mean: Sequence[float], std: Sequence[float]
) -> v2.Compose:
    """PIL/uint8 image -> augmentations -> float in [0, 1] -> per-channel normalisation."""
    return v2.Compose(
        [
            v2.ToImage(),
            *augment,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


def batch_mixer(augmentation: dict[str, Any], num_classes: int) -> v2.Transform | None:
    """MixUp and/or CutMix (one of them per batch) when the augmentation asks for them."""
    mixers = []
    if augmentation.get("mixup_alpha"):
        mixers.append(v2.MixUp(alpha=augmentation["mixup_alpha"], num_classes=num_classes))
    if augmentation.get("cutmix_alpha"):
        mixers.append(v2.CutMix(alpha=augmentation["cutmix_alpha"], num_classes=num_classes))
    return v2.RandomChoice(mixers) if mixers else None


class ClassificationDataModule(L.LightningDataModule):
    """Subclasses set `num_classes` and fill `train_set`, `val_set`, `test_set` in `setup`."""

    num_classes: int

    def __init__(
        self,
        batch_size: int,
        num_workers: int,
        mean: Sequence[float],
        std: Sequence[float],
        augmentation: dict[str, Any] | None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data.batch_size={batch_size} must be a positive integer")
        self.batch_size, self.num_workers = batch_size, num_workers
        self.augmentation = dict(augmentation or {})
        self.train_transform = build_transform(self.augmentation.get("train", ()), mean, std)
        self.eval_transform = build_transform(self.augmentation.get("eval", ()), mean, std)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.mixer: v2.Transform | None = None

    def setup(self, stage: str | None = None) -> None:
        self.mixer = batch_mixer(self.augmentation, self.num_classes)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.mixer is not None and self.trainer is not None and self.trainer.training:
            x, y = batch
            return self.mixer(x, y)
        return batch

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        # The training loader's position and RNG go into checkpoints (exact mid-epoch resume).
        loader = ResumableDataLoader if shuffle else DataLoader
        return loader(
            dataset,
            batch_size=per_device_batch(
                self.batch_size, self.trainer.world_size if self.trainer else 1
            ),
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
