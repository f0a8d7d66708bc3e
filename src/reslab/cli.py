"""What every reslab command does as it starts (read the working directory's `.env`, register
the config resolvers, quiet two Lightning messages), and a user's mistake printed as one line
instead of a traceback. Nothing here runs at import time: `command` builds a console-script
entry point that does it."""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import hydra
from dotenv import load_dotenv
from omegaconf import DictConfig, OmegaConf

from reslab import stopping
from reslab.data.imagefolder import count_classes
from reslab.devices import default_precision
from reslab.distributed import launch_time
from reslab.errors import ReslabError, one_line
from reslab.models.names import arch_name
from reslab.run_layout import layout
from reslab.run_lock import release
from reslab.scores import config_metric

# The configs ship inside the package (configs/ at the top of the repository, see
# pyproject.toml), so editable and plain installs find them the same way.
CONFIG_PATH = "pkg://reslab.configs"

log = logging.getLogger("reslab")
T = TypeVar("T")


def register_resolvers() -> None:
    """The config's own interpolation functions; Hydra needs them before it resolves a run dir."""
    resolvers: dict[str, Callable[..., Any]] = {
        "arch": arch_name,
        # Unlike `${hydra:runtime.cwd}`, also resolvable when a multirun computes its sweep dir.
        "cwd": os.getcwd,
        # `${ge:${model.depth},110}`: a switch that follows a swept value.
        "ge": lambda a, b: a >= b,
        "not": lambda a: not a,
        # `${default_precision:${trainer.accelerator}}`: bf16-mixed on a CPU with bf16 units.
        "default_precision": default_precision,
        # `${class_count:${data.root},${data.format}}`: an ImageFolder's classes, for the head.
        "class_count": count_classes,
        # `${layout:checkpoints}`: the run dir's layout (reslab.run_layout).
        "layout": layout,
        # `${metric:val_err}`: a logged metric's name (reslab.scores), e.g. what to monitor.
        "metric": config_metric,
        # `${short:${optimizer.lr}}`: a number in 3 significant digits, for run names.
        "short": lambda x: f"{x:.3g}",
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
    # `${launch_time:%Y-%m-%d_%H-%M-%S}`: the run dir's time, shared by all ranks of a launch;
    # cached per config as Hydra's `${now:...}`, so a run's dirs agree to the second.
    if not OmegaConf.has_resolver("launch_time"):
        OmegaConf.register_new_resolver("launch_time", launch_time, use_cache=True)


def quiet_lightning() -> None:
    """Drop messages Lightning 2.6 prints on every run that no user can act on: an advert for its
    cloud logger, a deprecation inside its own pytree helper, its note that our model-summary
    callback replaces its default one, its note why a fit stopped (the run's outcome says
    it), its note that the summary's size estimate assumes fp32
    under mixed precision, and, where `srun` is installed, advice to run under `srun` (reslab
    reaches SLURM through `hydra/launcher=slurm`, docs/scale_out.md)."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: (
            not str(record.msg).startswith("💡 Tip:")
            and "Skipping setting a default `ModelSummary`" not in str(record.msg)
            and not str(record.msg).startswith("`Trainer.fit` stopped:")
        )
    )
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"Precision .* is not supported by the model summary")
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")
    # torchdata's StatefulDataLoader calls a torch function torch deprecated.
    warnings.filterwarnings("ignore", message=r"'set_vital' is deprecated")


def dotenv_file() -> Path | None:
    """The `.env` a command reads: the working directory's alone. A parent's (python-dotenv's
    `find_dotenv` walks up to `/`, a world-writable `/tmp` included) would redirect
    `RESLAB_LOG_DIR`, `DATA_DIR` or `WANDB_*` for every directory below it."""
    path = Path.cwd() / ".env"
    return path if path.is_file() else None


def start() -> None:
    """Set up this process for a command: the working directory's `.env`, so `DATA_DIR`,
    `RESLAB_LOG_DIR`, `WANDB_*` apply (the environment wins over it); resolvers; log filters."""
    if (path := dotenv_file()) is not None:
        load_dotenv(path, override=False)
    register_resolvers()
    quiet_lightning()


def print_error(error: BaseException) -> None:
    print(f"reslab: error: {one_line(error)}", file=sys.stderr)


def one_line_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """A `ReslabError` ends the command with one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except ReslabError as e:
            print_error(e)
            raise SystemExit(2) from None

    return wrapper


class Task:
    """A Hydra task function. Alone it fails a run with one line for a `ReslabError`, and ends
    a run stopped by a signal with 128 + its number; in a multirun it records any failure in
    the job's run dir and lets the sweep go on (the sweep reports its failed and interrupted
    jobs at the end: `reslab.run_dirs.RunDirs`).

    The worker processes of a multirun launcher (joblib, submitit) unpickle the task function
    before Hydra resolves the job's run dir; unpickling runs `start` there first."""

    def __init__(self, fn: Callable[[DictConfig], Any]) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __reduce__(self) -> tuple[Callable[..., Task], tuple[Any, ...]]:
        return _task_in_worker, (self.fn,)

    def __call__(self, cfg: DictConfig) -> Any:
        from reslab.run_record import in_multirun, write_failed

        # Logged here, where Hydra has set up the run's log (start() runs before it).
        if (env := dotenv_file()) is not None:
            log.info(".env: read %s (the environment's own values win)", env)
        else:
            log.info(".env: none in the working directory %s", Path.cwd())
        try:
            with stopping.job():
                return self.fn(cfg)
        except stopping.Stopped as e:
            # The run's record says so (reslab.train); a sweep goes on to report it. A SLURM
            # job (submitit) exits without a result instead: SLURM requeues a preempted job,
            # and the launcher waits for the run that follows.
            log.warning("%s", e)
            if in_multirun() and "SUBMITIT_FOLDER" not in os.environ:
                return None
            print(f"reslab: {e}", file=sys.stderr)
            raise SystemExit(e.exit_code) from None
        except Exception as e:
            if not in_multirun():
                if isinstance(e, ReslabError):
                    print_error(e)
                    raise SystemExit(2) from None
                raise
            if isinstance(e, ReslabError):
                log.error("%s", one_line(e))
            else:
                log.exception("job failed; the sweep goes on")
            write_failed(e, cfg.get("run_name"))
            return None


def _task_in_worker(fn: Callable[[DictConfig], Any]) -> Task:
    start()
    stopping.in_sweep()  # for the worker's life: a stop between two jobs is not lost
    stopping.install()
    return Task(fn)


def command(
    config_name: str, argv: Callable[[list[str]], list[str]] | None = None
) -> Callable[[Callable[[DictConfig], Any]], Callable[[], None]]:
    """`main = command("train")(fn)`: the console-script entry point that starts the process,
    composes `configs/<config_name>.yaml` with the command line (rewritten by `argv` first,
    if given) and runs `fn(cfg)`."""

    def wrap(fn: Callable[[DictConfig], Any]) -> Callable[[], None]:
        task = hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=config_name)(
            Task(fn)
        )

        @functools.wraps(fn)
        def main() -> None:
            start()
            refused = False
            stopping.install()
            try:
                from reslab.preflight import check_command_line

                if argv is not None:
                    sys.argv = one_line_errors(argv)(sys.argv)
                sys.argv = one_line_errors(check_command_line)(config_name, sys.argv)
                task()
            except SystemExit as e:
                refused = e.code == 2  # a ReslabError: a refused command leaves no new dir
                raise
            finally:
                stopping.uninstall()
                release(refused)

        return main

    return wrap
