"""Stopping cleanly: SIGINT and SIGTERM during training, validation, test and a checkpoint
save, kill -9 during a save and right after one, a full disk as `summary.json` is written,
and a 2-job local sweep stopped by SIGINT (to its process group, as Ctrl-C) and SIGTERM (to
the launcher alone), each resumed to completion. The faults come at an exact moment from
inside the run (`fault_injection`), as real signals. After each: every checkpoint loads,
`metrics.csv` holds each training step once and none past the checkpoint, and `summary.json`
says what happened."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers.processes import BIN, dirs_env, error_line
from helpers.runs import DDP_CPU, FIT_ONLY, QUIET

TESTS = Path(__file__).parent
# 10 batches an epoch, validation after each epoch, last.ckpt every 5 steps.
ARGS = [
    *QUIET,
    "test=false",
    "trainer.max_steps=20",
    "callbacks.last_checkpoint.every_n_train_steps=5",
]


def signal_at(
    hook: str, step: int, sig: str, group: bool = False, rank: int | None = None
) -> list[str]:
    fault = "+callbacks.fault"
    return [
        f"{fault}._target_=helpers.fault_injection.SignalAt", f"{fault}.hook={hook}",
        f"{fault}.step={step}", f"{fault}.sig={sig}", f"{fault}.group={group}",
        *([f"{fault}.rank={rank}"] if rank is not None else []),
    ]  # fmt: skip


def signal_during_save(save: int, sig: str) -> list[str]:
    return [
        f"trainer.plugins=[{{_target_:helpers.fault_injection.SignalDuringSave,save:{save},sig:{sig}}}]"
    ]


def rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if v} for r in csv.DictReader(f)]


def train_steps(run_dir: Path) -> list[int]:
    return [int(r["step"]) for r in rows(run_dir) if "train/loss_step" in r]


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def ckpt_step(path: Path) -> int:
    return torch.load(path, weights_only=False)["global_step"]


def check_left_whole(run_dir: Path, steps: int) -> None:
    """Every checkpoint loads, the last at `steps`; metrics.csv has training steps 0..steps-1,
    each once."""
    ckpts = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    assert ckpts or not steps
    for ckpt in ckpts:
        torch.load(ckpt, weights_only=False)
    if steps:
        assert ckpt_step(run_dir / "checkpoints" / "last.ckpt") == steps
    assert train_steps(run_dir) == list(range(steps))


def check_equal(run_dir: Path, full: Path) -> None:
    """A resumed run ends as the uninterrupted one: weights, and metrics.csv row for row."""
    a = torch.load(full / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert rows(run_dir) == rows(full)
    assert record(run_dir)["status"] == "completed" and record(run_dir)["steps"] == 20


@pytest.fixture(scope="module")
def full(cifar10_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run the stopped ones are compared with."""
    from helpers.processes import run_main

    from reslab.commands.train import main

    run_dir = tmp_path_factory.mktemp("full") / "run"
    run = run_main(main, ["reslab-train", *ARGS, f"hydra.run.dir={run_dir}"], cifar10_root)
    assert run.code == 0, run.err[-3000:]
    return run_dir


@pytest.mark.parametrize(
    ("sig", "hook", "at", "stopped_at"),
    [
        # Ctrl-C mid-epoch: the batch ends, last.ckpt is saved, the run stops.
        ("SIGINT", "on_train_batch_start", 3, 4),
        # SIGTERM during validation: it finishes, then the next batch is the last.
        pytest.param("SIGTERM", "on_validation_batch_start", 10, 11, marks=pytest.mark.slow),
        # SIGINT during the epoch's last batch: no stop at the epoch's end (a resume from there
        # skips its validation); after validation and one more batch.
        pytest.param("SIGINT", "on_train_batch_start", 9, 11, marks=pytest.mark.slow),
    ],
)
def test_a_signal_in_training_saves_last_ckpt_and_resume_equals_an_uninterrupted_run(
    sig: str,
    hook: str,
    at: int,
    stopped_at: int,
    full: Path,
    cifar10_root,
    tmp_path,
    train_in_process,
) -> None:
    run_dir = tmp_path / "run"
    args = [*ARGS, f"hydra.run.dir={run_dir}"]
    run = train_in_process([*args, *signal_at(hook, at, sig)], cifar10_root, tmp_path)
    assert run.code == 128 + signal.Signals[sig], run.err[-3000:]
    assert f"reslab: stopped by {sig} (training); continue it with resume={run_dir}" in run.err
    assert record(run_dir) == {
        "run_name": "resnet-8_seed0",
        "status": "interrupted",
        "signal": sig,
        "stage": "training",
        "steps": stopped_at,
        "last_checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),
    }
    check_left_whole(run_dir, stopped_at)
    again = train_in_process([*args, "resume=true"], cifar10_root, tmp_path)
    assert again.code == 0, again.err[-3000:]
    check_equal(run_dir, full)


