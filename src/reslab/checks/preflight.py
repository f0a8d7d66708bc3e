"""What the types of the code cannot say, checked before anything is built: the kinds of the
top-level values, ranges of the library targets' arguments (torch's optimizers, Lightning's
Trainer), unknown top-level keys, devices this machine lacks, and the rules that involve two
fields once the objects exist (`check_built`). Each failure is one line naming the key, the
value and the fix. The types, choices and unknown options of every node are
`reslab.checks.schema`'s."""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from importlib import resources
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from reslab.checks.schema import check_targets, import_target, nearest
from reslab.errors import ConfigError
from reslab.runs import layout as run_layout
from reslab.runs import record as run_record
from reslab.training.callbacks import LastCheckpoint
from reslab.training.distributed import per_device_batch

_ABSENT = object()


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _names(v: Any) -> bool:
    """A list of strings; a bare string (`tags=baseline`) is not one: Python would take its
    letters as the list."""
    return isinstance(v, ListConfig | list) and all(isinstance(x, str) for x in v)


def _per_depth(v: Any) -> bool:
    return isinstance(v, DictConfig | dict) and all(_int(k) and _finite(x) for k, x in v.items())


# key: (test, what a valid value is), for the top-level values (no signature says their kind)
# and arguments of torch and Lightning, whose signatures say only `float` or `int`. Checked
# when the key is present.
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (lambda v: _int(v) and v >= 0, "a non-negative integer"),
    "tags": (_names, "a list of names: tags=[baseline] or tags=[depth-sweep,baseline]"),
    # A job SLURM restarted resumes with its restart count (configs/train.yaml): a number.
    "resume": (lambda v: isinstance(v, bool) or (_int(v) and v >= 0), "true or false"),
    "test": (lambda v: isinstance(v, bool), "true or false"),
    "optimized_metric": (
        lambda v: v is None or run_record.is_number_field(v),
        f"null or a number of summary.json: {', '.join(run_record.NUMBER_FIELDS)} or "
        "metrics.<logged name>",
    ),
    "paper_error": (
        lambda v: v is None or _finite(v) or _per_depth(v),
        "null, a percentage, or one per depth: {20: 8.75, 56: 6.97}",
    ),
    "trainer.max_steps": (
        lambda v: _int(v) and (v >= 1 or v == -1),
        "a positive number of iterations (or -1 to train trainer.max_epochs epochs)",
    ),
    "trainer.max_epochs": (
        lambda v: v is None or (_int(v) and (v >= 1 or v == -1)),
        "a positive number of epochs, or -1 to stop at trainer.max_steps",
    ),
    "trainer.log_every_n_steps": (lambda v: _int(v) and v >= 1, "a positive integer"),
    "trainer.accumulate_grad_batches": (lambda v: _int(v) and v >= 1, "a positive integer"),
    "trainer.gradient_clip_val": (
        lambda v: v is None or (_finite(v) and v > 0),
        "a positive finite norm (or null for no clipping)",
    ),
    "optimizer.lr": (lambda v: _finite(v) and v > 0, "a positive finite number (the paper: 0.1)"),
    "optimizer.weight_decay": (lambda v: _finite(v) and v >= 0, "0 or a positive number"),
    "optimizer.momentum": (lambda v: _finite(v) and 0 <= v < 1, "in [0, 1) (the paper: 0.9)"),
}


def top_level_keys(config_name: str = "train") -> set[str]:
    """The keys a command's config may have at its top: its primary file's own and one per
    config group in its defaults list (the `_global_` groups, experiment and debug, add none)."""
    configs = resources.files("reslab.configs")
    primary = OmegaConf.create(configs.joinpath(f"{config_name}.yaml").read_text())
    keys = {str(k) for k in primary if k not in ("defaults", "hydra")}
    for entry in primary.get("defaults", []):
        if not isinstance(entry, DictConfig):
            continue
        group = str(next(iter(entry)))
        files = [f for f in configs.joinpath(group).iterdir() if f.name.endswith(".yaml")]
        if group != "hydra" and not any("@package _global_" in f.read_text() for f in files):
            keys.add(group)
    return keys


