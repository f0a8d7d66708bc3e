"""Run configs composed as `reslab-train` and `reslab-eval` compose them, for in-process runs
on the generated data: `compose_run(...)`, then `reslab.train.train(cfg)`."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from reslab.cli import register_resolvers

# A few seconds per run on 2 CPU cores: ResNet-8, 10 batches of 50 per epoch of the 500
# generated CIFAR images, quiet callbacks.
TINY = [
    "data.verify_md5=false",
    "data.batch_size=50",
    "data.num_workers=0",
    "model.depth=8",
    "trainer.deterministic=true",
    "trainer.log_every_n_steps=1",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
]


def compose_run(
    run_dir: Path, data_dir: Path, overrides: list[str], name: str = "train"
) -> DictConfig:
    """The config `name` with `overrides`, its run dir `run_dir` and data under `data_dir`;
    Hydra's runtime config is set as in a real run (loggers and run records read it)."""
    register_resolvers()
    with initialize_config_module("reslab.configs", version_base="1.3"):
        cfg = compose(
            name,
            overrides=[f"hydra.run.dir={run_dir}", *overrides],
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        cfg.paths.data_dir = str(data_dir)
        del cfg.hydra  # as in a real run: the task function never sees it
    run_dir.mkdir(parents=True, exist_ok=True)  # Hydra creates it before the task runs
    return cfg
