"""`reslab-eval`: test a reslab checkpoint (`ckpt_path=`: the model and data come from the run
config stored in it) or torchvision ResNet weights (`weights=` a local .pth, with `model=` and
`data=`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from reslab import checkpoints
from reslab.builders import build_datamodule, build_net, build_trainer
from reslab.classifier import ImageClassifier
from reslab.cli import command
from reslab.errors import ConfigError

log = logging.getLogger("reslab")
# Groups a user may pick on the eval command line to replace the stored run's (`data=cifar10`
# after the data moved, `augmentation=...`), and what always comes from the eval config: where
# files live and how to run.
CHOSEN_GROUPS = ("model", "data", "augmentation")
FROM_EVAL = ("paths", "trainer", "logger", "callbacks")


def run_config(cfg: DictConfig, stored: Any) -> DictConfig:
    """The config to evaluate with: the stored run's (a `ckpt_path` checkpoint), or the eval
    config's own (`weights=`), with the groups chosen on the command line in place of the
    stored ones. Interpolations of a chosen group (`${paths.data_dir}`, `${seed}`,
    `${augmentation}`) resolve against this merged config."""
    if cfg.get("ckpt_path"):
        hparams = stored.get("hyper_parameters") if isinstance(stored, dict) else None
        if not hparams or "model" not in hparams:
            raise ConfigError(
                f"ckpt_path={cfg.ckpt_path} holds no reslab run config; was it written by "
                "reslab-train? (torchvision weights: weights=<file> model=<name> data=<name>)"
            )
        merged = OmegaConf.create(hparams)
        if "weights" in merged.model:  # a fine-tuned run's start: the checkpoint replaces it
            merged.model.weights = None
    else:
        if cfg.get("model") is None or cfg.get("data") is None:
            raise ConfigError("weights=... needs model=<name> and data=<name> (e.g. resnet50)")
        merged = OmegaConf.create({"seed": 0, "augmentation": None})
    with open_dict(merged):
        for key in CHOSEN_GROUPS:
            if cfg.get(key) is not None:
                merged[key] = cfg[key]
        for key in FROM_EVAL:
            merged[key] = cfg.get(key)
        if cfg.ten_crop:
            if "ImageFolder" not in str(merged.data.get("_target_")):
                raise ConfigError(
                    "ten_crop=true is the ImageNet protocol; use it with ImageNet data"
                )
            merged.data.ten_crop = True
        # `paths.output_dir` is this eval's run dir.
        merged.paths.output_dir = HydraConfig.get().runtime.output_dir
    OmegaConf.resolve(merged)
    return merged


def evaluate(cfg: DictConfig) -> dict[str, float]:
    source = next((k for k in ("ckpt_path", "weights") if cfg.get(k)), None)
    if source is None:
        raise ConfigError("pass ckpt_path=<run>/checkpoints/best.ckpt or weights=<file>.pth")
    stored = checkpoints.load(cfg[source], source, weights_only=True)
    run_cfg = run_config(cfg, stored)
    state_dict = checkpoints.net_weights(stored, f"{source}={cfg[source]}")
    L.seed_everything(run_cfg.get("seed", 0))
    trainer = build_trainer(run_cfg)
    datamodule = build_datamodule(run_cfg, trainer.world_size)
    net = build_net(run_cfg, datamodule.num_classes)
    try:
        net.load_state_dict(state_dict)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ConfigError(
            f"{source}={cfg[source]} does not fit the model config: {first}"
        ) from None
    results = trainer.test(ImageClassifier(net), datamodule=datamodule)[0]
    metrics = {k: float(v) for k, v in results.items()}
    Path(cfg.paths.output_dir, "metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("test metrics: %s", json.dumps(metrics))
    return metrics


main = command("eval")(evaluate)

if __name__ == "__main__":
    main()
