from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import torch
from torchvision.transforms import v2

from reslab.data import CIFARDataModule
from reslab.models import cifar_resnet
from reslab.module import ErrorRate, ImageClassifier, param_groups


def test_error_rate_is_percent_wrong() -> None:
    metric = ErrorRate(num_classes=3, top_k=1, average="micro")
    logits = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 3.0, 0], [0, 0, 3.0]])
    assert metric(logits, torch.tensor([0, 1, 2, 2])).item() == 25.0


def test_bn_and_bias_can_skip_weight_decay() -> None:
    net = cifar_resnet(8)
    decay, no_decay = param_groups(net, weight_decay_bn_bias=False)
    assert no_decay["weight_decay"] == 0.0
    bn_and_bias = {
        id(p)
        for m in net.modules()
        for p in m.parameters(recurse=False)
        if isinstance(m, torch.nn.BatchNorm2d)
    } | {id(net.fc.bias)}
    assert {id(p) for p in no_decay["params"]} == bn_and_bias
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(net.parameters()))
    assert len(param_groups(net, weight_decay_bn_bias=True)) == 1


def test_scheduler_steps_per_iteration(tmp_path: Path, cifar10_root: Path) -> None:
    """The paper's schedule is in iterations: lr drops after exactly `milestones` steps."""
    module = ImageClassifier(
        cifar_resnet(8),
        optimizer=partial(torch.optim.SGD, lr=0.1, momentum=0.9),
        scheduler={
            "scheduler": partial(torch.optim.lr_scheduler.MultiStepLR, milestones=[3, 5]),
            "interval": "step",
        },
    )
    data = CIFARDataModule(root=str(cifar10_root), verify_md5=False, num_workers=0, batch_size=64)
    trainer = L.Trainer(
        max_steps=6,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    seen: list[float] = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer.callbacks.append(Record())
    trainer.fit(module, datamodule=data)
    assert [round(x, 6) for x in seen] == [0.1, 0.1, 0.1, 0.01, 0.01, 0.001]


def test_training_learns_the_generated_classes(tmp_path: Path, cifar10_root: Path) -> None:
    torch.manual_seed(0)
    module = ImageClassifier(
        cifar_resnet(8), optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9)
    )
    data = CIFARDataModule(
        root=str(cifar10_root),
        verify_md5=False,
        num_workers=0,
        batch_size=50,
        augmentation={"train": [v2.RandomHorizontalFlip()], "eval": []},
    )
    trainer = L.Trainer(
        max_epochs=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=data)
    metrics = trainer.validate(module, datamodule=data, verbose=False)[0]
    assert metrics["val/acc"] > 0.5, metrics  # chance is 0.1
    assert abs(metrics["val/err"] - 100 * (1 - metrics["val/acc"])) < 1e-3
    assert metrics["val/acc5"] >= metrics["val/acc"]
