"""Commands run as a user runs them: a console script in a new process, or its entry point
in this process with the global state it touches put back afterwards."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig

# The console scripts of the environment running the tests.
BIN = Path(sys.executable).parent


def dirs_env(data: Path | None, logs: Path | None) -> dict[str, str]:
    """`DATA_DIR` and `RESLAB_LOG_DIR` as a user sets them (in the shell or `.env`)."""
    env = {"DATA_DIR": str(data)} if data is not None else {}
    return env | ({"RESLAB_LOG_DIR": str(logs)} if logs is not None else {})


def run_script(
    args: Sequence[str],
    data: Path | None = None,
    logs: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """A console script (`args[0]`, e.g. `reslab-train`) in a new process, as a user runs it;
    `env` replaces the inherited environment."""
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        env={**(os.environ if env is None else env), **dirs_env(data, logs)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def output(proc: subprocess.Popen, timeout: float) -> str:
    """What a background process printed once it ended; killed if it outlives `timeout`."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return out


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@dataclass
class Outcome:
    """Exit code (0 when the entry point returned), stdout and stderr of an in-process run."""

    code: int
    out: str
    err: str


def run_main(
    main: Callable[[], None],
    args: Sequence[str],
    data: Path | None = None,
    logs: Path | None = None,
    env: dict[str, str] | None = None,
) -> Outcome:
    """A console script's entry point run in this process with `sys.argv = args` (a second
    instead of a new interpreter per run). The environment, Hydra's global state and the root
    logger's handlers are put back afterwards, so runs do not leak into each other."""
    saved_env, saved_argv = dict(os.environ), sys.argv
    hydra_cfg = HydraConfig.instance().cfg
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out, err = io.StringIO(), io.StringIO()
    code = 0
    os.environ.update({**(env or {}), **dirs_env(data, logs)})
    sys.argv = [str(a) for a in args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv
        HydraConfig.instance().cfg = hydra_cfg
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    return Outcome(code, out.getvalue(), err.getvalue())


def error_line(run) -> str:
    """The one `reslab: error:` line of a run refused with exit status 2, without a traceback."""
    assert run.code == 2 and "Traceback" not in run.err, run.err[-2000:]
    (line,) = [ln for ln in run.err.splitlines() if ln.startswith("reslab: error:")]
    return line


def holder(run_dir: Path, what: str = "run") -> subprocess.Popen:
    """Another process holding `run_dir` as reslab does, until it is killed."""
    code = (
        "import sys, time; from pathlib import Path; from reslab.runs import lock as run_lock; "
        f"run_lock.hold(Path(sys.argv[1]), {what!r}, 'x'); print('held', flush=True); "
        "time.sleep(300)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc
