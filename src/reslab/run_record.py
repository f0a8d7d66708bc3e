"""A run's record, `<run dir>/summary.json`: what ran, what it cost, how well it did, and
whether it completed or failed. This module alone writes and reads it: `reslab-train` writes
it, a re-launched sweep skips the runs it marks finished, `reslab-report` and the end-of-sweep
check read it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from reslab.atomic import write_atomic
from reslab.callbacks import ErrorTracker
from reslab.errors import DataError, one_line
from reslab.flops import count_macs

FILE = "summary.json"


class UnreadableRecord(DataError):
    """A summary.json that is not a JSON object; it is reported and left as it is."""


def read(run_dir: str | Path) -> dict[str, Any] | None:
    """The record of `run_dir`, None if it has none."""
    path = Path(run_dir, FILE)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UnreadableRecord(
            f"{path} cannot be read ({type(e).__name__}: {e}); it is left as it is: "
            "restore it, or delete it to run this job again"
        ) from None
    if not isinstance(record, dict):
        raise UnreadableRecord(f"{path} holds no run record (a JSON object); it is left as it is")
    return record


def finished_metrics(run_dir: str | Path, max_steps: int = -1) -> dict[str, Any] | None:
    """The record of a run that completed in `run_dir` and reached `max_steps` (so a longer
    schedule continues it), else None."""
    record = read(run_dir)
    if record is None or record.get("status") != "completed":
        return None
    return record if record.get("steps", 0) >= max_steps else None


def read_sweep(sweep_dir: str | Path) -> list[tuple[Path, dict[str, Any] | None, str | None]]:
    """(run dir, record or None, why it cannot be read or None) for every job dir (one holding
    `.hydra/config.yaml`) under `sweep_dir`, in job order."""
    out = []
    for cfg_file in sorted(Path(sweep_dir).glob("**/.hydra/config.yaml")):
        run_dir = cfg_file.parent.parent
        try:
            out.append((run_dir, read(run_dir), None))
        except UnreadableRecord as e:
            out.append((run_dir, None, str(e)))
    return out


def input_size(datamodule: Any) -> tuple[int, ...] | None:
    """C, H, W of one training image as the model sees it, None if the data cannot say."""
    dataset = getattr(datamodule, "train_set", None)
    if dataset is None or len(dataset) == 0:
        return None
    return tuple(dataset[0][0].shape)


def write_completed(
    cfg: DictConfig,
    module: L.LightningModule,
    trainer: L.Trainer,
    datamodule: Any,
    wall_time_s: float,
    metrics: dict[str, float],
) -> dict[str, Any]:
    """Depth, residual, params, MACs, best/final train and val error, test error (of the
    checkpoint with the best val error), iterations, precision, wall time; written by rank 0."""
    net = module.net
    size = input_size(datamodule)
    tracker = next((c for c in trainer.callbacks if isinstance(c, ErrorTracker)), None)
    errors = (tracker.fit_result or tracker.best_and_final()) if tracker else {}
    record = {
        "run_name": cfg.run_name,
        "status": "completed",
        "tags": list(cfg.get("tags") or []),
        "model": str(cfg.model.get("_target_", "")),
        "depth": cfg.model.get("depth"),
        "residual": bool(cfg.model.get("residual", True)),
        "dataset": cfg.data.get("name", str(cfg.data.get("_target_", ""))),
        "seed": cfg.seed,
        "params": sum(p.numel() for p in net.parameters()),
        "input_size": list(size) if size else None,
        "macs": count_macs(net, size)["total"] if size else None,
        "steps": trainer.global_step,
        "world_size": trainer.world_size,
        "precision": str(trainer.precision),
        "wall_time_s": round(wall_time_s, 2),
        "train_err": errors.get("train/err", {"best": None, "final": None}),
        "val_err": errors.get("val/err", {"best": None, "final": None}),
        "test_err": metrics.get("test/err"),
        "metrics": metrics,
    }
    if trainer.is_global_zero:
        _write(Path(cfg.paths.output_dir), record)
    return record


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def write_failed(error: BaseException, run_name: str | None) -> None:
    """`status: failed` and the error, in this Hydra job's run dir (rank 0). A record that
    cannot be read is left as it is: it may be a completed run's."""
    if not HydraConfig.initialized() or rank_zero_only.rank != 0:
        return
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        read(run_dir)
    except UnreadableRecord:
        return
    record = {"run_name": run_name, "status": "failed", "error": f"{type(error).__name__}: "}
    record["error"] += one_line(error)
    _write(run_dir, record)


def _write(run_dir: Path, record: dict[str, Any]) -> None:
    write_atomic(run_dir / FILE, (json.dumps(record, indent=2) + "\n").encode())
