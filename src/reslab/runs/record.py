"""A run's record, `<run dir>/summary.json`: what ran, what it cost, how well it did, and
whether it completed, failed or was interrupted. This module alone writes and reads it:
`reslab-train` writes it, a re-launched sweep skips the runs it marks finished,
`reslab-report` and the end-of-sweep check read it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from reslab.errors import DataError, one_line
from reslab.models.flops import count_macs
from reslab.runs import layout as run_layout
from reslab.runs import lock as run_lock
from reslab.runs.atomic import WriteError, write_atomic
from reslab.training.callbacks import ErrorTracker, WallTime
from reslab.training.scores import TEST_ERR, TRAIN_ERR, VAL_ERR
from reslab.training.stopping import Stopped

log = logging.getLogger("reslab")

FILE = run_layout.SUMMARY


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


def status(run_dir: str | Path, record: dict[str, Any] | None) -> str:
    """What became of a run: its record's `status` (completed, failed, interrupted), else
    `running` while a process holds the dir, else `stopped` (killed before it wrote one)."""
    if record and record.get("status"):
        return str(record["status"])
    return "running" if run_lock.is_held(Path(run_dir)) else "stopped"


def finished_metrics(
    run_dir: str | Path, max_steps: int = -1, max_epochs: int | None = -1
) -> dict[str, Any] | None:
    """The record of a run that completed in `run_dir` and reached the end asked for now (so a
    longer run, in steps or in epochs, continues it), else None. The run ends at whichever
    bound it reaches first, as Lightning's loop does; -1 (or None) is no bound. A record
    without `epochs` (written before it was kept) is finished only by steps."""
    record = read(run_dir)
    if record is None or record.get("status") != "completed":
        return None
    by_steps = max_steps != -1 and record.get("steps", 0) >= max_steps
    epochs = record.get("epochs")
    by_epochs = max_epochs not in (-1, None) and epochs is not None and epochs >= max_epochs
    return record if by_steps or by_epochs else None


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


def val_is_test(datamodule: Any) -> bool:
    """Whether the run validates on its test split (a DataModule that does not say is taken to:
    the safe side for the rules below)."""
    return bool(getattr(datamodule, "val_is_test", True))


def tested_weights(val_is_test: bool, best_ckpt: str | None) -> tuple[str, str]:
    """Which weights the test after fitting scores ("final" or "best") and why. A checkpoint
    chosen by validation error is tested only when validation is held out from training: on the
    test set, "best" would be a minimum over test evaluations."""
    if val_is_test:
        return "final", "validation is the test set, so a best checkpoint is chosen on it"
    if not best_ckpt:
        return "final", "no best checkpoint (callbacks.model_checkpoint is off)"
    return "best", f"lowest {VAL_ERR} on the validation split held out from training"


def record_val_is_test(record: dict[str, Any], config: dict[str, Any] | None = None) -> bool:
    """Whether a record's run validated on the test set: the record says so; for a record that
    does not, its config decides (CIFAR validates on the test set unless `data.val_size` > 0,
    ImageFolder data always does)."""
    if "val_is_test" in record:
        return bool(record["val_is_test"])
    return not ((config or {}).get("data") or {}).get("val_size")


def reported_test_error(
    record: dict[str, Any], config: dict[str, Any] | None = None
) -> tuple[float | None, str | None]:
    """(test error, "final" or "best") of a record under the final-weights rule, None where it
    has none. A run that validated on the test set reports its final weights: a record that
    predates `test_weights` tested its best checkpoint there, so its final validation, which
    ran on the final weights, is its test error."""
    val = record.get("val_err") or {}
    if record_val_is_test(record, config) and record.get("test_weights") != "final":
        final = val.get("final")
        return final, None if final is None else "final"
    err = record.get("test_err")
    return err, None if err is None else record.get("test_weights", "best")


def write_completed(
    cfg: DictConfig,
    module: L.LightningModule,
    trainer: L.Trainer,
    datamodule: Any,
    wall_time_s: float,
    metrics: dict[str, float],
    tested: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Depth, residual, params, MACs, best/final train and val error, the test error and which
    weights it is of (`tested`: `tested_weights`' answer, None when no test ran), iterations,
    precision, wall time (`wall_time_s`: this segment's plus a resumed run's earlier segments,
    `wall_time_segments_s`); written by rank 0. With validation on the test set the best val
    error is left out: a minimum over test evaluations is no result."""
    net = module.net
    size = datamodule.input_size
    tracker = next((c for c in trainer.callbacks if isinstance(c, ErrorTracker)), None)
    errors = (tracker.fit_result or tracker.best_and_final()) if tracker else {}
    clock = next((c for c in trainer.callbacks if isinstance(c, WallTime)), None)
    segments = [*(clock.previous if clock else []), round(wall_time_s, 2)]
    on_test = val_is_test(datamodule)
    val_err = dict(errors.get(VAL_ERR, {"best": None, "final": None}))
    if on_test:
        val_err.pop("best", None)
    record = {
        "run_name": cfg.run_name,
        "status": "completed",
        "tags": list(cfg.get("tags") or []),
        "model": str(cfg.model.get("_target_", "")),
        "depth": cfg.model.get("depth"),
        "residual": bool(cfg.model.get("residual", True)),
        "dataset": datamodule.name,
        "seed": cfg.seed,
        "params": sum(p.numel() for p in net.parameters()),
        "input_size": list(size) if size else None,
        "macs": count_macs(net, size)["total"] if size else None,
        "steps": trainer.global_step,
        "epochs": trainer.current_epoch,
        "world_size": trainer.world_size,
        "precision": str(trainer.precision),
        "wall_time_s": round(sum(segments), 2),
        "wall_time_segments_s": segments,
        "train_err": errors.get(TRAIN_ERR, {"best": None, "final": None}),
        "val_is_test": on_test,
        "val_err": val_err,
        "test_err": metrics.get(TEST_ERR),
        "test_weights": tested[0] if tested else None,
        "test_weights_why": tested[1] if tested else None,
        "metrics": metrics,
    }
    if trainer.is_global_zero:
        _write(Path(cfg.paths.output_dir), record)
    return record