def test_sigint_during_test_is_recorded_and_the_resume_tests_again(
    cifar10_root: Path, tmp_path: Path, train_in_process
) -> None:
    run_dir = tmp_path / "run"
    args = [*ARGS, "test=true", "trainer.max_steps=5", f"hydra.run.dir={run_dir}"]
    run = train_in_process([*args, *signal_at("on_test_batch_start", 5, "SIGINT")], cifar10_root)
    assert run.code == 130, run.err[-3000:]
    assert record(run_dir)["status"] == "interrupted" and record(run_dir)["stage"] == "test"
    assert record(run_dir)["steps"] == 5
    check_left_whole(run_dir, 5)
    assert not [r for r in rows(run_dir) if "test/err" in r]  # a cut test logs nothing
    again = train_in_process([*args, "resume=true"], cifar10_root, tmp_path)
    assert again.code == 0, again.err[-3000:]
    done = record(run_dir)
    assert done["status"] == "completed" and done["steps"] == 5 and done["test_err"] is not None
    check_left_whole(run_dir, 5)
    assert len([r for r in rows(run_dir) if "test/err" in r]) == 1


@pytest.mark.slow
def test_sigterm_during_a_checkpoint_save_completes_it_then_stops(
    full: Path, cifar10_root: Path, tmp_path: Path, train_in_process
) -> None:
    """The 2nd save (step 10, the epoch's last batch) is signalled before its file replaces
    the old one: it completes, validation runs, and the run stops after the next batch."""
    run_dir = tmp_path / "run"
    args = [*ARGS, f"hydra.run.dir={run_dir}"]
    run = train_in_process([*args, *signal_during_save(2, "SIGTERM")], cifar10_root, tmp_path)
    assert run.code == 143, run.err[-3000:]
    assert record(run_dir)["status"] == "interrupted" and record(run_dir)["steps"] == 11
    check_left_whole(run_dir, 11)
    assert ckpt_step(run_dir / "checkpoints" / "best.ckpt") == 10
    again = train_in_process([*args, "resume=true"], cifar10_root, tmp_path)
    assert again.code == 0, again.err[-3000:]
    check_equal(run_dir, full)


def test_a_full_disk_as_the_record_is_written_stops_in_one_line_and_resumes(
    small_disk: Path, cifar10_root: Path, train_in_process
) -> None:
    """The disk fills after the test, as `summary.json` is written: one line naming it, no
    record (none is half-written), the checkpoints load; with space again, `resume=true` ends
    the run (fit already done, test again) and writes its record."""
    run_dir = small_disk / "run"
    args = [*FIT_ONLY, "trainer.max_steps=5", "test=true", f"hydra.run.dir={run_dir}"]
    fill = ["+callbacks.fill._target_=helpers.fault_injection.FillDiskAt"]
    run = train_in_process([*args, *fill], cifar10_root, small_disk)
    line = error_line(run)
    assert f"cannot write {run_dir / 'summary.json'}: No space left on device" in line
    assert not (run_dir / "summary.json").exists()
    check_left_whole(run_dir, 5)
    for filler in small_disk.glob("filler-*"):
        filler.unlink()
    again = train_in_process([*args, "resume=true"], cifar10_root, small_disk)
    assert again.code == 0, again.err[-3000:]
    assert record(run_dir)["status"] == "completed" and record(run_dir)["steps"] == 5
    check_left_whole(run_dir, 5)


