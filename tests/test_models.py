from __future__ import annotations

import functools

import pytest
import torch
import torchvision
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from reslab.checks.schema import check_node
from reslab.errors import ConfigError
from reslab.models import (
    BasicBlock,
    Block,
    Bottleneck,
    PadShortcut,
    ResNet,
    cifar_resnet,
    imagenet_resnet,
    wide_cifar_resnet,
)
from reslab.models.resnet import BLOCK_TYPES, make_drop_path, make_shortcut


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    ("depth", "millions"),
    [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7), (1202, 19.4)],
)
def test_cifar_param_counts_match_the_paper(depth: int, millions: float) -> None:
    digits = 1 if millions >= 1 else 2
    assert round(n_params(cifar_resnet(depth)) / 1e6, digits) == millions


@pytest.mark.parametrize(
    ("depth", "count"),
    [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032), (101, 44_549_160), (152, 60_192_808)],
)
def test_imagenet_param_counts_equal_torchvision(depth: int, count: int) -> None:
    assert n_params(imagenet_resnet(depth)) == count


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_state_dict_loads_and_gives_identical_outputs(depth: int) -> None:
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    for m in theirs.modules():  # non-trivial BN statistics so eval mode is really compared
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    ours = imagenet_resnet(depth)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 96, 96)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


class OpTrace(TorchDispatchMode):
    """The ATen ops a computation runs, with their tensor arguments' shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        shapes = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
        self.ops.append((str(func.overloadpacket), shapes))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("depth", [18, 50])
def test_training_step_runs_the_same_kernels_as_torchvision(depth: int) -> None:
    """Forward and backward run the very ops of torchvision's model, in the same order and
    shapes (in-place residual add included), so the two can only differ in speed by noise:
    the harness's `our resnet.. vs torchvision` row measures that noise."""
    traces = []
    for net in (imagenet_resnet(depth), getattr(torchvision.models, f"resnet{depth}")()):
        with OpTrace() as trace:
            net(torch.randn(2, 3, 64, 64)).sum().backward()
        traces.append(trace.ops)
    assert len(traces[0]) > 200 and traces[0] == traces[1]


def test_output_shapes() -> None:
    assert cifar_resnet(20, num_classes=100)(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert imagenet_resnet(18, num_classes=7)(torch.randn(2, 3, 64, 64)).shape == (2, 7)


def test_stem_and_stage_shapes() -> None:
    net = cifar_resnet(20)
    x = torch.randn(1, 3, 32, 32)
    x = net.relu(net.bn1(net.conv1(x)))
    sizes = []
    for stage in net.stages():
        x = stage(x)
        sizes.append(tuple(x.shape[1:]))
    assert sizes == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]


