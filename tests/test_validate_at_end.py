"""Every run validates at its end as well as on its schedule: a run shorter than an epoch, a
step-bounded run that ends mid-epoch and an epoch-bounded run whose last epoch is off the
validation schedule all end with a validation error and a `best.ckpt`; `debug=fast`
validates its 2 batches."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from helpers.runs import FIT_ONLY, compose_run

from reslab.commands.train import train


def val_steps(run_dir: Path) -> list[int]:
    """The steps of the rows with a validation error."""
    rows = csv.DictReader((run_dir / "csv" / "metrics.csv").read_text().splitlines())
    return [int(r["step"]) for r in rows if r.get("val/err")]


@pytest.mark.parametrize(
    ("overrides", "validated_at"),
    [
        (["trainer.max_steps=4"], [4]),  # shorter than one epoch of 10 batches
        (["trainer.max_steps=14"], [10, 14]),  # ends 4 batches into the second epoch
        (  # the second epoch validates on the schedule, the third (last) at its end
            ["trainer.max_steps=-1", "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2"],
            [20, 30],
        ),
        (["debug=fast", "trainer.max_steps=6"], [6]),
    ],
)
def test_every_run_ends_validated_with_a_best_checkpoint(
    overrides: list[str], validated_at: list[int], cifar10_root: Path, tmp_path: Path
) -> None:
    record = train(compose_run(tmp_path, cifar10_root, [*FIT_ONLY, *overrides]))
    assert val_steps(tmp_path) == [step - 1 for step in validated_at]  # logged 0-based
    assert record["val_err"]["final"] is not None
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
