"""The ResNet family as options of the one ResNet: reference counts, torchvision equivalence,
and what each option does to a block."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import SqueezeExcitation, StochasticDepth

from reslab.errors import ConfigError
from reslab.models import (
    BasicBlock,
    Bottleneck,
    InvertedResidual,
    ResNet,
    cifar_resnet,
    imagenet_resnet,
    wide_cifar_resnet,
)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def paper_count(m: nn.Module) -> int:
    """Conv and FC weights (and FC bias), no BN: how He et al. 2016 count ResNet-1001's 10.2M."""
    return sum(
        p.numel()
        for mod in m.modules()
        if isinstance(mod, nn.Conv2d | nn.Linear)
        for p in mod.parameters()
    )


def blocks(net: ResNet) -> list[nn.Module]:
    return [b for stage in net.stages() for b in stage]


def random_bn(net: nn.Module) -> None:
    for m in net.modules():  # non-trivial BN statistics so eval mode is really compared
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)


@pytest.mark.parametrize(
    ("name", "depth", "options", "count"),
    [
        ("resnext50_32x4d", 50, {"groups": 32, "base_width": 4}, 25_028_904),
        ("resnext101_32x8d", 101, {"groups": 32, "base_width": 8}, 88_791_336),
        ("wide_resnet50_2", 50, {"base_width": 128}, 68_883_240),
        ("wide_resnet101_2", 101, {"base_width": 128}, 126_886_696),
    ],
)
def test_torchvision_variants_have_equal_counts_and_load_with_identical_outputs(
    name: str, depth: int, options: dict, count: int
) -> None:
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)(weights=None)
    ours = imagenet_resnet(depth, **options)
    assert n_params(ours) == n_params(theirs) == count
    random_bn(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(1, 3, 64, 64)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


@pytest.fixture(scope="module")
def preact1001() -> ResNet:
    return cifar_resnet(1001, block="bottleneck", preact=True, shortcut="B")


def test_preact_1001_has_the_papers_10_2m(preact1001: ResNet) -> None:
    assert round(paper_count(preact1001) / 1e6, 1) == 10.2
    assert round(n_params(preact1001) / 1e6, 1) == 10.3  # with BN's 0.15M, which the paper omits
    assert [len(s) for s in preact1001.stages()] == [111, 111, 111]


@pytest.mark.parametrize(
    ("build", "millions"),
    [
        (lambda: cifar_resnet(164, block="bottleneck", preact=True, shortcut="B"), 1.7),
        (lambda: wide_cifar_resnet(28, 10), 36.5),
        (lambda: wide_cifar_resnet(16, 8), 11.0),
        (
            lambda: cifar_resnet(
                29,
                block="bottleneck",
                widths=(64, 128, 256),
                groups=8,
                base_width=64,
                shortcut="B",
            ),
            34.4,
        ),
        (lambda: imagenet_resnet(50, attention="se"), 28.1),
    ],
    ids=["preact-164", "wrn-28-10", "wrn-16-8", "resnext-29-8x64d", "se-resnet-50"],
)
def test_papers_param_counts(build, millions: float) -> None:
    assert round(n_params(build()) / 1e6, 1) == millions


def test_resnet50d_deep_stem_and_avgpool_shortcut() -> None:
    net = imagenet_resnet(50, stem="deep", shortcut="D")
    assert n_params(net) == 25_576_264  # timm's resnet50d
    convs = [m for m in net.conv1 if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.stride) for c in convs] == [(32, (2, 2)), (32, (1, 1)), (64, (1, 1))]
    pool, conv, _ = net.layer2[0].downsample
    assert isinstance(pool, nn.AvgPool2d) and conv.stride == (1, 1)
    assert isinstance(net.layer1[0].downsample[0], nn.Identity)
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_preact_block_order_and_clean_identity() -> None:
    net = cifar_resnet(8, preact=True, shortcut="B", num_classes=3)
    assert net.bn1 is None and isinstance(net.final_bn, nn.BatchNorm2d)
    random_bn(net)
    net.eval()
    x = torch.randn(2, 16, 8, 8)
    block = net.layer1[0]
    assert block.bn1.num_features == 16 and block.downsample is None
    pre = torch.relu(block.bn1(x))
    out = block.conv2(torch.relu(block.bn2(block.conv1(pre))))
    torch.testing.assert_close(block(x), out + x)  # no ReLU after the sum
    down = net.layer2[0]  # the projection sees the pre-activated input, and has no BN
    assert len(down.downsample) == 1
    y = torch.randn(2, 16, 8, 8)
    pre = torch.relu(down.bn1(y))
    torch.testing.assert_close(down(y), down.branch(pre) + down.downsample(pre))


def test_zero_init_residual_makes_every_kind_of_block_the_identity() -> None:
    for net in (
        cifar_resnet(11, block="bottleneck", preact=True, shortcut="B", zero_init_residual=True),
        cifar_resnet(11, block="inverted", shortcut="B", zero_init_residual=True),
    ):
        net.eval()
        block = net.layer3[0]
        x = torch.randn(1, block.conv1.in_channels, 8, 8)
        skip = block.downsample(torch.relu(block.bn1(x)) if block.preact else x)
        torch.testing.assert_close(block(x), skip)


