"""Run dirs are never lost: a Hydra callback, run in the launching process before any job
starts, refuses a run or sweep dir that already holds a run unless `resume=true`, refuses
`resume=true` with nothing to resume, names `RESLAB_LOG_DIR` when the log dir cannot be
created, and after a sweep lists its failed and interrupted jobs and exits non-zero."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from reslab.errors import ConfigError, print_error
from reslab.runs import lock as run_lock
from reslab.runs import record as run_record
from reslab.runs.layout import OVERRIDES, RUN_FILES
from reslab.training import stopping
from reslab.training.distributed import PARALLEL_LAUNCHERS

# Set by launchers in the extra processes of one run (DDP ranks, srun tasks): only the first
# process of a run checks its dir.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
# Hydra's default launcher runs the jobs one after another in the launching process; these run
# them in joblib (loky) worker processes on this machine.
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


# What a resumed run may change: its length (train longer).
RESUME_MAY_CHANGE = ("trainer.max_steps", "trainer.max_epochs")


def expand_resume(argv: list[str]) -> list[str]:
    """`resume=<run dir>`: the run's own overrides (its `.hydra/overrides.yaml`), then
    `hydra.run.dir=<run dir> resume=true` and the rest of the command line, where a value given
    again must agree with the run's (its length excepted); `resume=true|false` pass as they
    are."""
    at = [i for i, arg in enumerate(argv) if arg.startswith("resume=")]
    value = argv[at[-1]].removeprefix("resume=") if at else ""
    if value.lower() in ("", "true", "false", "null"):
        return argv
    run_dir = Path(value).expanduser().absolute()
    if "-m" in argv or "--multirun" in argv:
        raise ConfigError(
            f"resume={value} continues one run; continue a sweep with its overrides and "
            "hydra.sweep.dir=<sweep dir> resume=true"
        )
    saved_file = run_dir / OVERRIDES
    if not saved_file.is_file():
        raise ConfigError(
            f"resume={value}: {run_dir} is no run dir (no {OVERRIDES}); pass a run's dir, e.g. "
            "resume=logs/train/runs/<run>"
        )
    parser = OverridesParser.create()
    saved = [o for o in yaml.safe_load(saved_file.read_text()) or [] if not o.startswith("resume=")]
    rest = [a for i, a in enumerate(argv[1:], 1) if i not in at]
    theirs = {o.key_or_group: o for o in parser.parse_overrides(saved)}
    given = {o.key_or_group: o for o in parser.parse_overrides([a for a in rest if a[0] != "-"])}
    for key, new in given.items():
        if key in theirs and key not in RESUME_MAY_CHANGE and new.value() != theirs[key].value():
            raise ConfigError(
                f"resume={value}: {new.input_line} differs from the run's "
                f"{theirs[key].input_line}; a resumed run keeps its config (only "
                f"{' and '.join(RESUME_MAY_CHANGE)} may change), or start a new run"
            )
    kept = [o.input_line for key, o in theirs.items() if key not in given]
    return [argv[0], *kept, f"hydra.run.dir={run_dir}", "resume=true", *rest]


def holds_run(run_dir: Path) -> str | None:
    """The first file of a training run in `run_dir`, None if there is none."""
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            return name
    return None


def _first_process() -> bool:
    return all(os.environ.get(v, "0") == "0" for v in RANK_VARIABLES)


def _explicit_resume(config: DictConfig) -> bool:
    """`resume=true` given by the user; a job SLURM restarted resumes by itself, even when it
    stopped before its first checkpoint."""
    return bool(config.get("resume")) and "SLURM_RESTART_COUNT" not in os.environ


def _check_log_dir(config: DictConfig) -> None:
    log_dir = Path(str(config.paths.log_dir))
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"cannot create the log dir {log_dir} ({e.strerror}); set RESLAB_LOG_DIR (or "
            "paths.log_dir) to a writable dir"
        ) from None


def shown(path: Path) -> Path:
    """`path` as the user would type it: relative to the working directory when under it."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


