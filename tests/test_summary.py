"""`reslab-summary` through the real CLI, as a user runs it (`python -m`, the console script is
the same `main`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def summary(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "reslab.summary", *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_resnet50_per_stage_total_and_table1(tmp_path: Path) -> None:
    proc = summary("model=resnet50", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "resnet50 at 224x224, 1000 classes" in out
    for part in ("conv1", "layer1", "layer2", "layer3", "layer4", "fc"):
        assert f"│ {part} " in out
    assert "2048x7x7" in out and "25,557,032" in out and "4.09 G" in out
    assert "He et al. 2015, Table 1" in out and "3.8 G" in out and "v1.5" in out
    assert list(tmp_path.iterdir()) == []  # writes nothing


def test_cifar_variant_at_32x32_without_a_dataset(tmp_path: Path) -> None:
    proc = summary("model=preact_resnet164", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "preact_resnet164 at 32x32, 10 classes" in out
    assert "final_bn" in out and "256x8x8" in out and "1,703,258" in out
    assert "Table 1" not in out  # no paper figure for a net that is not in it


def test_bad_input_size_is_one_line(tmp_path: Path) -> None:
    proc = summary("model=resnet20", "input_size=0", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "reslab: error: input_size=0 is not valid; use a positive integer (32, 224)"
    )