def check_config(cfg: DictConfig, config_name: str = "train") -> None:
    """Raise a `ConfigError` for the first bad key or value of a run config, or a device this
    machine lacks."""
    check_values(cfg, top_level_keys(config_name))
    check_devices(cfg.trainer)


def check_values(cfg: DictConfig, top_level: set[str] | None = None) -> None:
    """The checks that hold on any machine: keys, types, ranges, a run with an end."""
    top_level = top_level_keys() if top_level is None else top_level
    unknown = sorted(set(cfg) - top_level)
    if unknown:
        key = unknown[0]
        hint = f"{near} " if (near := nearest(key, sorted(top_level))) else ""
        raise ConfigError(
            f"unknown config key {key!r} (added with +?); {hint}valid keys: {sorted(top_level)}"
        )
    for key, (ok, valid) in RANGES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is not _ABSENT and not ok(value):
            raise ConfigError(f"{key}={value!r} is not valid; use {valid}")
    trainer = cfg.get("trainer") or {}
    if trainer.get("max_steps", -1) == -1 and trainer.get("max_epochs", -1) in (-1, None):
        raise ConfigError(
            "trainer.max_steps=-1 and trainer.max_epochs=-1: the run has no end; set one of them"
        )
    check_targets(cfg)


def check_devices(trainer: DictConfig) -> None:
    """A GPU run on a machine without one, or more devices than the machine has, fails late
    inside Lightning (or, on the CPU, silently oversubscribes); name the fix instead."""
    devices, accelerator = trainer.get("devices", 1), trainer.get("accelerator", "auto")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} but this machine has no CUDA GPU; "
            "use trainer=cpu (or trainer.accelerator=cpu)"
        )
    if not _int(devices) or devices < 1:
        return  # "auto", -1 and device lists are resolved by Lightning
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    have, kind = (torch.cuda.device_count(), "GPUs") if gpu else (os.cpu_count() or 1, "CPUs")
    if devices > have:
        raise ConfigError(
            f"trainer.devices={devices} but this machine has {have} {kind}; "
            f"use trainer.devices={have} or fewer"
        )


def check_built(trainer: Any, datamodule: Any, module: Any) -> None:
    """Rules across objects, before compute: the batch splits over the processes and
    micro-batches and fits the training set; `last.ckpt` is where resume reads it; the model's
    head fits the data's classes; GPU decoding has a GPU to decode on; no schedule steers
    training by the test set."""
    accumulate = trainer.accumulate_grad_batches
    per_device_batch(datamodule.batch_size, trainer.world_size, accumulate)
    images = datamodule.train_size
    if images is not None and datamodule.batch_size > images:
        raise ConfigError(
            f"data.batch_size={datamodule.batch_size} is larger than the {images} training "
            f"images; use data.batch_size={images} or fewer"
        )
    expected = run_layout.last_checkpoint(trainer.default_root_dir)
    for callback in trainer.callbacks:
        if isinstance(callback, LastCheckpoint) and callback.path.resolve() != expected.resolve():
            raise ConfigError(
                f"callbacks.last_checkpoint.dirpath={callback.dirpath} but resume reads "
                f"{expected}; drop the override"
            )
    gpu_decode = getattr(datamodule, "decode", "cpu") == "gpu"
    if gpu_decode and (device := trainer.strategy.root_device).type != "cuda":
        raise ConfigError(
            f"data.decode=gpu decodes on the training GPU but this run trains on {device}; "
            "use trainer=gpu, or data.decode=cpu"
        )
    monitor = getattr(getattr(module, "schedule", None), "monitor", None) or ""
    if monitor.startswith("val") and datamodule.val_is_test and datamodule.hold_out:
        raise ConfigError(
            f"the schedule lowers the lr by {monitor} (scheduler.monitor), and validation is "
            f"the test set here, so the test set would steer training; hold out a split: "
            f"{datamodule.hold_out}"
        )
    head = module.num_classes
    if head != datamodule.num_classes:
        raise ConfigError(
            f"model.num_classes={head} but the data has {datamodule.num_classes} classes; "
            "drop model.num_classes (it follows data.num_classes)"
        )


