"""Lightning callbacks that the library does not have."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from reslab.config import log
from reslab.errors import ReslabError

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
        elif not all(torch.isfinite(t).all() for t in _float_tensors(pl_module)):
            what = "the weights or BN statistics are not finite"
        else:
            return
        last = [c.path for c in trainer.callbacks if isinstance(c, LastCheckpoint)]
        kept = f"the last good checkpoint is {last[0]}" if last else "no last checkpoint"
        raise NonFiniteLoss(
            f"{what} at step {trainer.global_step} (epoch {trainer.current_epoch}); {kept}; "
            "lower optimizer.lr or check the data"
        )


def _float_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    return [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
