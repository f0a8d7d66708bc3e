"""The real console scripts, end to end, as a user runs them."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reslab.models import cifar_resnet

BIN = Path(sys.executable).parent


def run(cmd: list[str], data_dir: Path, log_dir: Path, check: bool = True):
    env = {**os.environ, "DATA_DIR": str(data_dir), "RESLAB_LOG_DIR": str(log_dir)}
    proc = subprocess.run(
        [str(BIN / cmd[0]), *cmd[1:]], env=env, capture_output=True, text=True, timeout=600
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


FAST = [
    "data.verify_md5=false",
    "data.batch_size=50",
    "data.num_workers=0",
    "trainer.max_steps=25",
    "trainer.log_every_n_steps=5",
    "model.depth=8",
]


@pytest.fixture(scope="module")
def trained(cifar10_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    logs = tmp_path_factory.mktemp("logs")
    run(["reslab-train", *FAST], cifar10_root, logs)
    (run_dir,) = (logs / "train" / "runs").iterdir()
    return run_dir


def test_train_writes_config_checkpoints_metrics_and_summary(trained: Path) -> None:
    assert trained.name.endswith("_resnet-8_seed0")
    cfg = (trained / ".hydra" / "config.yaml").read_text()
    assert "depth: 8" in cfg and "max_steps: 25" in cfg
    assert {p.name for p in (trained / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    rows = list(csv.DictReader((trained / "csv" / "metrics.csv").read_text().splitlines()))
    steps = [int(r["step"]) for r in rows if r.get("train/loss_step")]
    assert steps and max(steps) <= 25
    assert any(r.get("val/err") for r in rows) and any(r.get("lr-SGD") for r in rows)
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["run_name"] == "resnet-8_seed0" and summary["steps"] == 25
    assert summary["params"] == sum(p.numel() for p in cifar_resnet(8).parameters())
    assert 0 <= summary["metrics"]["test/err"] <= 100
    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["hyper_parameters"]["model"]["depth"] == 8 and ckpt["global_step"] == 25


def test_eval_reproduces_the_test_metrics(trained: Path, cifar10_root: Path, tmp_path: Path):
    ckpt = trained / "checkpoints" / "best.ckpt"
    run(["reslab-eval", f"ckpt_path={ckpt}"], cifar10_root, tmp_path)
    (out,) = (tmp_path / "eval" / "runs").iterdir()
    metrics = json.loads((out / "metrics.json").read_text())
    summary = json.loads((trained / "summary.json").read_text())["metrics"]
    for key in ("test/acc", "test/acc5", "test/err"):
        assert metrics[key] == pytest.approx(summary[key], abs=1e-6)


def test_eval_rejects_a_checkpoint_of_another_architecture(
    trained: Path, cifar10_root: Path, tmp_path: Path
) -> None:
    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=False)
    ckpt["hyper_parameters"]["model"]["depth"] = 14
    bad = tmp_path / "bad.ckpt"
    torch.save(ckpt, bad)
    proc = run(["reslab-eval", f"ckpt_path={bad}"], cifar10_root, tmp_path, check=False)
    assert proc.returncode == 2
    assert "does not fit the model config" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("model.depth=21", "reslab: error: model.depth=21 is not a CIFAR ResNet depth; use 6n+2"),
        ("model.shortcut=E", "reslab: error: model.shortcut='E' is not valid; choose one of"),
        ("data.download=false", "reslab: error: cifar10 not found in"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(override: str, needle: str, tmp_path: Path) -> None:
    proc = run(["reslab-train", override], tmp_path / "empty", tmp_path, check=False)
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("reslab: error:"))
    assert needle in line
    assert not list(tmp_path.glob("train/runs/*/checkpoints"))


def test_resume_continues_in_the_same_run_dir(trained: Path, cifar10_root: Path) -> None:
    run(
        ["reslab-train", *FAST, "trainer.max_steps=30", f"hydra.run.dir={trained}", "resume=true"],
        cifar10_root,
        trained.parent.parent.parent,
    )
    assert (
        torch.load(trained / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 30
    )
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["steps"] == 30
    assert len(list(trained.parent.iterdir())) == 1  # no new run dir
    rows = list(csv.DictReader((trained / "csv" / "metrics.csv").read_text().splitlines()))
    steps = {int(r["step"]) for r in rows if r.get("train/loss_step")}
    assert min(steps) < 10 and max(steps) >= 25  # the first session's rows are still there
