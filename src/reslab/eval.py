"""`reslab-eval ckpt_path=...`: test a checkpoint; the model comes from the config stored in it."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from reslab.config import (
    CONFIG_DIR,
    build,
    load_env,
    log,
    register_resolvers,
    user_errors_as_one_line,
)
from reslab.errors import ConfigError
from reslab.train import build_module, build_trainer, check_head


def load_checkpoint(path: str) -> tuple[DictConfig, dict]:
    """The run config saved by `reslab-train` and the checkpoint's state_dict."""
    if not Path(path).is_file():
        raise ConfigError(f"ckpt_path={path} does not exist; pass a .ckpt file from a run dir")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    config = ckpt.get("hyper_parameters")
    if not config or "model" not in config:
        raise ConfigError(f"ckpt_path={path} holds no reslab run config; was it written by train?")
    return OmegaConf.create(config), ckpt["state_dict"]


def evaluate(cfg: DictConfig) -> dict[str, float]:
    run_cfg, state_dict = load_checkpoint(cfg.ckpt_path)
    here = OmegaConf.to_container(cfg, resolve=True)
    with open_dict(run_cfg):
        if here.get("data") is not None:
            run_cfg.data = here["data"]
        for key in ("callbacks", "logger", "trainer"):
            run_cfg[key] = here[key]
    L.seed_everything(run_cfg.get("seed", 0))
    datamodule = build(run_cfg.data, "data")
    module = build_module(run_cfg)
    check_head(module, datamodule)
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} does not fit its model config: {first}"
        ) from None
    trainer = build_trainer(run_cfg)
    results = trainer.test(module, datamodule=datamodule)[0]
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

if __name__ == "__main__":
    main()
