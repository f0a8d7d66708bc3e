"""The image transforms torchvision lacks: He et al.'s scale augmentation as one crop, AlexNet's
PCA lighting noise and a crop stacker for multi-crop evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from reslab.errors import ConfigError

# Eigen-decomposition of ImageNet's RGB pixel covariance (Krizhevsky et al. 2012), pixels in [0, 1].
EIGVAL = (0.2175, 0.0188, 0.0045)
EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


def resized_size(height: int, width: int, side: int) -> tuple[int, int]:
    """The (height, width) torchvision's `resize(image, [side])` gives: the shorter side
    `side`, the longer one scaled and truncated."""
    if height <= width:
        return side, int(side * width / height)
    return int(side * height / width), side


def source_span(start: int, length: int, resized: int, source: int) -> tuple[int, int]:
    """(start, length) in source pixels of the span [start, start + length) of an axis resized
    from `source` to `resized` pixels: both ends mapped back and rounded to the nearest pixel,
    so every sample of the crop moves by at most half a source pixel."""
    first = (2 * start * source + resized) // (2 * resized)  # round(start * source / resized)
    last = (2 * (start + length) * source + resized) // (2 * resized)
    return first, last - first


class RandomShorterSideCrop(v2.Transform):
    """He et al. 2015 (sec. 3.4): the shorter side resized to a random `s` in [min_side,
    max_side], then a random `size` x `size` crop. Only the crop's source region is resized:
    torchvision has the recipe as RandomResize + RandomCrop, which resize the whole image.

    The same random calls, in the same order, as those two draw `s` and the window in resized
    pixels; the window's ends are mapped back to source pixels (`source_span`) and that region
    is resized to `size` (`resized_crop`). Same crops (scale and position) as the two steps;
    the pixel grid moves by at most half a source pixel (`tests/test_decode.py`)."""

    def __init__(
        self,
        size: int,
        min_side: int,
        max_side: int,
        interpolation: InterpolationMode | str = InterpolationMode.BILINEAR,
        antialias: bool = True,
    ) -> None:
        super().__init__()
        if not size <= min_side <= max_side:
            raise ConfigError(
                f"RandomShorterSideCrop(size={size}, min_side={min_side}, max_side={max_side}) "
                "needs size <= min_side <= max_side: the crop must fit the smallest resized "
                "image; lower augmentation.size or raise min_side"
            )
        self.size, self.min_side, self.max_side = size, min_side, max_side
        self.interpolation, self.antialias = InterpolationMode(interpolation), antialias

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        side = int(torch.randint(self.min_side, self.max_side + 1, ()))  # as RandomResize
        resized_h, resized_w = resized_size(height, width, side)
        # as RandomCrop: the top row, then the left column
        top = int(torch.randint(0, resized_h - self.size + 1, ())) if resized_h > self.size else 0
        left = int(torch.randint(0, resized_w - self.size + 1, ())) if resized_w > self.size else 0
        top, crop_h = source_span(top, self.size, resized_h, height)
        left, crop_w = source_span(left, self.size, resized_w, width)
        return {"top": top, "left": left, "height": crop_h, "width": crop_w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(
            TF.resized_crop,
            inpt,
            **params,
            size=[self.size, self.size],
            interpolation=self.interpolation,
            antialias=self.antialias,
        )


def shift_colours(img: Tensor, alpha: Tensor) -> Tensor:
    """Add sum_i alpha_i * lambda_i * p_i to every pixel of `img` (float in [0, 1], or uint8
    in [0, 255], rounded), on the image's device."""
    eigvec = torch.tensor(EIGVEC, device=img.device)
    shift = eigvec @ (alpha.to(img.device) * torch.tensor(EIGVAL, device=img.device))
    out = img + shift.view(3, 1, 1) if img.is_floating_point() else add_rounded(img, 255 * shift)
    return tv_tensors.wrap(out, like=img) if isinstance(img, tv_tensors.Image) else out


def add_rounded(img: Tensor, shift: Tensor) -> Tensor:
    """uint8 `img` + `shift[c]` on channel c, rounded and clamped. An interleaved (3, H, W)
    image (a decoded photo's layout) is added as its (H, W * 3) rows plus one row of shifts:
    broadcasting over its 3-long channel axis instead takes torch's slow, unvectorised loop.
    The same float ops per pixel either way."""
    rows = img.movedim(-3, -1)
    if img.ndim == 3 and rows.is_contiguous():
        height, width, _ = rows.shape
        flat = rows.reshape(height, width * 3).float() + shift.repeat(width)
        return flat.round().clamp(0, 255).to(img.dtype).view(height, width, 3).permute(2, 0, 1)
    return (img.float() + shift.view(3, 1, 1)).round().clamp(0, 255).to(img.dtype)


class Lighting(torch.nn.Module):
    """AlexNet colour augmentation: a per-image shift along the principal components of
    ImageNet's colours, alpha_i ~ N(0, std) (`shift_colours`)."""

    def __init__(self, std: float = 0.1) -> None:
        super().__init__()
        self.std = std

    def draw(self) -> Tensor:
        """This image's alpha (the GPU path draws it in the workers, like this module)."""
        return torch.randn(3) * self.std

    def forward(self, img: Tensor) -> Tensor:
        if self.std == 0:
            return img
        return shift_colours(img, self.draw())


class StackCrops(torch.nn.Module):
    """Turn the tuple from `TenCrop`/`FiveCrop` into one (crops, C, H, W) image."""

    def forward(self, crops: Sequence[Tensor]) -> tv_tensors.Image:
        return tv_tensors.Image(torch.stack([torch.as_tensor(c) for c in crops]))
