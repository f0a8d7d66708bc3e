"""The configurable ResNet and its builders."""

from reslab.models.resnet import (
    BasicBlock,
    Bottleneck,
    PadShortcut,
    ResNet,
    cifar_resnet,
    imagenet_resnet,
)

__all__ = ["BasicBlock", "Bottleneck", "PadShortcut", "ResNet", "cifar_resnet", "imagenet_resnet"]
