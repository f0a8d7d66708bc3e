"""W&B with the real wandb library, offline: read the run files back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers.processes import ok, run_script
from helpers.runs import SHORT_EVAL, TINY
from helpers.wandb_records import records

RUN = [*TINY, *SHORT_EVAL]

pytestmark = pytest.mark.slow


def train(args: list[str], data_dir: Path, log_dir: Path, env: dict | None = None) -> str:
    proc = ok(run_script(["reslab-train", *args], data_dir, log_dir, env=env, timeout=300))
    return proc.stdout + proc.stderr


def read_run(path: Path) -> dict:
    """The run record, the logged config and the metric history of one offline run."""
    out: dict = {"config": {}, "history": []}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
        elif kind == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            out["history"].append(
                {
                    "/".join(i.nested_key) or i.key: json.loads(i.value_json)
                    for i in record.history.item
                }
            )
    return out


def test_sweep_jobs_are_separate_runs_in_one_group_and_resume_continues_the_run(
    cifar10_root: Path, tmp_path: Path
) -> None:
    args = ["-m", "logger=[csv,tensorboard,wandb]", "model.residual=true,false", *RUN]
    args.append("tags=[degradation,tiny]")
    train([*args, "trainer.max_steps=3"], cifar10_root, tmp_path)
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    ids = set()
    for job, residual in (("0_resnet-8_seed0", True), ("1_plain-8_seed0", False)):
        run_dir = sweep / job
        (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
        run = read_run(run_file)
        run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
        assert run["run"].run_id == run_id and run_file.name == f"run-{run_id}.wandb"
        assert run["run"].run_group == f"train/{sweep.name}"
        assert run["run"].display_name == job.split("_", 1)[1]
        # The run's own `tags`, as in its summary.json.
        assert run["run"].job_type == "train" and list(run["run"].tags) == ["degradation", "tiny"]
        assert run["config"]["model"]["residual"] is residual
        assert run["config"]["model"]["depth"] == 8 and run["config"]["trainer"]["max_steps"] == 3
        logged = {k: v for row in run["history"] for k, v in row.items()}
        record = json.loads((run_dir / "summary.json").read_text())
        assert record["tags"] == ["degradation", "tiny"]
        summary = record["metrics"]
        assert logged["test/err"] == summary["test/err"]
        assert logged["train/loss_epoch"] == summary["train/loss_epoch"]
        assert list(run_dir.glob("tensorboard/events.out.tfevents.*"))
        assert "test/err" in (run_dir / "csv" / "metrics.csv").read_text()
        ids.add(run_id)
    assert len(ids) == 2

    # Resume job 0 with no API key and no WANDB_MODE: offline by itself, same W&B run.
    run_dir = sweep / "0_resnet-8_seed0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    resumed = [f"hydra.run.dir={run_dir}", "resume=true", "logger=wandb", *RUN]
    out = train(
        [*resumed, "trainer.max_steps=5", "test=false"],
        cifar10_root,
        tmp_path,
        {**env, "HOME": str(tmp_path)},
    )
    assert "wandb: no API key; logging offline" in out
    run_files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(run_files) == 2 and run_files[0].name == run_files[1].name
    steps = [row["trainer/global_step"] for row in read_run(run_files[1])["history"]]
    assert max(steps) == 4 and min(steps) >= 3  # continued from step 3, did not start over


def test_the_logger_starts_without_wandb_warnings(tmp_path: Path, capfd) -> None:
    """Lightning's `anonymous=None` made wandb warn on every run that the setting has no
    effect."""
    import wandb

    from reslab.training.loggers import RunDirWandbLogger

    logger = RunDirWandbLogger(save_dir=str(tmp_path), offline=True, project="reslab")
    try:
        assert logger.experiment is not None
    finally:
        wandb.finish()
    out = capfd.readouterr()
    assert "anonymous" not in out.out + out.err
