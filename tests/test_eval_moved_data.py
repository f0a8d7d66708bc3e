"""`reslab-eval` of a run whose data moved: the one override `paths.data_dir=<new dir>` finds
it (the stored `data.root` followed the run's `paths.data_dir`), the stored data values
(`verify_md5=false`) are kept, a `data.*` value can be given over them, and without the
override the error names `data.root` and `paths.data_dir`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers.runs import QUIET, compose_run

from reslab.commands.train import train


@pytest.fixture(scope="module")
def moved(cifar10_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a run's last.ckpt, the dir its data moved to)."""
    base = tmp_path_factory.mktemp("moved")
    shutil.copytree(cifar10_root, base / "old")
    run_dir = base / "run"
    train(
        compose_run(run_dir, base / "old", [*QUIET, "trainer.max_steps=3", "data.download=false"])
    )
    (base / "old").rename(base / "new")
    return run_dir / "checkpoints" / "last.ckpt", base / "new"


def test_eval_follows_paths_data_dir_and_keeps_the_stored_values(
    moved: tuple[Path, Path], tmp_path: Path, eval_in_process
) -> None:
    ckpt, new = moved
    run = eval_in_process([f"ckpt_path={ckpt}", f"paths.data_dir={new}"], None, tmp_path)
    assert run.code == 0, run.err[-2000:]
    (out,) = (tmp_path / "eval" / "runs").iterdir()
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"ckpt_path={ckpt}: test err {metrics['test/err']:.2f}%, top-5 err " in run.out
    assert f"  metrics   {out / 'metrics.json'}" in run.out  # where it went
    summary = json.loads((ckpt.parent.parent / "summary.json").read_text())
    assert metrics["test/err"] == pytest.approx(summary["test_err"], abs=1e-4)


def test_a_data_value_goes_over_the_stored_ones(
    moved: tuple[Path, Path], tmp_path: Path, eval_in_process
) -> None:
    ckpt, new = moved
    args = [f"ckpt_path={ckpt}", f"data.root={new}", "data.batch_size=7", "data.verify_md5=false"]
    run = eval_in_process(args, None, tmp_path)
    assert run.code == 0, run.err[-2000:]
    run = eval_in_process([f"ckpt_path={ckpt}", f"data.root={new}", "data.rooot=x"], None, tmp_path)
    assert run.code == 2 and "data.rooot" in run.err and "Traceback" not in run.err


def test_without_the_override_the_error_names_where_to_point(
    moved: tuple[Path, Path], tmp_path: Path, eval_in_process
) -> None:
    ckpt, _ = moved
    run = eval_in_process([f"ckpt_path={ckpt}"], None, tmp_path)
    assert run.code == 2 and "Traceback" not in run.err
    line = next(ln for ln in run.err.splitlines() if ln.startswith("reslab: error:"))
    assert "cifar10 not found in" in line and "point data.root (or paths.data_dir" in line
    assert line.endswith("or allow data.download=true")  # the run had data.download=false
