"""Sweeps through the SLURM launcher on a real cluster (`bash scripts/slurm_local.sh`, as
`.ci/run` does). Skipped where no cluster answers: export SLURM_CONF to run them."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import slurm
from helpers.processes import BIN
from helpers.runs import DDP_CPU, SHORT_EVAL, TINY
from helpers.slurm import SLURM_CPU, cluster_up

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(not cluster_up(), reason="no SLURM cluster: bash scripts/slurm_local.sh"),
]

ON_SLURM = [*SLURM_CPU, *TINY, *SHORT_EVAL]


def sweep(args: list[str], data_dir: Path, log_dir: Path) -> subprocess.Popen:
    """`reslab-train -m` through `hydra/launcher=slurm_cpu`, in the background."""
    return slurm.sweep([*ON_SLURM, *args], data_dir, log_dir)


def finish(proc: subprocess.Popen, timeout: float = 400) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def test_ddp_sweep_through_slurm_returns_each_jobs_metric(
    cifar10_root: Path, tmp_path: Path
) -> None:
    args = ["model.residual=true,false", "trainer.max_steps=3", "+trainer.val_check_interval=3"]
    args += ["data.val_size=100", "optimized_metric=val_err.final"]  # held out: a value to return
    args += DDP_CPU  # 2 SLURM tasks
    finish(sweep(args, cifar10_root, tmp_path))
    (sweep_dir,) = (tmp_path / "train" / "multiruns").iterdir()
    results = sorted(sweep_dir.glob(".submitit/*/*_result.pkl"))
    assert len(results) == 4  # 2 jobs x 2 tasks (DDP ranks)
    returned = {}
    for path in results:
        status, job = pickle.loads(path.read_bytes())
        assert status == "success"
        if path.name.endswith("_0_result.pkl"):  # task 0 = rank 0, what Hydra gets back
            returned[Path(job.hydra_cfg.hydra.runtime.output_dir).name] = job.return_value
    assert set(returned) == {"0_resnet-8_seed0", "1_plain-8_seed0"}
    for name, value in returned.items():
        summary = json.loads((sweep_dir / name / "summary.json").read_text())
        assert summary["steps"] == 3 and summary["world_size"] == 2 and value is not None
        assert value == summary["val_err"]["final"]  # optimized_metric: val_err.final


def wait_for_checkpoint(proc: subprocess.Popen, log_dir: Path) -> Path:
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        found = list(log_dir.glob("train/multiruns/*/0_*/checkpoints/last.ckpt"))
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError("the job wrote no checkpoint before it ended")


def test_requeued_job_resumes_from_its_checkpoint_in_the_same_run_dir(
    cifar10_root: Path, tmp_path: Path
) -> None:
    steps = 300  # long enough that the job is still running when the requeue lands
    args = [f"trainer.max_steps={steps}", "+trainer.val_check_interval=5", "test=false"]
    proc = sweep(["seed=1", "trainer=cpu", *args], cifar10_root, tmp_path)
    job_id = None
    try:
        last = wait_for_checkpoint(proc, tmp_path)
        (job_dir,) = (p for p in (last.parents[2] / ".submitit").iterdir() if p.is_dir())
        job_id = job_dir.name
        at_requeue = torch.load(last, weights_only=False)["global_step"]
        subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
        out = finish(proc, timeout=500)
    finally:
        if proc.poll() is None:
            proc.kill()
            if job_id:
                subprocess.run(["scancel", job_id], timeout=30)
    assert 0 < at_requeue < steps
    run_dir = last.parent.parent
    assert [p.name for p in run_dir.parent.iterdir() if p.is_dir() and p.name != ".submitit"] == [
        run_dir.name
    ]
    assert torch.load(last, weights_only=False)["global_step"] == steps
    log = "".join(p.read_text() for p in job_dir.glob("*_log.*"))
    assert "Restoring states from the checkpoint path" in log + out
    restarts = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30
    ).stdout
    assert "Restarts=1" in restarts


def test_sbatch_template_runs_in_a_run_dir_named_by_the_job(
    cifar10_root: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "DATA_DIR": str(cifar10_root), "RESLAB_LOG_DIR": str(tmp_path)}
    env["PATH"] = f"{BIN}:{env['PATH']}"
    local = ["--ntasks-per-node=1", "--gpus-per-node=0", "--cpus-per-task=1", "--time=10"]
    args = ["scripts/train.sbatch", "trainer=cpu", *TINY, *SHORT_EVAL, "trainer.max_steps=3"]
    proc = subprocess.run(
        ["sbatch", "--wait", "--parsable", *local, f"--output={tmp_path}/%j.out", *args],
        env=env,
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=400,
    )
    job_id = proc.stdout.strip().split(";")[0]
    assert proc.returncode == 0, (tmp_path / f"{job_id}.out").read_text()[-3000:]
    summary = json.loads(
        (tmp_path / "train" / "runs" / f"slurm-{job_id}" / "summary.json").read_text()
    )
    assert summary["steps"] == 3 and summary["run_name"] == "resnet-8_seed0"
