"""CIFAR-10/100 through torchvision's datasets, with the paper's 45k/5k split as an option.

Two input pipelines over the same files: `device` (default) keeps the uint8 images on the
training device and augments whole batches there (`reslab.data.device`); `workers` runs
torchvision transforms per image in DataLoader worker processes, for any augmentation.
"""

from __future__ import annotations

import copy
import pickle
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import Subset
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import check_integrity, download_and_extract_archive
from torchvision.transforms import v2

from reslab.data.augmentation import Augmentation
from reslab.data.base import ClassificationDataModule
from reslab.data.device import DeviceLoader, check_device_augmentation, tensors
from reslab.errors import ConfigError, DataError


class _Checked:
    """torchvision's CIFAR classes re-check md5s on every construction, and reject files in the
    official format that are not the official bytes (tests, subsets). We check once, in
    `prepare_data`, with errors that name the file; here only the files' presence."""

    def _check_integrity(self) -> bool:
        folder = Path(self.root, self.base_folder)
        return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        with open(Path(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class _CIFAR10(_Checked, CIFAR10):
    pass


class _CIFAR100(_Checked, CIFAR100):
    pass


Pipeline = Literal["device", "workers"]
PIPELINES = typing.get_args(Pipeline)

DATASETS: dict[str, tuple[type[CIFAR10], int]] = {
    "cifar10": (_CIFAR10, 10),
    "cifar100": (_CIFAR100, 100),
}


def dataset_files(cls: type[CIFAR10]) -> list[tuple[str, str]]:
    """(file name, official md5) of every file a CIFAR folder must hold."""
    files = [(name, md5) for name, md5 in cls.train_list + cls.test_list]
    return [*files, (cls.meta["filename"], cls.meta["md5"])]


class CIFARDataModule(ClassificationDataModule):
    """CIFAR-10 or CIFAR-100 in the official python format under `root`.

    `val_size=5000` holds out a fixed random 5k of the 50k training images (the paper's 45k/5k
    split); `val_size=0` validates on the test set, as the paper's curves do. `pipeline`:
    `device` (pad-crop-flip on the training device, the fast path on GPU and CPU alike) or
    `workers` (`num_workers` DataLoader processes, any torchvision augmentation); on either,
    `seed` drives the shuffling and crops.
    """

    hold_out = "data.val_size=5000"

    def __init__(
        self,
        name: Literal["cifar10", "cifar100"] = "cifar10",
        root: str = "data",
        num_classes: int = 10,
        batch_size: Annotated[int, Field(ge=1)] = 128,
        num_workers: Annotated[int, Field(ge=0)] = 2,
        val_size: Annotated[int, Field(ge=0)] = 0,
        download: bool = True,
        verify_md5: bool = True,
        mean: Sequence[float] = (0.4914, 0.4822, 0.4465),
        std: Sequence[float] = (0.2470, 0.2435, 0.2616),
        augmentation: Augmentation | Mapping[str, Any] | None = None,
        pipeline: Pipeline = "device",
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, mean, std, augmentation, seed)
        if pipeline not in PIPELINES:
            raise ConfigError(f"data.pipeline={pipeline!r} is not valid; choose one of {PIPELINES}")
        self.pad, self.flip = self.augmentation.pad, self.augmentation.flip
        if pipeline == "device":
            check_device_augmentation(self.augmentation)
        self.pipeline = pipeline
        if name not in DATASETS:
            raise ConfigError(f"data.name={name!r} is not valid; choose one of {list(DATASETS)}")
        cls, classes = DATASETS[name]
        if num_classes != classes:
            raise ConfigError(f"data.num_classes={num_classes} but {name} has {classes} classes")
        if not 0 <= val_size < 50_000:
            raise ConfigError(f"data.val_size={val_size} must be in [0, 50000) (5000 for 45k/5k)")
        self.cls, self.name, self.root = cls, name, Path(root).expanduser()
        self.num_classes, self.input_size = num_classes, (3, 32, 32)
        self.val_size, self.download, self.verify_md5 = val_size, download, verify_md5
        self.val_is_test = val_size == 0

    def train_augment(self) -> list[Any]:
        """The paper's: zero-pad `pad` pixels, random 32x32 crop, flip with probability `flip`."""
        out: list[Any] = []
        if self.pad:
            out.append(v2.RandomCrop(32, padding=self.pad))
        if self.flip:
            out.append(v2.RandomHorizontalFlip(self.flip))
        return out

    @property
    def folder(self) -> Path:
        return self.root / self.cls.base_folder

    def missing_files(self) -> list[str]:
        return [name for name, _ in dataset_files(self.cls) if not (self.folder / name).is_file()]

    def prepare_data(self) -> None:
        """Download when absent (if allowed), then check every file, naming any bad one."""
        if self.missing_files() and self.download:
            try:
                download_and_extract_archive(
                    self.cls.url, str(self.root), filename=self.cls.filename, md5=self.cls.tgz_md5
                )
            except Exception as e:  # network errors come in many types
                raise DataError(self._not_found(f"download failed: {e}")) from None
        if missing := self.missing_files():
            raise DataError(self._not_found(f"missing {', '.join(missing)}"))
        if self.verify_md5:
            for name, md5 in dataset_files(self.cls):
                if not check_integrity(str(self.folder / name), md5):
                    raise DataError(
                        f"{self.folder / name} is corrupt (md5 differs from the official "
                        f"{md5}); delete {self.folder} and run again to re-download, or set "
                        "data.verify_md5=false for a non-official copy"
                    )

    def _not_found(self, why: str) -> str:
        allow = "" if self.download else ", or allow data.download=true"
        return (
            f"{self.name} not found in {self.folder} ({why}); point data.root (or "
            f"paths.data_dir, DATA_DIR) at the dir that holds {self.folder.name}/, or fetch "
            f"{self.cls.filename} from https://www.cs.toronto.edu/~kriz/cifar.html and extract "
            f"it there{allow}"
        )

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.train_set is not None:
            return
        train = self._read(train=True, transform=self.train_transform)
        if self.val_size >= len(train):
            raise ConfigError(
                f"data.val_size={self.val_size} leaves no training image of the {len(train)} "
                f"in {self.folder}; use a smaller data.val_size (5000 for the paper's 45k/5k)"
            )
        self.test_set = self._read(train=False, transform=self.eval_transform)
        if self.val_size:
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
            held_out = copy.copy(train)
            held_out.transform = self.eval_transform
            self.train_set = Subset(train, order[self.val_size :].tolist())
            self.val_set = Subset(held_out, order[: self.val_size].tolist())
        else:
            self.train_set, self.val_set = train, self.test_set

    def _read(self, train: bool, transform: Any) -> CIFAR10:
        """torchvision's dataset; a file it cannot read is named (with `data.verify_md5=true`
        the md5 check in `prepare_data` catches it first)."""
        try:
            return self.cls(str(self.root), train=train, transform=transform)
        except Exception:
            for name, _ in self.cls.train_list if train else self.cls.test_list:
                path = self.folder / name
                try:
                    with open(path, "rb") as f:
                        np.asarray(pickle.load(f, encoding="latin1")["data"]).reshape(-1, 3072)
                except Exception as e:
                    raise DataError(
                        f"{path} is not a CIFAR batch file ({type(e).__name__}); replace it, "
                        f"or delete {self.folder} and run again to re-download"
                    ) from None
            raise

    def _loader(self, dataset: Any, training: bool) -> Any:
        if self.pipeline == "workers":
            return super()._loader(dataset, training)
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer else torch.device("cpu")
        rank, world = self.shard
        images, labels = tensors(dataset)
        return DeviceLoader(
            images.to(device),
            labels.to(device),
            self.device_batch_size,
            self.mean,
            self.std,
            pad=self.pad,
            flip_p=self.flip,
            train=training,
            shuffle=self.shuffles,
            seed=self.seed,
            rank=rank,
            world_size=world,
        )
