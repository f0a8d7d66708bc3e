"""What every reslab command does as it starts: read the working directory's `.env`, register
the config resolvers, quiet Lightning's messages no user can act on. Nothing here runs at
import time: `reslab.commands.task.command` calls `start` when a command starts."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dotenv import load_dotenv
from omegaconf import OmegaConf

from reslab.data.imagefolder import count_classes
from reslab.models.names import arch_name
from reslab.runs.layout import layout, scored_name
from reslab.training.distributed import launch_time
from reslab.training.precision import default_precision
from reslab.training.scores import config_metric

# The configs ship inside the package (configs/ at the top of the repository, see
# pyproject.toml), so editable and plain installs find them the same way.
CONFIG_PATH = "pkg://reslab.configs"


def register_resolvers() -> None:
    """The config's own interpolation functions; Hydra needs them before it resolves a run dir."""
    resolvers: dict[str, Callable[..., Any]] = {
        "arch": arch_name,
        # Unlike `${hydra:runtime.cwd}`, also resolvable when a multirun computes its sweep dir.
        "cwd": os.getcwd,
        # `${ge:${model.depth},110}`: a switch that follows a swept value.
        "ge": lambda a, b: a >= b,
        "not": lambda a: not a,
        # `${default_precision:${trainer.accelerator}}`: bf16-mixed on a CPU with bf16 units.
        "default_precision": default_precision,
        # `${class_count:${data.root},${data.format}}`: an ImageFolder's classes, for the head.
        "class_count": count_classes,
        # `${layout:checkpoints}`: the run dir's layout (reslab.runs.layout).
        "layout": layout,
        # `${scored:${ckpt_path},${weights}}`: an eval dir's name, for what it scores.
        "scored": scored_name,
        # `${metric:val_err}`: a logged metric's name (reslab.training.scores): what to monitor.
        "metric": config_metric,
        # `${short:${optimizer.lr}}`: a number in 3 significant digits, for run names.
        "short": lambda x: f"{x:.3g}",
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
    # `${launch_time:%Y-%m-%d_%H-%M-%S}`: the run dir's time, shared by all ranks of a launch;
    # cached per config as Hydra's `${now:...}`, so a run's dirs agree to the second.
    if not OmegaConf.has_resolver("launch_time"):
        OmegaConf.register_new_resolver("launch_time", launch_time, use_cache=True)


def quiet_lightning() -> None:
    """Drop messages Lightning 2.6 prints on every run that no user can act on: an advert for its
    cloud logger, a deprecation inside its own pytree helper, its note that our model-summary
    callback replaces its default one, its note why a fit stopped (the run's outcome says it;
    printed into a live bar, it made the bar print twice), its note that the summary's size
    estimate assumes fp32 under mixed precision, its warning that an epoch has fewer batches
    than `trainer.log_every_n_steps` (steps are counted over the run, not per epoch, so the rows
    come all the same), and, where `srun` is installed, advice to run under `srun` (reslab
    reaches SLURM through `hydra/launcher=slurm`, docs/scale_out.md)."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: (
            not str(record.msg).startswith("💡 Tip:")
            and "Skipping setting a default `ModelSummary`" not in str(record.msg)
            and not str(record.msg).startswith("`Trainer.fit` stopped:")
        )
    )
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"Precision .* is not supported by the model summary")
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller")
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")
    # torchdata's StatefulDataLoader calls a torch function torch deprecated.
    warnings.filterwarnings("ignore", message=r"'set_vital' is deprecated")


def lightning_logs_as_ours() -> None:
    """Lightning's messages (the devices it found, the precision, DDP's start, the model
    summary) and torchmetrics' go through the run's log handlers, as reslab's do: on the console
    with the run's name (the jobs of a local sweep share a terminal) and into `train.log`.
    Lightning gives its loggers a console handler of their own when it is imported before
    logging is set up, and they then reach neither; torchmetrics adds one to a logger that also
    propagates, so each of its messages printed twice."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def dotenv_file() -> Path | None:
    """The `.env` a command reads: the working directory's alone. A parent's (python-dotenv's
    `find_dotenv` walks up to `/`, a world-writable `/tmp` included) would redirect
    `RESLAB_LOG_DIR`, `DATA_DIR` or `WANDB_*` for every directory below it."""
    path = Path.cwd() / ".env"
    return path if path.is_file() else None


def start() -> None:
    """Set up this process for a command: the working directory's `.env`, so `DATA_DIR`,
    `RESLAB_LOG_DIR`, `WANDB_*` apply (the environment wins over it); resolvers; log filters
    and Lightning's messages through the run's log."""
    if (path := dotenv_file()) is not None:
        load_dotenv(path, override=False)
    register_resolvers()
    quiet_lightning()
    lightning_logs_as_ours()
