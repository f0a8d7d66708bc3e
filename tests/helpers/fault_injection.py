"""Faults at an exact moment of a real run, for the tests' `reslab-train` processes: a signal
sent by the run to itself (or to its process group) at a given hook and step, and a signal or
kill -9 in the middle of a checkpoint save. Added to a run from the command line, e.g.
`+callbacks.fault._target_=helpers.fault_injection.SignalAt` (the tests put `tests/` on
PYTHONPATH)."""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

import lightning as L
from lightning.pytorch.callbacks import Callback

from reslab.runs import layout as run_layout
from reslab.runs.checkpoints import AtomicCheckpointIO


class SignalAt(Callback):
    """Send `sig` once, as `hook` starts at global step `step` (sanity check excluded); to the
    whole process group with `group=true`, as a terminal's Ctrl-C or `timeout` does; under DDP
    from the process of global rank `rank` alone, when given (`kill <pid>` of one rank)."""

    HOOKS = ("on_train_batch_start", "on_validation_batch_start", "on_test_batch_start")

    def __init__(
        self, hook: str, step: int, sig: str, group: bool = False, rank: int | None = None
    ) -> None:
        if hook not in self.HOOKS:
            raise ValueError(f"hook={hook!r}: one of {self.HOOKS}")
        self.hook, self.step, self.sig, self.group = hook, step, signal.Signals[sig], group
        self.rank, self.sent = rank, False

    def _at(self, hook: str, trainer: L.Trainer) -> None:
        if hook != self.hook or self.sent or trainer.sanity_checking:
            return
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        if trainer.global_step == self.step:
            self.sent = True
            if self.group:
                os.killpg(os.getpgid(0), self.sig)
            else:
                os.kill(os.getpid(), self.sig)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._at("on_train_batch_start", trainer)

    def on_validation_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._at("on_validation_batch_start", trainer)

    def on_test_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._at("on_test_batch_start", trainer)


class SignalDuringSave(AtomicCheckpointIO):
    """reslab's checkpoint writer, sending `sig` to its own process during the writing of
    checkpoint file number `save` (1-based): once the new file is complete beside the target,
    before it replaces the old one, the last moment a crash can hit."""

    def __init__(self, save: int, sig: str) -> None:
        super().__init__()
        self.save, self.sig, self.saves = save, signal.Signals[sig], 0

    def write(self, path: Path, data: bytes) -> None:
        self.saves += 1
        if self.saves != self.save:
            return super().write(path, data)
        replace = os.replace

        def signal_then_replace(src: Any, dst: Any) -> None:
            os.kill(os.getpid(), self.sig)
            replace(src, dst)

        with mock.patch("reslab.runs.atomic.os.replace", signal_then_replace):
            super().write(path, data)


class KillAfterWrite(AtomicCheckpointIO):
    """reslab's checkpoint writer, killing its own process (SIGKILL: nothing else runs) the
    moment `last.ckpt` number `write` (1-based) and its checksum are on disk."""

    def __init__(self, write: int) -> None:
        super().__init__()
        self.after, self.writes = write, 0

    def write(self, path: Path, data: bytes) -> None:
        super().write(path, data)
        if path.name == f"{run_layout.LAST}.ckpt":
            self.writes += 1
            if self.writes == self.after:
                os.kill(os.getpid(), signal.SIGKILL)


class FillDiskAt(Callback):
    """Fill the filesystem of the run dir, leaving `leave` bytes, when the test ends (after the
    last checkpoint, before `summary.json`)."""

    def __init__(self, leave: int = 0) -> None:
        self.leave = leave

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        root = Path(trainer.default_root_dir)
        free = shutil.disk_usage(root).free
        (root.parent / f"filler-{uuid.uuid4().hex}").write_bytes(b"\0" * max(0, free - self.leave))
