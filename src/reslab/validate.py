"""Checks that run before any compute: each names the bad value and the fix in one line.
Most options are checked where they are built (model, data); these cover what is only used
later (optimizer, devices, a checkpoint to resume)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from reslab.config import build
from reslab.errors import ConfigError


def check_optimizer(cfg: DictConfig) -> None:
    """The optimizer is a partial called inside `fit`; build it now on a dummy parameter so
    torch's own argument checks fire before training starts."""
    lr = cfg.optimizer.get("lr")
    if lr is not None and not lr > 0:
        raise ConfigError(f"optimizer.lr={lr} must be positive (the paper uses 0.1)")
    factory = build(cfg.optimizer, "optimizer")
    try:
        factory([torch.zeros(1, requires_grad=True)])
    except (ValueError, TypeError) as e:
        raise ConfigError(f"optimizer ({cfg.optimizer._target_}): {e}") from None


def check_devices(trainer: DictConfig) -> None:
    """More devices than the machine has fails late inside Lightning (or, on the CPU, silently
    oversubscribes); name both counts instead."""
    devices, accelerator = trainer.get("devices", 1), trainer.get("accelerator", "auto")
    if not isinstance(devices, int) or devices < 1:
        return  # "auto", -1 and device lists are resolved by Lightning
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    have, kind = (torch.cuda.device_count(), "GPUs") if gpu else (os.cpu_count() or 1, "CPUs")
    if devices > have:
        raise ConfigError(
            f"trainer.devices={devices} but this machine has {have} {kind}; "
            f"use trainer.devices={have} or fewer"
        )


def check_checkpoint(path: str, module: torch.nn.Module) -> None:
    """A resume checkpoint must be readable and hold this run's architecture."""
    if not Path(path).is_file():
        raise ConfigError(f"ckpt_path={path} does not exist; pass a .ckpt file from a run dir")
    try:
        ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        state = ckpt["state_dict"]
    except Exception as e:
        raise ConfigError(
            f"ckpt_path={path} is not a readable Lightning checkpoint ({type(e).__name__}); "
            "pass another file (e.g. checkpoints/best.ckpt)"
        ) from None
    ours = module.state_dict()
    bad = [k for k in ours if k not in state or state[k].shape != ours[k].shape]
    bad += [k for k in state if k not in ours]
    if bad:
        theirs = ckpt.get("hyper_parameters", {}).get("model", {})
        raise ConfigError(
            f"ckpt_path={path} holds another architecture ({dict(theirs) or 'unknown'}; first "
            f"mismatch: {bad[0]}); use the model options of the run that wrote it"
        )


def validate(cfg: DictConfig) -> None:
    check_optimizer(cfg)
    check_devices(cfg.trainer)