class RunDirs(Callback):
    """`hydra.callbacks.run_dirs` in `train.yaml`."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _first_process():
            self._exit_on_error(self._check_run, config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._exit_on_error(self._check_sweep, config)
        launcher = OmegaConf.select(config, "hydra.launcher._target_")
        if launcher == BASIC_LAUNCHER:
            stopping.in_sweep()
        elif launcher in PARALLEL_LAUNCHERS:
            stopping.relay_to_workers()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failed, sweep_dir = [], Path(str(config.hydra.sweep.dir)).absolute()
        jobs = run_record.read_sweep(str(sweep_dir))
        print(
            f"reslab: sweep of {len(jobs)} job(s) ended in {shown(sweep_dir)}\n"
            f"  report    reslab-report {shown(sweep_dir)}"
        )
        for run_dir, record, unreadable in jobs:
            if unreadable:
                failed.append(f"{run_dir}: {unreadable}")
            elif record is None:
                failed.append(f"{run_dir}: no {run_record.FILE} (killed, or still running)")
            elif record.get("status") != "completed":
                name = record.get("run_name") or run_dir.name
                failed.append(f"{name}: {run_record.not_completed(record)} ({run_dir})")
        stopped = stopping.requested()
        if failed:
            print(f"reslab: {len(failed)} job(s) of the sweep did not complete:", file=sys.stderr)
            for line in failed:
                print(f"  {line}", file=sys.stderr)
        if stopped is not None:  # as a shell reports a process ended by the signal
            raise SystemExit(128 + stopped)
        if failed:
            raise SystemExit(1)

    @staticmethod
    def _exit_on_error(check: Any, config: DictConfig) -> None:
        try:
            check(config)
        except ConfigError as e:
            print_error(e)
            raise SystemExit(2) from None

    @staticmethod
    def _check_run(config: DictConfig) -> None:
        _check_log_dir(config)
        run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir")))
        if _explicit_resume(config) and not run_dir.is_dir():
            raise ConfigError(
                f"resume=true but there is no run to resume in {run_dir}; point at the run: "
                "hydra.run.dir=logs/train/runs/<run> resume=true"
            )
        _refuse_a_held_run(config, run_dir)  # before anything is written there
        run_lock.hold(run_dir, "run", "give another hydra.run.dir")
        _refuse_a_held_run(config, run_dir)  # one that started in the meantime

    @staticmethod
    def _check_sweep(config: DictConfig) -> None:
        _check_log_dir(config)
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        if _explicit_resume(config) and not sweep_dir.is_dir():
            raise ConfigError(
                f"resume=true but there is no sweep to resume in {sweep_dir}; point at it: "
                "hydra.sweep.dir=logs/train/multiruns/<sweep> resume=true"
            )
        _refuse_a_held_sweep(config, sweep_dir)
        # Made here: the sweeper may keep its own state there before the first job starts
        # (the Optuna search's study database).
        run_lock.hold(sweep_dir, "sweep", "give another hydra.sweep.dir")
        _refuse_a_held_sweep(config, sweep_dir)


def _refuse_a_held_run(config: DictConfig, run_dir: Path) -> None:
    if not config.get("resume") and (found := holds_run(run_dir)):
        raise ConfigError(
            f"{run_dir} already holds a run ({found}); continue it with resume=true, or "
            "drop hydra.run.dir for a fresh dir"
        )


def _refuse_a_held_sweep(config: DictConfig, sweep_dir: Path) -> None:
    if config.get("resume") or not sweep_dir.is_dir():
        return
    for run_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        if found := holds_run(run_dir):
            raise ConfigError(
                f"{sweep_dir} already holds a sweep's runs ({run_dir.name}/{found}); "
                "continue it with resume=true, or drop hydra.sweep.dir for a fresh dir"
            )
