"""Every object of a run, built from its config by `hydra.utils.instantiate`, with the root
cause of a failure as a one-line error. Shared by `reslab-train`, `reslab-eval` and the speed
harness, so all three build the same objects."""

from __future__ import annotations

from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from reslab import checkpoints
from reslab.classifier import ImageClassifier
from reslab.errors import ConfigError, ReslabError


def build(node: DictConfig | None, key: str, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate(node, **kwargs)`; a failure names `key` and its cause."""
    if node is None:
        return None
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ or e
        if isinstance(cause, ReslabError):
            raise cause from None
        msg = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise ConfigError(f"{key}: {msg}") from None


def build_trainer(cfg: DictConfig) -> L.Trainer:
    callbacks = [build(c, f"callbacks.{k}") for k, c in (cfg.get("callbacks") or {}).items()]
    loggers = [build(c, f"logger.{k}") for k, c in (cfg.get("logger") or {}).items()]
    return build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)


def build_datamodule(cfg: DictConfig, world_size: int = 1) -> L.LightningDataModule:
    """The DataModule; it splits the global `data.batch_size` of an optimizer step over
    `world_size` processes and `trainer.accumulate_grad_batches` micro-batches."""
    accumulate = cfg.trainer.get("accumulate_grad_batches") or 1
    return build(cfg.data, "data", world_size=world_size, accumulate_grad_batches=accumulate)


def build_net(cfg: DictConfig, num_classes: int) -> Any:
    """The network from `model`, its head sized by the data: the data alone owns the class
    count (`data.num_classes`, or the class folders of an ImageFolder). `model.weights` (a
    file, not an argument of the model builders) then initialises it: fine-tuning."""
    model = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
    weights = model.pop("weights", None)
    net = build(model, "model", num_classes=num_classes)
    if weights:
        checkpoints.init_weights(net, weights, "model.weights")
    return net


def build_module(cfg: DictConfig, num_classes: int) -> ImageClassifier:
    """The network, wrapped with `optimizer` and `scheduler` by `module`; the resolved config
    rides in every checkpoint (`reslab-eval` rebuilds the run from it)."""
    module = build(
        cfg.module,
        "module",
        net=build_net(cfg, num_classes),
        optimizer=build(cfg.optimizer, "optimizer"),
        scheduler=build(cfg.get("scheduler"), "scheduler"),
    )
    module.save_hyperparameters(OmegaConf.to_container(cfg, resolve=True))
    return module