def start(args: list[str], data: Path, logs: Path) -> subprocess.Popen:
    """`reslab-train ARGS` in its own process group (a terminal's job), with the fault
    injectors importable."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [str(BIN / "reslab-train"), *args],
        env={**os.environ, **dirs_env(data, logs), "PYTHONPATH": path},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_or_kill(proc: subprocess.Popen, timeout: float = 300) -> int:
    """The exit code of a run that may hang (DDP ranks waiting on each other); a hung one's
    process group is killed, so the test fails instead of leaving its processes behind."""
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def group_ended(pgid: int, timeout: float = 30) -> bool:
    """Whether every process of the group has exited within `timeout` seconds."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_kill_9_during_a_checkpoint_save_keeps_the_previous_one(
    full: Path, cifar10_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    args = [*ARGS, f"hydra.run.dir={run_dir}"]
    proc = start([*args, *signal_during_save(2, "SIGKILL")], cifar10_root, tmp_path)
    assert proc.wait(timeout=300) == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()  # killed: no record can say so
    assert ckpt_step(run_dir / "checkpoints" / "last.ckpt") == 5  # the previous save
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        torch.load(ckpt, weights_only=False)
    again = start([*args, "resume=true"], cifar10_root, tmp_path)
    assert again.wait(timeout=300) == 0, again.stderr.read()[-3000:]
    check_equal(run_dir, full)
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))  # the killed save's leftover


@pytest.mark.slow
@pytest.mark.parametrize("sig, to", [("SIGINT", "group"), ("SIGTERM", "launcher")])
def test_a_local_sweep_stopped_by_a_signal_stops_its_jobs_and_resumes(
    sig: str, to: str, full: Path, cifar10_root: Path, tmp_path: Path
) -> None:
    """Both jobs (seed 0 is `full`'s run) stop within seconds, each with last.ckpt, a record
    saying `interrupted` and its steps; the sweep lists them and exits with 128 + the signal;
    no process is left; relaunched with `resume=true`, both complete."""
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=local", *ARGS, "seed=0,1", f"hydra.sweep.dir={sweep}"]
    proc = start([*args, "trainer.max_steps=20"], cifar10_root, tmp_path)
    end = time.time() + 300
    while len(list(sweep.glob("*/csv/metrics.csv"))) < 2:  # both jobs train
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < end
        time.sleep(0.05)
    sent = time.time()
    if to == "group":
        os.killpg(proc.pid, signal.Signals[sig])
    else:
        os.kill(proc.pid, signal.Signals[sig])
    assert proc.wait(timeout=60) == 128 + signal.Signals[sig]
    assert time.time() - sent < 60
    assert group_ended(proc.pid)
    err = proc.stderr.read()
    assert "reslab: 2 job(s) of the sweep did not complete:" in err, err[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    for job in jobs:
        stopped = record(job)
        assert stopped["status"] == "interrupted" and stopped["signal"] == sig
        assert f"{stopped['run_name']}: interrupted by {sig}" in err
        check_left_whole(job, stopped["steps"])
    again = start([*args, "resume=true"], cifar10_root, tmp_path)
    assert again.wait(timeout=300) == 0, again.stderr.read()[-3000:]
    for job in jobs:
        assert record(job)["status"] == "completed" and record(job)["steps"] == 20
        check_left_whole(job, 20)
    check_equal(jobs[0], full)


@pytest.mark.slow
def test_a_signal_to_the_process_group_leaves_the_dataloader_workers_to_the_run(
    cifar10_root: Path, tmp_path: Path
) -> None:
    """SIGTERM to the whole group (as `timeout` sends it) reaches the DataLoader's worker
    processes too: they leave it to the run, which stops cleanly (it killed them, and the run
    failed with "DataLoader worker exited unexpectedly")."""
    run_dir = tmp_path / "run"
    args = [*ARGS, "data.pipeline=workers", "data.num_workers=1", f"hydra.run.dir={run_dir}"]
    proc = start([*args, *signal_at("on_train_batch_start", 3, "SIGTERM", group=True)],
                 cifar10_root, tmp_path)  # fmt: skip
    assert proc.wait(timeout=300) == 143, proc.stderr.read()[-3000:]
    assert group_ended(proc.pid)
    assert record(run_dir)["status"] == "interrupted" and record(run_dir)["steps"] == 4
    check_left_whole(run_dir, 4)
    again = start([*args, "resume=true"], cifar10_root, tmp_path)
    assert again.wait(timeout=300) == 0, again.stderr.read()[-3000:]
    assert record(run_dir)["status"] == "completed"
    check_left_whole(run_dir, 20)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "rank"), [("SIGTERM", 0), ("SIGINT", 1)])