def test_plain_twin_has_the_same_layers_and_no_shortcut() -> None:
    plain, res = cifar_resnet(56, residual=False), cifar_resnet(56)
    assert n_params(plain) == n_params(res)  # option A adds no parameters
    blocks = [m for m in plain.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 27 and all(b.downsample is None and not b.residual for b in blocks)
    # Same weights: the outputs differ only because the shortcut is gone.
    plain.load_state_dict(res.state_dict())
    block = plain.layer1[0]
    x = torch.randn(1, 16, 8, 8)
    torch.testing.assert_close(block(x), torch.relu(block.branch(x)))
    block.residual = True
    torch.testing.assert_close(block(x), torch.relu(block.branch(x) + x))


def test_plain_twin_of_option_b_drops_the_projections() -> None:
    plain = imagenet_resnet(34, residual=False)
    assert not any("downsample" in k for k in plain.state_dict())
    assert plain(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_shortcut_options() -> None:
    a = cifar_resnet(20, shortcut="A")
    assert isinstance(a.layer2[0].downsample, PadShortcut) and a.layer1[0].downsample is None
    b = cifar_resnet(20, shortcut="B")
    assert (
        isinstance(b.layer2[0].downsample, torch.nn.Sequential) and b.layer1[0].downsample is None
    )
    c = cifar_resnet(20, shortcut="C")
    assert all(isinstance(blk.downsample, torch.nn.Sequential) for s in c.stages() for blk in s)
    assert n_params(a) < n_params(b) < n_params(c)


def test_option_a_pads_zeros_and_subsamples() -> None:
    x = torch.randn(2, 16, 8, 8)
    y = PadShortcut(16, 32, 2)(x)
    assert y.shape == (2, 32, 4, 4)
    torch.testing.assert_close(y[:, :16], x[:, :, ::2, ::2])
    assert y[:, 16:].abs().sum() == 0


def test_bottleneck_puts_the_stride_on_the_3x3() -> None:
    block = imagenet_resnet(50).layer2[0]
    assert isinstance(block, Bottleneck)
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)
    assert block.conv3.out_channels == 4 * block.conv1.out_channels


def test_he_init_and_zero_init_residual() -> None:
    net = cifar_resnet(20, zero_init_residual=True)
    w = net.layer3[0].conv1.weight
    fan_out = w.shape[0] * w.shape[2] * w.shape[3]
    assert abs(w.std().item() - (2 / fan_out) ** 0.5) < 0.1 * (2 / fan_out) ** 0.5
    assert all(b.bn2.weight.abs().sum() == 0 for s in net.stages() for b in s)
    assert all(b.bn1.weight.eq(1).all() for s in net.stages() for b in s)
    # With zeroed branches every residual block starts as the identity (after ReLU).
    x = torch.relu(torch.randn(1, 16, 8, 8))
    net.eval()
    torch.testing.assert_close(net.layer1[0](x), x)


def test_generic_resnet_options() -> None:
    net = ResNet("bottleneck", (1, 1), (8, 16), "cifar", "B", True, 3)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 3)
    assert net.fc.in_features == 64


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda: cifar_resnet(21), "model.depth=21 is not a CIFAR ResNet depth; use 6n+2"),
        (lambda: cifar_resnet(2), "model.depth=2"),
        (lambda: imagenet_resnet(20), "model.depth=20 is not an ImageNet ResNet depth"),
        (lambda: cifar_resnet(20, shortcut="E"), "model.shortcut='E' is not valid; choose one"),
        (lambda: ResNet(block="wide"), "model.block='wide' is not valid"),
        (lambda: ResNet(stem="tiny"), "model.stem='tiny' is not valid"),
        (lambda: ResNet(layers=(1, 1), widths=(4,)), "one entry per stage"),
        (lambda: cifar_resnet(20, num_classes=0), "num_classes=0"),
    ],
)
def test_bad_options_fail_at_construction_with_one_line(build, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        build()
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_macs_match_table1_and_add_up() -> None:
    from reslab.models.flops import count_macs

    macs = count_macs(imagenet_resnet(34), (3, 224, 224))
    assert round(macs["total"] / 1e9, 1) == 3.7  # Table 1: 3.6 (the paper rounds FC/BN away)
    assert sum(v for k, v in macs.items() if k != "total") == macs["total"]
    assert set(macs) == {"conv1", "layer1", "layer2", "layer3", "layer4", "fc", "total"}
    assert round(count_macs(imagenet_resnet(18), (3, 224, 224))["total"] / 1e9, 1) == 1.8


def test_each_block_class_declares_its_kind_convs_and_expansion() -> None:
    """A config names a block by its class's `kind`; the class itself builds the same net."""
    declared = [(b.__name__, b.kind, b.convs, b.expansion) for b in BLOCK_TYPES]
    assert declared == [
        ("BasicBlock", "basic", 2, 1),
        ("Bottleneck", "bottleneck", 3, 4),
        ("InvertedResidual", "inverted", 3, 1),
    ]
    for cls in BLOCK_TYPES:
        nets = []
        for block in (cls.kind, cls):
            torch.manual_seed(0)
            nets.append(cifar_resnet(3 * cls.convs + 2, block=block, shortcut="B"))
        by_kind, by_class = nets
        assert [len(s) for s in by_class.stages()] == [1, 1, 1]
        assert all(isinstance(b, cls) for s in by_class.stages() for b in s)
        assert by_class.fc.in_features == 64 * cls.expansion
        for (k, a), (_, b) in zip(
            by_kind.state_dict().items(), by_class.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), k
        with pytest.raises(
            ConfigError, match=rf"use {3 * cls.convs}n\+2 with n >= 1 for {cls.kind}"
        ):
            cifar_resnet(3 * cls.convs + 3, block=cls)


class SingleConv(Block):
    """A block written outside the model file: one 3x3 conv and its norm on the branch."""

    kind = "single"
    convs = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: str = "B",
        residual: bool = True,
        drop_path: float = 0.0,
        norm_layer=nn.BatchNorm2d,
        **family: object,  # the family options (preact, groups, ...) this block has no use for
    ) -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.se, self.drop_path = None, make_drop_path(drop_path)
        self.downsample = make_shortcut(shortcut, in_planes, planes, stride, norm_layer)

    def last_layer(self) -> nn.Module:
        return self.bn1

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.add_shortcut(self.bn1(self.conv1(x)), x))


