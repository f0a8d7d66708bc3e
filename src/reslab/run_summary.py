"""The machine-readable summary of one run (`summary.json`), written by `reslab-train` and read
by `reslab-report`: what the net is, what it cost, and how well it did."""

from __future__ import annotations

from typing import Any

import lightning as L
from omegaconf import DictConfig

from reslab.callbacks import ErrorTracker
from reslab.flops import count_macs


def input_size(datamodule: Any) -> tuple[int, ...] | None:
    """C, H, W of one training image as the model sees it, None if the data cannot say."""
    dataset = getattr(datamodule, "train_set", None)
    if dataset is None or len(dataset) == 0:
        return None
    return tuple(dataset[0][0].shape)


def run_summary(
    cfg: DictConfig,
    module: L.LightningModule,
    trainer: L.Trainer,
    datamodule: Any,
    wall_time_s: float,
    metrics: dict[str, float],
) -> dict[str, Any]:
    """Depth, residual, params, MACs, best/final train and val error, test error (of the
    checkpoint with the best val error), iterations, wall time and `status`."""
    net = module.net
    size = input_size(datamodule)
    tracker = next((c for c in trainer.callbacks if isinstance(c, ErrorTracker)), None)
    errors = (tracker.fit_result or tracker.best_and_final()) if tracker else {}
    return {
        "run_name": cfg.run_name,
        "status": "completed",
        "model": str(cfg.model.get("_target_", "")),
        "depth": cfg.model.get("depth"),
        "residual": bool(cfg.model.get("residual", True)),
        "dataset": cfg.data.get("name", str(cfg.data.get("_target_", ""))),
        "seed": cfg.seed,
        "params": sum(p.numel() for p in net.parameters()),
        "input_size": list(size) if size else None,
        "macs": count_macs(net, size)["total"] if size else None,
        "steps": trainer.global_step,
        "wall_time_s": round(wall_time_s, 2),
        "train_err": errors.get("train/err", {"best": None, "final": None}),
        "val_err": errors.get("val/err", {"best": None, "final": None}),
        "test_err": metrics.get("test/err"),
        "metrics": metrics,
    }
