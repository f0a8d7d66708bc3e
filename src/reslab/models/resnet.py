"""One configurable ResNet (He et al. 2015, arXiv 1512.03385), its plain twin and its family.

Names follow torchvision (`conv1`, `bn1`, `layer1..4`, `downsample`, `fc`) so torchvision
state_dicts (resnet, resnext, wide_resnet) load unchanged. `residual=False` removes the shortcut
and nothing else: the plain networks of the paper's degradation study. The family (pre-activation,
wide, ResNeXt, SE, ResNet-D, inverted residual, stochastic depth) is a handful of orthogonal
options of the same class, not copies of it.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import SqueezeExcitation, StochasticDepth

from reslab.errors import ConfigError

Shortcut = Literal["A", "B", "C", "D"]
Stem = Literal["cifar", "imagenet", "deep"]
Block = Literal["basic", "bottleneck", "inverted"]
Attention = Literal["se"] | None

SHORTCUTS = typing.get_args(Shortcut)
STEMS = typing.get_args(Stem)
ATTENTIONS = (None, "se")
SE_REDUCTION = 16  # Hu et al. 2018: r = 16 is their accuracy/cost trade-off for every SE-ResNet


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, groups=groups, bias=False)


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


def make_shortcut(
    kind: str, in_planes: int, out_planes: int, stride: int, norm: bool = True
) -> nn.Module | None:
    """The paper's options: A pads, B projects when shapes change, C always projects; D (ResNet-D,
    He et al. 2019) average-pools before a stride-1 projection so no activation is skipped.
    `norm=False` for pre-activation blocks, whose next block normalises the sum anyway."""
    changes = stride != 1 or in_planes != out_planes
    if kind == "A" and changes:
        return PadShortcut(in_planes, out_planes, stride)
    if kind == "C" or (kind in ("B", "D") and changes):
        layers: list[nn.Module] = []
        if kind == "D":
            pool = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
            layers.append(pool if stride > 1 else nn.Identity())
            stride = 1
        layers.append(conv1x1(in_planes, out_planes, stride))
        if norm:
            layers.append(nn.BatchNorm2d(out_planes))
        return nn.Sequential(*layers)
    return None


@dataclass(frozen=True)
class BlockOptions:
    """The network-wide options that act inside every block."""

    shortcut: str = "B"
    residual: bool = True
    preact: bool = False
    groups: int = 1
    base_width: int = 64
    attention: str | None = None
    dropout: float = 0.0
    expand_ratio: int = 6


class _Block(nn.Module):
    """What all blocks share: [BN-ReLU] -> branch -> [SE] -> [drop-path] + shortcut -> [ReLU].

    Pre-activation (He et al. 2016) moves BN-ReLU in front of each conv and drops the ReLU after
    the sum, so the identity path stays clean; a projection shortcut then sees the pre-activated
    input, as in their code and in Wide ResNets."""

    expansion = 1
    relu_after_sum = True

    def _finish(
        self, in_planes: int, out: int, stride: int, opts: BlockOptions, drop_path: float
    ) -> None:
        self.residual, self.preact = opts.residual, opts.preact
        self.dropout = nn.Dropout(opts.dropout) if opts.dropout > 0 else nn.Identity()
        self.se = (
            SqueezeExcitation(out, max(1, out // SE_REDUCTION)) if opts.attention == "se" else None
        )
        self.drop_path = StochasticDepth(drop_path, "row") if drop_path > 0 else None
        self.downsample = (
            make_shortcut(opts.shortcut, in_planes, out, stride, norm=not opts.preact)
            if opts.residual
            else None
        )

    def branch(self, x: Tensor) -> Tensor:
        """The residual function (for pre-activation blocks: after the input's BN-ReLU)."""
        raise NotImplementedError

    def last_layer(self) -> nn.Module:
        """The layer `zero_init_residual` zeroes so the block starts as the identity."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        skip = x
        if self.preact:
            x = self.relu(self.bn1(x))
            if self.downsample is not None:
                skip = x
        out = self.branch(x)
        if self.se is not None:
            out = self.se(out)
        if self.residual:
            if self.drop_path is not None:
                out = self.drop_path(out)
            out += skip if self.downsample is None else self.downsample(skip)
        return self.relu(out) if self.relu_after_sum and not self.preact else out


class BasicBlock(_Block):
    """Two 3x3 convolutions; the block of ResNet-18/34, of all CIFAR ResNets and of Wide ResNets
    (whose dropout sits between the convs)."""

    def __init__(
        self, in_planes: int, planes: int, stride: int, opts: BlockOptions, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(in_planes if opts.preact else planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, out)
        self.bn2 = nn.BatchNorm2d(planes if opts.preact else out)
        self._finish(in_planes, out, stride, opts, drop_path)

    def last_layer(self) -> nn.Module:
        return self.conv2 if self.preact else self.bn2

    def branch(self, x: Tensor) -> Tensor:
        if self.preact:
            return self.conv2(self.dropout(self.relu(self.bn2(self.conv1(x)))))
        return self.bn2(self.conv2(self.dropout(self.relu(self.bn1(self.conv1(x))))))


class Bottleneck(_Block):
    """1x1 reduce, 3x3 (carries the stride, as torchvision's v1.5), 1x1 expand by 4. The 3x3 has
    `groups` groups of `base_width`/64 of the stage width each: ResNeXt's split-transform-merge,
    and torchvision's wide_resnet50_2 (base_width 128)."""

    expansion = 4

    def __init__(
        self, in_planes: int, planes: int, stride: int, opts: BlockOptions, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        out = planes * self.expansion
        width = int(planes * opts.base_width / 64) * opts.groups
        self.conv1 = conv1x1(in_planes, width)
        self.bn1 = nn.BatchNorm2d(in_planes if opts.preact else width)
        self.conv2 = conv3x3(width, width, stride, opts.groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out)
        self.bn3 = nn.BatchNorm2d(width if opts.preact else out)
        self.relu = nn.ReLU(inplace=True)
        self._finish(in_planes, out, stride, opts, drop_path)

    def last_layer(self) -> nn.Module:
        return self.conv3 if self.preact else self.bn3

    def branch(self, x: Tensor) -> Tensor:
        if self.preact:
            out = self.relu(self.bn2(self.conv1(x)))
            out = self.relu(self.bn3(self.conv2(out)))
            return self.conv3(self.dropout(out))
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(self.dropout(out)))


class InvertedResidual(_Block):
    """MobileNetV2's block (Sandler et al. 2018): 1x1 expand by t, depthwise 3x3, linear 1x1
    projection; no non-linearity after the projection nor after the sum."""

    relu_after_sum = False

    def __init__(
        self, in_planes: int, planes: int, stride: int, opts: BlockOptions, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        hidden = in_planes * opts.expand_ratio
        self.conv1 = conv1x1(in_planes, hidden)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = conv3x3(hidden, hidden, stride, groups=hidden)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv3 = conv1x1(hidden, planes)
        self.bn3 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU6(inplace=True)
        self._finish(in_planes, planes, stride, opts, drop_path)

    def last_layer(self) -> nn.Module:
        return self.bn3

    def branch(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(self.dropout(out)))


BLOCKS: dict[str, type[_Block]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
    "inverted": InvertedResidual,
}


def make_stem(kind: str, in_channels: int, width: int) -> nn.Module:
    """cifar: one 3x3; imagenet: 7x7/2; deep (ResNet-C): three 3x3, the first /2, at w/2, w/2, w."""
    if kind == "imagenet":
        return nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
    if kind == "deep":
        half = width // 2
        return nn.Sequential(
            conv3x3(in_channels, half, 2),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            conv3x3(half, half),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            conv3x3(half, width),
        )
    return conv3x3(in_channels, width)


class ResNet(nn.Module):
    """Stem, one stage per entry of `layers`/`widths` (stride 2 from the second), GAP, linear.

    Family options: `preact` (BN-ReLU before each conv, final BN-ReLU), `groups`/`base_width`
    (ResNeXt, wide bottlenecks), `attention="se"` (squeeze-and-excitation, r=16), `stem="deep"`
    with `shortcut="D"` (ResNet-D), `block="inverted"` with `expand_ratio`, `dropout` (before
    each block's last conv, WRN), `drop_path` (stochastic depth: the last block's drop rate, the
    ones before it scaled down linearly), `stem_width` (default `widths[0]`)."""

    def __init__(
        self,
        block: Block = "basic",
        layers: Sequence[int] = (3, 3, 3),
        widths: Sequence[int] = (16, 32, 64),
        stem: Stem = "cifar",
        shortcut: Shortcut = "A",
        residual: bool = True,
        num_classes: int = 10,
        zero_init_residual: bool = False,
        in_channels: int = 3,
        stem_width: int | None = None,
        preact: bool = False,
        groups: int = 1,
        base_width: int = 64,
        attention: Attention = None,
        dropout: float = 0.0,
        drop_path: float = 0.0,
        expand_ratio: int = 6,
    ) -> None:
        super().__init__()
        _check_choice("block", block, tuple(BLOCKS))
        _check_choice("stem", stem, STEMS)
        _check_choice("shortcut", shortcut, SHORTCUTS)
        _check_choice("attention", attention, ATTENTIONS)
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
        _check_options(block, preact, groups, base_width, dropout, drop_path, residual)
        opts = BlockOptions(
            shortcut, residual, preact, groups, base_width, attention, dropout, expand_ratio
        )
        block_cls = BLOCKS[block]
        self.residual, self.preact = residual, preact
        stem_width = stem_width or widths[0]
        self.conv1 = make_stem(stem, in_channels, stem_width)
        # A pre-activation net normalises each block's input inside the block instead.
        self.bn1 = None if preact else nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem != "cifar" else nn.Identity()

        total, k = sum(layers), 0
        in_planes = stem_width
        for i, (n, width) in enumerate(zip(layers, widths, strict=True), start=1):
            blocks = []
            for j in range(n):
                k += 1
                stride = 2 if i > 1 and j == 0 else 1
                blocks.append(block_cls(in_planes, width, stride, opts, drop_path * k / total))
                in_planes = width * block_cls.expansion
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.num_stages = len(layers)
        self.final_bn = nn.BatchNorm2d(in_planes) if preact else None
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
                if isinstance(m, _Block):
                    nn.init.zeros_(m.last_layer().weight)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        if self.bn1 is not None:
            x = self.relu(self.bn1(x))
        x = self.maxpool(x)
        for stage in self.stages():
            x = stage(x)
        if self.final_bn is not None:
            x = self.relu(self.final_bn(x))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))


def _check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    if value not in choices:
        raise ConfigError(f"model.{name}={value!r} is not valid; choose one of {list(choices)}")


def _check_options(
    block: str,
    preact: bool,
    groups: int,
    base_width: int,
    dropout: float,
    drop_path: float,
    residual: bool,
) -> None:
    """Combinations that cannot work, each as one line naming the value and what is valid."""
    if block != "bottleneck" and (groups != 1 or base_width != 64):
        raise ConfigError(
            f"model.groups={groups} and model.base_width={base_width} need block='bottleneck' "
            f"(got block={block!r}); for block={block!r} use groups=1, base_width=64"
        )
    if groups < 1 or base_width < 1:
        raise ConfigError(
            f"model.groups={groups} and model.base_width={base_width} must be positive integers"
        )
    if preact and block == "inverted":
        raise ConfigError(
            "model.preact=true needs block 'basic' or 'bottleneck'; the inverted residual block "
            "is post-activation by design"
        )
    for name, rate in (("dropout", dropout), ("drop_path", drop_path)):
        if not 0 <= rate < 1:
            raise ConfigError(f"model.{name}={rate} is not valid; use a rate in [0, 1)")
    if drop_path > 0 and not residual:
        raise ConfigError(
            f"model.drop_path={drop_path} needs model.residual=true: a plain net has no identity "
            "to fall back on when a block is dropped"
        )


IMAGENET_DEPTHS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
CONVS_PER_BLOCK = {"basic": 2, "bottleneck": 3, "inverted": 3}
CIFAR_DEPTHS = {
    6: "6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, 1202, ...)",
    9: "9n+2 with n >= 1 for 3-conv blocks (11, 20, 29, 56, 110, 164, 1001, ...)",
}


def cifar_resnet(
    depth: int = 20,
    residual: bool = True,
    shortcut: Shortcut = "A",
    num_classes: int = 10,
    zero_init_residual: bool = False,
    widths: Sequence[int] = (16, 32, 64),
    block: Block = "basic",
    preact: bool = False,
    groups: int = 1,
    base_width: int = 64,
    attention: Attention = None,
    dropout: float = 0.0,
    drop_path: float = 0.0,
    expand_ratio: int = 6,
) -> ResNet:
    """The paper's CIFAR nets: 6n+2 layers, three stages of n basic blocks at 16/32/64; with
    3-conv blocks (bottleneck, inverted) 9n+2 layers (He et al. 2016's ResNet-164/1001, ResNeXt-29).
    The rest are the family options of `ResNet`."""
    _check_choice("block", block, tuple(BLOCKS))
    per_stage = 3 * CONVS_PER_BLOCK[block]
    if not isinstance(depth, int) or depth < per_stage + 2 or (depth - 2) % per_stage:
        raise ConfigError(
            f"model.depth={depth} is not a CIFAR ResNet depth; use {CIFAR_DEPTHS[per_stage]}"
        )
    n = (depth - 2) // per_stage
    return ResNet(
        block, (n, n, n), widths, "cifar", shortcut, residual, num_classes, zero_init_residual,
        preact=preact, groups=groups, base_width=base_width, attention=attention,
        dropout=dropout, drop_path=drop_path, expand_ratio=expand_ratio,
    )  # fmt: skip


def wide_cifar_resnet(
    depth: int = 28,
    widen_factor: int = 10,
    dropout: float = 0.0,
    residual: bool = True,
    shortcut: Shortcut = "B",
    preact: bool = True,
    num_classes: int = 10,
    zero_init_residual: bool = False,
    drop_path: float = 0.0,
) -> ResNet:
    """WRN-d-k (Zagoruyko & Komodakis 2016): 6n+4 layers (the 3 projections count), pre-activation
    basic blocks at 16k/32k/64k after a 16-channel stem, dropout between the convs."""
    if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise ConfigError(
            f"model.depth={depth} is not a Wide ResNet depth; use 6n+4 with n >= 1 "
            "(10, 16, 22, 28, 40, ...)"
        )
    if not isinstance(widen_factor, int) or widen_factor < 1:
        raise ConfigError(f"model.widen_factor={widen_factor} must be a positive integer")
    n, k = (depth - 4) // 6, widen_factor
    return ResNet(
        "basic", (n, n, n), (16 * k, 32 * k, 64 * k), "cifar", shortcut, residual, num_classes,
        zero_init_residual, stem_width=16, preact=preact, dropout=dropout, drop_path=drop_path,
    )  # fmt: skip


def imagenet_resnet(
    depth: int = 18,
    residual: bool = True,
    shortcut: Shortcut = "B",
    num_classes: int = 1000,
    zero_init_residual: bool = False,
    widths: Sequence[int] = (64, 128, 256, 512),
    stem: Stem = "imagenet",
    preact: bool = False,
    groups: int = 1,
    base_width: int = 64,
    attention: Attention = None,
    dropout: float = 0.0,
    drop_path: float = 0.0,
) -> ResNet:
    """The paper's ImageNet nets (Table 1): depth 18/34 basic, 50/101/152 bottleneck. The rest
    are the family options of `ResNet`: ResNeXt-50 32x4d is depth 50, groups 32, base_width 4."""
    if depth not in IMAGENET_DEPTHS:
        raise ConfigError(
            f"model.depth={depth} is not an ImageNet ResNet depth; choose one of "
            f"{list(IMAGENET_DEPTHS)}"
        )
    block, layers = IMAGENET_DEPTHS[depth]
    return ResNet(
        block, layers, widths, stem, shortcut, residual, num_classes, zero_init_residual,
        preact=preact, groups=groups, base_width=base_width, attention=attention,
        dropout=dropout, drop_path=drop_path,
    )  # fmt: skip
