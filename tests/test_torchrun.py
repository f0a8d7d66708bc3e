"""Ranks started by torchrun, as on cloud VMs and Kubernetes: each rank runs
`python -m reslab.commands.train` itself. One launch with two ranks, and two launches standing
for two machines (`--nnodes=2 --node-rank=0/1`), every rank started seconds after the one before,
so each reads another second on its clock: they still share one run dir."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.fake_cifar import write_cifar10
from helpers.one_process_eval import assert_reduced_over_ranks
from helpers.processes import BIN, dirs_env, ok, output, run_script
from helpers.runs import TINY

from reslab.runs import layout as run_layout
from reslab.training.distributed import broken_collective, launch_time

# Each rank waits 2 s x its rank before it starts reslab, so no two ranks name their run dir in
# the same second.
STAGGER = ["--no-python", "sh", "-c", 'sleep $((2 * RANK)); exec "$0" "$@"', sys.executable]
# A global batch of 50 of the 100 train images: 2 steps an epoch on any number of processes.
RECIPE = [*TINY, "augmentation=none", "trainer.max_steps=4"]
DDP = ["trainer=ddp", "trainer.accelerator=cpu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(
    launch: list[str], args: list[str], data: Path, logs: Path, cwd: Path
) -> subprocess.Popen:
    """`torchrun <launch> -m reslab.commands.train <args>` in the background (stdout and stderr
    in one)."""
    return subprocess.Popen(
        [str(BIN / "torchrun"), *launch, *STAGGER, "-m", "reslab.commands.train", *args],
        env={**os.environ, **dirs_env(data, logs)},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out = output(proc, timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def last_of(run_dir: Path) -> Path:
    return run_layout.last_checkpoint(run_dir)


def one_run_dir(logs: Path) -> Path:
    (run_dir,) = (logs / "train" / "runs").iterdir()
    return run_dir


def test_every_rank_of_a_torchrun_launch_reads_the_first_ranks_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fmt = "%H-%M-%S.%f"  # microseconds: two clocks read one after the other differ
    assert launch_time(fmt) != launch_time(fmt)  # not under torchrun: this process's clock
    port = free_port()
    agent_store = torch.distributed.TCPStore("127.0.0.1", port, is_master=True)
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    first = launch_time(fmt)
    assert [launch_time(fmt) for _ in range(3)] == [first] * 3
    del agent_store


def test_a_broken_collective_is_told_by_gloos_words_alone() -> None:
    gloo = RuntimeError(
        "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
        "[10.0.0.2]:4321. This is typically caused by a remote worker crashing. Check the logs"
    )
    assert broken_collective(gloo) == "gloo: Connection closed by peer [10.0.0.2]:4321"
    try:  # as Lightning re-raises it, wrapped
        raise ValueError("step failed") from gloo
    except ValueError as wrapped:
        assert broken_collective(wrapped) == broken_collective(gloo)
    assert broken_collective(BrokenPipeError(32, "Broken pipe")) is None  # stdout piped to head
    assert broken_collective(RuntimeError("CUDA out of memory")) is None


@pytest.mark.slow
def test_ranks_started_seconds_apart_share_one_run_dir(tmp_path: Path) -> None:
    data = write_cifar10(tmp_path / "data", per_batch=20, test=40)
    launch = ["--nproc-per-node=2", "--master-addr=127.0.0.1", f"--master-port={free_port()}"]
    args = [*DDP, "trainer.devices=2", *RECIPE, "test=false"]
    out = finish(torchrun(launch, args, data, tmp_path / "logs", tmp_path))
    run_dir = one_run_dir(tmp_path / "logs")  # rank 1 started 2 s later, in the same dir
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    assert out.count(" completed: ") == 1
    # Each rank logs to its own file; rank 0's is the run's train.log.
    logs = {p.name: p.read_text() for p in run_dir.glob("*.log") if p.name != "config_tree.log"}
    assert sorted(logs) == ["train.log", "train_rank_1.log"], sorted(logs)
    assert logs["train.log"].count(" completed: ") == 1
    assert logs["train_rank_1.log"] and " completed: " not in logs["train_rank_1.log"]


@pytest.mark.slow
def test_two_torchrun_nodes_train_one_run(tmp_path: Path) -> None:
    data = write_cifar10(tmp_path / "data", per_batch=20, test=200)
    logs = tmp_path / "logs"
    port = free_port()
    args = [*DDP, "trainer.devices=1", "trainer.num_nodes=2", *RECIPE, "logger=[csv,wandb]"]
    launch = ["--nnodes=2", "--nproc-per-node=1", "--master-addr=127.0.0.1"]
    launch.append(f"--master-port={port}")
    nodes = [torchrun([*launch, f"--node-rank={k}"], args, data, logs, tmp_path) for k in (0, 1)]
    outs = [finish(node) for node in nodes]
    run_dir = one_run_dir(logs)
    summary = assert_reduced_over_ranks(run_dir, data, tmp_path / "eval")
    assert summary["world_size"] == 2 and summary["steps"] == 4
    assert " completed: " in outs[0] and " completed: " not in outs[1]  # rank 0 is on node 0
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 1
    # The global batch split over the two ranks (25 images each): the 4 steps took 2 epochs, as
    # in one process (a batch of 50 per rank would take 4, one step per epoch of 50 images).
    ok(run_script(["reslab-train", *RECIPE, "trainer=cpu", "test=false"], data, tmp_path / "one"))
    alone = last_of(one_run_dir(tmp_path / "one"))
    epochs = [torch.load(p, weights_only=False)["epoch"] for p in (last_of(run_dir), alone)]
    assert epochs[0] == epochs[1] == 2


@pytest.mark.slow
def test_a_rank_killed_under_torchrun_fails_the_run_in_one_line_and_resume_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 of rank 1 (the OOM killer): rank 0 met gloo's broken-collective traceback and
    recorded that line. Its launcher, not this process, knows which rank ended; rank 0 says a
    process ended, how it learned it, and how to continue."""
    data = write_cifar10(tmp_path / "data", per_batch=20, test=40)
    logs = tmp_path / "logs"
    launch = ["--nproc-per-node=2", "--master-addr=127.0.0.1", f"--master-port={free_port()}"]
    args = [*DDP, "trainer.devices=2", *TINY, "augmentation=none", "trainer.max_steps=12"]
    args.append("test=false")
    fault = "+callbacks.fault"
    kill = [f"{fault}._target_=helpers.fault_injection.SignalAt", f"{fault}.step=7",
            f"{fault}.hook=on_train_batch_start", f"{fault}.sig=SIGKILL",
            f"{fault}.rank=1"]  # fmt: skip
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))  # the fault injector
    proc = torchrun(launch, [*args, *kill], data, logs, tmp_path)
    out = output(proc, 300)
    assert proc.returncode != 0
    run_dir = one_run_dir(logs)
    (line,) = [ln for ln in out.splitlines() if ln.startswith("reslab:")]
    assert line.startswith("reslab: another process of this DDP run ended (gloo: Conn"), line
    shown = run_dir.relative_to(tmp_path)  # as typed in the launch's working directory
    assert line.endswith(f"resume={shown} continues it from its last.ckpt"), line
    assert "Error executing job" not in out  # no traceback of rank 0's
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and line.removeprefix("reslab: ") in summary["error"]
    resume = [*args, f"hydra.run.dir={run_dir}", "resume=true"]
    launch[-1] = f"--master-port={free_port()}"
    finish(torchrun(launch, resume, data, logs, tmp_path))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 12
