"""Faults users produce, each answered at its root: a full disk during a checkpoint, a sweep
dir reused, a corrupt run record in a sweep, unreadable checkpoint and weight files for
`reslab-eval`, a corrupt CIFAR batch without the md5 check, a corrupt JPEG read in a
DataLoader worker, and what the NaN stop says when no checkpoint exists yet."""

from __future__ import annotations

import json
import re
import shutil
import signal
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers.processes import error_line
from helpers.runs import FIT_ONLY, QUIET, compose_run

from reslab.models import cifar_resnet
from reslab.runs.atomic import WriteError
from reslab.runs.checkpoints import AtomicCheckpointIO, load
from reslab.runs.record import write_failed, write_interrupted
from reslab.training.callbacks import FiniteLoss, LastCheckpoint, NonFiniteLoss
from reslab.training.stopping import Stopped


def fill(disk: Path, leave: int) -> None:
    """Fill `disk` up to `leave` free bytes."""
    free = shutil.disk_usage(disk).free
    (disk / f"filler-{uuid.uuid4().hex}").write_bytes(b"\0" * max(0, free - leave))


def test_a_disk_too_full_for_a_failed_or_stopped_runs_record_is_one_logged_line(
    small_disk: Path, cifar10_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The record of a failed or interrupted run is written while that error or stop is on
    its way out; a full disk then costs the record, not a second error in place of the first."""
    run_dir = small_disk / "run"
    cfg = compose_run(run_dir, cifar10_root, QUIET)  # sets Hydra's runtime dir, as a job does
    fill(small_disk, leave=0)
    write_failed(ValueError("the job's own error"), "resnet-8_seed0")
    write_interrupted(cfg, Stopped(signal.SIGTERM, "training"))
    lines = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(lines) == 2 and not (run_dir / "summary.json").exists()
    for line, status in zip(lines, ("failed", "interrupted"), strict=True):
        assert f"cannot write {run_dir / 'summary.json'}: No space left on device" in line
        assert f"nothing was written; the run {status} (this log says why)" in line


def test_a_full_disk_keeps_the_previous_checkpoint(small_disk: Path) -> None:
    io = AtomicCheckpointIO()
    path = small_disk / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(1000)}, path)
    before = path.read_bytes()
    fill(small_disk, leave=2000)
    # The checksum file is written first (the checkpoint's name with .sha256): either fails.
    full = r"last\.ckpt(\.sha256)?: No space left on device; the previous"
    with pytest.raises(WriteError, match=full):
        io.save_checkpoint({"step": 2, "w": torch.ones(100_000)}, path)
    assert path.read_bytes() == before and torch.load(path)["step"] == 1
    assert load(path, "ckpt_path")["step"] == 1  # and it matches its checksum
    # No temporary file left.
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt", "last.ckpt.sha256"]


def test_a_run_that_fills_the_disk_stops_in_one_line_and_resumes(
    small_disk: Path, cifar10_root: Path, train_in_process
) -> None:
    """A real run: its checkpoint fails on a full disk, the run stops naming the file, the
    previous `last.ckpt` still loads, and `resume=true` continues once there is space."""
    run_dir = small_disk / "run"
    args = [
        *QUIET,
        "test=false",
        f"hydra.run.dir={run_dir}",
        "callbacks.last_checkpoint.every_n_train_steps=2",
    ]
    first = train_in_process([*args, "trainer.max_steps=2"], cifar10_root, small_disk)
    assert first.code == 0, first.err[-2000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 2
    fill(small_disk, leave=100_000)
    full = train_in_process([*args, "trainer.max_steps=4", "resume=true"], cifar10_root, small_disk)
    line = error_line(full)
    assert "No space left on device; the previous version is kept" in line
    assert torch.load(last, weights_only=False)["global_step"] == 2
    for filler in small_disk.glob("filler-*"):
        filler.unlink()
    again = train_in_process(
        [*args, "trainer.max_steps=4", "resume=true"], cifar10_root, small_disk
    )
    assert again.code == 0, again.err[-2000:]
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 4


@pytest.mark.slow
def test_a_corrupt_record_in_a_sweep_is_reported_and_left_as_it_is(
    cifar10_root: Path, tmp_path: Path, train_in_process
) -> None:
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        *QUIET,
        "test=false",
        "trainer.max_steps=2",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
    ]
    first = train_in_process(args, cifar10_root, tmp_path)
    assert first.code == 0, first.err[-2000:]
    record = next(sweep.glob("0_*/summary.json"))
    record.write_text(record.read_text()[:40])  # a truncated file
    corrupt = record.read_bytes()
    again = train_in_process([*args, "resume=true"], cifar10_root, tmp_path)
    assert again.code == 1
    assert f"{record} cannot be read" in again.err and "did not complete" in again.err
    assert record.read_bytes() == corrupt
    other = json.loads(next(sweep.glob("1_*/summary.json")).read_text())
    assert other["status"] == "completed"
    from reslab.commands.report import report

    text = (report(sweep) / "table.md").read_text()
    assert "unreadable" in text and str(record) in text


@pytest.mark.slow
def test_a_sweep_dir_is_never_reused_without_resume(
    cifar10_root: Path, tmp_path: Path, train_in_process
) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", *FIT_ONLY, "trainer.max_steps=1", "seed=0", f"hydra.sweep.dir={sweep}"]
    assert train_in_process(args, cifar10_root, tmp_path).code == 0
    record = next(sweep.glob("0_*/summary.json")).read_bytes()
    again = train_in_process(args, cifar10_root, tmp_path)
    line = error_line(again)
    assert "already holds a sweep's runs" in line and "resume=true" in line
    assert next(sweep.glob("0_*/summary.json")).read_bytes() == record
    missing = train_in_process(
        ["-m", *FIT_ONLY, "resume=true", f"hydra.sweep.dir={tmp_path / 'nope'}"],
        cifar10_root,
    )
    assert missing.code == 2 and "no sweep to resume" in missing.err


def test_a_log_dir_that_cannot_be_created_names_reslab_log_dir(
    cifar10_root: Path, tmp_path: Path, train_in_process
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    run = train_in_process([*FIT_ONLY], cifar10_root, blocker / "logs")
    line = error_line(run)
    assert f"cannot create the log dir {blocker / 'logs'}" in line and "RESLAB_LOG_DIR" in line


@pytest.mark.parametrize("kind", ["empty", "truncated", "text"])
@pytest.mark.parametrize("key", ["ckpt_path", "weights"])
def test_eval_names_an_unreadable_file_in_one_line(
    key: str, kind: str, cifar10_root: Path, tmp_path: Path, eval_in_process
) -> None:
    full = tmp_path / "full.pth"
    torch.save(cifar_resnet(8).state_dict(), full)
    bad = tmp_path / f"{kind}.pth"
    content = {"empty": b"", "truncated": full.read_bytes()[:5000], "text": b"hello\n"}[kind]
    bad.write_bytes(content)
    data = ["model=resnet20", "model.depth=8", "data=cifar10", "data.verify_md5=false"]
    run = eval_in_process(
        [f"{key}={bad}", *(data if key == "weights" else []), f"hydra.run.dir={tmp_path / 'e'}"],
        cifar10_root,
        tmp_path,
    )
    line = error_line(run)
    assert f"{key}={bad} is not a readable torch file" in line


def test_a_corrupt_cifar_batch_is_named_without_the_md5_check(
    cifar10_root: Path, tmp_path: Path, train_in_process
) -> None:
    data = tmp_path / "data"
    shutil.copytree(cifar10_root, data)
    bad = data / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(b"\x80\x04junk")
    run = train_in_process([*FIT_ONLY, f"hydra.run.dir={tmp_path / 'run'}"], data, tmp_path)
    line = error_line(run)
    assert f"{bad} is not a CIFAR batch file" in line


def test_a_corrupt_jpeg_read_in_a_worker_is_one_line_naming_it(
    imagefolder_root: Path, tmp_path: Path, train_in_process
) -> None:
    data = tmp_path / "folder"
    shutil.copytree(imagefolder_root, data)
    # Every training image truncated, so the first batch a worker loads holds one.
    for bad in (data / "train").rglob("*.JPEG"):
        bad.write_bytes(bad.read_bytes()[:100])
    args = [
        "data=imagefolder", f"data.root={data}", "data.num_workers=1",
        "data.batch_size=8", "augmentation=lowres", "model=resnet18", "trainer.max_steps=2",
        "~callbacks.progress_bar", "~callbacks.model_summary", f"hydra.run.dir={tmp_path / 'r'}",
    ]  # fmt: skip
    run = train_in_process(args, None, tmp_path)
    line = error_line(run)  # no traceback, not even the worker's "Original Traceback"
    assert re.search(rf"cannot read image {re.escape(str(data / 'train'))}/\S+\.JPEG: ", line)


def test_the_nan_stop_says_when_no_checkpoint_exists_yet(tmp_path: Path) -> None:
    last = LastCheckpoint(str(tmp_path / "checkpoints"))
    trainer = SimpleNamespace(callbacks=[last], global_step=3, current_epoch=0, log_every_n_steps=1)
    check = FiniteLoss()
    net = torch.nn.Linear(2, 2)
    with pytest.raises(NonFiniteLoss, match="no checkpoint was written before it"):
        check.on_train_batch_end(trainer, net, torch.tensor(float("nan")), None, 0)
    last.path.parent.mkdir()
    last.path.write_bytes(b"x")
    with pytest.raises(NonFiniteLoss, match=f"the last good checkpoint is {last.path}"):
        check.on_train_batch_end(trainer, net, torch.tensor(float("nan")), None, 0)
