"""The configurable ResNet, its blocks and builders."""

from reslab.models.resnet import (
    BasicBlock,
    Block,
    Bottleneck,
    InvertedResidual,
    PadShortcut,
    ResNet,
    cifar_resnet,
    imagenet_resnet,
    wide_cifar_resnet,
)

__all__ = [
    "BasicBlock",
    "Block",
    "Bottleneck",
    "InvertedResidual",
    "PadShortcut",
    "ResNet",
    "cifar_resnet",
    "imagenet_resnet",
    "wide_cifar_resnet",
]
