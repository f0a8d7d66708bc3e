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


class Lighting(torch.nn.Module):
    """AlexNet colour augmentation: add sum_i alpha_i * lambda_i * p_i, alpha_i ~ N(0, std),
    to every pixel; a per-image shift along the principal components of ImageNet's colours."""

    def __init__(self, std: float = 0.1) -> None:
        super().__init__()
        self.std = std
        self.register_buffer("eigval", torch.tensor(EIGVAL))
        self.register_buffer("eigvec", torch.tensor(EIGVEC))

    def forward(self, img: Tensor) -> Tensor:
        if self.std == 0:
            return img
        alpha = torch.randn(3) * self.std
        shift = (self.eigvec @ (alpha * self.eigval)).view(3, 1, 1)
        if img.is_floating_point():
            return (
                tv_tensors.wrap(img + shift, like=img)
                if isinstance(img, tv_tensors.Image)
                else img + shift
            )
        out = (img.float() + 255 * shift).round().clamp(0, 255).to(img.dtype)
        return tv_tensors.wrap(out, like=img) if isinstance(img, tv_tensors.Image) else out


class StackCrops(torch.nn.Module):
    """Turn the tuple from `TenCrop`/`FiveCrop` into one (crops, C, H, W) image."""

    def forward(self, crops: Sequence[Tensor]) -> tv_tensors.Image:
        return tv_tensors.Image(torch.stack([torch.as_tensor(c) for c in crops]))
