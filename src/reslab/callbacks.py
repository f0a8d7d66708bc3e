"""Lightning callbacks that the library does not have."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


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
