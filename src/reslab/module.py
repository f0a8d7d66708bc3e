"""The LightningModule: an image classifier around any `nn.Module` that maps images to logits."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]


def param_groups(net: nn.Module, weight_decay_bn_bias: bool) -> list[dict[str, Any]]:
    """All parameters in one group, or BN weights and biases (every 1-d tensor) in a
    second group without weight decay."""
    if weight_decay_bn_bias:
        return [{"params": list(net.parameters())}]
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


class ImageClassifier(L.LightningModule):
    """Cross-entropy training with top-1/top-5 accuracy; error (%) = 100 - top-1 accuracy.

    `optimizer` is a partial taking the parameter groups; `scheduler` is Lightning's
    lr-scheduler dict whose `scheduler` entry is a partial taking the optimizer, so a
    recipe decides per config whether it steps per iteration (`interval: step`) or epoch.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        weight_decay_bn_bias: bool = True,
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_config = dict(scheduler) if scheduler else None
        self.label_smoothing = label_smoothing
        self.weight_decay_bn_bias = weight_decay_bn_bias
        self.metrics = nn.ModuleDict(
            {stage: _metrics(self.num_classes) for stage in ("train_", "val_", "test_")}
        )

    @property
    def num_classes(self) -> int:
        return self.net.fc.out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        if x.ndim == 5:  # multi-crop evaluation: average the crops' softmax scores
            probs = self(x.flatten(0, 1)).softmax(-1).unflatten(0, x.shape[:2]).mean(1)
            logits = probs.clamp_min(1e-12).log()
        else:
            logits = self(x)
        smoothing = self.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        on_step = stage == "train"
        # Soft targets (mixup/cutmix) carry no hard label to score.
        if y.ndim == 1:
            for name, metric in self.metrics[f"{stage}_"].items():
                metric(logits.detach(), y)
                self.log(f"{stage}/{name}", metric, on_step=on_step, on_epoch=True)
        # Metrics sync themselves over DDP ranks; the loss is a plain tensor and needs sync_dist.
        self.log(
            f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, sync_dist=True
        )
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError("ImageClassifier was built without an optimizer (evaluation only)")
        optimizer = self.optimizer_factory(param_groups(self.net, self.weight_decay_bn_bias))
        if self.scheduler_config is None:
            return optimizer
        config = dict(self.scheduler_config)
        config["scheduler"] = config["scheduler"](optimizer)
        return {"optimizer": optimizer, "lr_scheduler": config}


class ErrorRate(MulticlassAccuracy):
    """Top-1 error in percent, the figure the paper reports."""

    def compute(self) -> Tensor:
        return 100.0 * (1.0 - super().compute())


def _metrics(num_classes: int) -> nn.ModuleDict:
    return nn.ModuleDict(
        {
            "acc": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "acc5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
            "err": ErrorRate(num_classes, top_k=1, average="micro"),
        }
    )
