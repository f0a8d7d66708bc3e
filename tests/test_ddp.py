"""DDP on the CPU: 2 real processes over gloo, started by `reslab-train` as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers.fake_cifar import write_cifar10
from helpers.processes import ok, run_script
from helpers.runs import DDP_CPU, TINY

pytestmark = pytest.mark.slow


def train(args: list[str], data_dir: Path, log_dir: Path) -> subprocess.CompletedProcess:
    return run_script(["reslab-train", *args], data_dir, log_dir, timeout=300)


def summary(log_dir: Path) -> dict:
    (path,) = log_dir.glob("train/runs/*/summary.json")
    return json.loads(path.read_text())


def test_ddp_reaches_the_metrics_of_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    # The whole 100-image train set is the global batch, so both runs see the same images in
    # every step; only BatchNorm differs (statistics over each rank's 50 images: no sync BN on
    # CPU tensors), so the losses agree within 5%.
    data = write_cifar10(tmp_path / "data", per_batch=20, test=40)
    recipe = [*TINY, "augmentation=none", "data.batch_size=100", "trainer.max_steps=3"]
    ok(train([*recipe, "trainer=cpu"], data, tmp_path / "one"))
    ok(train([*recipe, *DDP_CPU], data, tmp_path / "two"))
    one, two = summary(tmp_path / "one"), summary(tmp_path / "two")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["steps"] == two["steps"] == 3
    for key in ("train/loss_epoch", "test/loss"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], rel=0.05), key


def logged_batches(path: Path, rank: int) -> list[list]:
    return [json.loads(line)["images"] for line in Path(f"{path}.rank{rank}.jsonl").open()]


def test_ddp_ranks_load_together_the_batches_of_one_process(tmp_path: Path) -> None:
    """The DataLoader pipeline's training order is not a `RandomSampler`, so Lightning shards
    it without reshuffling: at every step the two ranks' halves make up the batch that one
    process loads, in both epochs."""
    data = write_cifar10(tmp_path / "data", per_batch=20, test=40)
    recipe = [*TINY, "augmentation=none", "data.pipeline=workers", "data.batch_size=20"]
    recipe += ["trainer.max_steps=8", "test=false"]  # 100 images: 5 steps an epoch
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}  # the callback's module
    for name, trainer in (("one", ["trainer=cpu"]), ("two", DDP_CPU)):
        log = [
            "+callbacks.batch_log._target_=helpers.batch_log.BatchLog",
            f"+callbacks.batch_log.path={tmp_path / name}",
        ]
        args = ["reslab-train", *recipe, *trainer, *log]
        ok(run_script(args, data, tmp_path / name, env=env, timeout=300))
    one = logged_batches(tmp_path / "one", 0)
    two = zip(logged_batches(tmp_path / "two", 0), logged_batches(tmp_path / "two", 1), strict=True)
    assert len(one) == 8 and len({str(b) for b in one[:5]}) == 5
    assert [sorted(a + b) for a, b in two] == one
    assert one[5:] != one[:3]  # the second epoch in an order of its own


def test_multirun_on_ddp_runs_each_job_once_on_two_processes(
    cifar10_root: Path, tmp_path: Path
) -> None:
    args = ["-m", "model.residual=true,false", *DDP_CPU, *TINY]
    args += ["data.batch_size=50", "trainer.max_steps=4", "test=false"]
    proc = ok(train(args, cifar10_root, tmp_path))
    assert not (tmp_path / "train" / "runs").exists()  # no rank re-ran the sweep as a run
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0_resnet-8_seed0", "1_plain-8_seed0"]
    for job in jobs:
        s = json.loads((sweep / job / "summary.json").read_text())
        assert s["world_size"] == 2 and s["steps"] == 4
        assert s["run_name"] == job.split("_", 1)[1]
        assert (sweep / job / "train_ddp_process_1.log").is_file()  # rank 1 ran in this dir
        assert "train/loss_epoch" in (sweep / job / "csv" / "metrics.csv").read_text()
    out = proc.stdout + proc.stderr
    assert out.count("_seed0 completed: ") == 2  # rank 0 reports once per job, ranks 1 never


def test_global_batch_must_split_over_the_processes(cifar10_root: Path, tmp_path: Path) -> None:
    proc = train([*DDP_CPU, *TINY, "data.batch_size=51"], cifar10_root, tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        "reslab: error: data.batch_size=51 is the global batch and does not split evenly over "
        "2 processes" in proc.stderr
    )
    assert not list(tmp_path.glob("train/runs/*/checkpoints"))
