"""Run configs composed as `reslab-train` and `reslab-eval` compose them, for in-process runs
on the generated data: `compose_run(...)`, then `reslab.commands.train.train(cfg)`."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from reslab.commands.startup import register_resolvers

# A tiny run, the one definition the tests share: ResNet-8 on the generated CIFAR images read
# in the process, batches of 50 (10 steps an epoch of the 500 training images; a few seconds
# per run on 2 CPU cores). A test adds its length and whatever it checks.
TINY = ["data.verify_md5=false", "data.batch_size=50", "data.num_workers=0", "model.depth=8"]
# For a run whose scores no test reads: one validation batch and one test batch.
SHORT_EVAL = ["+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1"]
# For an in-process run whose logs and numbers a test reads: exact, every step logged, no live
# bar and no model table in its output.
QUIET = [
    *TINY,
    "trainer.deterministic=true",
    "trainer.log_every_n_steps=1",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
]
# ... and a fit alone, without the test-set pass.
FIT_ONLY = [*QUIET, "test=false"]
# DDP over 2 CPU processes (gloo), as reslab-train starts them.
DDP_CPU = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


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
