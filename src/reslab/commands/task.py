"""How a reslab command runs its Hydra task: a user's mistake as one line instead of a
traceback, a stop by a signal as 128 + its number, and in a multirun a failed job recorded in
its run dir while the sweep goes on. `command` builds a console-script entry point."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from reslab.commands.startup import CONFIG_PATH, dotenv_file, start
from reslab.errors import ReslabError, RunFailed, one_line, print_error
from reslab.runs.lock import release, started
from reslab.training import stopping
from reslab.training.distributed import torchrun_rank_overrides

log = logging.getLogger("reslab")
T = TypeVar("T")


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
    jobs at the end: `reslab.runs.dirs.RunDirs`).

    The worker processes of a multirun launcher (joblib, submitit) unpickle the task function
    before Hydra resolves the job's run dir; unpickling runs `start` there first."""

    def __init__(self, fn: Callable[[DictConfig], Any]) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __reduce__(self) -> tuple[Callable[..., Task], tuple[Any, ...]]:
        return _task_in_worker, (self.fn,)

    def __call__(self, cfg: DictConfig) -> Any:
        from reslab.runs.record import in_multirun, write_failed

        # Logged here, where Hydra has set up the run's log (start() runs before it).
        if (env := dotenv_file()) is not None:
            log.info(".env: read %s (the environment's own values win)", env)
        else:
            log.info(".env: none in the working directory %s", Path.cwd())
        try:
            with stopping.job():
                return self.fn(cfg)
        except stopping.Stopped as e:
            # The run's record says so (reslab.commands.train); a sweep goes on to report it. A
            # SLURM job (submitit) exits without a result instead: SLURM requeues a preempted job,
            # and the launcher waits for the run that follows.
            log.warning("%s", e)
            if in_multirun() and "SUBMITIT_FOLDER" not in os.environ:
                return None
            print(f"reslab: {e}", file=sys.stderr)
            raise SystemExit(e.exit_code) from None
        except Exception as e:
            if not in_multirun():
                if started(Path(HydraConfig.get().runtime.output_dir)):  # not a refused one
                    write_failed(e, cfg.get("run_name"))
                if isinstance(e, ReslabError):
                    print_error(e)
                    raise SystemExit(2) from None
                if isinstance(e, RunFailed):
                    log.error("%s", e)
                    print(f"reslab: {e}", file=sys.stderr)
                    raise SystemExit(1) from None
                raise
            if isinstance(e, ReslabError | RunFailed):
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
                from reslab.checks.preflight import check_command_line

                if argv is not None:
                    sys.argv = one_line_errors(argv)(sys.argv)
                sys.argv = one_line_errors(check_command_line)(config_name, sys.argv)
                sys.argv += torchrun_rank_overrides(config_name)
                task()
            except SystemExit as e:
                refused = e.code == 2  # a ReslabError: a refused command leaves no new dir
                raise
            finally:
                stopping.uninstall()
                release(refused)

        return main

    return wrap
