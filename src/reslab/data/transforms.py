"""The two image transforms torchvision lacks: AlexNet's PCA lighting noise and a crop stacker
for multi-crop evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors

# Eigen-decomposition of ImageNet's RGB pixel covariance (Krizhevsky et al. 2012), pixels in [0, 1].
EIGVAL = (0.2175, 0.0188, 0.0045)
EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


def shift_colours(img: Tensor, alpha: Tensor) -> Tensor:
    """Add sum_i alpha_i * lambda_i * p_i to every pixel of `img` (float in [0, 1], or uint8
    in [0, 255], rounded), on the image's device."""
    eigvec = torch.tensor(EIGVEC, device=img.device)
    shift = (eigvec @ (alpha.to(img.device) * torch.tensor(EIGVAL, device=img.device))).view(
        3, 1, 1
    )
    if img.is_floating_point():
        out = img + shift
    else:
        out = (img.float() + 255 * shift).round().clamp(0, 255).to(img.dtype)
    return tv_tensors.wrap(out, like=img) if isinstance(img, tv_tensors.Image) else out


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
