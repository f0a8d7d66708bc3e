"""Gradient accumulation and clipping as plain trainer overrides; `data.batch_size` is the
batch of one optimizer step, split over processes and micro-batches."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers.runs import QUIET, compose_run

from reslab.commands.train import main, train
from reslab.errors import ConfigError
from reslab.training.builders import build_datamodule, build_module, build_trainer
from reslab.training.classifier import ImageClassifier
from reslab.training.distributed import per_device_batch


def test_the_global_batch_splits_over_processes_and_micro_batches() -> None:
    assert per_device_batch(256, 1, 1) == 256
    assert per_device_batch(256, 2, 4) == 32
    with pytest.raises(ConfigError) as bad:
        per_device_batch(128, 2, 3)
    assert str(bad.value).count("\n") == 0
    assert "data.batch_size=128" in str(bad.value) and "use a multiple of 6" in str(bad.value)


@pytest.mark.parametrize(
    ("data", "batch", "micro"),
    [("cifar10", 100, 25), ("cifar10_workers", 100, 25), ("imagefolder", 8, 2)],
)
def test_every_pipeline_loads_micro_batches(
    data: str,
    batch: int,
    micro: int,
    cifar10_root: Path,
    imagefolder_root: Path,
    tmp_path: Path,
) -> None:
    """`trainer.accumulate_grad_batches=4` (no `+`): each loaded batch is a quarter of
    `data.batch_size`."""
    args = [*QUIET, f"data.batch_size={batch}", "trainer.accumulate_grad_batches=4"]
    root = cifar10_root
    if data == "imagefolder":
        root = imagefolder_root
        args = [a for a in args if not a.startswith("data.verify_md5")]
        args += ["data=imagefolder", f"data.root={root}", "augmentation=lowres"]
    elif data == "cifar10_workers":
        args.append("data.pipeline=workers")
    cfg = compose_run(tmp_path, root, args)
    module = build_datamodule(cfg)
    # The trainer of the run says how many micro-batches share a step's batch.
    trainer = L.Trainer(logger=False, enable_progress_bar=False, accumulate_grad_batches=4)
    module.trainer = trainer
    assert module.device_batch_size == micro
    module.setup("fit")
    x, y = next(iter(module.train_dataloader()))
    assert len(x) == len(y) == micro


def test_a_batch_that_does_not_split_stops_before_compute(
    cifar10_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    run_dir = tmp_path / "run"
    monkeypatch.setenv("DATA_DIR", str(cifar10_root))
    args = [*QUIET, "trainer.accumulate_grad_batches=4", f"hydra.run.dir={run_dir}"]
    monkeypatch.setattr(sys, "argv", ["reslab-train", *args])
    with pytest.raises(SystemExit) as exit:
        main()
    err = capfd.readouterr().err
    assert exit.value.code == 2 and "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if "data.batch_size=50" in ln]
    assert line.startswith("reslab: error:") and "use a multiple of 4" in line
    assert not (run_dir / "checkpoints").exists()


def test_training_scores_cover_every_micro_batch_of_each_logging_period(
    cifar10_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 micro-batches of 50 per optimizer step; 10 micro-batches an epoch, so its last step
    has one. Each logged `train/loss_step` (every 2 steps) is the mean over every micro-batch
    since the previous one, epoch boundaries included; `train/loss_epoch` over the epoch's."""
    losses: list[tuple[float, int]] = []  # (summed loss, images) of each training micro-batch
    step = ImageClassifier._step

    def spy(self, batch, stage):
        loss, scores = step(self, batch, stage)
        if stage == "train":
            losses.append((scores.sums[0].item(), scores.images))
        return loss, scores

    monkeypatch.setattr(ImageClassifier, "_step", spy)
    args = [*QUIET, "data.batch_size=150", "trainer.accumulate_grad_batches=3", "test=false"]
    args += ["trainer.max_steps=6", "trainer.log_every_n_steps=2"]
    record = train(compose_run(tmp_path, cifar10_root, args))
    assert record["steps"] == 6 and len(losses) == 16  # steps end at micro-batches 3,6,9,10,13,16

    def mean(lo: int, hi: int) -> float:
        return sum(s for s, _ in losses[lo:hi]) / sum(n for _, n in losses[lo:hi])

    with open(tmp_path / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = [float(r["train/loss_step"]) for r in rows if r["train/loss_step"]]
    assert logged == pytest.approx([mean(0, 6), mean(6, 10), mean(10, 16)], rel=1e-5)
    epochs = [float(r["train/loss_epoch"]) for r in rows if r["train/loss_epoch"]]
    assert epochs == pytest.approx([mean(0, 10), mean(10, 16)], rel=1e-5)


def test_gradient_clipping_is_a_plain_override(cifar10_root: Path, tmp_path: Path) -> None:
    """`trainer.gradient_clip_val` (no `+`) clips the global gradient norm of every step."""
    norms: list[float] = []

    class GradNorm(L.Callback):
        def on_train_start(self, trainer, pl_module):
            def record(optimizer, args, kwargs):
                params = [p for g in optimizer.param_groups for p in g["params"]]
                grads = [p.grad for p in params if p.grad is not None]
                norms.append(torch.nn.utils.get_total_norm(grads).item())

            trainer.optimizers[0].register_step_post_hook(record)

    def run(extra: list[str]) -> list[float]:
        norms.clear()
        cfg = compose_run(tmp_path / str(len(extra)), cifar10_root, [*QUIET, *extra, "test=false"])
        trainer = build_trainer(cfg)
        trainer.callbacks.append(GradNorm())
        trainer.fit(build_module(cfg), datamodule=build_datamodule(cfg))
        return list(norms)

    unclipped = run(["trainer.max_steps=4"])
    clipped = run(["trainer.max_steps=4", "trainer.gradient_clip_val=0.05"])
    assert min(unclipped) > 0.05
    assert clipped == pytest.approx([0.05] * 4, rel=1e-4)
