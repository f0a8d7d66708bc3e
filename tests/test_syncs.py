"""Host-device syncs: the counter finds them, and reslab-train's training step makes none.

On a GPU every sync idles the device while Python prepares the next step; on the CPU they
cost nothing, so these tests count them instead of timing them."""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from reslab.callbacks import LossProgressBar
from reslab.config import CONFIG_DIR, build, register_resolvers
from reslab.syncs import HostSyncs
from reslab.train import build_module, build_trainer

register_resolvers()


def test_counter_finds_conversions_and_data_dependent_shapes() -> None:
    x = torch.arange(6.0)
    with HostSyncs() as syncs:
        y = (x * 2 + 1).relu()[torch.tensor([0, 2])]  # no sync: shapes known in advance
        y.repeat_interleave(torch.tensor([1, 2]), output_size=3)
        assert syncs.total == 0
        x.sum().item()
        float(x.max())
        if x.min() >= 0:
            x[x > 2]
        torch.unique(x)
        x.nonzero()
        x.repeat_interleave(2)
        x.tolist()
    names = sorted(key.split(" at ")[0] for key in syncs.calls)
    expected = ["item", "__float__", "__bool__", "__getitem__", "unique", "nonzero"]
    assert names == sorted([*expected, "repeat_interleave", "tolist"])
    assert all(f" at {Path(__file__).name}:" in key for key in syncs.calls)


class SyncsPerStep(L.Callback):
    """Host syncs of each training step, counted from its start to the next step's (a step's
    logging, validation and epoch end count with it), and of all validation runs."""

    def __init__(self) -> None:
        self.counter = HostSyncs()
        self.per_step: dict[int, int] = {}
        self.validation = 0
        self._before_validation = 0

    def _close_step(self, trainer: L.Trainer) -> None:
        if trainer.global_step and trainer.global_step not in self.per_step:
            self.per_step[trainer.global_step] = self.counter.total - sum(self.per_step.values())

    def on_train_start(self, *_: Any) -> None:
        self.counter.__enter__()

    def on_train_batch_start(self, trainer: L.Trainer, *_: Any) -> None:
        self._close_step(trainer)

    def on_validation_start(self, *_: Any) -> None:
        self._before_validation = self.counter.total

    def on_validation_end(self, *_: Any) -> None:
        self.validation += self.counter.total - self._before_validation

    def on_train_end(self, trainer: L.Trainer, *_: Any) -> None:
        self.counter.__exit__(None, None, None)
        self._close_step(trainer)


def fit_counting(cifar10_root: Path, tmp_path: Path, overrides: list[str]) -> SyncsPerStep:
    """reslab-train's objects from the default config (all default callbacks, CSV logger),
    42 steps per epoch on the generated CIFAR-10 (500 images, batch 12), 60 steps."""
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"data.root={cifar10_root}", "data.verify_md5=false", "data.batch_size=12",
                "model.depth=8", "trainer.max_steps=60",
                f"paths.output_dir={tmp_path}", "test=false",
                *overrides,
            ],
        )  # fmt: skip
    datamodule = build(cfg.data, "data")
    module = build_module(cfg, datamodule.num_classes)
    trainer = build_trainer(cfg)
    probe = SyncsPerStep()
    trainer.callbacks.append(probe)
    start = time.monotonic()
    trainer.fit(module, datamodule=datamodule)
    probe.seconds = time.monotonic() - start
    assert trainer.global_step == 60
    return probe


@pytest.mark.parametrize("pipeline", ["device", "workers"])
def test_training_steps_make_no_host_syncs_between_logging_steps(
    pipeline: str, cifar10_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Syncs happen only where a value must reach the host: every `log_every_n_steps` (the
    logger and the NaN check: step 50), at an epoch's end (epoch metrics, validation,
    checkpoints: step 42), at the end of training (step 60), and when the progress bar reads
    the loss (here once, at step 1: its rate is turned down)."""
    monkeypatch.setattr(LossProgressBar, "READS_PER_SECOND", 1e-9)
    # One worker process: the per-image transforms' host-tensor calls stay out of the count.
    workers = int(pipeline == "workers")
    overrides = [f"data.pipeline={pipeline}", f"data.num_workers={workers}"]
    probe = fit_counting(cifar10_root, tmp_path, overrides)
    per_step = probe.per_step
    ordinary = {s: n for s, n in per_step.items() if s not in (1, 42, 50, 60)}
    assert len(ordinary) == 56 and sum(ordinary.values()) == 0, ordinary
    assert per_step[50] >= 2  # the logger and the NaN check's read: the counter sees them


def test_validation_syncs_do_not_grow_with_its_batches(cifar10_root: Path, tmp_path: Path) -> None:
    """Validation metrics accumulate on the device; the host reads them once at the end."""
    counts = [
        fit_counting(
            cifar10_root, tmp_path / str(n), [f"+trainer.limit_val_batches={n}"]
        ).validation
        for n in (2, 6)
    ]
    assert counts[0] == counts[1] > 0


def test_progress_bar_reads_the_loss_at_most_its_rate(cifar10_root: Path, tmp_path: Path) -> None:
    probe = fit_counting(cifar10_root, tmp_path, [])
    lines, first = inspect.getsourcelines(LossProgressBar.get_metrics)
    line = first + next(i for i, text in enumerate(lines) if ".item()" in text)
    calls = probe.counter.calls
    reads = sum(n for key, n in calls.items() if key.startswith(f"item at callbacks.py:{line} "))
    assert 1 <= reads <= LossProgressBar.READS_PER_SECOND * probe.seconds + 1
