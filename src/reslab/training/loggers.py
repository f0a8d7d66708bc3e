"""Loggers that keep a run dir's history across resumes. Weights & Biases: one W&B run per
run dir, grouped by sweep, offline when there is no API key, continued (same W&B run) when the
run dir resumes. CSV: a resumed run appends to its metrics.csv."""

from __future__ import annotations

import csv
import io
import logging
import netrc
import os
import secrets
from pathlib import Path
from typing import Any

import wandb
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger("reslab")
RUN_ID_FILE = "wandb_run_id.txt"


def has_api_key() -> bool:
    """A key in WANDB_API_KEY or ~/.netrc (where `wandb login` writes it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def sweep_group() -> str | None:
    """In a Hydra multirun: `<task>/<sweep dir name>`, shared by all jobs of the sweep."""
    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return None
    return f"{hydra.job.name}/{Path(hydra.sweep.dir).name}"


def run_id(save_dir: str) -> str:
    """The W&B run id of this run dir, created once and kept in it, so a resumed or requeued
    run logs into the same W&B run."""
    path = Path(save_dir, RUN_ID_FILE)
    if path.is_file():
        return path.read_text().strip()
    new = secrets.token_hex(4)
    if rank_zero_only.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(new + "\n")
    return new


class RunDirWandbLogger(WandbLogger):
    """Lightning's WandbLogger with the run dir's id, the sweep as `group`, offline mode when
    no API key is configured, and the previous sweep job's W&B run finished first (otherwise
    Lightning attaches every job of a multirun to the first job's run)."""

    def __init__(
        self,
        save_dir: str,
        group: str | None = None,
        offline: bool = False,
        log_model: bool | str = False,
        **kwargs: Any,
    ) -> None:
        if wandb.run is not None:
            wandb.finish()
        mode = os.environ.get("WANDB_MODE", "")
        if not offline and mode not in ("offline", "disabled") and not has_api_key():
            log.warning("wandb: no API key; logging offline (upload later with `wandb sync`)")
            offline = True
        if offline and log_model:
            log.warning("wandb: offline, so checkpoints are not uploaded (logger.wandb.log_model)")
            log_model = False
        super().__init__(
            save_dir=save_dir,
            id=run_id(save_dir),
            group=group or sweep_group(),
            offline=offline,
            log_model=log_model,
            **kwargs,
        )
        # Lightning passes `anonymous=None`, for which wandb warns on every run that the
        # setting has no effect; left out, wandb says nothing.
        self._wandb_init.pop("anonymous", None)


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger, except that a resumed run appends to its `metrics.csv`: Lightning
    deletes the file when its dir already holds logs, and a resume would lose every earlier
    row. Rows logged after the checkpoint the run resumes from (`resume_at`: a run killed
    between two checkpoints had logged them) are dropped, since the resumed run logs those
    steps again. The override of `experiment` reads the logger's `_experiment` cache, as
    Lightning's own property does: there is no public hook between creating the writer and
    its first row."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume_step: int | None = None

    def resume_at(self, step: int) -> None:
        """The run continues from a checkpoint at global step `step`: rows of later steps go."""
        self._resume_step = step

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        path = Path(self.log_dir, "metrics.csv")
        earlier = path.read_text() if path.is_file() else ""
        writer = super().experiment
        if earlier:
            keys = next(csv.reader(io.StringIO(earlier)))
            if self._resume_step is not None:
                kept = [
                    row
                    for row in csv.DictReader(io.StringIO(earlier))
                    if not row.get("step") or int(row["step"]) < self._resume_step
                ]
                out = io.StringIO()
                table = csv.DictWriter(out, fieldnames=keys)
                table.writeheader()
                table.writerows(kept)
                earlier = out.getvalue()
            path.write_text(earlier)
            writer.metrics_keys = sorted(keys)
        return writer
