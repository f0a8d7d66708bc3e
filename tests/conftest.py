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

import pytest
from hydra.core.hydra_config import HydraConfig

# One thread per process, in this process (before torch starts its pool) as in the processes the
# tests start: on a busy machine a multi-threaded step waits for descheduled threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))

from fake_cifar import write_cifar10, write_cifar100
from fake_imagefolder import write_imagefolder

# The console scripts of the environment running the tests.
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar10(tmp_path_factory.mktemp("cifar10"))


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar100(tmp_path_factory.mktemp("cifar100"))


@pytest.fixture(scope="session")
def imagefolder_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagefolder(tmp_path_factory.mktemp("imagefolder"))


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 12 MB tmpfs (skipped where mounting is not permitted)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the network or a user's W&B account."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("DATA_DIR", raising=False)


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


@pytest.fixture
def train_in_process() -> Callable[..., Outcome]:
    """`reslab-train ARGS` run by its own entry point in this process."""
    from reslab.train import main

    def run(args: Sequence[str], data: Path | None = None, logs: Path | None = None, **kw):
        return run_main(main, ["reslab-train", *args], data, logs, **kw)

    return run


@pytest.fixture
def eval_in_process() -> Callable[..., Outcome]:
    """`reslab-eval ARGS` run by its own entry point in this process."""
    from reslab.eval import main

    def run(args: Sequence[str], data: Path | None = None, logs: Path | None = None, **kw):
        return run_main(main, ["reslab-eval", *args], data, logs, **kw)

    return run
