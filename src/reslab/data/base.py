"""What every image-classification DataModule shares: transforms, loaders, batch mixing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, SequentialSampler
from torchvision.transforms import v2

from reslab.data.augmentation import Augmentation
from reslab.data.device import normalize
from reslab.data.resumable import EpochOrder, EvalDataLoader, ResumableDataLoader, SeededSamples
from reslab.data.transforms import StackCrops
from reslab.errors import ConfigError
from reslab.training.distributed import per_device_batch


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


def batch_mixer(augmentation: Augmentation, num_classes: int) -> v2.Transform | None:
    """MixUp and/or CutMix (one of them per batch) when the augmentation asks for them."""
    mixers = []
    if augmentation.mixup_alpha:
        mixers.append(v2.MixUp(alpha=augmentation.mixup_alpha, num_classes=num_classes))
    if augmentation.cutmix_alpha:
        mixers.append(v2.CutMix(alpha=augmentation.cutmix_alpha, num_classes=num_classes))
    return v2.RandomChoice(mixers) if mixers else None


class ClassificationDataModule(L.LightningDataModule):
    """Subclasses set `name` (the dataset), `num_classes` and `input_size` (C, H, W of a
    training image as the model sees it) and fill `train_set`, `val_set`, `test_set` in
    `setup`. `batch_size` is the global batch of one optimizer step: each of the trainer's
    processes loads `device_batch_size` of it per micro-batch. `seed` (the run's) makes the
    training order and augmentation, the same for every model and process count."""

    name: str
    num_classes: int
    input_size: tuple[int, int, int] | None = None
    # Validation runs on the test split (not held out from training): its best is then a
    # minimum over test evaluations, so the run reports the final weights' test error.
    val_is_test: bool = True
    # The option that holds validation out of the test split, where the dataset has a test
    # split of its own (CIFAR); None where validation is the test split by convention (ImageNet).
    hold_out: str | None = None
    ten_crop: bool = False
    in_channels = 3
    # Whether the loaders send uint8 batches, converted and normalised on the device (4x less
    # host-to-device traffic than float, and no float work in the workers).
    uint8_batches: bool = False
    collate_fn: Any = None

    def __init__(
        self,
        batch_size: int,
        num_workers: int,
        mean: Sequence[float],
        std: Sequence[float],
        augmentation: Augmentation | Mapping[str, Any] | None,
        seed: int,
    ) -> None:
        super().__init__()
        per_device_batch(batch_size, 1)  # a positive batch, also when built from Python
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        for key, values in (("mean", mean), ("std", std)):
            if len(values) != self.in_channels:
                raise ConfigError(
                    f"data.{key}={list(values)} has {len(values)} values; give one per input "
                    f"channel ({self.in_channels})"
                )
        if min(std) <= 0:
            raise ConfigError(f"data.std={list(std)} must be positive (it divides the pixels)")
        self.mean, self.std = mean, std
        if not isinstance(augmentation, Augmentation):  # the options, from Python
            augmentation = Augmentation(**(augmentation or {}))
        self.augmentation = augmentation
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.mixer: v2.Transform | None = None

    @property
    def train_transform(self) -> v2.Compose:
        """This dataset's own augmentation (from the config's parameters), then the config's
        `augmentation.train` transforms, then normalisation."""
        extra = self.augmentation.train
        return build_transform([*self.train_augment(), *extra], self.mean, self.std)

    @property
    def eval_transform(self) -> v2.Compose:
        return build_transform(self.eval_augment(), self.mean, self.std)

    def train_augment(self) -> list[Any]:
        return []

    def eval_augment(self) -> list[Any]:
        """Photos: resize the shorter side to `augmentation.resize`, then the centre `size` crop,
        or the paper's 10 crops (4 corners + centre, and their flips) with `ten_crop`."""
        size, resize = self.augmentation.size, self.augmentation.resize
        if not size:
            return []
        crop = [v2.TenCrop(size), StackCrops()] if self.ten_crop else [v2.CenterCrop(size)]
        return [v2.Resize(resize or size, antialias=True), *crop]

    @property
    def device_batch_size(self) -> int:
        """This process's share of a step's batch: the trainer says how many processes and
        micro-batches share it (one of each without a trainer)."""
        trainer = self.trainer
        if trainer is None:
            return self.batch_size
        return per_device_batch(
            self.batch_size, trainer.world_size, trainer.accumulate_grad_batches
        )

    @property
    def shard(self) -> tuple[int, int]:
        """This process's rank and the process count: which share of each batch it loads."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer else (0, 1)

    @property
    def shuffles(self) -> bool:
        """Whether each epoch has an order of its own: not under Lightning's `overfit_batches`
        (the same few batches every epoch)."""
        return not (self.trainer and self.trainer.overfit_batches)

    @property
    def train_size(self) -> int | None:
        """Training images, once `setup` has read them."""
        return None if self.train_set is None else len(self.train_set)

    def setup(self, stage: str | None = None) -> None:
        self.mixer = batch_mixer(self.augmentation, self.num_classes)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Lightning's model summary sends its example input (a float tensor, no labels) through
        # here too, as training starts: it is neither normalised nor mixed.
        if not isinstance(batch, tuple | list):
            return batch
        if self.uint8_batches and batch[0].dtype == torch.uint8:
            x, y = batch
            batch = normalize(x, self.mean, self.std), y
        if self.mixer is not None and self.trainer is not None and self.trainer.training:
            x, y = batch
            return self.mixer(x, y)
        return batch

    def _loader(self, dataset: Dataset, training: bool) -> DataLoader:
        workers = self.num_workers > 0
        settings = dict(
            batch_size=self.device_batch_size,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            # Page-locked batches: the copy to the GPU runs asynchronously, beside the step.
            pin_memory=torch.cuda.is_available(),
            # Workers live for the whole run, not re-forked (and their state rebuilt) per epoch.
            persistent_workers=workers,
            # 4 batches ready per worker (torch's default: 2), so that one slow batch (large
            # JPEGs, a busy core) is absorbed by the queue instead of stalling a step.
            prefetch_factor=4 if workers else None,
        )
        if training:  # its position and RNG go into checkpoints (exact resume)
            samples = SeededSamples(dataset, key=self.seed)
            rank, world = self.shard
            order = (
                EpochOrder(samples, rank, world) if self.shuffles else SequentialSampler(samples)
            )
            return ResumableDataLoader(samples, sampler=order, **settings)
        return EvalDataLoader(dataset, **settings)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, training=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, training=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, training=False)
