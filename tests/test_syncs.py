"""Host-device syncs: the counter finds them, and reslab-train's training step makes none.

On a GPU every sync idles the device while Python prepares the next step; on the CPU they
cost nothing, so these tests count them instead of timing them."""

from __future__ import annotations

import inspect
import time
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from host_syncs import HostSyncs
from hydra import compose, initialize_config_module

from reslab.commands.startup import register_resolvers
from reslab.training.builders import build_datamodule, build_module, build_trainer
from reslab.training.callbacks import LossProgressBar

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
    """Host syncs of each training step by where they happen, counted from its start to the
    next step's (a step's logging, validation and epoch end count with it), and the number of
    syncs of all validation runs."""

    def __init__(self) -> None:
        self.counter = HostSyncs()
        self.per_step: dict[int, Counter[str]] = {}
        self.validation = 0
        self._before_validation = 0
        self._closed: Counter[str] = Counter()

    def _close_step(self, trainer: L.Trainer) -> None:
        if trainer.global_step and trainer.global_step not in self.per_step:
            self.per_step[trainer.global_step] = self.counter.calls - self._closed
            self._closed = Counter(self.counter.calls)

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


def fit_counting(
    cifar10_root: Path, tmp_path: Path, overrides: list[str], steps: int = 60
) -> SyncsPerStep:
    """reslab-train's objects from the default config (all default callbacks, CSV logger),
    42 steps per epoch on the generated CIFAR-10 (500 images, batch 12), `steps` steps."""
    with initialize_config_module("reslab.configs", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"data.root={cifar10_root}", "data.verify_md5=false", "data.batch_size=12",
                "model.depth=8", f"trainer.max_steps={steps}",
                f"paths.output_dir={tmp_path}", "test=false",
                # The live bar a terminal gets (pytest's stdout is none), which reads the loss.
                "callbacks.progress_bar._target_=reslab.training.callbacks.LossProgressBar",
                "~callbacks.progress_bar.every_s",
                *overrides,
            ],
        )  # fmt: skip
    datamodule = build_datamodule(cfg)
    module = build_module(cfg)
    trainer = build_trainer(cfg)
    probe = SyncsPerStep()
    trainer.callbacks.append(probe)
    start = time.monotonic()
    trainer.fit(module, datamodule=datamodule)
    probe.seconds = time.monotonic() - start
    assert trainer.global_step == steps
    return probe


def progress_bar_read() -> str:
    """The key `HostSyncs` counts the progress bar's loss read under."""
    lines, first = inspect.getsourcelines(LossProgressBar.get_metrics)
    line = first + next(i for i, text in enumerate(lines) if ".item()" in text)
    return f"item at callbacks.py:{line} "


@pytest.fixture(scope="module")
def counted(cifar10_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The 60-step fit of each pipeline, run once for the tests that read it."""
    fits: dict[str, SyncsPerStep] = {}

    def fit(pipeline: str) -> SyncsPerStep:
        if pipeline not in fits:
            # One worker process: the per-image transforms' host-tensor calls stay out of the
            # count.
            workers = int(pipeline == "workers")
            overrides = [f"data.pipeline={pipeline}", f"data.num_workers={workers}"]
            out = tmp_path_factory.mktemp(pipeline)
            fits[pipeline] = fit_counting(cifar10_root, out, overrides)
        return fits[pipeline]

    return fit


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["device", "workers"])
def test_training_steps_make_no_host_syncs_between_logging_steps(pipeline: str, counted) -> None:
    """Syncs happen only where a value must reach the host: every `log_every_n_steps` (the
    logger and the NaN check: step 50), at an epoch's end (epoch metrics, validation,
    checkpoints: step 42), at the end of training (step 60), and when the progress bar reads
    the loss (left out here by where it happens: its rate is checked below; step 1 holds its
    first read)."""
    per_step = counted(pipeline).per_step
    bar = progress_bar_read()
    ordinary = {
        s: {key: n for key, n in calls.items() if not key.startswith(bar)}
        for s, calls in per_step.items()
        if s not in (1, 42, 50, 60)
    }
    assert len(ordinary) == 56 and not any(ordinary.values()), ordinary
    assert per_step[50].total() >= 2  # the logger and the NaN check's read: the counter sees them


@pytest.mark.slow
def test_validation_syncs_do_not_grow_with_its_batches(cifar10_root: Path, tmp_path: Path) -> None:
    """Validation metrics accumulate on the device; the host reads them once at the end (of
    the validation after a 5-step epoch; the sanity check runs before the count starts)."""
    counts = [
        fit_counting(
            cifar10_root,
            tmp_path / str(n),
            [f"+trainer.limit_val_batches={n}", "+trainer.limit_train_batches=5"],
            steps=5,
        ).validation
        for n in (2, 6)
    ]
    assert counts[0] == counts[1] > 0


@pytest.mark.slow
def test_progress_bar_reads_the_loss_at_most_its_rate(counted) -> None:
    probe = counted("device")
    reads = sum(n for key, n in probe.counter.calls.items() if key.startswith(progress_bar_read()))
    assert 1 <= reads <= LossProgressBar.READS_PER_SECOND * probe.seconds + 1
