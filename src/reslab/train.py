"""`reslab-train`: compose the config, instantiate every object from it, fit, test."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from reslab.config import (
    CONFIG_DIR,
    build,
    load_env,
    log,
    quiet_lightning,
    register_resolvers,
    user_errors_as_one_line,
)
from reslab.distributed import per_device_batch
from reslab.errors import ConfigError
from reslab.run_summary import run_summary
from reslab.runs import finished_metrics
from reslab.validate import check_checkpoint, validate


def build_net(cfg: DictConfig, num_classes: int) -> Any:
    """The network from `model`; its head follows the data unless the config fixes it."""
    fixed = cfg.model.get("num_classes") is not None
    return build(cfg.model, "model", **({} if fixed else {"num_classes": num_classes}))


def build_module(cfg: DictConfig, num_classes: int) -> L.LightningModule:
    """The network, wrapped with `optimizer` and `scheduler` by `module`."""
    net = build_net(cfg, num_classes)
    module = build(
        cfg.module,
        "module",
        net=net,
        optimizer=build(cfg.optimizer, "optimizer"),
        scheduler=build(cfg.get("scheduler"), "scheduler"),
    )
    module.save_hyperparameters(OmegaConf.to_container(cfg, resolve=True))
    return module


def check_head(module: Any, datamodule: Any) -> None:
    if module.num_classes != datamodule.num_classes:
        raise ConfigError(
            f"model.num_classes={module.num_classes} but the data has {datamodule.num_classes} "
            "classes; drop the override (it follows data.num_classes) or pick matching data"
        )


def build_trainer(cfg: DictConfig) -> L.Trainer:
    callbacks = [build(c, f"callbacks.{k}") for k, c in (cfg.get("callbacks") or {}).items()]
    loggers = [build(c, f"logger.{k}") for k, c in (cfg.get("logger") or {}).items()]
    return build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """`ckpt_path` if given; with `resume=true`, this run dir's last checkpoint if any."""
    if cfg.get("ckpt_path"):
        return cfg.ckpt_path
    last = Path(cfg.paths.output_dir, "checkpoints", "last.ckpt")
    return str(last) if cfg.get("resume") and last.is_file() else None


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and test) one run; returns its final metrics and writes them to summary.json."""
    validate(cfg)
    done = finished_metrics(cfg.paths.output_dir, cfg.trainer.max_steps)
    if cfg.get("resume") and done is not None:
        log.info("%s already finished; skipping it (resume=true)", cfg.paths.output_dir)
        return done
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build(cfg.data, "data")
    module = build_module(cfg, datamodule.num_classes)
    check_head(module, datamodule)
    if ckpt_path := resume_checkpoint(cfg):
        check_checkpoint(ckpt_path, module)
    trainer = build_trainer(cfg)
    per_device_batch(cfg.data.batch_size, trainer.world_size)
    start = time.time()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("test"):
        best = trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path
        trainer.test(module, datamodule=datamodule, ckpt_path="best" if best else None)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    summary = run_summary(cfg, module, trainer, datamodule, time.time() - start, metrics)
    summary["world_size"] = trainer.world_size
    if trainer.is_global_zero:
        Path(cfg.paths.output_dir, "summary.json").write_text(json.dumps(summary, indent=2))
        log.info("summary: %s", json.dumps(summary))
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@user_errors_as_one_line
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric") or "", None)


load_env()
register_resolvers()
quiet_lightning()

if __name__ == "__main__":
    main()