def test_wide_resnet_layout_and_dropout_between_convs() -> None:
    net = wide_cifar_resnet(16, 4, dropout=0.5)
    assert net.conv1.out_channels == 16 and net.fc.in_features == 256
    assert [b.conv2.out_channels for b in blocks(net)] == [64, 64, 128, 128, 256, 256]
    block = net.layer1[1]
    assert isinstance(block, BasicBlock) and block.dropout.p == 0.5
    seen = []
    block.dropout.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    block.eval()
    x = torch.randn(4, 64, 8, 8)
    block(x)
    assert seen == [torch.Size([4, 64, 8, 8])]  # between conv1 and conv2
    block.dropout.train()
    assert not torch.equal(block(x), block(x))
    block.dropout.eval()
    assert torch.equal(block(x), block(x))


def test_resnext_groups_and_se() -> None:
    net = imagenet_resnet(50, groups=32, base_width=4, attention="se")
    block = net.layer1[0]
    assert isinstance(block, Bottleneck)
    assert block.conv2.groups == 32 and block.conv2.out_channels == 128
    assert isinstance(block.se, SqueezeExcitation) and block.se.fc1.out_channels == 256 // 16
    block.eval()
    x = torch.randn(1, 64, 8, 8)
    torch.testing.assert_close(
        block(x), torch.relu(block.se(block.branch(x)) + block.downsample(x))
    )


def test_inverted_residual_is_linear_and_depthwise() -> None:
    net = cifar_resnet(11, block="inverted", shortcut="B", expand_ratio=6)
    block = net.layer1[0]
    assert isinstance(block, InvertedResidual) and block.downsample is None
    assert block.conv1.out_channels == 96 and block.conv2.groups == 96
    assert isinstance(block.relu, nn.ReLU6)
    random_bn(net)
    block.eval()
    x = torch.randn(2, 16, 8, 8)
    out = block(x)
    torch.testing.assert_close(out, block.branch(x) + x)
    assert (out < 0).any()  # nothing clips the sum


def test_stochastic_depth_linear_rule_and_per_sample_drop() -> None:
    net = cifar_resnet(20, drop_path=0.5)
    rates = [b.drop_path.p for b in blocks(net)]
    assert rates == pytest.approx([0.5 * k / 9 for k in range(1, 10)])
    assert all(isinstance(b.drop_path, StochasticDepth) for b in blocks(net))
    ref = cifar_resnet(20)
    ref.load_state_dict(net.state_dict())
    net.eval(), ref.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(net(x), ref(x))  # the whole net at test time
    block = net.layer3[2]  # p = 0.5
    block.drop_path.train()
    x = torch.randn(64, 64, 8, 8)
    out, branch = block(x), block.branch(x)
    kept = [
        torch.allclose(o, torch.relu(b / 0.5 + s)) for o, b, s in zip(out, branch, x, strict=True)
    ]
    dropped = [torch.allclose(o, torch.relu(s)) for o, s in zip(out, x, strict=True)]
    assert all(k or d for k, d in zip(kept, dropped, strict=True)) and any(kept) and any(dropped)


@pytest.mark.parametrize(
    "options",
    [
        {"block": "bottleneck", "preact": True, "shortcut": "B"},
        {"block": "bottleneck", "groups": 4, "base_width": 8, "shortcut": "B"},
        {"attention": "se", "shortcut": "B"},
        {"shortcut": "D"},
        {"block": "inverted", "shortcut": "B"},
    ],
    ids=["preact", "resnext", "se", "resnet-d", "inverted"],
)
def test_every_variant_has_a_plain_twin(options: dict) -> None:
    depth = 8 if options.get("block", "basic") == "basic" else 11
    res, plain = cifar_resnet(depth, **options), cifar_resnet(depth, residual=False, **options)
    assert not any("downsample" in k for k in plain.state_dict())
    assert all(not b.residual for b in blocks(plain)) and all(b.residual for b in blocks(res))
    assert plain(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda: cifar_resnet(20, groups=4), "model.groups=4 and model.base_width=64 need"),
        (lambda: cifar_resnet(14, block="inverted"), "model.depth=14 is not"),
        (lambda: cifar_resnet(21, block="bottleneck"), "use 9n+2"),
        (lambda: cifar_resnet(11, block="inverted", preact=True), "model.preact=true needs"),
        (lambda: cifar_resnet(20, attention="cbam"), "model.attention='cbam' is not valid"),
        (lambda: cifar_resnet(20, drop_path=1.0), "model.drop_path=1.0 is not valid"),
        (lambda: cifar_resnet(20, dropout=-0.1), "model.dropout=-0.1 is not valid"),
        (lambda: cifar_resnet(20, residual=False, drop_path=0.2), "needs model.residual=true"),
        (lambda: wide_cifar_resnet(27), "model.depth=27 is not a Wide ResNet depth; use 6n+4"),
        (lambda: imagenet_resnet(50, stem="tiny"), "model.stem='tiny' is not valid"),
        (lambda: cifar_resnet(11, block="inverted", groups=2), "model.groups=2 and model.base"),
        (lambda: imagenet_resnet(50, groups=0), "model.groups=0 and model.base_width=64 must be"),
        (lambda: cifar_resnet(20, expand_ratio=4), "model.expand_ratio=4 needs block='inverted'"),
    ],
)
def test_bad_family_options_fail_with_one_line(build, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        build()
    assert needle in str(e.value) and "\n" not in str(e.value)
