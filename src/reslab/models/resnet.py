"""One configurable ResNet (He et al. 2015, arXiv 1512.03385), its plain twin and its family,
in torchvision's shape: small block classes, one `ResNet`, tiny builders.

Names follow torchvision (`conv1`, `bn1`, `layer1..4`, `downsample`, `fc`) so torchvision
state_dicts (resnet, resnext, wide_resnet) load unchanged; `bnK` is always the K-th norm layer
the input meets in its module. `residual=False` removes the shortcut and nothing else: the plain
networks of the paper's degradation study. The family (pre-activation, wide, ResNeXt, SE, ResNet-D,
inverted residual, stochastic depth) is a handful of orthogonal options, not copies of the net.

A block class declares what it is (`kind`, the name configs use; `convs` per block; `expansion`)
and owns its `forward`; `BLOCK_TYPES` lists the classes a config can name.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import SqueezeExcitation, StochasticDepth

from reslab.errors import ConfigError

Shortcut = Literal["A", "B", "C", "D"]
Stem = Literal["cifar", "imagenet", "deep"]
Attention = Literal["se"] | None
NormLayer = Callable[[int], nn.Module]

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
    kind: str, in_planes: int, out_planes: int, stride: int, norm_layer: NormLayer | None
) -> nn.Module | None:
    """The paper's options: A pads, B projects when shapes change, C always projects; D (ResNet-D,
    He et al. 2019) average-pools before a stride-1 projection so no activation is skipped.
    `norm_layer=None` for pre-activation blocks, whose next block normalises the sum anyway."""
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
        if norm_layer is not None:
            layers.append(norm_layer(out_planes))
        return nn.Sequential(*layers)
    return None


def make_attention(attention: str | None, channels: int) -> nn.Module | None:
    """`se`: squeeze-and-excitation on the branch (torchvision's module, reduction 16)."""
    return SqueezeExcitation(channels, max(1, channels // SE_REDUCTION)) if attention else None


def make_drop_path(rate: float) -> nn.Module | None:
    """Stochastic depth per sample (Huang et al. 2016): the branch is dropped, the shortcut kept."""
    return StochasticDepth(rate, "row") if rate > 0 else None


def _refuse_groups(kind: str, groups: int, base_width: int) -> None:
    if groups != 1 or base_width != 64:
        raise ConfigError(
            f"model.groups={groups} and model.base_width={base_width} need "
            f"block={Bottleneck.kind!r} (got block={kind!r}); for block={kind!r} use groups=1, "
            "base_width=64"
        )


def _refuse_expand_ratio(kind: str, expand_ratio: int) -> None:
    if expand_ratio != 6:
        raise ConfigError(
            f"model.expand_ratio={expand_ratio} needs block={InvertedResidual.kind!r} (got "
            f"block={kind!r}, which has no expansion layer); leave expand_ratio at 6"
        )


class Block(nn.Module):
    """What `ResNet` reads of a block class, and the end every block's `forward` shares.

    Every block takes the same keyword options (as torchvision's blocks all take `groups` and
    `base_width`) and refuses, in one line, those it cannot honour. Its `__init__` sets
    `residual`, `se`, `drop_path` and `downsample`, which `add_shortcut` reads."""

    kind: ClassVar[str]  # the name a config gives: `block: <kind>`
    convs: ClassVar[int]  # convolutions on the branch: a CIFAR net has 3 * convs * n + 2 layers
    expansion: ClassVar[int] = 1  # output channels per `planes`
    preact: bool = False

    residual: bool
    se: nn.Module | None
    drop_path: nn.Module | None
    downsample: nn.Module | None

    def last_layer(self) -> nn.Module:
        """The layer `zero_init_residual` zeroes so the block starts as the identity."""
        raise NotImplementedError

    def add_shortcut(self, out: Tensor, skip: Tensor) -> Tensor:
        """SE on the branch output, then (unless plain) drop-path and the in-place sum with the
        shortcut of `skip`."""
        if self.se is not None:
            out = self.se(out)
        if self.residual:
            if self.drop_path is not None:
                out = self.drop_path(out)
            out += skip if self.downsample is None else self.downsample(skip)
        return out


class BasicBlock(Block):
    """Two 3x3 convolutions; the block of ResNet-18/34, of all CIFAR ResNets and of Wide ResNets
    (whose dropout sits between the convs). Pre-activation (He et al. 2016) puts BN-ReLU (`bn1`,
    on the block input) before each conv and nothing after the sum, so the identity path stays
    clean; a projection shortcut then sees the pre-activated input, as in their code."""

    kind = "basic"
    convs = 2

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: Shortcut = "B",
        residual: bool = True,
        preact: bool = False,
        groups: int = 1,
        base_width: int = 64,
        expand_ratio: int = 6,
        attention: Attention = None,
        dropout: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        _refuse_groups(self.kind, groups, base_width)
        _refuse_expand_ratio(self.kind, expand_ratio)
        out = planes * self.expansion
        self.residual, self.preact = residual, preact
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = norm_layer(in_planes if preact else planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, out)
        self.bn2 = norm_layer(planes if preact else out)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.se = make_attention(attention, out)
        self.drop_path = make_drop_path(drop_path)
        norm = None if preact else norm_layer
        self.downsample = (
            make_shortcut(shortcut, in_planes, out, stride, norm) if residual else None
        )

    def last_layer(self) -> nn.Module:
        return self.conv2 if self.preact else self.bn2

    def branch(self, x: Tensor) -> Tensor:
        """The residual function (for a pre-activation block: of the input after bn1-ReLU)."""
        if self.preact:
            return self.conv2(self.dropout(self.relu(self.bn2(self.conv1(x)))))
        return self.bn2(self.conv2(self.dropout(self.relu(self.bn1(self.conv1(x))))))

    def forward(self, x: Tensor) -> Tensor:
        if self.preact:
            pre = self.relu(self.bn1(x))
            return self.add_shortcut(self.branch(pre), x if self.downsample is None else pre)
        return self.relu(self.add_shortcut(self.branch(x), x))


class Bottleneck(Block):
    """1x1 reduce, 3x3 (carries the stride, as torchvision's v1.5), 1x1 expand by 4. The 3x3 has
    `groups` groups of `base_width`/64 of the stage width each: ResNeXt's split-transform-merge,
    and torchvision's wide_resnet50_2 (base_width 128). Pre-activation as in `BasicBlock`."""

    kind = "bottleneck"
    convs = 3
    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: Shortcut = "B",
        residual: bool = True,
        preact: bool = False,
        groups: int = 1,
        base_width: int = 64,
        expand_ratio: int = 6,
        attention: Attention = None,
        dropout: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if groups < 1 or base_width < 1:
            raise ConfigError(
                f"model.groups={groups} and model.base_width={base_width} must be positive integers"
            )
        _refuse_expand_ratio(self.kind, expand_ratio)
        out = planes * self.expansion
        width = int(planes * base_width / 64) * groups
        self.residual, self.preact = residual, preact
        self.conv1 = conv1x1(in_planes, width)
        self.bn1 = norm_layer(in_planes if preact else width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, out)
        self.bn3 = norm_layer(width if preact else out)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.se = make_attention(attention, out)
        self.drop_path = make_drop_path(drop_path)
        norm = None if preact else norm_layer
        self.downsample = (
            make_shortcut(shortcut, in_planes, out, stride, norm) if residual else None
        )

    def last_layer(self) -> nn.Module:
        return self.conv3 if self.preact else self.bn3

    def branch(self, x: Tensor) -> Tensor:
        """The residual function (for a pre-activation block: of the input after bn1-ReLU)."""
        if self.preact:
            out = self.relu(self.bn2(self.conv1(x)))
            out = self.relu(self.bn3(self.conv2(out)))
            return self.conv3(self.dropout(out))
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(self.dropout(out)))

    def forward(self, x: Tensor) -> Tensor:
        if self.preact:
            pre = self.relu(self.bn1(x))
            return self.add_shortcut(self.branch(pre), x if self.downsample is None else pre)
        return self.relu(self.add_shortcut(self.branch(x), x))


class InvertedResidual(Block):
    """MobileNetV2's block (Sandler et al. 2018): 1x1 expand by `expand_ratio`, depthwise 3x3,
    linear 1x1 projection to `planes`; no non-linearity after the projection nor after the sum."""

    kind = "inverted"
    convs = 3

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: Shortcut = "B",
        residual: bool = True,
        preact: bool = False,
        groups: int = 1,
        base_width: int = 64,
        expand_ratio: int = 6,
        attention: Attention = None,
        dropout: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        _refuse_groups(self.kind, groups, base_width)
        if preact:
            raise ConfigError(
                f"model.preact=true needs block {BasicBlock.kind!r} or {Bottleneck.kind!r}; the "
                "inverted residual block is post-activation by design"
            )
        hidden = in_planes * expand_ratio
        self.residual = residual
        self.conv1 = conv1x1(in_planes, hidden)
        self.bn1 = norm_layer(hidden)
        self.conv2 = conv3x3(hidden, hidden, stride, groups=hidden)
        self.bn2 = norm_layer(hidden)
        self.conv3 = conv1x1(hidden, planes)
        self.bn3 = norm_layer(planes)
        self.relu = nn.ReLU6(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.se = make_attention(attention, planes)
        self.drop_path = make_drop_path(drop_path)
        self.downsample = (
            make_shortcut(shortcut, in_planes, planes, stride, norm_layer) if residual else None
        )

    def last_layer(self) -> nn.Module:
        return self.bn3

    def branch(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(self.dropout(out)))

    def forward(self, x: Tensor) -> Tensor:
        return self.add_shortcut(self.branch(x), x)


# The block classes a config can name by their `kind`; a new block is added here.
BLOCK_TYPES: tuple[type[Block], ...] = (BasicBlock, Bottleneck, InvertedResidual)
BlockKind = Literal[tuple(b.kind for b in BLOCK_TYPES)]  # type: ignore[valid-type]


def block_type(block: str | type[Block]) -> type[Block]:
    """The class a config's `block: <kind>` names (a block class is taken as it is)."""
    if isinstance(block, type) and issubclass(block, Block):
        return block
    for cls in BLOCK_TYPES:
        if cls.kind == block:
            return cls
    raise ConfigError(
        f"model.block={block!r} is not valid; choose one of {[b.kind for b in BLOCK_TYPES]}"
    )


def make_stem(kind: str, in_channels: int, width: int, norm_layer: NormLayer) -> nn.Module:
    """cifar: one 3x3; imagenet: 7x7/2; deep (ResNet-C): three 3x3, the first /2, at w/2, w/2, w."""
    if kind == "imagenet":
        return nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
    if kind == "deep":
        half = width // 2
        return nn.Sequential(
            conv3x3(in_channels, half, 2),
            norm_layer(half),
            nn.ReLU(inplace=True),
            conv3x3(half, half),
            norm_layer(half),
            nn.ReLU(inplace=True),
            conv3x3(half, width),
        )
    return conv3x3(in_channels, width)


class ResNet(nn.Module):
    """Stem, one stage per entry of `layers`/`widths` (stride 2 from the second), GAP, linear.

    `block` is a block class or its `kind` (`basic`, `bottleneck`, `inverted`). Family options:
    `preact` (BN-ReLU before each conv, final BN-ReLU `final_bn`; the stem then has no `bn1`),
    `groups`/`base_width` (ResNeXt, wide bottlenecks), `attention="se"` (squeeze-and-excitation,
    r=16), `stem="deep"` with `shortcut="D"` (ResNet-D), `expand_ratio` (inverted blocks),
    `dropout` (before each block's last conv, WRN), `drop_path` (stochastic depth: the last
    block's drop rate, the ones before it scaled down linearly), `stem_width` (default
    `widths[0]`), `norm_layer` (called with a channel count, as torchvision's)."""

    def __init__(
        self,
        block: BlockKind | type[Block] = "basic",
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
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        block_cls = block_type(block)
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
        _check_rates(dropout, drop_path, residual)
        make_block = functools.partial(
            block_cls, shortcut=shortcut, residual=residual, preact=preact, groups=groups,
            base_width=base_width, expand_ratio=expand_ratio, attention=attention,
            dropout=dropout, norm_layer=norm_layer,
        )  # fmt: skip
        self.residual, self.preact = residual, preact
        stem_width = stem_width or widths[0]
        self.conv1 = make_stem(stem, in_channels, stem_width, norm_layer)
        # A pre-activation net normalises each block's input inside the block instead.
        self.bn1 = None if preact else norm_layer(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem != "cifar" else nn.Identity()

        total, k = sum(layers), 0
        in_planes = stem_width
        for i, (n, width) in enumerate(zip(layers, widths, strict=True), start=1):
            blocks = []
            for j in range(n):
                k += 1
                stride = 2 if i > 1 and j == 0 else 1
                blocks.append(make_block(in_planes, width, stride, drop_path=drop_path * k / total))
                in_planes = width * block_cls.expansion
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.num_stages = len(layers)
        self.final_bn = norm_layer(in_planes) if preact else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        self.reset_parameters(zero_init_residual)

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i}") for i in range(1, self.num_stages + 1)]

    def reset_parameters(self, zero_init_residual: bool = False) -> None:
        """He init (fan_out) for convs, norms to identity, torchvision's default for `fc`."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Block):
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


def _check_rates(dropout: float, drop_path: float, residual: bool) -> None:
    for name, rate in (("dropout", dropout), ("drop_path", drop_path)):
        if not 0 <= rate < 1:
            raise ConfigError(f"model.{name}={rate} is not valid; use a rate in [0, 1)")
    if drop_path > 0 and not residual:
        raise ConfigError(
            f"model.drop_path={drop_path} needs model.residual=true: a plain net has no identity "
            "to fall back on when a block is dropped"
        )


def cifar_resnet(
    depth: int = 20,
    residual: bool = True,
    shortcut: Shortcut = "A",
    num_classes: int = 10,
    zero_init_residual: bool = False,
    widths: Sequence[int] = (16, 32, 64),
    block: BlockKind | type[Block] = "basic",
    preact: bool = False,
    groups: int = 1,
    base_width: int = 64,
    attention: Attention = None,
    dropout: float = 0.0,
    drop_path: float = 0.0,
    expand_ratio: int = 6,
    norm_layer: NormLayer = nn.BatchNorm2d,
) -> ResNet:
    """The paper's CIFAR nets: three stages of n blocks at 16/32/64, so depth = 3 * convs * n + 2
    (the stem conv and the fc counted): 6n+2 with basic blocks, 9n+2 with 3-conv blocks
    (bottleneck, inverted: He et al. 2016's ResNet-164/1001, ResNeXt-29). The rest are the family
    options of `ResNet`."""
    block_cls = block_type(block)
    per_stage = 3 * block_cls.convs
    if not isinstance(depth, int) or depth < per_stage + 2 or (depth - 2) % per_stage:
        examples = ", ".join(str(per_stage * n + 2) for n in (1, 2, 3))
        raise ConfigError(
            f"model.depth={depth} is not a CIFAR ResNet depth; use {per_stage}n+2 with n >= 1 "
            f"for {block_cls.kind} blocks ({examples}, ...)"
        )
    n = (depth - 2) // per_stage
    return ResNet(
        block_cls, (n, n, n), widths, "cifar", shortcut, residual, num_classes,
        zero_init_residual, preact=preact, groups=groups, base_width=base_width,
        attention=attention, dropout=dropout, drop_path=drop_path, expand_ratio=expand_ratio,
        norm_layer=norm_layer,
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
    norm_layer: NormLayer = nn.BatchNorm2d,
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
        BasicBlock, (n, n, n), (16 * k, 32 * k, 64 * k), "cifar", shortcut, residual,
        num_classes, zero_init_residual, stem_width=16, preact=preact, dropout=dropout,
        drop_path=drop_path, norm_layer=norm_layer,
    )  # fmt: skip


# He et al. 2015, Table 1: the block and blocks per stage of each ImageNet depth.
IMAGENET_DEPTHS: dict[int, tuple[type[Block], tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


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
    norm_layer: NormLayer = nn.BatchNorm2d,
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
        dropout=dropout, drop_path=drop_path, norm_layer=norm_layer,
    )  # fmt: skip
