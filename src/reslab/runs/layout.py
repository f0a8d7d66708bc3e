"""Where each file of a run lives in its run dir: the one owner of the layout. The modules
that write or read a run's files ask here; the configs reach the same names through the
`${layout:NAME}` resolver (`configs/callbacks/default.yaml`, `configs/logger/csv.yaml`)."""

from __future__ import annotations

import re
from pathlib import Path

CHECKPOINTS = "checkpoints"  # best.ckpt and last.ckpt
BEST = "best"  # ModelCheckpoint's file name (Lightning adds .ckpt)
LAST = "last"  # what resume continues from
CSV = "csv"  # the CSV logger's dir: csv/metrics.csv
SUMMARY = "summary.json"  # the run record (reslab.runs.record)
CONFIG = ".hydra/config.yaml"  # Hydra's copy of the composed config
OVERRIDES = ".hydra/overrides.yaml"  # the command line's overrides, as Hydra saves them
CONFIG_TREE = "config_tree.log"  # the resolved config as printed
LOCK = ".lock"  # held by the one process writing the run or sweep (reslab.runs.lock)
CHECKSUM = ".sha256"  # beside every checkpoint: last.ckpt.sha256 (reslab.runs.checkpoints)


def layout(name: str) -> str:
    """A name of the layout for the configs, e.g. `${layout:checkpoints}`."""
    return {"checkpoints": CHECKPOINTS, "best": BEST, "last": LAST, "csv": CSV}[name]


def last_checkpoint(run_dir: str | Path) -> Path:
    return Path(run_dir, CHECKPOINTS, f"{LAST}.ckpt")


def best_checkpoint(run_dir: str | Path) -> Path:
    return Path(run_dir, CHECKPOINTS, f"{BEST}.ckpt")


def checksum_file(checkpoint: str | Path) -> Path:
    """The checksum written beside `checkpoint` (`sha256sum -c` reads it)."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + CHECKSUM)


def metrics_csv(run_dir: str | Path) -> Path:
    return Path(run_dir, CSV, "metrics.csv")


def config_file(run_dir: str | Path) -> Path:
    return Path(run_dir, CONFIG)


def config_tree(run_dir: str | Path) -> Path:
    return Path(run_dir, CONFIG_TREE)


# What a training run leaves in its dir (Hydra's own `.hydra/` and log come before any run).
RUN_FILES = (SUMMARY, CHECKPOINTS, f"{CSV}/metrics.csv")


# The prefix Hydra's run and sweep dirs give a run's name (configs/hydra/default.yaml).
DIR_PREFIX = re.compile(r"^(\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_|\d+_)")


def scored_name(ckpt_path: str | None, weights: str | None) -> str:
    """An eval dir's name for what it scores: `eval_<run name>_<checkpoint>` for a run's
    checkpoint (`eval_resnet-20_seed0_best`), `eval_<file>` for other weights."""
    path = Path(ckpt_path or weights or "")
    if path.parent.name == CHECKPOINTS and path.parent.parent.name:
        run = DIR_PREFIX.sub("", path.parent.parent.name, count=1)
        return f"eval_{run}_{path.stem}"
    return f"eval_{path.stem}" if path.stem else "eval"
