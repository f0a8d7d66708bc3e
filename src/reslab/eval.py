"""`reslab-eval`: test a reslab checkpoint (`ckpt_path=`, model and data from the config stored
in it) or torchvision ResNet weights (`weights=` a local .pth, with `model=` and `data=`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from reslab.config import (
    CONFIG_DIR,
    build,
    load_env,
    log,
    quiet_lightning,
    register_resolvers,
    user_errors_as_one_line,
)
from reslab.errors import ConfigError
from reslab.module import ImageClassifier
from reslab.train import build_net, build_trainer, check_head


def load_checkpoint(path: str) -> tuple[DictConfig, dict]:
    """The run config saved by `reslab-train` and the checkpoint's state_dict."""
    if not Path(path).is_file():
        raise ConfigError(f"ckpt_path={path} does not exist; pass a .ckpt file from a run dir")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    config = ckpt.get("hyper_parameters")
    if not config or "model" not in config:
        raise ConfigError(f"ckpt_path={path} holds no reslab run config; was it written by train?")
    state = {
        k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")
    }
    return OmegaConf.create(config), state


def load_weights(path: str) -> dict[str, torch.Tensor]:
    """A torchvision-style state_dict file (e.g. resnet50-0676ba61.pth), no network needed."""
    if not Path(path).is_file():
        raise ConfigError(f"weights={path} does not exist; pass a local .pth state_dict file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def ten_crop(augmentation: dict[str, Any]) -> dict[str, Any]:
    """The paper's 10-crop test: resize, then the 4 corners + centre and their flips."""
    resize, size = augmentation.get("resize", 256), augmentation.get("size", 224)
    return {
        **augmentation,
        "eval": [
            {"_target_": "torchvision.transforms.v2.Resize", "size": resize},
            {"_target_": "torchvision.transforms.v2.TenCrop", "size": size},
            {"_target_": "reslab.data.transforms.StackCrops"},
        ],
    }


def evaluate(cfg: DictConfig) -> dict[str, float]:
    here = OmegaConf.to_container(cfg, resolve=True)
    if cfg.get("ckpt_path"):
        run_cfg, state_dict = load_checkpoint(cfg.ckpt_path)
        source = f"ckpt_path={cfg.ckpt_path}"
    elif cfg.get("weights"):
        if here.get("model") is None or here.get("data") is None:
            raise ConfigError("weights=... needs model=<name> and data=<name> (e.g. resnet50)")
        run_cfg, state_dict = OmegaConf.create({}), load_weights(cfg.weights)
        source = f"weights={cfg.weights}"
    else:
        raise ConfigError("pass ckpt_path=<run>/checkpoints/best.ckpt or weights=<file>.pth")
    with open_dict(run_cfg):
        for key in ("model", "data", "augmentation"):
            if here.get(key) is not None:
                run_cfg[key] = here[key]
        run_cfg.data.augmentation = run_cfg.get("augmentation")
        if cfg.ten_crop:
            run_cfg.data.augmentation = ten_crop(run_cfg.data.get("augmentation") or {})
        for key in ("callbacks", "logger", "trainer"):
            run_cfg[key] = here[key]
    L.seed_everything(run_cfg.get("seed", 0))
    datamodule = build(run_cfg.data, "data")
    net = build_net(run_cfg, datamodule.num_classes)
    try:
        net.load_state_dict(state_dict)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f"{source} does not fit the model config: {first}") from None
    module = ImageClassifier(net)
    check_head(module, datamodule)
    results = build_trainer(run_cfg).test(module, datamodule=datamodule)[0]
    metrics = {k: float(v) for k, v in results.items()}
    Path(cfg.paths.output_dir, "metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("test metrics: %s", json.dumps(metrics))
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@user_errors_as_one_line
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


load_env()
register_resolvers()
quiet_lightning()

if __name__ == "__main__":
    main()
