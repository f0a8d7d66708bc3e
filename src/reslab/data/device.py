"""CIFAR resident on the training device as uint8, augmented there in whole batches.

CIFAR-10 is 150 MB as uint8, so it fits in any accelerator's memory. Serving batches from
there skips the per-image transforms, worker processes and host-to-device copies of the
DataLoader path, with the same augmentation: zero-pad, random crop, horizontal flip,
per-channel normalisation (`tests/test_device_pipeline.py` checks that against the workers
path). `CIFARDataModule(pipeline="device")`, the default, serves its batches from here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from reslab.data.augmentation import Augmentation
from reslab.errors import ConfigError


def crop_flip(images: Tensor, pad: int, flip_p: float, generator: torch.Generator) -> Tensor:
    """Per image: a random crop of the zero-padded image at the original size, mirrored with
    probability `flip_p`; one gather for the whole batch."""
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dev = images.device
    dy = torch.randint(0, 2 * pad + 1, (n, 1), device=dev, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), device=dev, generator=generator)
    flip = torch.rand((n, 1), device=dev, generator=generator) < flip_p
    cols = torch.arange(w, device=dev)
    cols = dx + torch.where(flip, cols.flip(0), cols)
    rows = dy + torch.arange(h, device=dev)
    batch = torch.arange(n, device=dev)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=dev)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 -> float in [0, 1] -> per-channel normalisation, by the same torchvision ops as
    the CPU path's `build_transform`, so the pixels are bit-identical; contiguous, whatever
    the layout the loader sent (the module sets the model's: `module.channels_last`)."""
    floats = TF.to_dtype(images.contiguous(), torch.float32, scale=True)
    return TF.normalize(floats, list(mean), list(std))


class DeviceLoader:
    """Batches of (normalised images, labels) from uint8 tensors on one device.

    Under DDP each rank takes every `world_size`-th index of the epoch's order; training
    epochs drop the remainder so every rank runs the same number of steps. They are shuffled
    unless `shuffle=False`: Lightning's `overfit_batches` turns a DataLoader's shuffling off
    but cannot reach into this loader, so the DataModule passes it. `state_dict` holds the
    epoch, the batches served and the augmentation RNG (Lightning saves it in checkpoints),
    so a run resumed mid-epoch continues with the same images and crops.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        pad: int = 0,
        flip_p: float = 0.0,
        train: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.mean, self.std = batch_size, mean, std
        self.pad, self.flip_p, self.train, self.shuffle = pad, flip_p, train, shuffle
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.served, self.restored = 0, 0, False
        self.generator = torch.Generator(images.device).manual_seed(seed * 1000 + rank)

    def _order(self) -> Tensor:
        n = len(self.images)
        if not self.train:
            return torch.arange(self.rank, n, self.world_size, device=self.images.device)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=generator)[: n - n % self.world_size]
        else:
            order = torch.arange(n - n % self.world_size)
        return order[self.rank :: self.world_size].to(self.images.device)

    def __len__(self) -> int:
        n = len(self.images)
        shard = n // self.world_size if self.train else len(range(self.rank, n, self.world_size))
        return -(-shard // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # A new pass starts a new epoch unless it continues a restored state: Lightning stops
        # iterating after len() batches, and its sanity check after two.
        if self.served >= len(self) or (self.served and not self.restored):
            self.epoch, self.served = self.epoch + 1, 0
        self.restored = False
        order = self._order()
        while self.served < len(self):
            idx = order[self.served * self.batch_size : (self.served + 1) * self.batch_size]
            self.served += 1
            yield self._batch(idx)

    def _batch(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        images = self.images[idx]
        if self.train and (self.pad or self.flip_p):
            images = crop_flip(images, self.pad, self.flip_p, self.generator)
        return normalize(images, self.mean, self.std), self.labels[idx]

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "served": self.served, "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.served, self.restored = state["epoch"], state["served"], True
        self.generator.set_state(state["rng"])


def check_device_augmentation(augmentation: Augmentation) -> None:
    """This path runs the paper's pad-crop-flip (`augmentation.pad`, `augmentation.flip`) on
    whole batches; per-image transforms and photo resizing are refused, not ignored."""
    if not augmentation.per_batch_only:
        raise ConfigError(
            "data.pipeline=device runs the pad-crop-flip augmentations (augmentation=cifar or "
            "none) only; set data.pipeline=workers for this augmentation"
        )


def tensors(dataset: Any) -> tuple[Tensor, Tensor]:
    """uint8 (N, 3, 32, 32) images and int64 labels of a torchvision CIFAR set or a Subset."""
    indices = None
    if isinstance(dataset, torch.utils.data.Subset):
        dataset, indices = dataset.dataset, dataset.indices
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
    if indices is not None:
        index = torch.as_tensor(indices)
        images, labels = images[index], labels[index]
    return images, labels
