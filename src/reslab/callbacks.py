"""Lightning callbacks that the library does not have."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from reslab.errors import ConfigError

log = logging.getLogger("reslab")


class LastCheckpoint(ModelCheckpoint):
    """`last.ckpt` after every validation and when training ends, also mid-epoch (the paper's
    schedule stops at an iteration count). Lightning's `save_last` only refreshes `last.ckpt`
    when a monitored top-k file is written, so a run whose best epoch is early would resume
    from there."""

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        super().__init__(dirpath=dirpath, filename=filename, monitor=None, save_top_k=1)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = Path(self.dirpath, f"{self.filename}{self.FILE_EXTENSION}")
        if trainer.global_step != self._last_global_step_saved:
            trainer.save_checkpoint(path)
            self._last_global_step_saved = trainer.global_step
            self.last_model_path = str(path)


class ErrorWarmup(Callback):
    """He et al. 2015, ResNet-110: train at `lr` until the training error drops below
    `until_train_err` percent (about 400 iterations), then at the optimizer's own lr. A
    scheduler cannot express this because the switch depends on a metric, not on the step.

    The lr is scaled rather than overwritten, so the configured scheduler keeps running
    underneath; `enabled=false` makes it a no-op (e.g. for depths that need no warm-up).
    """

    def __init__(self, lr: float = 0.01, until_train_err: float = 80.0, enabled: bool = True):
        if lr <= 0:
            raise ConfigError(f"callbacks.lr_warmup.lr={lr} must be positive (the paper: 0.01)")
        self.lr, self.until_train_err = lr, until_train_err
        self.state = {"applied": False, "done": not enabled, "scale": 1.0, "ended_at": None}

    def _scale(self, trainer: L.Trainer, factor: float) -> None:
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= factor

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # On resume the optimizer state already holds the warm-up lr.
        if self.state["done"] or self.state["applied"]:
            return
        scale = self.lr / trainer.optimizers[0].param_groups[0]["lr"]
        self._scale(trainer, scale)
        self.state.update(applied=True, scale=scale)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if self.state["done"]:
            return
        err = trainer.callback_metrics.get("train/err_step")
        if err is not None and float(err) < self.until_train_err:
            self._scale(trainer, 1.0 / self.state["scale"])
            self.state.update(done=True, ended_at=trainer.global_step)
            log.info("lr warm-up ends at step %d (train error %.1f%%)", trainer.global_step, err)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.state)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.state.update(state_dict)


class ErrorTracker(Callback):
    """Best (lowest) and final `train/err` (after every training epoch) and `val/err` (after
    every validation), for the run's summary; Lightning only keeps the monitored best."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {"train/err": [], "val/err": []}
        self.fit_result: dict[str, dict[str, float | None]] | None = None

    def _record(self, trainer: L.Trainer, key: str, logged_as: str) -> None:
        value = trainer.callback_metrics.get(logged_as)
        if value is not None and not trainer.sanity_checking:
            self.history[key].append(float(value))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, "train/err", "train/err_epoch")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, "val/err", "val/err")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # `trainer.test(ckpt_path="best")` restores this state from that checkpoint: keep the
        # result of the whole fit.
        self.fit_result = self.best_and_final()

    def best_and_final(self) -> dict[str, dict[str, float | None]]:
        return {
            k: {"best": min(v) if v else None, "final": v[-1] if v else None}
            for k, v in self.history.items()
        }

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history.update(state_dict.get("history", {}))
