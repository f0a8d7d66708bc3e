"""`scripts/gpu_check.sh --dry-run`: every step of the GPU check (speed harness runs, the
ImageNet decode paths on generated JPEGs, timed probe, step budget, the Table-6 grid on the
one-GPU-per-job launcher, report, summary) on the CPU with tiny generated data, so the script
works the first time it meets a GPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

SCRIPT = Path(__file__).parents[1] / "scripts" / "gpu_check.sh"
BENCH = ["resnet20_fp32", "resnet20_bf16", "resnet56_fp32", "resnet56_bf16"]
BENCH += ["resnet50_224px_bf16", "imagefolder_decode_resnet50_bf16"]
BENCH += ["resnet20_bf16_compile", "resnet56_bf16_compile"]
GRID = [f"{kind}-{depth}" for kind in ("plain", "resnet") for depth in (20, 32, 44, 56)]


def gpu_check(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env={**os.environ, "PY": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=3600,
    )


@pytest.mark.slow
def test_dry_run_runs_every_step_and_fits_the_schedule_in_its_budget(tmp_path: Path) -> None:
    out = tmp_path / "check"
    # a budget no loaded CPU runs out of: the test is about the steps, not their speed
    proc = gpu_check(
        "--dry-run", "--out", str(out), GPU_CHECK_SECONDS="3000", GPU_CHECK_BENCH_SECONDS="2000"
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1].endswith(f"results in {out} (summary.md, gpu_check.tar.gz)")

    rows = [r.split(" | ") for r in (out / "logs" / "steps.md").read_text().splitlines()[2:]]
    outcomes = {r[0].lstrip("| "): r[1] for r in rows}
    expected = [f"bench_{b}" for b in BENCH] + ["grid_probe", "grid", "report"]
    assert outcomes == dict.fromkeys(expected, "ok")

    first = (out / "logs" / "bench_resnet20_fp32.txt").read_text()
    assert "Framework time per step" in first and "| input: device loader alone |" in first
    decode = (out / "logs" / "bench_imagefolder_decode_resnet50_bf16.txt").read_text()
    assert f"ImageFolder {out / 'imagefolder'}, augmentation=torchvision_v1 (224 px)" in decode
    assert "| worker: PIL decode" in decode and "| worker: `data.decode=cpu`" in decode
    assert "| model alone (resnet50 bf16-mixed, 224 px" in decode
    assert "`data.decode=gpu`: not measured (needs --device cuda)." in decode  # a CPU dry run
    jpegs = sorted((out / "imagefolder" / "train").rglob("*.JPEG"))
    assert len(jpegs) == 48 and Image.open(jpegs[0]).size == (500, 375)
    for name in BENCH[1:]:
        if name.startswith("imagefolder"):
            continue
        text = (out / "logs" / f"bench_{name}.txt").read_text()
        assert "| bare PyTorch loop" in text and "| input:" not in text  # training rows only
        assert "compile=False" in text  # compiling is minutes per network on a CPU
    assert (
        "resnet50, batch 16, bf16-mixed, channels_last=True"
        in (out / "logs" / "bench_resnet50_224px_bf16.txt").read_text()
    )

    probe = sorted((out / "probe").glob("*/summary.json"))
    assert len(probe) == 8 and all(json.loads(p.read_text())["steps"] > 0 for p in probe)
    steps = int(re.search(r"Grid: (\d+) steps", (out / "summary.md").read_text()).group(1))
    assert 4 <= steps <= 12  # the dry run's cap
    runs = sorted(p for p in (out / "grid").iterdir() if p.is_dir() and p.name != "report")
    assert sorted(r.name.split("_", 1)[1] for r in runs) == sorted(f"{g}_seed0" for g in GRID)
    for run in runs:
        record = json.loads((run / "summary.json").read_text())
        assert record["status"] == "completed" and record["steps"] == steps
        assert record["test_err"] is not None
        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        assert list(cfg.scheduler.scheduler.milestones) == [steps // 2, steps * 3 // 4]
        assert "CUDA_VISIBLE_DEVICES=0" in (run / "train.log").read_text()

    table = (out / "report" / "table.md").read_text()
    depths = [int(ln.split("|")[1]) for ln in table.splitlines() if re.match(r"\| \d", ln)]
    assert depths == [20, 32, 44, 56]
    summary = (out / "summary.md").read_text()
    assert "## bench_resnet56_bf16_compile" in summary and table.splitlines()[0] in summary
    with tarfile.open(out / "gpu_check.tar.gz") as tar:
        names = tar.getnames()
    assert f"{out.name}/summary.md" in names and f"{out.name}/report/table.md" in names
    assert not any(n.endswith(".ckpt") or n.startswith(f"{out.name}/data/") for n in names)
    assert not any(n.startswith(f"{out.name}/imagefolder/") for n in names)


def test_without_a_gpu_or_data_it_stops_in_one_line(tmp_path: Path) -> None:
    proc = gpu_check("--out", str(tmp_path / "check"), DATA_DIR="")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("gpu_check: error: no CIFAR dir")
    proc = gpu_check(str(tmp_path), "--out", str(tmp_path / "check"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"gpu_check: error: {tmp_path} holds no cifar-10-batches-py/ (CIFAR-10)"
    )
    assert not (tmp_path / "check").exists()
