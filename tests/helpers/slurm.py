"""SLURM for the tests: whether a cluster answers here (`bash scripts/slurm_local.sh`,
`SLURM_CONF`), and a sweep submitted to it as a user submits one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from helpers.processes import BIN, dirs_env

# Jobs on the local cluster's CPU partition, stopped 30 s before a 10 min limit.
SLURM_CPU = [
    "hydra/launcher=slurm_cpu",
    "hydra.launcher.timeout_min=10",
    "hydra.launcher.signal_delay_s=30",
]


def cluster_up() -> bool:
    if not (os.environ.get("SLURM_CONF") and shutil.which("sinfo")):
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


def sweep(args: list[str], data_dir: Path, log_dir: Path) -> subprocess.Popen:
    """`reslab-train -m ARGS` in the background (stdout and stderr in one)."""
    return subprocess.Popen(
        [str(BIN / "reslab-train"), "-m", *args],
        env={**os.environ, **dirs_env(data_dir, log_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
