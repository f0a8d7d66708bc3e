"""A run's outcome in its dir (`summary.json`), so a re-launched sweep can skip finished runs
and a report can show failed ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only

SUMMARY = "summary.json"


def finished_metrics(run_dir: str | Path, max_steps: int = -1) -> dict[str, float] | None:
    """The final metrics of a run that completed in `run_dir` (and reached `max_steps`, so a
    longer schedule continues it), else None."""
    path = Path(run_dir, SUMMARY)
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    done = summary.get("status") == "completed" and summary.get("steps", 0) >= max_steps
    return summary.get("metrics", {}) if done else None


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_failure(error: BaseException, run_name: str | None) -> None:
    """`summary.json` with `status: failed` and the error in this job's run dir."""
    if not HydraConfig.initialized() or rank_zero_only.rank != 0:
        return
    hydra = HydraConfig.get()
    summary: dict[str, Any] = {
        "run_name": run_name,
        "status": "failed",
        "error": f"{type(error).__name__}: {error}",
    }
    Path(hydra.runtime.output_dir, SUMMARY).write_text(json.dumps(summary, indent=2))
