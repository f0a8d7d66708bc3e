"""`reslab-summary`: through the real console script as a user runs it, and by its entry point
in this process for the other checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.processes import ok, run_main, run_script

from reslab.commands.summary import main


@pytest.mark.slow
def test_resnet50_per_stage_total_and_table1(tmp_path: Path) -> None:
    out = ok(run_script(["reslab-summary", "model=resnet50"], cwd=tmp_path)).stdout
    assert "resnet50 at 224x224, 1000 classes" in out
    for part in ("conv1", "layer1", "layer2", "layer3", "layer4", "fc"):
        assert f"│ {part} " in out
    # MACs in one unit, the paper's G (1e9), for every row, the paper's included.
    assert "2048x7x7" in out and "25,557,032" in out and "│ 4.09 G │" in out
    assert "He et al. 2015, Table 1" in out and "│ 3.80 G │" in out and "v1.5" in out
    macs = [ln.rsplit("│", 2)[-2].strip() for ln in out.splitlines() if ln.startswith("│ ")]
    assert macs and all(m.endswith(" G") for m in macs[1:]), macs
    assert list(tmp_path.iterdir()) == []  # writes nothing


def test_cifar_variant_at_32x32_without_a_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run = run_main(main, ["reslab-summary", "model=preact_resnet164"])
    assert run.code == 0, run.err[-3000:]
    assert "preact_resnet164 at 32x32, 10 classes" in run.out
    assert "final_bn" in run.out and "256x8x8" in run.out and "1,703,258" in run.out
    assert "Table 1" not in run.out  # no paper figure for a net that is not in it
    assert " M │" in run.out and " G │" not in run.out  # under 1e9 MACs: every row in M
    assert list(tmp_path.iterdir()) == []


def test_bad_input_size_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = run_main(main, ["reslab-summary", "model=resnet20", "input_size=0"])
    assert run.code == 2
    assert run.err.strip().splitlines()[-1] == (
        "reslab: error: input_size=0 is not valid; use a positive integer (32, 224)"
    )
