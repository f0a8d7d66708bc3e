"""ImageNet and any ImageFolder subset of it (Imagenette, Imagewoof, your own classes)."""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder, ImageNet
from torchvision.transforms import v2

from reslab.data.augmentation import Augmentation
from reslab.data.base import ClassificationDataModule
from reslab.data.decode import (
    Batch,
    Planner,
    check_device_transforms,
    collate_encoded,
    collate_images,
    decode_photo,
    decode_rgb,
    device_images,
    keeps_interleaved,
    read_encoded,
    unplanned,
)
from reslab.errors import ConfigError, DataError

Format = Literal["folder", "ilsvrc2012"]
FORMATS = typing.get_args(Format)
Decode = Literal["cpu", "gpu"]
ILSVRC_FILES = (
    "ILSVRC2012_devkit_t12.tar.gz",
    "ILSVRC2012_img_train.tar",
    "ILSVRC2012_img_val.tar",
)


def class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def count_classes(root: str, format: str = "folder") -> int:
    """The class count of the data in `root`: the config's `data.num_classes` of an
    ImageFolder (`${class_count:...}`), so the model's head follows the data."""
    root_dir = Path(root).expanduser()
    if format not in FORMATS:
        raise ConfigError(f"data.format={format!r} is not valid; choose one of {list(FORMATS)}")
    if format == "ilsvrc2012":
        missing = [f for f in ILSVRC_FILES if not (root_dir / f).is_file()]
        if missing and not (root_dir / "meta.bin").is_file():
            raise DataError(
                f"ILSVRC2012 archives not found in {root_dir} (missing {', '.join(missing)}); "
                "download them from https://image-net.org (login required) into data.root"
            )
        return 1000
    train, val = class_dirs(root_dir / "train"), class_dirs(root_dir / "val")
    if not train or not val:
        raise DataError(
            f"no ImageFolder data in {root_dir}: expected train/<class>/*.JPEG and "
            "val/<class>/*.JPEG (set data.root, or DATA_DIR)"
        )
    if train != val:
        only = sorted(set(train) ^ set(val))
        raise DataError(f"{root_dir}/train and val have different classes: {only[:5]}")
    return len(train)


def check_photo_augmentation(augmentation: Augmentation) -> None:
    """Photos come in many sizes: they batch only once cropped to `augmentation.size`. CIFAR's
    pad-crop-flip numbers (`pad`, `flip`) are not read here, so they are refused, not ignored."""
    if not augmentation.size:
        raise ConfigError(
            "augmentation.size is not set, so photos of different sizes cannot be batched; use "
            "augmentation=paper (the paper's), torchvision_v1, modern or lowres with ImageNet data"
        )
    if augmentation.pad or augmentation.flip:
        raise ConfigError(
            f"augmentation.pad={augmentation.pad} and augmentation.flip={augmentation.flip} are "
            "CIFAR's pad-crop-flip, which ImageNet data does not run; set both to 0 (flips go in "
            "augmentation.train, as in augmentation=paper)"
        )


class ImageFolderDataModule(ClassificationDataModule):
    """`root/train/<class>/*.JPEG` and `root/val/<class>/*.JPEG` (format `folder`), or the
    official ILSVRC2012 archives in `root` through torchvision's ImageNet (format
    `ilsvrc2012`: devkit parsing and val reorganisation happen once, on first use).

    The class count comes from the data; `num_classes`, when given, must agree with it.
    `augmentation.size` / `resize` set the evaluation crop (`ten_crop`: the paper's 10 crops).
    The validation split doubles as the test split, as is usual for ImageNet.

    `decode`: `cpu` decodes with libjpeg-turbo and augments uint8 tensors in the workers;
    `gpu` has the workers read the files (and draw the augmentation's parameters) and decodes
    and augments each batch on the training GPU (`reslab.data.decode`). Either way the batches
    are uint8, normalised on the device.
    """

    uint8_batches = True

    def __init__(
        self,
        root: str = "data/imagenet",
        format: Format = "folder",
        num_classes: int | None = None,
        batch_size: Annotated[int, Field(ge=1)] = 256,
        num_workers: Annotated[int, Field(ge=0)] = 8,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        augmentation: Augmentation | Mapping[str, Any] | None = None,
        ten_crop: bool = False,
        decode: Decode = "cpu",
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, mean, std, augmentation, seed)
        self.ten_crop, self.decode = ten_crop, decode
        self.train_steps = [*self.train_augment(), *self.augmentation.train]
        self.collate_fn = collate_images
        if decode == "gpu":
            if not torch.cuda.is_available():
                raise ConfigError(
                    "data.decode=gpu decodes on a CUDA GPU and this machine has none "
                    "(torch.cuda.is_available() is False); use data.decode=cpu"
                )
            check_device_transforms(self.train_steps)
            self.collate_fn = collate_encoded
        check_photo_augmentation(self.augmentation)
        size = self.augmentation.size
        self.input_size = (3, size, size) if size else None
        self.root, self.format = Path(root).expanduser(), format
        self.name = self.root.name
        self.num_classes = count_classes(str(self.root), format)
        if num_classes is not None and num_classes != self.num_classes:
            raise ConfigError(
                f"data.num_classes={num_classes} but {self.root} has {self.num_classes} classes; "
                "drop data.num_classes to take the count from the class folders"
            )

    @property
    def train_transform(self) -> v2.Transform:
        """uint8 in, uint8 out: the dataset's and the config's augmentation, no normalisation."""
        return v2.Compose(self.train_steps) if self.train_steps else v2.Identity()

    @property
    def eval_transform(self) -> v2.Transform:
        steps = self.eval_augment()
        return v2.Compose(steps) if steps else v2.Identity()

    def _dataset(self, split: str, transform: Any) -> Dataset:
        interleaved = split != "train" or keeps_interleaved(self.train_steps)
        loader = decode_photo if interleaved else decode_rgb
        if self.decode == "gpu":
            loader = read_encoded
            transform = Planner(self.train_steps) if split == "train" else unplanned
        if self.format == "ilsvrc2012":
            return ImageNet(str(self.root), split=split, transform=transform, loader=loader)
        return ImageFolder(str(self.root / split), transform=transform, loader=loader)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.train_set is None:
            self.train_set = self._dataset("train", self.train_transform)
            self.val_set = self.test_set = self._dataset("val", self.eval_transform)

    def device_batch(self, batch: Batch, device: torch.device | str) -> tuple[Any, Any]:
        """`data.decode=gpu`: a batch of file bytes and plans -> uint8 images on `device`."""
        images = device_images(batch, device, self.train_steps, self.eval_transform)
        return images, batch.labels

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, Batch):  # not the model summary's example input
            return self.device_batch(batch, self.trainer.strategy.root_device)
        return batch