def test_a_signal_to_one_ddp_process_stops_them_all_at_the_same_step(
    cifar10_root: Path, tmp_path: Path, sig: str, rank: int
) -> None:
    """A stop signal that reaches one rank alone (`kill <pid>`, one node of a preemption) or the
    ranks at different steps: they agree at each batch and stop after the same one. A rank that
    stopped alone left the others waiting in the next step's all-reduce."""
    run_dir = tmp_path / "run"
    args = [*ARGS, *DDP_CPU, f"hydra.run.dir={run_dir}"]
    proc = start([*args, *signal_at("on_train_batch_start", 3, sig, rank=rank)],
                 cifar10_root, tmp_path)  # fmt: skip
    code = wait_or_kill(proc)
    assert code == 128 + signal.Signals[sig], proc.stderr.read()[-3000:]
    assert group_ended(proc.pid)  # rank 1 ended too
    stopped = record(run_dir)
    assert stopped["status"] == "interrupted" and stopped["signal"] == sig
    assert stopped["steps"] == 4
    check_left_whole(run_dir, 4)
    again = start([*args, "resume=true"], cifar10_root, tmp_path)
    assert again.wait(timeout=300) == 0, again.stderr.read()[-3000:]
    assert record(run_dir)["status"] == "completed"
    check_left_whole(run_dir, 20)


@pytest.mark.slow
def test_a_ddp_process_that_dies_fails_the_run_in_one_line_and_resume_continues(
    cifar10_root: Path, tmp_path: Path
) -> None:
    """kill -9 of rank 1 (the OOM killer, a lost node): rank 0 met gloo's "Connection closed by
    peer" traceback, naming no process, or was killed by Lightning's watcher of its children
    before it said anything; and the run dir read `stopped`."""
    run_dir = tmp_path / "run"
    args = [*ARGS, *DDP_CPU, f"hydra.run.dir={run_dir}"]
    proc = start([*args, *signal_at("on_train_batch_start", 7, "SIGKILL", rank=1)],
                 cifar10_root, tmp_path)  # fmt: skip
    code = wait_or_kill(proc)
    err = proc.stderr.read()
    assert code == 1 and "Traceback" not in err, err[-3000:]
    assert group_ended(proc.pid)
    (line,) = [ln for ln in err.splitlines() if ln.startswith("reslab:")]
    assert "the DDP process of local rank 1 (pid " in line and "was killed by SIGKILL" in line
    assert line.endswith(f"resume={run_dir} continues it from its last.ckpt"), line
    failed = record(run_dir)
    assert failed["status"] == "failed" and "killed by SIGKILL" in failed["error"]
    assert ckpt_step(run_dir / "checkpoints" / "last.ckpt") == 5
    again = start([*args, "resume=true"], cifar10_root, tmp_path)
    assert again.wait(timeout=300) == 0, again.stderr.read()[-3000:]
    assert record(run_dir)["status"] == "completed"
    check_left_whole(run_dir, 20)


def kill_after_write(write: int) -> list[str]:
    return [f"trainer.plugins=[{{_target_:helpers.fault_injection.KillAfterWrite,write:{write}}}]"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("every", "write", "step"),
    [(7, 1, 7), (7, 2, 10), (5, 2, 10)],
    ids=["mid-epoch", "after-validation", "periodic-at-the-epochs-last-batch"],
)
def test_kill_9_right_after_a_checkpoint_is_written_loses_no_metrics_row(
    every: int, write: int, step: int, full: Path, cifar10_root: Path, tmp_path: Path
) -> None:
    """kill -9 the moment a `last.ckpt` is on disk: at step 7 (mid-epoch), after the epoch's
    validation (step 10), and at step 10 as a periodic save of the epoch's last batch. The
    resumed run's metrics.csv is the uninterrupted run's, row for row. Lightning logs a step's
    row, and an epoch's validation and training scores, after the hooks that save; a
    checkpoint written there, and a kill before the logging, lost those rows, since the
    resumed run starts after them."""
    run_dir = tmp_path / "run"
    key = "callbacks.last_checkpoint.every_n_train_steps="
    args = [*(a for a in ARGS if not a.startswith(key)), f"{key}{every}"]
    args.append(f"hydra.run.dir={run_dir}")
    proc = start([*args, *kill_after_write(write)], cifar10_root, tmp_path)
    assert proc.wait(timeout=300) == -signal.SIGKILL, proc.stderr.read()[-3000:]
    assert ckpt_step(run_dir / "checkpoints" / "last.ckpt") == step
    again = start([*args, "resume=true"], cifar10_root, tmp_path)
    assert again.wait(timeout=300) == 0, again.stderr.read()[-3000:]
    check_equal(run_dir, full)
