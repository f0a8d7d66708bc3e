"""DDP across two SLURM nodes: `trainer=ddp_multinode` through `hydra/launcher=slurm_cpu` on a
real two-node cluster (`SLURM_LOCAL_NODES=2 bash scripts/slurm_local.sh`, as `.ci/run` starts
it), one rank on each node over gloo. Skipped where no cluster of two nodes answers."""

from __future__ import annotations

import json
import pickle
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import slurm
from helpers.fake_cifar import write_cifar10
from helpers.one_process_eval import assert_reduced_over_ranks
from helpers.processes import output
from helpers.runs import TINY
from helpers.slurm import SLURM_CPU, cluster_up

from reslab.runs import layout as run_layout

TWO_NODES = [
    *SLURM_CPU,
    "trainer=ddp_multinode",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.num_nodes=2",
    *TINY,
    "augmentation=none",
]
# A global batch of 50 of the 100 train images: 2 steps an epoch on any number of processes.
RECIPE = ["data.batch_size=50", "trainer.max_steps=4"]


def node_count() -> int:
    if not cluster_up():
        return 0
    out = subprocess.run(["sinfo", "-h", "-o", "%D"], capture_output=True, text=True, timeout=30)
    return sum(int(n) for n in out.stdout.split())


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(
        node_count() < 2, reason="no two-node SLURM cluster: SLURM_LOCAL_NODES=2 slurm_local.sh"
    ),
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar10(tmp_path_factory.mktemp("two_node_data"), per_batch=20, test=200)


def sweep(args: list[str], data_dir: Path, log_dir: Path) -> subprocess.Popen:
    """`reslab-train -m` of two-node jobs, in the background."""
    return slurm.sweep([*TWO_NODES, *args], data_dir, log_dir)


def nodes_of(job_id: str) -> int:
    """How many nodes SLURM gave the job (sacct lags a moment behind the job's end)."""
    for _ in range(20):
        out = subprocess.run(
            ["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "NNodes"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.split()
        if out:
            return int(out[0])
        time.sleep(0.5)
    raise AssertionError(f"sacct knows no job {job_id}")


def test_sweep_of_two_node_jobs_with_a_failed_job(data_dir: Path, tmp_path: Path) -> None:
    # depth 9 is no CIFAR ResNet (6n+2): that job fails, the other two complete and the sweep
    # reports the failed one.
    logs = tmp_path / "logs"
    proc = sweep(["model.depth=8,9,14", *RECIPE, "logger=[csv,wandb]"], data_dir, logs)
    out = output(proc, 500)
    assert proc.returncode == 1, out[-4000:]
    assert "1 job(s) of the sweep did not complete" in out and "model.depth=9" in out
    (sweep_dir,) = (logs / "train" / "multiruns").iterdir()
    jobs = {}
    for submitted in sweep_dir.glob(".submitit/*/*_submitted.pkl"):  # one per array task
        job_dir = submitted.parent
        tasks = sorted(job_dir.glob(f"{job_dir.name}_*_result.pkl"))
        assert len(tasks) == 2  # one task (rank) on each node
        status, result = pickle.loads(tasks[0].read_bytes())
        assert status == "success"
        jobs[Path(result.hydra_cfg.hydra.runtime.output_dir).name] = job_dir.name
    assert sorted(jobs) == ["0_resnet-8_seed0", "1_resnet-9_seed0", "2_resnet-14_seed0"]
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name[0] != ".") == sorted(
        jobs
    )
    failed = json.loads((sweep_dir / "1_resnet-9_seed0" / "summary.json").read_text())
    assert failed["status"] == "failed"
    for name in ("0_resnet-8_seed0", "2_resnet-14_seed0"):
        run_dir = sweep_dir / name
        assert nodes_of(jobs[name]) == 2
        summary = assert_reduced_over_ranks(run_dir, data_dir, tmp_path / "eval")
        assert summary["world_size"] == 2 and summary["steps"] == 4
        assert len(list(run_dir.glob("wandb/offline-run-*"))) == 1
        # The global batch split over the two ranks (25 images each): 4 steps in 2 epochs, as in
        # one process (a batch of 50 per rank would make an epoch one step).
        last = torch.load(run_layout.last_checkpoint(run_dir), weights_only=False)
        assert last["epoch"] == 2


def test_requeued_two_node_job_resumes_from_its_checkpoint(data_dir: Path, tmp_path: Path) -> None:
    steps = 300  # long enough that the job is still running when the requeue lands
    args = [f"trainer.max_steps={steps}", "test=false"]  # validation and a checkpoint each epoch
    args += ["data.batch_size=50", "+trainer.limit_val_batches=1", "seed=1"]
    proc = sweep(args, data_dir, tmp_path)
    job_id = None
    try:
        deadline = time.time() + 300
        while not (found := list(tmp_path.glob("train/multiruns/*/0_*/checkpoints/last.ckpt"))):
            assert time.time() < deadline and proc.poll() is None, "no checkpoint was written"
            time.sleep(0.5)
        last = found[0]
        (job_dir,) = (p.parent for p in last.parents[2].glob(".submitit/*/*_submitted.pkl"))
        job_id = job_dir.name
        at_requeue = torch.load(last, weights_only=False)["global_step"]
        subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
        out = output(proc, 500)
    finally:
        if proc.poll() is None:
            proc.kill()
        if job_id and proc.returncode != 0:
            subprocess.run(["scancel", job_id], timeout=30)
    assert proc.returncode == 0, out[-4000:]
    assert 0 < at_requeue < steps
    run_dir = last.parent.parent
    assert [p.name for p in run_dir.parent.iterdir() if p.is_dir() and p.name[0] != "."] == [
        run_dir.name
    ]
    assert torch.load(last, weights_only=False)["global_step"] == steps
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == steps
    log = "".join(p.read_text() for p in job_dir.glob("*_log.*"))
    assert "Restoring states from the checkpoint path" in log + out
    assert nodes_of(job_id) == 2
    restarts = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30
    ).stdout
    assert "Restarts=1" in restarts
