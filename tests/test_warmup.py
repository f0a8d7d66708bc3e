"""`scheduler.warmup_steps`: the lr ramps linearly over the first steps, then follows the
schedule (per step or per epoch), and the lr monitor logs one series for it."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from helpers.runs import FIT_ONLY, compose_run

from reslab.commands.train import train


def logged_lr(run_dir: Path) -> tuple[list[str], dict[int, float]]:
    """The lr series names in metrics.csv, and `lr-SGD` by step."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    names = sorted(k for k in rows[0] if k.startswith("lr"))
    return names, {int(r["step"]): float(r["lr-SGD"]) for r in rows if r["lr-SGD"]}


def ramp(step: int, warmup: int) -> float:
    """LinearLR from 1/warmup to 1 over `warmup` steps."""
    return 1 / warmup + (1 - 1 / warmup) * min(step, warmup) / warmup


def test_warmup_then_a_per_step_schedule(cifar10_root: Path, tmp_path: Path) -> None:
    args = [*FIT_ONLY, "trainer.max_steps=10", "scheduler.warmup_steps=4"]
    train(compose_run(tmp_path, cifar10_root, [*args, "scheduler.scheduler.milestones=[8]"]))
    names, lr = logged_lr(tmp_path)
    assert names == ["lr-SGD"]
    expected = [0.1 * ramp(k, 4) * (0.1 if k >= 8 else 1) for k in range(10)]
    assert [lr[k] for k in range(10)] == pytest.approx(expected)
    assert lr[0] == pytest.approx(0.025) and lr[4] == lr[7] == pytest.approx(0.1)


def test_warmup_composes_with_an_epoch_schedule(cifar10_root: Path, tmp_path: Path) -> None:
    """10 steps an epoch, lr halved every epoch, a 12-step warm-up across the first boundary."""
    args = [*FIT_ONLY, "trainer.max_steps=25", "scheduler=step_epochs"]
    args += ["scheduler.scheduler.step_size=1", "scheduler.scheduler.gamma=0.5"]
    train(compose_run(tmp_path, cifar10_root, [*args, "scheduler.warmup_steps=12"]))
    names, lr = logged_lr(tmp_path)
    assert names == ["lr-SGD"]
    expected = [0.1 * ramp(k, 12) * 0.5 ** (k // 10) for k in range(25)]
    assert [lr[k] for k in range(25)] == pytest.approx(expected)


def test_without_warmup_the_schedule_is_unchanged(cifar10_root: Path, tmp_path: Path) -> None:
    args = [*FIT_ONLY, "trainer.max_steps=10", "scheduler.scheduler.milestones=[8]"]
    train(compose_run(tmp_path, cifar10_root, args))
    names, lr = logged_lr(tmp_path)
    assert names == ["lr-SGD"]
    assert [lr[k] for k in range(10)] == pytest.approx([0.1] * 8 + [0.01] * 2)


@pytest.mark.parametrize(
    "length", [["trainer.max_steps=20"], ["trainer.max_steps=-1", "trainer.max_epochs=2"]]
)
def test_cosine_spans_the_run_whether_bounded_by_steps_or_epochs(
    length: list[str], cifar10_root: Path, tmp_path: Path
) -> None:
    """The schedule's length is the run's real length (10 steps an epoch here): an
    epoch-bounded cosine run decays over its epochs instead of flipping at every step."""
    args = [*FIT_ONLY, "scheduler=cosine", *length]
    record = train(compose_run(tmp_path, cifar10_root, args))
    _, lr = logged_lr(tmp_path)
    assert record["steps"] == 20
    expected = [0.05 * (1 + math.cos(math.pi * k / 20)) for k in range(20)]
    assert [lr[k] for k in range(20)] == pytest.approx(expected)