def test_resnet_reads_only_what_a_block_class_declares() -> None:
    """The depth rule, the stage widths and zero-init come from the class: 3 * convs * n + 2."""
    net = cifar_resnet(11, block=SingleConv, shortcut="B", zero_init_residual=True)
    assert [len(s) for s in net.stages()] == [3, 3, 3]
    assert all(b.bn1.weight.abs().sum() == 0 for s in net.stages() for b in s)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ConfigError, match=r"use 3n\+2 with n >= 1 for single blocks \(5, 8, 11"):
        cifar_resnet(12, block=SingleConv)


GROUP_NORM = functools.partial(nn.GroupNorm, 4)


@pytest.mark.parametrize(
    "build",
    [
        lambda norm: cifar_resnet(8, shortcut="B", norm_layer=norm),
        lambda norm: cifar_resnet(8, preact=True, shortcut="C", norm_layer=norm),
        lambda norm: cifar_resnet(11, block="inverted", shortcut="B", norm_layer=norm),
        lambda norm: wide_cifar_resnet(10, 1, norm_layer=norm),
        lambda norm: imagenet_resnet(
            18, stem="deep", shortcut="D", attention="se", norm_layer=norm
        ),
    ],
    ids=["basic", "preact", "inverted", "wrn", "resnet18d-se"],
)
def test_norm_layer_replaces_every_batchnorm_and_keeps_the_names(build) -> None:
    default, grouped = build(nn.BatchNorm2d), build(GROUP_NORM)
    batchnorms = [n for n, m in default.named_modules() if isinstance(m, nn.BatchNorm2d)]
    groupnorms = [n for n, m in grouped.named_modules() if isinstance(m, nn.GroupNorm)]
    assert batchnorms and groupnorms == batchnorms
    assert not any(isinstance(m, nn.BatchNorm2d) for m in grouped.modules())
    assert [n for n, _ in grouped.named_parameters()] == [n for n, _ in default.named_parameters()]
    assert all(m.weight.eq(1).all() and m.bias.eq(0).all() for m in grouped.modules()
               if isinstance(m, nn.GroupNorm))  # fmt: skip
    size = 64 if isinstance(grouped.maxpool, nn.MaxPool2d) else 32
    out = grouped.eval()(torch.randn(2, 3, size, size))
    assert out.shape[0] == 2 and torch.isfinite(out).all()


def test_norm_layer_from_a_config_node_passes_the_schema_and_builds() -> None:
    node = OmegaConf.create(
        {
            "_target_": "reslab.models.cifar_resnet",
            "depth": 8,
            "norm_layer": {"_target_": "torch.nn.GroupNorm", "_partial_": True, "_args_": [2]},
        }
    )
    check_node("model", node)
    net = instantiate(node)
    assert isinstance(net.bn1, nn.GroupNorm) and net.layer1[0].bn2.num_groups == 2
    with pytest.raises(
        ConfigError, match=r"model\.norm_layer=3 is not valid for reslab\.models\.cifar_resnet"
    ):
        check_node("model", OmegaConf.merge(node, {"norm_layer": 3}))
