"""One writer per run dir and per sweep dir: an exclusive `flock` on a file in the dir, held by
the process that runs the run (or launches the sweep) from before Hydra writes there until the
command ends. The kernel drops the lock when that process exits, however it dies, so a killed
run never leaves a dir locked: a forked child (a DataLoader worker) closes its copy of the lock
file at once, or it would hold the lock until it noticed its parent gone. Hand-written (a dozen
lines over `fcntl.flock`): the lock-file packages on PyPI (filelock and the like) wait or poll;
this one refuses at once and says who holds the dir."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import IO

from reslab.errors import ConfigError
from reslab.runs.layout import LOCK, RUN_FILES, config_tree

# The dirs this process holds, each with its open lock file, and whether this command made the
# dir (so that a command refused before its run started can take the dir away again).
_held: dict[Path, tuple[IO[str], bool]] = {}
_forks_close = False  # `_close_in_child` is registered


def _close_in_child() -> None:
    """In a forked child: close the lock files (no unlock: the parent holds the lock still)."""
    for file, _ in _held.values():
        file.close()
    _held.clear()


def hold(run_dir: Path, what: str, fix: str) -> None:
    """Lock `run_dir` (made if missing) for this process, or refuse in one line naming the
    holder: `what` names the dir's kind ("run", "sweep"), `fix` the way out."""
    global _forks_close
    run_dir = run_dir.absolute()
    if run_dir in _held:
        return
    if not _forks_close:
        os.register_at_fork(after_in_child=_close_in_child)
        _forks_close = True
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    file = open(run_dir / LOCK, "a+")  # noqa: SIM115 (held open until `release`)
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.seek(0)
        holder = file.read().strip() or "another process"
        file.close()
        raise ConfigError(
            f"another reslab {what} is writing to {run_dir} ({holder}); wait for it to end, "
            f"or {fix}"
        ) from None
    file.seek(0)
    file.truncate()
    file.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    file.flush()
    _held[run_dir] = (file, made)


def started(run_dir: Path) -> bool:
    """A run printed its config tree or wrote a run file; a sweep made a job's dir."""
    if config_tree(run_dir).exists() or any((run_dir / name).exists() for name in RUN_FILES):
        return True
    return any(p.is_dir() and p.name != ".hydra" for p in run_dir.iterdir())


def release(refused: bool = False) -> None:
    """Unlock every dir this process holds. `refused`: the command stopped before its run
    started (no config tree printed, no run file written), so a dir it made itself goes too."""
    for run_dir, (file, made) in list(_held.items()):
        file.close()
        del _held[run_dir]
        if refused and made and not started(run_dir):
            _drop_log_files(run_dir)
            shutil.rmtree(run_dir, ignore_errors=True)


def _drop_log_files(run_dir: Path) -> None:
    """Close the log handlers writing into `run_dir` (Hydra's `train.log`) before it goes:
    a later message would try to reopen the file there."""
    root = logging.getLogger()
    for handler in root.handlers[:]:
        name = getattr(handler, "baseFilename", None)
        if name and Path(name).is_relative_to(run_dir):
            root.removeHandler(handler)
            handler.close()


def is_held(run_dir: Path) -> bool:
    """Whether a live process holds `run_dir` now (a run still running)."""
    path = run_dir / LOCK
    if not path.is_file():
        return False
    with open(path) as file:
        try:
            fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(file, fcntl.LOCK_UN)
    return False
