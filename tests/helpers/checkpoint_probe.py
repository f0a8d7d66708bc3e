"""A logger for the tests' runs that notes what a logger finds on disk each time a checkpoint
callback says it saved (`after_save_checkpoint`, where W&B uploads checkpoints): the step in
`last.ckpt`, one JSON line per call in `path`. Added from the command line:
`+logger.probe._target_=helpers.checkpoint_probe.SavedCheckpoints +logger.probe.path=FILE`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers import Logger


class SavedCheckpoints(Logger):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    @property
    def name(self) -> str:
        return "probe"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        last = Path(checkpoint_callback.dirpath, "last.ckpt")
        step = torch.load(last, weights_only=False)["global_step"] if last.is_file() else None
        with open(self.path, "a") as f:
            f.write(json.dumps({"last_ckpt_step": step}) + "\n")
