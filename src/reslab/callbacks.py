"""Lightning callbacks that the library does not have."""

from __future__ import annotations

import logging
import math
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from reslab.errors import ConfigError, ReslabError

log = logging.getLogger("reslab")

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class LastCheckpoint(ModelCheckpoint):
    """`last.ckpt` after every validation (or every `every_n_train_steps`), when training ends,
    and on SIGTERM/SIGUSR1 (preemption) before the process exits. Lightning's `save_last` only
    refreshes `last.ckpt` when a monitored top-k file is written, so a run whose best epoch is
    early would resume from there. Writes are atomic (Lightning saves through an fsspec
    transaction: a temporary file moved into place), so a crash never leaves a truncated file."""

    def __init__(
        self, dirpath: str, filename: str = "last", every_n_train_steps: int | None = None
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=None,
            save_top_k=1,
            every_n_train_steps=every_n_train_steps,
        )
        self._signal: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def path(self) -> Path:
        return Path(self.dirpath, f"{self.filename}{self.FILE_EXTENSION}")

    def _save_now(self, trainer: L.Trainer) -> None:
        if trainer.global_step != self._last_global_step_saved:
            trainer.save_checkpoint(self.path)
            self._last_global_step_saved = trainer.global_step
            self.last_model_path = str(self.path)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only note it here: the checkpoint is written between two batches.
        self._signal = signum
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning's own handlers (registered before this hook), which we chain to.
        for sig in PREEMPTION_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, *args, **kwargs)
        if self._signal is not None:
            name = signal.Signals(self._signal).name
            self._save_now(trainer)
            log.warning(
                "%s received: saved %s at step %d; continue with resume=true in this run dir",
                name,
                self.path,
                trainer.global_step,
            )
            raise SIGTERMException(128 + self._signal)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_now(trainer)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


class NonFiniteLoss(ReslabError):
    """The training loss became NaN or infinite."""


class FiniteLoss(Callback):
    """Stop at the first NaN/Inf training loss or weight, naming the step, before any
    checkpoint of the diverged weights is written (Lightning runs checkpoint callbacks after
    the others), so the last good checkpoint stays."""

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss).all():
            what = f"training loss is {loss.item()}"
        elif not torch.isfinite(_largest_magnitude(pl_module)):
            what = "the weights or BN statistics are not finite"
        else:
            return
        last = [c.path for c in trainer.callbacks if isinstance(c, LastCheckpoint)]
        kept = f"the last good checkpoint is {last[0]}" if last else "no last checkpoint"
        raise NonFiniteLoss(
            f"{what} at step {trainer.global_step} (epoch {trainer.current_epoch}); {kept}; "
            "lower optimizer.lr or check the data"
        )


def _largest_magnitude(module: torch.nn.Module) -> torch.Tensor:
    """max |x| over the float weights and buffers, in fused kernels with one device sync (a
    check per tensor costs hundreds of syncs a step on a GPU); NaN and Inf propagate."""
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    return torch.nn.utils.get_total_norm(tensors, norm_type=math.inf)


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
