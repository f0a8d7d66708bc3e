"""ImageNet and any ImageFolder subset of it (Imagenette, Imagewoof, your own classes)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder, ImageNet

from reslab.data.base import ClassificationDataModule
from reslab.errors import ConfigError, DataError

FORMATS = ("folder", "ilsvrc2012")
ILSVRC_FILES = (
    "ILSVRC2012_devkit_t12.tar.gz",
    "ILSVRC2012_img_train.tar",
    "ILSVRC2012_img_val.tar",
)


def load_rgb(path: str) -> Image.Image:
    """Open any JPEG/PNG as RGB (ImageNet holds greyscale and CMYK JPEGs); name a bad file."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"cannot read image {path}: {e}; delete or replace the file") from None


def class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


class ImageFolderDataModule(ClassificationDataModule):
    """`root/train/<class>/*.JPEG` and `root/val/<class>/*.JPEG` (format `folder`), or the
    official ILSVRC2012 archives in `root` through torchvision's ImageNet (format
    `ilsvrc2012`: devkit parsing and val reorganisation happen once, on first use).

    The class count comes from the data; `num_classes`, when given, must agree with it.
    `augmentation.size` / `resize` set the evaluation crop (`ten_crop`: the paper's 10 crops).
    The validation split doubles as the test split, as is usual for ImageNet.
    """

    def __init__(
        self,
        root: str = "data/imagenet",
        format: str = "folder",
        num_classes: int | None = None,
        batch_size: int = 256,
        num_workers: int = 8,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        augmentation: dict[str, Any] | None = None,
        ten_crop: bool = False,
        world_size: int = 1,
        accumulate_grad_batches: int = 1,
    ) -> None:
        super().__init__(
            batch_size, num_workers, mean, std, augmentation, world_size, accumulate_grad_batches
        )
        self.ten_crop = ten_crop
        size = self.augmentation.get("size")
        self.input_size = (3, size, size) if size else None
        if format not in FORMATS:
            raise ConfigError(f"data.format={format!r} is not valid; choose one of {list(FORMATS)}")
        self.root, self.format = Path(root).expanduser(), format
        self.num_classes = self._count_classes()
        if num_classes is not None and num_classes != self.num_classes:
            raise ConfigError(
                f"data.num_classes={num_classes} but {self.root} has {self.num_classes} classes; "
                "set data.num_classes=null to take the count from the data"
            )

    def _count_classes(self) -> int:
        if self.format == "ilsvrc2012":
            missing = [f for f in ILSVRC_FILES if not (self.root / f).is_file()]
            if missing and not (self.root / "meta.bin").is_file():
                raise DataError(
                    f"ILSVRC2012 archives not found in {self.root} (missing {', '.join(missing)}); "
                    "download them from https://image-net.org (login required) into data.root"
                )
            return 1000
        train, val = class_dirs(self.root / "train"), class_dirs(self.root / "val")
        if not train or not val:
            raise DataError(
                f"no ImageFolder data in {self.root}: expected train/<class>/*.JPEG and "
                "val/<class>/*.JPEG (set data.root, or DATA_DIR)"
            )
        if train != val:
            only = sorted(set(train) ^ set(val))
            raise DataError(f"{self.root}/train and val have different classes: {only[:5]}")
        return len(train)

    def _dataset(self, split: str, transform: Any) -> Dataset:
        if self.format == "ilsvrc2012":
            return ImageNet(str(self.root), split=split, transform=transform, loader=load_rgb)
        return ImageFolder(str(self.root / split), transform=transform, loader=load_rgb)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.train_set is None:
            self.train_set = self._dataset("train", self.train_transform)
            self.val_set = self.test_set = self._dataset("val", self.eval_transform)
