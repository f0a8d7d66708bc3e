"""What each process of a real run trains on, for the tests' `reslab-train` processes: every
training batch's images, identified by label and pixel sum, one JSON line per step in
`<path>.rank<global rank>.jsonl`. Added from the command line:
`+callbacks.batch_log._target_=helpers.batch_log.BatchLog +callbacks.batch_log.path=FILE`."""

from __future__ import annotations

import json
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class BatchLog(Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        x, y = batch
        sums = x.double().flatten(1).sum(1)
        images = sorted([int(c), round(float(s), 2)] for c, s in zip(y, sums, strict=True))
        with open(f"{self.path}.rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps({"step": trainer.global_step, "images": images}) + "\n")