# The fields of a record that hold a number: what `optimized_metric` may name, besides
# `metrics.<logged name>` (e.g. `metrics.val/acc5`).
NUMBER_FIELDS = (
    "train_err.best", "train_err.final", "val_err.best", "val_err.final", "test_err",
    "steps", "epochs", "params", "macs", "wall_time_s",
)  # fmt: skip


def is_number_field(key: Any) -> bool:
    """Whether `key` names a number of the record (`val_err.final`, `metrics.val/err`)."""
    if not isinstance(key, str):
        return False
    return key in NUMBER_FIELDS or (key.startswith("metrics.") and len(key) > len("metrics."))


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
    _write_outcome(run_dir, record)


def write_interrupted(cfg: DictConfig, stop: Stopped) -> None:
    """`status: interrupted`, the signal, where the run was (`stage`) and `steps`: the step of
    its `last.ckpt` (0 without one), where `resume=true` continues; written by rank 0. A
    record that cannot be read is left as it is."""
    run_dir = Path(cfg.paths.output_dir)
    if rank_zero_only.rank != 0:
        return
    try:
        read(run_dir)
    except UnreadableRecord:
        return
    last = run_layout.last_checkpoint(run_dir)
    steps = 0
    if last.is_file():
        steps = torch.load(last, map_location="cpu", weights_only=True, mmap=True)["global_step"]
    record = {
        "run_name": cfg.get("run_name"),
        "status": "interrupted",
        "signal": stop.signal_name,
        "stage": stop.stage,
        "steps": steps,
        "last_checkpoint": str(last) if last.is_file() else None,
    }
    _write_outcome(run_dir, record)


def not_completed(record: dict[str, Any]) -> str:
    """Why a record's run did not complete, in a few words."""
    if record.get("status") == "interrupted":
        return (
            f"interrupted by {record.get('signal')} ({record.get('stage')}) at step "
            f"{record.get('steps')}; resume=true continues it"
        )
    return str(record.get("error", record.get("status")))


def _write_outcome(run_dir: Path, record: dict[str, Any]) -> None:
    """The record of a run that failed or was stopped, written while that failure or stop is
    on its way out: a disk too full for it is one logged line, not a second error in place
    of the first (a sweep then reports the job as one without a record)."""
    try:
        _write(run_dir, record)
    except WriteError as e:
        log.error("%s; the run %s (this log says why)", e, record["status"])


def _write(run_dir: Path, record: dict[str, Any]) -> None:
    write_atomic(run_dir / FILE, (json.dumps(record, indent=2) + "\n").encode())
