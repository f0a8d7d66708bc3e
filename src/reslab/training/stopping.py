"""Stopping on a signal without losing the run: SIGINT (Ctrl-C), SIGTERM (`timeout`, a CI
runner, a cluster's preemption) and SIGUSR1 stop a run where its state is whole.

One handler per process, for the process's life (`install`), notes the first stop signal and
ignores repeats (a signal sent to a process group and forwarded by the sweep arrives twice;
kill -9 is the hard stop). What it does depends on where the process is:

- a job before its Trainer starts (config checks, building, reading data): `Stopped` is raised
  at once, as Python raises KeyboardInterrupt; nothing is half-written there;
- a job whose Trainer runs (`deferred`): nothing at once;
  `reslab.training.callbacks.StopOnSignal` stops it between two training batches after saving
  `last.ckpt`, at the next test or sanity-check batch, or once the fit has ended. Under DDP
  the processes agree first (`requested(trainer)`), so a signal to one of them stops all;
- a sweep's launching process whose jobs run in joblib workers (`relay_to_workers`): the
  signal is forwarded to its `multiprocessing` children, the workers, so a signal sent to the
  launcher alone stops its jobs too; the launcher then reports them;
- a sweep's process between two jobs, or a worker between two jobs: noted; the next job is
  recorded as interrupted without starting;
- anywhere else (Hydra composing the config, a SLURM launcher waiting for its jobs): the
  signal does what it did before `install` (KeyboardInterrupt, or the default action).

Lightning's own SIGTERM handling is not used during a fit: it cuts validation short and ends
with exit status 0, and it handles SIGINT not at all (KeyboardInterrupt, possibly mid-step)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import multiprocessing.resource_tracker
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import torch

log = logging.getLogger("reslab")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class Stopped(BaseException):
    """A stop signal ended the job. Not an `Exception` (like KeyboardInterrupt), so no
    library's `except Exception` turns it into a failure."""

    def __init__(self, signum: int, stage: str) -> None:
        self.signum, self.stage = signum, stage
        self.advice = ""  # what the user can do next, set by the command
        super().__init__(f"stopped by {self.signal_name} ({stage})")

    def __str__(self) -> str:
        return f"{self.args[0]}; {self.advice}" if self.advice else self.args[0]

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process ended by that signal."""
        return 128 + self.signum


class _State:
    def __init__(self) -> None:
        self.signum: int | None = None
        self.in_job = False
        self.deferred = False
        self.previous: dict[int, Any] = {}
        self.relay: threading.Thread | None = None
        self.relay_done = threading.Event()
        self.mask: set[int] = set()
        self.sweep = False
        self.ends_children = False  # the exit handler of held_from_children is registered

    def previous_behaviour(self, signum: int, frame: FrameType | None) -> None:
        """What the signal did before `install`: outside a job or sweep (Hydra composing, a
        SLURM launcher waiting for its jobs) a stop signal keeps its usual effect."""
        previous = self.previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


_state = _State()


def requested(trainer: Any = None) -> int | None:
    """The stop signal this process received, None if none. With the `trainer` of a run of
    several processes (DDP), one all-reduce: the signal any of them received, which this one
    then takes as its own. They must stop at the same batch: one that stopped alone left the
    others waiting in the next step's all-reduce (and a signal reaches them at different steps,
    or one alone: `kill <pid>`, a node of a preemption)."""
    if trainer is not None and trainer.world_size > 1:
        mine = torch.tensor(_state.signum or 0, device=trainer.strategy.root_device)
        agreed = int(trainer.strategy.reduce(mine, reduce_op="max"))
        if agreed and _state.signum is None:
            _state.signum = agreed
    return _state.signum


def handle(signum: int, frame: FrameType | None) -> None:
    """The handler of every stop signal (also installed over Lightning's during a fit)."""
    if _state.signum is not None:
        return
    name = signal.Signals(signum).name
    if not _state.in_job and not _state.sweep:
        _state.previous_behaviour(signum, frame)
        return
    _state.signum = signum
    if _state.relay is not None:
        children = multiprocessing.active_children()
        for child in children:
            with contextlib.suppress(OSError):
                os.kill(child.pid, signum)
        log.warning("%s received: stopping the %d running job(s)", name, len(children))
    elif not _state.in_job:
        log.warning("%s received: the sweep starts no more jobs", name)
    elif _state.deferred:
        log.warning("%s received: the run stops at its next safe point (saving last.ckpt)", name)
    else:
        raise Stopped(signum, "starting")


def install() -> None:
    """Handle the stop signals in this process (main thread only, where Python runs handlers);
    idempotent. A stop signal that reached a sweep's worker before this (blocked, as the
    launcher's `relay_to_workers` left it) is taken now."""
    if threading.current_thread() is not threading.main_thread() or _state.previous:
        return
    for sig in STOP_SIGNALS:
        _state.previous[sig] = signal.signal(sig, handle)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def uninstall() -> None:
    """Put back the handlers and the signal mask `install` and `relay_to_workers` replaced,
    and forget any stop (a process that runs several commands, e.g. the test suite)."""
    if _state.relay is not None:
        _state.relay_done.set()
        _state.relay.join()
        signal.pthread_sigmask(signal.SIG_SETMASK, _state.mask)
    for sig, previous in _state.previous.items():
        signal.signal(sig, previous)
    _state.__init__()


def in_sweep() -> None:
    """This process runs a sweep's jobs one after another (Hydra's basic launcher): a stop
    between two jobs is noted, and the next job is recorded as interrupted."""
    _state.sweep = True


def relay_to_workers() -> None:
    """In a sweep's launching process whose jobs run in worker processes (joblib/loky): block
    the stop signals here and take them in a thread, so that the workers, which inherit the
    mask, hold a stop signal from their first instant until `install` takes it. Without this,
    a signal to the process group in the seconds a worker takes to import reslab killed it,
    and joblib ended the sweep with TerminatedWorkerError."""
    if _state.relay is not None or threading.current_thread() is not threading.main_thread():
        return
    # Python's resource tracker, started by the first worker pool, unblocks SIGINT and SIGTERM
    # after spawning itself: start it first.
    multiprocessing.resource_tracker.ensure_running()
    _state.mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    _state.sweep = True

    def relay() -> None:
        while not _state.relay_done.is_set():
            info = signal.sigtimedwait(STOP_SIGNALS, 0.2)
            if info is not None:
                handle(info.si_signo, None)

    _state.relay = threading.Thread(target=relay, name="reslab-stop-relay", daemon=True)
    _state.relay.start()


def take_over() -> None:
    """Replace Lightning's SIGTERM handler (registered as a Trainer starts) with `handle`."""
    if _state.previous and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handle)


