"""The `debug` group (fdr, limit, overfit, profiler) on both CIFAR pipelines: each does what
Lightning's option promises, the device pipeline included (it has its own epoch bookkeeping
and shuffling, which Lightning cannot reach)."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import torch
from helpers.runs import QUIET, compose_run

from reslab.commands.train import train
from reslab.training.classifier import ImageClassifier

PIPELINES = ["device", "workers"]


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, int], list[torch.Tensor]]:
    """The labels of every batch each stage ran, by (stage, epoch); sanity checks left out."""
    seen: dict[tuple[str, int], list[torch.Tensor]] = defaultdict(list)
    step = ImageClassifier._step

    def spy(self, batch, stage):
        if not self.trainer.sanity_checking:
            seen[stage, self.trainer.current_epoch].append(batch[1].clone())
        return step(self, batch, stage)

    monkeypatch.setattr(ImageClassifier, "_step", spy)
    return seen


def per_stage(batches: dict[tuple[str, int], list[torch.Tensor]]) -> dict[str, int]:
    return dict(Counter(stage for (stage, _), seen in batches.items() for _ in seen))


def run(root: Path, run_dir: Path, pipeline: str, *overrides: str) -> dict:
    """A run of batches of 20 images (each step a fraction of a second)."""
    args = [*QUIET, "data.batch_size=20", f"data.pipeline={pipeline}", *overrides]
    return train(compose_run(run_dir, root, args))


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_fdr_runs_one_batch_of_each_stage_and_writes_no_checkpoint(
    pipeline: str, cifar10_root: Path, tmp_path: Path, batches
) -> None:
    record = run(cifar10_root, tmp_path, pipeline, "debug=fdr")
    assert record["steps"] == 1 and "test/err" in record["metrics"]
    assert per_stage(batches) == {"train": 1, "val": 1, "test": 1}
    assert not list(tmp_path.glob("checkpoints/*.ckpt")) and not (tmp_path / "csv").exists()


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_limit_runs_a_few_fresh_batches_per_epoch(
    pipeline: str, cifar10_root: Path, tmp_path: Path, batches
) -> None:
    record = run(cifar10_root, tmp_path, pipeline, "debug=limit")
    assert record["steps"] == 15
    assert per_stage(batches) == {"train": 15, "val": 6, "test": 2}
    assert [len(batches["train", e]) for e in range(3)] == [5, 5, 5]
    assert [len(batches["val", e]) for e in range(3)] == [2, 2, 2]
    # Each epoch draws its 5 batches from a new shuffle of the whole training set.
    first = [torch.cat(batches["train", e]) for e in range(3)]
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
    names = {p.name for p in (tmp_path / "checkpoints").iterdir()}
    assert names == {"best.ckpt", "best.ckpt.sha256", "last.ckpt", "last.ckpt.sha256"}


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_overfit_serves_the_same_batches_every_epoch_and_fits_them(
    pipeline: str, cifar10_root: Path, tmp_path: Path, batches
) -> None:
    # fp32 fits these 3 batches in 15 epochs; bf16 autocast (the default on a CPU with bf16
    # units) needs about 60 of the config's 100.
    args = ["debug=overfit", "trainer.max_epochs=15", "trainer.precision=32-true"]
    record = run(cifar10_root, tmp_path, pipeline, *args)
    epochs = [torch.cat(batches["train", e]) for e in range(15)]
    assert len(batches["train", 0]) == 3
    assert all(torch.equal(epochs[0], e) for e in epochs[1:])
    with open(tmp_path / "csv" / "metrics.csv") as f:
        errors = [float(r["train/err_epoch"]) for r in csv.DictReader(f) if r["train/err_epoch"]]
    assert len(errors) == 15 and errors[0] > 50
    assert record["train_err"]["final"] == errors[-1]
    assert min(errors) < 5  # at lr 0.1 the last epochs wander a few images around it


@pytest.mark.parametrize(
    ("pipeline", "profiler"),
    [("device", "SimpleProfiler"), ("workers", "SimpleProfiler"), ("device", "AdvancedProfiler")],
)
def test_profiler_writes_its_report_into_the_run_dir(
    pipeline: str, profiler: str, cifar10_root: Path, tmp_path: Path
) -> None:
    run(
        cifar10_root, tmp_path, pipeline, "debug=profiler",
        f"trainer.profiler._target_=lightning.pytorch.profilers.{profiler}",
        "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
    )  # fmt: skip
    fit, test = (tmp_path / "fit-profile.txt").read_text(), (tmp_path / "test-profile.txt")
    assert "training_step" in fit and "validation_step" in fit and test.is_file()
    if profiler == "AdvancedProfiler":
        assert "cumtime" in fit  # cProfile's table, per function
    else:
        assert "Mean duration (s)" in fit
