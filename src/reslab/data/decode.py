"""Photos decoded by libjpeg-turbo (`torchvision.io`) into uint8 tensors, in the workers
(`data.decode=cpu`) or in batches on the GPU by nvJPEG (`data.decode=gpu`).

On the CPU path a photo stays interleaved in memory (H, W, 3, as decoded) through the crop,
the resize, the flip and the lighting, and the batch (`Photo`, `collate_images`): torch's uint8
resize is fastest on that layout. Recipes with other transforms keep torchvision's kernels
(`keeps_interleaved`); the device makes the batch contiguous as it normalises it.

The GPU path splits each training transform in two: the workers draw its random parameters
(`Plan`: the same draws, in the same order, as the transform itself makes on the CPU path, from
the image size in the JPEG header) and send the file's bytes; the device decodes the batch and
applies every transform with those parameters through torchvision's own `transform(img,
params)`. With `device="cpu"` the result is bit-identical to the CPU path
(`tests/test_decode.py`), so both paths have one augmentation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import default_collate
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from reslab.data.transforms import Lighting, RandomShorterSideCrop, shift_colours
from reslab.errors import ConfigError, DataError

# Transforms whose parameters depend on the image size alone: drawn in the workers.
GEOMETRIC = (
    RandomShorterSideCrop,
    v2.RandomResizedCrop,
    v2.RandomResize,
    v2.Resize,
    v2.RandomCrop,
    v2.CenterCrop,
)
FLIPS = (v2.RandomHorizontalFlip, v2.RandomVerticalFlip)


class Photo(tv_tensors.Image):
    """A decoded uint8 (3, H, W) image whose pixels lie interleaved in memory (H, W, 3), as the
    decoder writes them: the layout torch's uint8 antialiased resize reads directly when it is
    dense. A crop is a strided view, which that kernel first repacks pixel by pixel, so a
    Photo's resized crop copies the crop out by rows first (`dense_resized_crop`)."""


@TF.register_kernel(TF.resized_crop, Photo)
def dense_resized_crop(
    image: Photo,
    top: int,
    left: int,
    height: int,
    width: int,
    size: list[int],
    interpolation: InterpolationMode | int = InterpolationMode.BILINEAR,
    antialias: bool | None = True,
) -> Photo:
    """torchvision's `resized_crop` with the crop made dense: the same pixels, in about 60% of
    the time for RandomResizedCrop(224) on 320 px photos (`tests/test_decode.py` pins the
    equality; docs/performance.md the time)."""
    crop = TF.crop_image(image.as_subclass(Tensor), top, left, height, width)
    dense = crop.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    out = TF.resize_image(dense, size, interpolation=interpolation, antialias=antialias)
    return tv_tensors.wrap(out, like=image)


def keeps_interleaved(steps: Sequence[Any]) -> bool:
    """Whether photos stay interleaved through these training steps: only for crops, resizes,
    flips and lighting. Other transforms (TrivialAugment's, ...) run slower on that layout than
    the dense crop saves, so their recipes take torchvision's kernels, planar after the crop."""
    return all(isinstance(step, (*GEOMETRIC, *FLIPS, Lighting)) for step in steps)


