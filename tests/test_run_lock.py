"""One writer per run dir and sweep dir: a second command into a dir that a live process holds
is refused in one line naming the holder; a killed holder leaves nothing locked; a command
refused before its run starts leaves no dir behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.processes import BIN, Outcome, error_line, holder
from helpers.runs import QUIET

from reslab.runs import lock
from reslab.runs.layout import LOCK

RUN = [*QUIET, "trainer.max_steps=4", "test=false"]


def test_a_held_run_dir_is_refused_and_a_killed_holder_frees_it(
    cifar10_root: Path, tmp_path: Path, train_in_process
) -> None:
    run_dir = tmp_path / "run"
    proc = holder(run_dir)
    try:
        run = train_in_process([*RUN, f"hydra.run.dir={run_dir}"], cifar10_root, tmp_path)
        line = error_line(run)
        assert f"another reslab run is writing to {run_dir} (pid {proc.pid} on " in line
        assert "another hydra.run.dir" in line
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK]  # nothing written there
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run = train_in_process([*RUN, f"hydra.run.dir={run_dir}"], cifar10_root, tmp_path)
    assert run.code == 0, run.err[-2000:]
    assert (run_dir / "summary.json").is_file()


def test_a_killed_holder_frees_the_dir_though_its_forked_children_live(tmp_path: Path) -> None:
    """A run's DataLoader workers are forked children of it: killed with kill -9, the run left
    the dir locked for as long as they lived (seconds, until they noticed their parent gone)."""
    run_dir = tmp_path / "run"
    code = (
        "import os, sys, time; from pathlib import Path; from reslab.runs import lock; "
        "lock.hold(Path(sys.argv[1]), 'run', 'x'); "
        "child = os.fork(); "
        "print(child or 'forked', flush=True); time.sleep(300)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    # Both lines: the child's comes once its after-fork handlers (which close the lock) ran.
    lines = {proc.stdout.readline().strip(), proc.stdout.readline().strip()}
    (child,) = (int(line) for line in lines - {"forked"})
    try:
        proc.kill()
        proc.wait()
        assert Path(f"/proc/{child}").exists()  # the forked child lives on
        lock.hold(run_dir, "run", "x")  # at once, though the child lives
        lock.release()
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_held_sweep_dir_is_refused(cifar10_root: Path, tmp_path: Path, train_in_process):
    sweep_dir = tmp_path / "sweep"
    proc = holder(sweep_dir, "sweep")
    try:
        args = ["-m", *RUN, "seed=0,1", f"hydra.sweep.dir={sweep_dir}"]
        run = train_in_process(args, cifar10_root, tmp_path)
        line = error_line(run)
        assert f"another reslab sweep is writing to {sweep_dir} (pid {proc.pid} on " in line
        assert sorted(p.name for p in sweep_dir.iterdir()) == [LOCK]  # no job started
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("command", ["train", "eval"])
def test_a_refused_command_leaves_no_dir(
    command: str, tmp_path: Path, train_in_process, eval_in_process
) -> None:
    run = train_in_process if command == "train" else eval_in_process
    args = ["model.depth=21"] if command == "train" else ["ckpt_path=missing.ckpt"]
    outcome = run(args, tmp_path / "data", tmp_path / "logs")
    assert outcome.code == 2 and outcome.err.startswith("reslab: error:")
    assert not (tmp_path / "logs" / command / "runs").exists() or not any(
        (tmp_path / "logs" / command / "runs").iterdir()
    )


def test_a_refused_resume_keeps_the_run_dir(tmp_path: Path, train_in_process) -> None:
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "train.log").write_text("an earlier attempt\n")
    outcome = train_in_process(
        ["model.depth=21", f"hydra.run.dir={run_dir}"], tmp_path / "data", tmp_path
    )
    assert outcome.code == 2
    assert (run_dir / "train.log").read_text().startswith("an earlier attempt")


@pytest.mark.slow
def test_two_runs_started_together_into_one_dir_one_runs(cifar10_root: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "DATA_DIR": str(cifar10_root), "RESLAB_LOG_DIR": str(tmp_path)}
    args = [str(BIN / "reslab-train"), *RUN, f"hydra.run.dir={run_dir}"]
    procs = [
        subprocess.Popen(
            args, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        for _ in range(2)
    ]
    start = time.monotonic()
    outcomes = [(p.wait(timeout=600), p.stderr.read()) for p in procs if p.stderr]
    assert time.monotonic() - start < 600
    assert sorted(code for code, _ in outcomes) == [0, 2]
    refused = next(Outcome(code, "", err) for code, err in outcomes if code == 2)
    line = error_line(refused)
    assert f"another reslab run is writing to {run_dir}" in line or "already holds a run" in line
    assert (run_dir / "summary.json").is_file()
