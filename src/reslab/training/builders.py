"""What no config says about building a run: a failure as one line, the Trainer's callbacks
and loggers (named in the config, a list for Lightning), the fine-tuning start and the config
stored in checkpoints. Each node builds alone: `instantiate(cfg.model)` is the network,
`instantiate(cfg.module)` the LightningModule with its net, optimizer and schedule."""

from __future__ import annotations

from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from reslab.errors import ConfigError, reslab_cause
from reslab.runs import checkpoints
from reslab.training.callbacks import StopOnSignal
from reslab.training.classifier import ImageClassifier

# Groups whose choice a checkpoint records, so `reslab-eval` recomposes the run from them.
CHOICES = (
    "model", "data", "augmentation", "optimizer", "scheduler", "trainer", "experiment", "debug",
)  # fmt: skip


def build(node: DictConfig | None, key: str, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate(node, **kwargs)`; a failure names `key` and its cause."""
    if node is None:
        return None
    try:
        return instantiate(node, **kwargs)
    except (InstantiationException, InterpolationResolutionError) as e:
        if (ours := reslab_cause(e)) is not None:
            raise ours from None
        cause = e.__cause__ or e
        msg = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise ConfigError(f"{key}: {msg}") from None


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Trainer with the config's callbacks and loggers, and `StopOnSignal` first: every run
    stops cleanly on a signal, whatever the config lists."""
    callbacks = [build(c, f"callbacks.{k}") for k, c in (cfg.get("callbacks") or {}).items()]
    callbacks.insert(0, StopOnSignal())
    loggers = [build(c, f"logger.{k}") for k, c in (cfg.get("logger") or {}).items()]
    return build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    return build(cfg.data, "data")


def build_net(cfg: DictConfig) -> Any:
    return build(cfg.model, "model")


def build_module(cfg: DictConfig) -> ImageClassifier:
    """The LightningModule, its network started from `weights` when given (fine-tuning); the
    resolved config and the group choices ride in every checkpoint (`reslab.commands.eval` takes
    values from them, never targets)."""
    module = build(cfg.module, "module")
    if cfg.get("weights"):
        checkpoints.init_weights(module.net, cfg.weights, "weights")
    runtime = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    choices = {g: runtime[g] for g in CHOICES if runtime.get(g) is not None}
    module.save_hyperparameters({**OmegaConf.to_container(cfg, resolve=True), "choices": choices})
    return module
