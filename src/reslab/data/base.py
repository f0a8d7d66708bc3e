"""What every image-classification DataModule shares: transforms, loaders, batch mixing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from reslab.data.resumable import ResumableDataLoader
from reslab.data.transforms import StackCrops
from reslab.distributed import per_device_batch


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
    """Subclasses set `num_classes` and `input_size` (C, H, W of a training image as the model
    sees it) and fill `train_set`, `val_set`, `test_set` in `setup`. `batch_size` is the global
    batch of one optimizer step: each of the `world_size` processes loads `device_batch_size`
    of it per micro-batch (`accumulate_grad_batches` of them per step)."""

    num_classes: int
    input_size: tuple[int, int, int] | None = None
    ten_crop: bool = False

    def __init__(
        self,
        batch_size: int,
        num_workers: int,
        mean: Sequence[float],
        std: Sequence[float],
        augmentation: dict[str, Any] | None,
        world_size: int = 1,
        accumulate_grad_batches: int = 1,
    ) -> None:
        super().__init__()
        self.batch_size, self.num_workers = batch_size, num_workers
        self.device_batch_size = per_device_batch(batch_size, world_size, accumulate_grad_batches)
        self.mean, self.std = mean, std
        self.augmentation = dict(augmentation or {})
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.mixer: v2.Transform | None = None

    @property
    def train_transform(self) -> v2.Compose:
        """This dataset's own augmentation (from the config's parameters), then the config's
        `augmentation.train` transforms, then normalisation."""
        extra = self.augmentation.get("train") or ()
        return build_transform([*self.train_augment(), *extra], self.mean, self.std)

    @property
    def eval_transform(self) -> v2.Compose:
        return build_transform(self.eval_augment(), self.mean, self.std)

    def train_augment(self) -> list[Any]:
        return []

    def eval_augment(self) -> list[Any]:
        """Photos: resize the shorter side to `augmentation.resize`, then the centre `size` crop,
        or the paper's 10 crops (4 corners + centre, and their flips) with `ten_crop`."""
        size, resize = self.augmentation.get("size"), self.augmentation.get("resize")
        if not size:
            return []
        crop = [v2.TenCrop(size), StackCrops()] if self.ten_crop else [v2.CenterCrop(size)]
        return [v2.Resize(resize or size, antialias=True), *crop]

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
            batch_size=self.device_batch_size,
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