def collate_images(batch: Sequence[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
    """(images, labels), the images stacked in the layout they come in: interleaved photos as
    (N, H, W, 3) in memory, handed on as the (N, 3, H, W) view, a row copy each where
    `default_collate` would transpose each one to planar byte by byte. `normalize` gives the
    model a contiguous batch either way."""
    images, labels = zip(*batch, strict=True)
    if images[0].stride(-3) != 1:  # planar
        return default_collate(images), torch.as_tensor(labels)
    stacked = default_collate([image.movedim(-3, -1) for image in images])
    return stacked.movedim(-1, -3), torch.as_tensor(labels)


def decode_rgb(path: str) -> tv_tensors.Image:
    """Any JPEG/PNG/WebP/GIF as a uint8 RGB (3, H, W) image (ImageNet holds greyscale and CMYK
    JPEGs, and a PNG named .JPEG); name a bad file."""
    try:
        return tv_tensors.Image(decode_image(read_file(path), mode=ImageReadMode.RGB))
    except RuntimeError as e:
        raise DataError(f"cannot read image {path}: {e}; delete or replace the file") from None


def decode_photo(path: str) -> Photo:
    """`decode_rgb`'s image as a `Photo`, for transforms that keep it interleaved."""
    return Photo(decode_rgb(path))


class Encoded(NamedTuple):
    """What a worker sends of one image on the GPU path: the file's bytes (1-D uint8) when
    nvJPEG can decode them, else the image decoded here (3-D); its (height, width); its path."""

    data: Tensor
    size: tuple[int, int]
    path: str


def read_encoded(path: str) -> Encoded:
    """A colour JPEG's bytes, sized from its header (no decoding); greyscale, CMYK and other
    formats (a few per thousand ImageNet files) decoded here, by the CPU path's decoder."""
    try:
        with Image.open(path) as image:
            kind, mode, (width, height) = image.format, image.mode, image.size
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"cannot read image {path}: {e}; delete or replace the file") from None
    if kind == "JPEG" and mode == "RGB":
        return Encoded(read_file(path), (height, width), path)
    image = decode_rgb(path)
    return Encoded(image.as_subclass(Tensor), tuple(image.shape[-2:]), path)


def check_device_transforms(transforms: Sequence[Any]) -> None:
    """The GPU path replays crops, resizes, flips and lighting; refuse the rest by name."""
    for t in transforms:
        if not isinstance(t, (*GEOMETRIC, *FLIPS, Lighting)):
            raise ConfigError(
                f"data.decode=gpu runs {', '.join(c.__name__ for c in (*GEOMETRIC, *FLIPS))} "
                f"and Lighting on the GPU, not {type(t).__name__} (augmentation.train); use "
                "data.decode=cpu for this augmentation"
            )


Plan = list[tuple[int, dict[str, Any]]]


class Planner:
    """A worker's half of the training transforms: the parameters each transform draws for an
    image of this size, as (index, params); a flip that does not happen is left out. The size
    is followed through the geometric transforms on a bounding-box stand-in (no pixels)."""

    def __init__(self, transforms: Sequence[Any]) -> None:
        check_device_transforms(transforms)
        self.transforms = list(transforms)

    def __call__(self, encoded: Encoded) -> tuple[Encoded, Plan]:
        canvas = tv_tensors.BoundingBoxes(
            torch.zeros(1, 4), format="XYXY", canvas_size=encoded.size
        )
        plan: Plan = []
        for i, t in enumerate(self.transforms):
            if isinstance(t, Lighting):
                if t.std:
                    plan.append((i, {"alpha": t.draw().tolist()}))
                continue
            if isinstance(t, FLIPS) and torch.rand(1) >= t.p:  # as v2's random-apply draws
                continue
            params = t.make_params([canvas])
            canvas = t.transform(canvas, params)
            plan.append((i, params))
        return encoded, plan


def unplanned(encoded: Encoded) -> tuple[Encoded, None]:
    """An evaluation image: its transform is deterministic and runs on the device."""
    return encoded, None


class Batch(NamedTuple):
    """A GPU-path batch as the workers send it: every image's bytes (or pixels) in one flat
    uint8 tensor (one shared-memory block and one pinned copy, not one per image), with their
    shapes, paths and plans."""

    data: Tensor
    shapes: list[tuple[int, ...]]
    paths: list[str]
    plans: list[Plan | None]
    labels: Tensor


def collate_encoded(batch: Sequence[tuple[tuple[Encoded, Plan | None], int]]) -> Batch:
    samples, labels = zip(*batch, strict=True)
    encoded, plans = zip(*samples, strict=True)
    return Batch(
        torch.cat([e.data.flatten() for e in encoded]),
        [tuple(e.data.shape) for e in encoded],
        [e.path for e in encoded],
        list(plans),
        torch.as_tensor(labels),
    )


def unpack(batch: Batch) -> list[Tensor]:
    """The batch's per-image tensors: JPEG bytes (1-D) and decoded images (3-D)."""
    sizes = [math.prod(shape) for shape in batch.shapes]
    parts = batch.data.split(sizes)
    return [part.view(shape) for part, shape in zip(parts, batch.shapes, strict=True)]


def decode_batch(batch: Batch, device: torch.device | str) -> list[Tensor]:
    """uint8 (3, H, W) images on `device`: the JPEG bytes decoded together (nvJPEG on a GPU,
    libjpeg-turbo with `device="cpu"`), the worker-decoded ones copied over."""
    images = unpack(batch)
    jpegs = [i for i, x in enumerate(images) if x.ndim == 1]
    if jpegs:
        try:
            decoded = decode_jpeg([images[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            for i in jpegs:  # which file: the batch decoder does not say
                decode_rgb(batch.paths[i])
            raise
        for i, image in zip(jpegs, decoded, strict=True):
            images[i] = image
    return [image.to(device, non_blocking=True) for image in images]


def replay(transforms: Sequence[Any], image: Tensor, plan: Plan) -> Tensor:
    """The training transforms on one (device) image, with the parameters the worker drew."""
    for i, params in plan:
        t = transforms[i]
        if isinstance(t, Lighting):
            image = shift_colours(image, torch.tensor(params["alpha"]))
        else:
            image = t.transform(image, params)
    return image


def device_images(
    batch: Batch,
    device: torch.device | str,
    train_transforms: Sequence[Any],
    eval_transform: Callable[[Tensor], Tensor],
) -> Tensor:
    """A uint8 batch on `device`: decoded there, then each image's training transforms
    (replayed from its plan) or the evaluation transform."""
    images = decode_batch(batch, device)
    out = [
        eval_transform(image) if plan is None else replay(train_transforms, image, plan)
        for image, plan in zip(images, batch.plans, strict=True)
    ]
    return torch.stack([torch.as_tensor(x) for x in out])
