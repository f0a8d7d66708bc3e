"""One GPU per job in a local sweep (`hydra/launcher=local_gpus`): each GPU has `jobs_per_gpu`
slots, and each worker process of the sweep holds one slot, so one GPU, for its life.

A worker claims its slot at its first job, before the job touches CUDA, and sets
`CUDA_VISIBLE_DEVICES` to that GPU: the job sees it as `cuda:0`. A slot is an exclusive `flock`
on a file; the kernel releases it when the process ends, a crash included. A worker keeps its
GPU for all its jobs (CUDA reads `CUDA_VISIBLE_DEVICES` once per process), and as many workers
as slots run: no GPU ever runs more than `jobs_per_gpu` jobs at once."""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reslab.errors import ConfigError

log = logging.getLogger("reslab")

# The slot this process holds: lock dir, GPU, open lock file (its flock is the hold).
_held: dict[str, Any] = {}


def visible_gpus(gpus: Sequence[int | str] | None) -> list[str]:
    """The GPUs to share out: `gpus` if given (indices or UUIDs), else those that
    `CUDA_VISIBLE_DEVICES` names, else every GPU torch finds."""
    if gpus is not None:
        return [str(g) for g in gpus]
    named = os.environ.get("CUDA_VISIBLE_DEVICES")
    if named is not None:
        return [g.strip() for g in named.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def plan_slots(gpus: Sequence[int | str] | None, jobs_per_gpu: int, devices: Any = 1) -> list[str]:
    """The GPU of each slot, GPUs interleaved (a sweep of fewer jobs than slots spreads over
    every GPU first). `devices` is the run's `trainer.devices`: a job gets one GPU."""
    if not isinstance(jobs_per_gpu, int) or isinstance(jobs_per_gpu, bool) or jobs_per_gpu < 1:
        raise ConfigError(
            f"hydra.launcher.jobs_per_gpu={jobs_per_gpu!r} is not valid; use a positive "
            "integer (jobs that share one GPU at once)"
        )
    if devices not in (1, "1", "auto", -1, "-1", None):
        raise ConfigError(
            f"trainer.devices={devices} but hydra/launcher=local_gpus gives each job one GPU; "
            "use trainer.devices=1, or hydra/launcher=local for a job that uses several"
        )
    found = visible_gpus(gpus)
    if not found:
        raise ConfigError(
            "hydra/launcher=local_gpus found no GPU (CUDA_VISIBLE_DEVICES, torch); name them "
            "(hydra.launcher.gpus=[0,1]) or use hydra/launcher=local on the CPU"
        )
    return [gpu for _ in range(jobs_per_gpu) for gpu in found]


def claim(lock_dir: str | Path, slots: Sequence[str], wait_s: float = 60.0) -> str:
    """The GPU of this process: the slot it holds under `lock_dir`, else the first free one,
    held until the process ends. Waits up to `wait_s` for a slot (a worker that is exiting
    still holds its own)."""
    lock_dir = str(lock_dir)
    if _held.get("dir") == lock_dir:
        return _held["gpu"]
    if _held:  # a new sweep in this process: its slots are other files
        os.close(_held.pop("fd"))
        _held.clear()
    deadline = time.monotonic() + wait_s
    while True:
        for i, gpu in enumerate(slots):
            fd = os.open(os.path.join(lock_dir, f"slot{i}"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            _held.update(dir=lock_dir, gpu=gpu, fd=fd)
            return gpu
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"no free GPU slot among {len(slots)} after {wait_s:.0f} s: more worker "
                "processes than slots are running"
            )
        time.sleep(0.1)


class OnOwnGpu:
    """A Hydra task function that first binds its worker process to one GPU slot (`claim`);
    pickled to the launcher's worker processes with the task it wraps."""

    def __init__(
        self, task: Callable[[Any], Any], lock_dir: str, slots: Sequence[str], wait_s: float
    ) -> None:
        self.task, self.lock_dir, self.slots, self.wait_s = task, lock_dir, list(slots), wait_s

    def __call__(self, cfg: Any) -> Any:
        gpu = claim(self.lock_dir, self.slots, self.wait_s)
        before = os.environ.get("CUDA_VISIBLE_DEVICES")
        torch = sys.modules.get("torch")
        if before not in (None, gpu) and torch is not None and torch.cuda.is_initialized():
            raise RuntimeError(
                f"this worker process already uses GPU {before}; it cannot move to GPU {gpu}"
            )
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        log.info("on GPU %s (CUDA_VISIBLE_DEVICES=%s, worker %d)", gpu, gpu, os.getpid())
        return self.task(cfg)
