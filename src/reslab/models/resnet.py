"""One configurable ResNet (He et al. 2015, arXiv 1512.03385) and its plain twin.

Names follow torchvision (`conv1`, `bn1`, `layer1..4`, `downsample`, `fc`) so torchvision
state_dicts load unchanged. `residual=False` removes the shortcut and nothing else: the plain
networks of the paper's degradation study.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reslab.errors import ConfigError

Shortcut = Literal["A", "B", "C"]
Stem = Literal["cifar", "imagenet"]

SHORTCUTS = ("A", "B", "C")
STEMS = ("cifar", "imagenet")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Option A: identity, subsampled by the stride, with zero channels appended."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = out_planes - in_planes, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self) -> str:
        return f"pad_channels={self.extra}, stride={self.stride}"


def make_shortcut(kind: str, in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """The paper's options: A pads, B projects when shapes change, C always projects."""
    changes = stride != 1 or in_planes != out_planes
    if kind == "C" or (kind == "B" and changes):
        return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))
    if kind == "A" and changes:
        return PadShortcut(in_planes, out_planes, stride)
    return None


class BasicBlock(nn.Module):
    """Two 3x3 convolutions; the block of ResNet-18/34 and of all CIFAR ResNets."""

    expansion = 1

    def __init__(
        self, in_planes: int, planes: int, stride: int, shortcut: str, residual: bool
    ) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, out)
        self.bn2 = nn.BatchNorm2d(out)
        self.residual = residual
        self.downsample = make_shortcut(shortcut, in_planes, out, stride) if residual else None

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def branch(self, x: Tensor) -> Tensor:
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))

    def forward(self, x: Tensor) -> Tensor:
        out = self.branch(x)
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride, as torchvision's v1.5), 1x1 expand by 4."""

    expansion = 4

    def __init__(
        self, in_planes: int, planes: int, stride: int, shortcut: str, residual: bool
    ) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual
        self.downsample = make_shortcut(shortcut, in_planes, out, stride) if residual else None

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def branch(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))

    def forward(self, x: Tensor) -> Tensor:
        out = self.branch(x)
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}


class ResNet(nn.Module):
    """Stem, one stage per entry of `layers`/`widths` (stride 2 from the second), GAP, linear."""

    def __init__(
        self,
        block: str = "basic",
        layers: Sequence[int] = (3, 3, 3),
        widths: Sequence[int] = (16, 32, 64),
        stem: str = "cifar",
        shortcut: str = "A",
        residual: bool = True,
        num_classes: int = 10,
        zero_init_residual: bool = False,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        _check_choice("block", block, tuple(BLOCKS))
        _check_choice("stem", stem, STEMS)
        _check_choice("shortcut", shortcut, SHORTCUTS)
        if len(layers) != len(widths) or not layers:
            raise ConfigError(
                f"layers {list(layers)} and widths {list(widths)} must be non-empty and of equal "
                "length (one entry per stage)"
            )
        if any(n < 1 for n in layers) or any(w < 1 for w in widths):
            raise ConfigError(
                f"layers {list(layers)} and widths {list(widths)} must be positive integers"
            )
        if num_classes < 1:
            raise ConfigError(f"num_classes={num_classes} must be a positive integer")
        block_cls = BLOCKS[block]
        self.residual = residual
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()

        in_planes = widths[0]
        for i, (n, width) in enumerate(zip(layers, widths, strict=True), start=1):
            blocks = []
            for j in range(n):
                stride = 2 if i > 1 and j == 0 else 1
                blocks.append(block_cls(in_planes, width, stride, shortcut, residual))
                in_planes = width * block_cls.expansion
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        self.reset_parameters(zero_init_residual)

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i}") for i in range(1, self.num_stages + 1)]

    def reset_parameters(self, zero_init_residual: bool = False) -> None:
        """He init (fan_out) for convs, BN to identity, torchvision's default for `fc`."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock | Bottleneck):
                    nn.init.zeros_(m.last_bn.weight)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages():
            x = stage(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))


def _check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    if value not in choices:
        raise ConfigError(f"model.{name}={value!r} is not valid; choose one of {list(choices)}")


IMAGENET_DEPTHS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def cifar_resnet(
    depth: int = 20,
    residual: bool = True,
    shortcut: str = "A",
    num_classes: int = 10,
    zero_init_residual: bool = False,
    widths: Sequence[int] = (16, 32, 64),
) -> ResNet:
    """The paper's CIFAR nets: 6n+2 layers, three stages of n basic blocks at 16/32/64."""
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ConfigError(
            f"model.depth={depth} is not a CIFAR ResNet depth; use 6n+2 with n >= 1 "
            "(8, 14, 20, 32, 44, 56, 110, 1202, ...)"
        )
    n = (depth - 2) // 6
    return ResNet(
        "basic", (n, n, n), widths, "cifar", shortcut, residual, num_classes, zero_init_residual
    )


def imagenet_resnet(
    depth: int = 18,
    residual: bool = True,
    shortcut: str = "B",
    num_classes: int = 1000,
    zero_init_residual: bool = False,
    widths: Sequence[int] = (64, 128, 256, 512),
) -> ResNet:
    """The paper's ImageNet nets (Table 1): depth 18/34 basic, 50/101/152 bottleneck."""
    if depth not in IMAGENET_DEPTHS:
        raise ConfigError(
            f"model.depth={depth} is not an ImageNet ResNet depth; choose one of "
            f"{list(IMAGENET_DEPTHS)}"
        )
    block, layers = IMAGENET_DEPTHS[depth]
    return ResNet(
        block, layers, widths, "imagenet", shortcut, residual, num_classes, zero_init_residual
    )
