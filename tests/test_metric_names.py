"""Metric names have one owner (reslab.training.scores): the config's `monitor:` lines reach
them through `${metric:...}`, and the module logs exactly those keys."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from reslab.commands.startup import register_resolvers
from reslab.data import CIFARDataModule
from reslab.models import cifar_resnet
from reslab.training.classifier import ImageClassifier
from reslab.training.scores import TEST_ERR, TRAIN_ERR_EPOCH, TRAIN_ERR_STEP, VAL_ERR

register_resolvers()


def test_monitor_lines_name_the_validation_error() -> None:
    with initialize_config_module("reslab.configs", version_base="1.3"):
        cfg = compose("train", overrides=["scheduler=plateau"])
    assert cfg.callbacks.model_checkpoint.monitor == VAL_ERR
    assert cfg.scheduler.monitor == VAL_ERR


def test_an_unknown_metric_name_fails_naming_the_known_ones() -> None:
    cfg = OmegaConf.create({"monitor": "${metric:val_error}"})
    with pytest.raises(Exception, match=r"unknown metric; use one of val_err, "):
        OmegaConf.to_container(cfg, resolve=True)


def test_the_module_logs_under_the_named_keys(tmp_path: Path, cifar10_root: Path) -> None:
    module = ImageClassifier(cifar_resnet(8), optimizer=partial(torch.optim.SGD, lr=0.05))
    data = CIFARDataModule(root=str(cifar10_root), verify_md5=False, num_workers=0, batch_size=100)
    trainer = L.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        default_root_dir=tmp_path, max_epochs=1, limit_train_batches=2, log_every_n_steps=1,
        limit_val_batches=1, limit_test_batches=1, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    assert {TRAIN_ERR_STEP, TRAIN_ERR_EPOCH, VAL_ERR} <= set(trainer.callback_metrics)
    assert TEST_ERR in trainer.test(module, datamodule=data, verbose=False)[0]
