"""The suite's fixtures: generated datasets, a small disk, no network, in-process commands.
Helpers that tests import live in `tests/helpers`."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

# One thread per process, in this process (before torch starts its pool) as in the processes the
# tests start: on a busy machine a multi-threaded step waits for descheduled threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from helpers.fake_cifar import write_cifar10, write_cifar100
from helpers.fake_imagefolder import write_imagefolder
from helpers.processes import Outcome, run_main


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


@pytest.fixture
def train_in_process() -> Callable[..., Outcome]:
    """`reslab-train ARGS` run by its own entry point in this process."""
    from reslab.commands.train import main

    def run(args: Sequence[str], data: Path | None = None, logs: Path | None = None, **kw):
        return run_main(main, ["reslab-train", *args], data, logs, **kw)

    return run


@pytest.fixture
def eval_in_process() -> Callable[..., Outcome]:
    """`reslab-eval ARGS` run by its own entry point in this process."""
    from reslab.commands.eval import main

    def run(args: Sequence[str], data: Path | None = None, logs: Path | None = None, **kw):
        return run_main(main, ["reslab-eval", *args], data, logs, **kw)

    return run
