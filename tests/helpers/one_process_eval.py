"""The errors a multi-process run logged, checked against one process that evaluates the same
final weights on the same data: validation and test errors are reduced over every rank."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers.processes import ok, run_script
from reslab.runs import layout as run_layout
from reslab.training.scores import LOSS, TEST_ERR, metric_key

TEST_LOSS = metric_key("test", LOSS)
VAL_LOSS = metric_key("val", LOSS)


def evaluate_last(run_dir: Path, data_dir: Path, log_dir: Path) -> dict[str, float]:
    """`reslab-eval` of the run's `last.ckpt`, in one process."""
    ckpt = run_layout.last_checkpoint(run_dir)
    proc = ok(run_script(["reslab-eval", f"ckpt_path={ckpt}"], data_dir, log_dir, timeout=300))
    (path,) = re.findall(r"  metrics   (\S+metrics\.json)", proc.stdout + proc.stderr)
    return json.loads(Path(path).read_text())


def assert_reduced_over_ranks(run_dir: Path, data_dir: Path, log_dir: Path) -> dict:
    """The run validated on the test set (`data.val_size=0`) after its last step: its final
    val and test errors and losses are those of the whole test set, as one process gets them.
    Each rank holds half of it, so a rank's own half would differ. Returns the summary."""
    summary = json.loads((run_dir / run_layout.SUMMARY).read_text())
    one = evaluate_last(run_dir, data_dir, log_dir)
    assert summary["val_is_test"] and summary["test_weights"] == "final"
    assert summary["test_err"] == one[TEST_ERR]
    assert summary["val_err"]["final"] == one[TEST_ERR]
    assert summary["metrics"][TEST_LOSS] == pytest.approx(one[TEST_LOSS], rel=1e-5)
    assert summary["metrics"][VAL_LOSS] == pytest.approx(one[TEST_LOSS], rel=1e-5)
    return summary
