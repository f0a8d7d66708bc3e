"""Hydra glue: where the configs live, the resolvers they use, and instantiation whose errors a
user can read in one line."""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from dotenv import find_dotenv, load_dotenv
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from reslab.errors import ConfigError, ReslabError

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")

log = logging.getLogger("reslab")
T = TypeVar("T")


def arch_name(model: DictConfig) -> str:
    """The paper's names for run names, dirs and tags: `resnet-56` / `plain-56`, and for the
    family variants `preact-resnet-164`, `resnext-50-32x4d`, `wrn-28-10`, `wide-resnet-50-2`,
    `se-resnet-50`, `resnet-50d`, `inverted-resnet-56`, `resnet-110-sd` (stochastic depth)."""
    depth = model.get("depth")
    if depth is None:
        depth = str(model.get("_target_", "model")).rsplit(".", 1)[-1]
    groups, width = model.get("groups") or 1, model.get("base_width") or 64
    if not model.get("residual", True):
        name = f"plain-{depth}"
    elif model.get("widen_factor"):
        name = f"wrn-{depth}-{model.widen_factor}"
    elif groups > 1:
        name = f"resnext-{depth}-{groups}x{width}d"
    elif width != 64:
        name = f"wide-resnet-{depth}-{width // 64}"
    else:
        name = f"resnet-{depth}"
    if model.get("shortcut") == "D":
        name += "d"
    if model.get("drop_path"):
        name += "-sd"
    if model.get("block") == "inverted":
        name = f"inverted-{name}"
    if model.get("attention") == "se":
        name = f"se-{name}"
    if model.get("preact") and not model.get("widen_factor"):  # WRNs are preact by definition
        name = f"preact-{name}"
    return name


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("arch"):
        OmegaConf.register_new_resolver("arch", arch_name)
    if not OmegaConf.has_resolver("cwd"):
        # Unlike `${hydra:runtime.cwd}`, also resolvable when a multirun computes its sweep dir.
        OmegaConf.register_new_resolver("cwd", os.getcwd)
    if not OmegaConf.has_resolver("ge"):
        # `${ge:${model.depth},110}`: a switch that follows a swept value.
        OmegaConf.register_new_resolver("ge", lambda a, b: a >= b)
    if not OmegaConf.has_resolver("not"):
        OmegaConf.register_new_resolver("not", lambda a: not a)


def quiet_lightning() -> None:
    """Drop two messages Lightning 2.6 prints on every run that no user can act on: an advert
    for its cloud logger and a deprecation inside its own pytree helper."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not str(record.msg).startswith("💡 Tip:")
    )
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def load_env() -> None:
    """Read `.env` from the working directory (or a parent) so `DATA_DIR`, `WANDB_*` apply."""
    load_dotenv(find_dotenv(usecwd=True), override=False)


def build(node: DictConfig | None, key: str, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate` with the root cause of a failure as a one-line error."""
    if node is None:
        return None
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ or e
        if isinstance(cause, ReslabError):
            raise cause from None
        msg = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise ConfigError(f"{key}: {msg}") from None


def _run_name(args: tuple[Any, ...]) -> str | None:
    return args[0].get("run_name") if args and isinstance(args[0], DictConfig) else None


def user_errors_as_one_line(fn: Callable[..., T]) -> Callable[..., T | None]:
    """Print a `ReslabError` as one line and exit 2 instead of a long traceback. In a multirun,
    any failed job is recorded in its run dir (`summary.json`) and the sweep goes on."""
    from reslab.runs import in_multirun, record_failure

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T | None:
        try:
            return fn(*args, **kwargs)
        except ReslabError as e:
            log.error("%s", e)
            print(f"reslab: error: {e}", file=sys.stderr)
            if not in_multirun():
                raise SystemExit(2) from None
            record_failure(e, _run_name(args))
        except Exception as e:
            if not in_multirun():
                raise
            log.exception("job failed; the sweep goes on")
            print(f"reslab: error: job failed: {type(e).__name__}: {e}", file=sys.stderr)
            record_failure(e, _run_name(args))
        return None

    return wrapper
