"""One validation pass over a run's config before anything is built or computed. Every node
with a `_target_` is checked against the signature of what it builds (unknown keys, and values
of the wrong type, e.g. `trainer.max_steps=abc`); `RANGES` adds what a type cannot say
(`optimizer.lr=inf`, `trainer.max_steps=0`); unknown top-level keys (`+optimiser.lr=0.5`) and
devices this machine lacks are refused. Each failure is one line naming the key, the value and
the fix."""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import math
import os
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, Literal, Union

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from reslab.errors import ConfigError

# The keys a run config may have at its top: train.yaml's own, one per config group, and the
# experiments' `paper_error` (the paper's figure for the report).
TOP_LEVEL = {
    "task_name", "run_name", "seed", "ckpt_path", "resume", "test", "optimized_metric", "tags",
    "module", "model", "data", "augmentation", "optimizer", "scheduler", "trainer", "logger",
    "callbacks", "paths", "paper_error",
}  # fmt: skip
# Lightning's lr-scheduler dict, plus our warm-up.
SCHEDULER_KEYS = {"scheduler", "interval", "frequency", "monitor", "strict", "name", "warmup_steps"}
_ABSENT = object()
HYDRA_KEYS = {"_target_", "_partial_", "_args_", "_recursive_", "_convert_"}


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# key: (test, what a valid value is). Checked when the key is present.
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (lambda v: _int(v) and v >= 0, "a non-negative integer"),
    "data.batch_size": (lambda v: _int(v) and v >= 1, "a positive integer (the paper: 128)"),
    "data.num_workers": (lambda v: _int(v) and v >= 0, "0 or more worker processes"),
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
    "module.label_smoothing": (lambda v: _finite(v) and 0 <= v < 1, "in [0, 1), e.g. 0.1"),
    "scheduler.warmup_steps": (lambda v: _int(v) and v >= 0, "0 or a number of iterations"),
}


def check_config(cfg: DictConfig) -> None:
    """Raise a `ConfigError` for the first bad key or value of a run config, or a device this
    machine lacks."""
    check_values(cfg)
    check_devices(cfg.trainer)


def check_values(cfg: DictConfig) -> None:
    """The checks that hold on any machine: keys, types, ranges."""
    unknown = sorted(set(cfg) - TOP_LEVEL)
    if unknown:
        key = unknown[0]
        near = difflib.get_close_matches(key, TOP_LEVEL, n=1)
        hint = f"did you mean {near[0]}? " if near else ""
        raise ConfigError(
            f"unknown config key {key!r} (added with +?); {hint}valid keys: {sorted(TOP_LEVEL)}"
        )
    if cfg.get("model") is not None and "num_classes" in cfg.model:
        raise ConfigError(
            "model.num_classes is set by the data (data.num_classes, or the class folders of an "
            "ImageFolder); drop it"
        )
    scheduler = cfg.get("scheduler")
    if scheduler is not None and (extra := sorted(set(scheduler) - SCHEDULER_KEYS)):
        raise ConfigError(f"unknown key scheduler.{extra[0]}; valid: {sorted(SCHEDULER_KEYS)}")
    for key, (ok, valid) in RANGES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is not _ABSENT and not ok(value):
            raise ConfigError(f"{key}={value!r} is not valid; use {valid}")
    for key, node in _targets(cfg, ""):
        _check_node(key, node)


def _targets(node: Any, key: str) -> Iterator[tuple[str, DictConfig]]:
    """Every node with a `_target_`, depth first, with its dotted key."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield key, node
        for k in node:
            yield from _targets(node[k], f"{key}.{k}" if key else str(k))
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            yield from _targets(item, f"{key}[{i}]")


def _check_node(key: str, node: DictConfig) -> None:
    target = node._target_
    try:
        obj = get_object(target)
    except Exception:
        raise ConfigError(
            f"{key}._target_={target!r} cannot be imported; check its spelling"
        ) from None
    try:
        sig = inspect.signature(obj, eval_str=True)
    except Exception:
        try:
            sig = inspect.signature(obj)
        except (TypeError, ValueError):
            return
    params = sig.parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    for name in node:
        if name in HYDRA_KEYS:
            continue
        name = str(name)
        if name not in params:
            if takes_any:
                continue
            choices = [p for p in params if p != "self"]
            near = difflib.get_close_matches(name, choices, n=1)
            hint = f"did you mean {key}.{near[0]}?" if near else f"valid: {choices}"
            raise ConfigError(f"unknown option {key}.{name} for {target}; {hint}")
        annotation = params[name].annotation
        value = OmegaConf.select(node, name, throw_on_missing=False)
        if not fits(value, annotation):
            raise ConfigError(
                f"{key}.{name}={_plain(value)!r} is not valid for {target}; "
                f"it takes {describe(annotation)}"
            )


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value)
    return value


def fits(value: Any, tp: Any) -> bool:
    """Whether a config value can stand for an argument annotated `tp` (lenient where the
    annotation is a class the config builds from a nested `_target_`)."""
    if tp is inspect.Parameter.empty or tp is Any or isinstance(tp, str | typing.TypeVar):
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union or origin is types.UnionType:
        return any(fits(value, a) for a in args)
    if origin is Literal:
        return value in args
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return _int(value)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if isinstance(value, DictConfig) and "_target_" in value:
        return True  # an object the config builds
    container = origin or tp
    if container in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
        return isinstance(value, ListConfig | list | tuple)
    if container in (dict, collections.abc.Mapping):
        return isinstance(value, DictConfig | dict)
    if tp in (os.PathLike,) or getattr(tp, "__name__", "") == "Path":
        return isinstance(value, str)
    return True


def describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union or origin is types.UnionType:
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


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
