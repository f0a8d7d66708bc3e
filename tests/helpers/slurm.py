"""Whether a SLURM cluster answers here (`bash scripts/slurm_local.sh`, `SLURM_CONF`)."""

from __future__ import annotations

import os
import shutil
import subprocess


def cluster_up() -> bool:
    if not (os.environ.get("SLURM_CONF") and shutil.which("sinfo")):
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0