def check_command_line(config_name: str, argv: list[str]) -> list[str]:
    """The command line's overrides composed once before Hydra runs them, so that a key or
    option that does not exist is one line with the nearest one (Hydra's own message is
    several lines and advises `+`), and a launcher this machine cannot run is refused."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException, MissingConfigException

    overrides = [a for a in argv[1:] if not a.startswith("-")]
    if any(a.startswith("hydra/launcher=slurm") for a in overrides):
        check_slurm()
    if "-m" in argv or "--multirun" in argv or GlobalHydra.instance().is_initialized():
        return argv  # sweep values (a=1,2) compose only per job
    try:
        with initialize_config_module("reslab.configs", version_base="1.3"):
            compose(config_name, overrides=overrides)
    except MissingConfigException as e:
        raise ConfigError(_missing_option(str(e))) from None
    except ConfigCompositionException as e:
        if bad := re.match(r"Could not (?:override|delete from config)\.? '([\w.]+)'", str(e)):
            raise ConfigError(_unknown_key(config_name, bad[1], overrides)) from None
        raise ConfigError(" ".join(str(e).split("\n\n")[0].split())) from None
    except Exception:  # anything else is Hydra's to report, as it would without this check
        return argv
    return argv


def check_slurm() -> None:
    """A SLURM controller answers here (`sinfo`), before submitit's traceback would say not."""
    fix = "launch from a SLURM login node, or run the sweep here with hydra/launcher=local"
    if not shutil.which("sbatch"):
        raise ConfigError(f"hydra/launcher=slurm needs SLURM (no sbatch on PATH); {fix}")
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%n"], capture_output=True, text=True,
                              timeout=20)  # fmt: skip
        why = done.stderr.strip().splitlines()[-1] if done.returncode else ""
    except (OSError, subprocess.TimeoutExpired) as e:
        why = str(e)
    if why:
        raise ConfigError(f"hydra/launcher=slurm: no SLURM controller answers ({why}); {fix}")


def _missing_option(message: str) -> str:
    found = re.search(r"Could not find '([\w/]+)/([^']+)'", message)
    if not found:
        return message.strip().splitlines()[0]
    group, option = found[1], found[2]
    folder = resources.files("reslab.configs").joinpath(group)
    names = sorted(f.name[:-5] for f in folder.iterdir() if f.name.endswith(".yaml"))
    hint = f"{near} " if (near := nearest(option, names, f"{group}=")) else ""
    return f"{group}={option} is not an option of {group}; {hint}options: {', '.join(names)}"


def _unknown_key(config_name: str, key: str, overrides: list[str]) -> str:
    from hydra import compose, initialize_config_module

    groups = [o for o in overrides if "=" in o and "/" not in o.split("=")[0] and "." not in
              o.split("=")[0] and not o.startswith(("+", "~"))]  # fmt: skip
    with initialize_config_module("reslab.configs", version_base="1.3"):
        cfg = compose(config_name, overrides=groups)
    node, parts = cfg, key.split(".")
    at = 0
    for at, name in enumerate(parts):  # noqa: B007 (the first part that is not there)
        if not isinstance(node, DictConfig) or name not in node:
            break
        node = node[name]
    parent = ".".join(parts[:at])
    names = [str(k) for k in node] if isinstance(node, DictConfig) else []
    fix = nearest(name, names, f"{parent}." if parent else "") or f"its keys: {', '.join(names)}"
    if at == len(parts) - 1 and isinstance(node, DictConfig) and "_target_" in node:
        target = node._target_
        with contextlib.suppress(ConfigError, TypeError, ValueError):
            if name in inspect.signature(import_target(parent, target)).parameters:
                fix = f"{target} takes it, so add it: +{key}=<value>"
    return f"{key}: {parent or 'the config'} has no key {name!r}; {fix}"