@contextlib.contextmanager
def job() -> Iterator[None]:
    """One job runs in this process: a stop before its Trainer starts raises at once."""
    _state.in_job = True
    try:
        yield
    finally:
        _state.in_job = _state.deferred = False


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A Trainer runs: a stop is noted, and taken at a safe point (`StopOnSignal`)."""
    _state.deferred = True
    try:
        yield
    finally:
        _state.deferred = False


def raise_if_requested(stage: str, trainer: Any = None) -> None:
    """Stop now if this process (or, with `trainer`, any of the run's processes) was asked to."""
    if requested(trainer) is not None:
        raise Stopped(_state.signum, stage)


@contextlib.contextmanager
def held_from_children() -> Iterator[None]:
    """Stop signals blocked in this thread while it starts worker processes (a DataLoader's):
    they inherit the mask and never take a stop signal sent to the process group, which
    killed them and failed the run; their loader ends them. This thread takes a signal that
    came meanwhile as the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if not _state.ends_children:  # once per process
        atexit.register(_end_worker_children)
        _state.ends_children = True
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _end_worker_children() -> None:
    """At exit, before `multiprocessing` terminates its daemonic children with SIGTERM (which
    they block) and waits for them forever: end them with SIGKILL. A loader ends its workers
    itself; this catches those a failed run left (persistent workers, an exception's frames
    holding the loader)."""
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
