"""What reslab reads from its surroundings and where it writes: `.env` from the working
directory alone, and every file a command creates inside its run dir, its sweep dir or the
data dir it was given, whatever the working and home directories are."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers.processes import ok, run_script
from helpers.runs import FIT_ONLY, QUIET


def _only_run_dir(logs: Path) -> Path:
    (run_dir,) = (logs / "train" / "runs").iterdir()
    return run_dir


def test_dotenv_is_read_from_the_working_directory_alone(
    cifar10_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, train_in_process
) -> None:
    """A `.env` in a parent (say a world-writable /tmp) no longer redirects the runs below it;
    the one in the working directory is read and named in the run's log; the environment's own
    values win over it. Each run is one step long."""
    parent = tmp_path / "parent"
    cwd = parent / "project"
    cwd.mkdir(parents=True)
    (parent / ".env").write_text(f"RESLAB_LOG_DIR={tmp_path / 'hijacked'}\n")
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("RESLAB_LOG_DIR", raising=False)
    args = [*FIT_ONLY, "trainer.max_steps=1"]

    assert train_in_process(args, cifar10_root).code == 0
    assert not (tmp_path / "hijacked").exists()
    log = (_only_run_dir(cwd / "logs") / "train.log").read_text()
    assert f".env: none in the working directory {cwd}" in log

    (cwd / ".env").write_text(f"RESLAB_LOG_DIR={tmp_path / 'chosen'}\n")
    assert train_in_process(args, cifar10_root).code == 0
    log = (_only_run_dir(tmp_path / "chosen") / "train.log").read_text()
    assert f".env: read {cwd / '.env'} (the environment's own values win)" in log

    assert train_in_process(args, cifar10_root, tmp_path / "from_env").code == 0
    assert _only_run_dir(tmp_path / "from_env")
    assert not (tmp_path / "hijacked").exists()


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.mark.slow
def test_train_eval_sweep_and_report_write_only_into_their_dirs(
    cifar10_root: Path, tmp_path: Path
) -> None:
    """Real commands with a fresh working dir, home dir and temp dir, and the log and data dirs
    elsewhere, W&B (offline) and TensorBoard on: every file created anywhere under these roots
    lies in a run dir, the sweep dir or the data dir. Before: wandb's service logs went to
    ~/.cache/wandb."""
    home, cwd, tmp, logs = (tmp_path / d for d in ("home", "cwd", "tmp", "logs"))
    for d in (home, cwd, tmp):
        d.mkdir()
    data = tmp_path / "data"
    shutil.copytree(cifar10_root, data)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        **{k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ},
    }
    before = _files(tmp_path)

    def command(*args: str) -> None:
        ok(run_script(list(args), data, logs, env=env, cwd=cwd))

    run, evaluated, sweep = logs / "run", logs / "eval", logs / "sweep"
    loggers = "logger=[csv,wandb,tensorboard]"
    command("reslab-train", *FIT_ONLY, "trainer.max_steps=3", loggers, f"hydra.run.dir={run}")
    assert (run / "wandb").is_dir() and (run / "tensorboard").is_dir()
    last = run / "checkpoints" / "last.ckpt"
    command("reslab-eval", f"ckpt_path={last}", f"hydra.run.dir={evaluated}")
    sweep_args = [
        "-m",
        *QUIET,
        "test=false",
        "trainer.max_steps=2",
        "seed=0,1",
        "logger=[csv,wandb]",
    ]
    command("reslab-train", *sweep_args, f"hydra.sweep.dir={sweep}")
    command("reslab-report", str(sweep))
    assert (sweep / "report" / "table.md").is_file()

    allowed = (run, evaluated, sweep, data)
    outside = sorted(
        p for p in _files(tmp_path) - before if not any(p.is_relative_to(d) for d in allowed)
    )
    # matplotlib's font list, written once per user when matplotlib is first imported (by
    # torchmetrics, as any program importing it does), before a command reads its config;
    # MPLCONFIGDIR moves it. No run writes it.
    font_cache = home / ".cache" / "matplotlib"
    assert [p for p in outside if not p.is_relative_to(font_cache)] == []
